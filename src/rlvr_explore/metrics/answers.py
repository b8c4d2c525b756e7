"""Statistics of the text of responses: answer entropy, response quality, token categories,
trajectory similarity (two-stage paper (arXiv 2510.04028) App. C.5; STILL §3.2.2, Tab. 1; SPS App. E.1)."""

from __future__ import annotations

import math
import re
from collections import Counter
from difflib import SequenceMatcher
from itertools import combinations
from typing import Hashable, Sequence

BOXED = re.compile(r"\\boxed\{")
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def _closed_at(text: str, start: int) -> str | None:
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i].strip()
    return None


def extract_boxed(text: str) -> str | None:
    r"""The content of the last \boxed{...}, braces balanced; None if there is none."""
    starts = [m.end() for m in BOXED.finditer(text)]
    return _closed_at(text, starts[-1]) if starts else None


def boxed_answers(text: str) -> list[str]:
    r"""The content of every closed \boxed{...}, in order."""
    return [a for a in (_closed_at(text, m.end()) for m in BOXED.finditer(text)) if a is not None]


CODE_BLOCK = re.compile(r"```(?:python|py)?\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The last fenced code block of a response, or the whole text when it has none."""
    blocks = CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else text


def answer_entropy(answers: Sequence[Hashable | None]) -> float:
    """-sum_j p_j log p_j over distinct answers of one problem; invalid (None) is its own 'NA' class."""
    counts = Counter("NA" if a is None else a for a in answers)
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def ngram_redundancy(tokens: Sequence[str], n: int = 3) -> float:
    """1 - distinct n-grams / n-grams (STILL's repetition filter: keep <= 0.31)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def response_quality(text: str, max_redundancy: float = 0.31) -> dict:
    """STILL §3.2.2 checks: format (exactly one \\boxed), language mixing (CJK), repetition."""
    boxed = len(BOXED.findall(text))
    redundancy = ngram_redundancy(text.split())
    issues = {
        "format_violation": boxed != 1,
        "language_mixing": bool(CJK.search(text)),
        "repetition": redundancy > max_redundancy,
    }
    return {**issues, "boxed_count": boxed, "redundancy": redundancy, "any_issue": any(issues.values())}


TOKEN_CATEGORIES = {
    # STILL Tab. 1, extended with the obvious members of each class
    "logical_structuring": {"therefore", "thus", "hence", "because", "since", "so", "however", "but", "although",
                            "first", "second", "next", "then", "finally", "and", "also", "moreover", "furthermore"},
    "metacognitive": {"wait", "check", "verify", "correction", "actually", "hmm", "recheck", "summary", "summarize",
                      "let's", "lets", "plan", "reconsider", "mistake", "double-check"},
    "semantic_support": {"the", "is", "of", "a", "an", "to", "in", "that", "it", "this", "are", "be", "problem",
                         "solution", "answer", "correct", "final", "we", "for", "with"},
}
FORMAL = re.compile(r"^([-+]?\d+(\.\d+)?|[+\-*/=<>^()\[\]{}%|]+|[a-zA-Z]|\\[a-zA-Z]+|[π√∑∫∏≤≥≠±])$")


def token_category(token: str) -> str:
    """formal_reasoning / logical_structuring / metacognitive / semantic_support / other (STILL Tab. 1)."""
    word = token.strip().lower().strip(".,:;!?")
    if FORMAL.match(token.strip()):
        return "formal_reasoning"
    for category, lexicon in TOKEN_CATEGORIES.items():
        if word in lexicon:
            return category
    return "other"


def category_counts(tokens: Sequence[str]) -> dict[str, int]:
    counts = Counter(token_category(t) for t in tokens)
    return {c: counts.get(c, 0) for c in ("formal_reasoning", "logical_structuring", "metacognitive", "semantic_support", "other")}


def trajectory_similarity(responses: Sequence[Sequence]) -> float:
    """Mean pairwise similarity of one problem's responses in [0, 1] (lower = more diverse).

    SPS App. E.1 reports such a score without naming the measure; we use difflib's ratio
    2 M / (|a| + |b|) on token (or character) sequences.
    """
    pairs = list(combinations(responses, 2))
    if not pairs:
        raise ValueError("trajectory_similarity needs at least two responses")
    return sum(SequenceMatcher(None, a, b, autojunk=False).ratio() for a, b in pairs) / len(pairs)
