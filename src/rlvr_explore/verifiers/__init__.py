"""Reward functions. :class:`Verifier` turns (problem, response) pairs into rewards and never
raises on a response: an error, a timeout or a refused program is reward 0 and is counted.

* ``builtin``: the checker of a built-in synthetic task (``rlvr_explore.tasks``);
* ``exact``: string match after normalising spaces, or numeric equality within 1e-6;
* ``math``: `math-verify` in a warm pool of worker processes (``math_pool``), a timeout per answer.

  Both grade the answer that ``answer_format`` extracts (:func:`graded_answer`): the last
  ``\boxed{}`` as the papers' prompts ask (the default: a response without one scores 0), the last
  number (lenient), or the whole response (math-verify's own search, which credits a bare number
  anywhere). ``stats`` counts the answers each extraction gave;
* ``code``: the response's program against the problem's tests in a bubblewrap sandbox
  (``sandbox``, ``code``).

The verifier refuses to *start* when it cannot judge honestly (no sandbox, workers that do not
start), since a reward path that silently pays 0 would poison the run. Threat model and figures:
docs/reliability.md.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rlvr_explore.metrics.answers import boxed_answers, extract_boxed
from rlvr_explore.tasks.synthetic import TASKS

from .code import judge
from .math_pool import MathPool
from .math_worker import math_verify_reward
from .sandbox import SandboxConfig, SandboxUnavailable, check_available

KINDS = ("builtin", "exact", "math", "code")
ANSWER_FORMATS = ("boxed", "last_number", "full")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
log = logging.getLogger(__name__)


def graded_answer(response: str, answer_format: str) -> tuple[str | None, str]:
    """(the text graded, the extraction that found it: "boxed", "last_number", "full", "none" or
    "ambiguous"). A boxed answer is taken in every format, unless the response boxes different
    answers (a spray, graded 0); ``boxed`` takes nothing else, ``last_number`` the last number of
    the response, ``full`` the whole response."""
    boxed = extract_boxed(response)
    if boxed is not None:
        return (boxed, "boxed") if len(set(boxed_answers(response))) == 1 else (None, "ambiguous")
    if answer_format == "last_number":
        numbers = NUMBER.findall(response)
        return (numbers[-1], "last_number") if numbers else (None, "none")
    if answer_format == "full":
        return response, "full"
    return None, "none"


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def exact_match(response: str, reference: str, answer_format: str = "full") -> float:
    """1 if the graded answer (:func:`graded_answer`) equals the reference as text or as a number."""
    return _same_answer(graded_answer(response, answer_format)[0], reference)


def _same_answer(answer: str | None, reference: str) -> float:
    if answer is None:
        return 0.0
    a, b = " ".join(answer.split()), " ".join(str(reference).split())
    if a == b:
        return 1.0
    x, y = _number(a), _number(b)
    return float(x is not None and y is not None and abs(x - y) <= 1e-6 * max(1.0, abs(y)))


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class Verifier:
    """Rewards for batches of responses.

    ``stats`` counts since creation: ``calls`` (responses judged), ``errors`` (a checker raised,
    a worker died), ``timeouts``, ``refusals`` (a program stopped by a sandbox limit: output cap
    or timeout), ``worker_restarts`` (math workers replaced after a timeout or a crash),
    ``unsupported_calls`` (code: assert tests that pass the program what plain data cannot carry,
    such as a callback; reward 0, with a warning naming the problem), ``unplain_results`` (code:
    programs that returned what is not plain data: every value forge, or a task whose answer is
    an object; reward 0), ``load_retries`` (code runs
    out of time while other load held the CPU, judged again alone), ``starved`` (retried runs that
    ran out of time that way again) and, for
    ``exact`` and ``math``, ``answers_<extraction>``: how many graded answers each extraction of
    :func:`graded_answer` gave (``answers_none``: no answer found; ``answers_ambiguous``: several
    different boxed answers; both reward 0).
    """

    kind: str = "builtin"
    timeout_s: float = 5.0
    workers: int = 0
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    answer_format: str = "boxed"
    stats: dict = field(default_factory=lambda: {"calls": 0, "errors": 0, "timeouts": 0, "refusals": 0, "worker_restarts": 0,
                                                 "unsupported_calls": 0, "unplain_results": 0, "load_retries": 0,
                                                 "starved": 0,
                                                 "answers_boxed": 0, "answers_last_number": 0, "answers_full": 0,
                                                 "answers_none": 0, "answers_ambiguous": 0})

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown verifier {self.kind!r}; use {', '.join(KINDS)}")
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"unknown answer format {self.answer_format!r}; use {', '.join(ANSWER_FORMATS)}")
        if self.timeout_s <= 0:
            raise ValueError(f"verifier timeout_s must be > 0, got {self.timeout_s}")
        self.workers = self.workers or default_workers()
        self._math = MathPool(self.workers, self.timeout_s) if self.kind == "math" else None
        if self.kind == "code":
            check_available(self.sandbox)
            if self.sandbox.isolation == "none":
                log.warning("sandbox.isolation=none: generated programs run WITHOUT isolation, as this user, "
                            "with access to this machine's files, network and processes")

    def close(self) -> None:
        if self._math is not None:
            self._math.close()

    def __call__(self, problems: list[dict], responses: list[str]) -> list[float]:
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems for {len(responses)} responses")
        self.stats["calls"] += len(responses)
        if self.kind in ("math", "exact"):
            graded = [graded_answer(response, self.answer_format) for response in responses]
            for _, extraction in graded:
                self.stats[f"answers_{extraction}"] += 1
        if self.kind == "math":
            # math-verify parses a boxed expression alone; the whole response only in the "full" format
            found = [i for i, (answer, _) in enumerate(graded) if answer is not None]
            pairs = [(responses[i] if graded[i][1] == "full" else f"\\boxed{{{graded[i][0]}}}", str(problems[i]["answer"]))
                     for i in found]
            before = dict(self._math.stats)
            scores = self._math(pairs)
            for key, value in self._math.stats.items():
                self.stats[key] += value - before[key]
            rewards = [0.0] * len(responses)
            for i, score in zip(found, scores):
                rewards[i] = score
            return rewards
        if self.kind == "code":
            with ThreadPoolExecutor(self.workers) as pool:
                outcomes = list(pool.map(self._code, problems, responses))
            # a run that ran out of time because its neighbours held the CPU is judged again, alone
            for i, (_, counted) in enumerate(outcomes):
                if "starved" in counted:
                    self.stats["load_retries"] += 1
                    outcomes[i] = self._code(problems[i], responses[i])
            for _, counted in outcomes:
                for key in counted:
                    self.stats[key] += 1
            return [reward for reward, _ in outcomes]
        if self.kind == "exact":
            return [self._safe(lambda a, p: _same_answer(a, p["answer"]), answer, problem)
                    for (answer, _), problem in zip(graded, problems)]
        return [self._safe(lambda p, r: TASKS[p["task"]][1](p["prompt"], r), problem, response)
                for problem, response in zip(problems, responses)]

    def _code(self, problem: dict, response: str) -> tuple[float, list[str]]:
        """(reward, the stats it counts); counted by the caller, as this runs in a thread."""
        try:
            run = judge(problem, response, self.sandbox, self.timeout_s)
        except SandboxUnavailable:
            raise  # the machine changed under us: stop, do not pay zeros
        except Exception:  # noqa: BLE001 - a malformed problem or response is reward 0, never a crash
            return 0.0, ["errors"]
        if not run.started:  # bwrap failed to set up: not the program's fault, so say it loudly
            log.warning("the sandbox did not start (reward 0, counted in errors): %s", run.stderr.decode(errors="replace")[-500:])
            return 0.0, ["errors"]
        counted = ["timeouts"] if run.timed_out else []
        if run.starved:
            counted.append("starved")
        if run.timed_out or run.output_capped:
            counted.append("refusals")
        problem_name = problem.get("task_id") or problem.get("entry_point") or "a code problem"
        if run.unsupported:  # the tests need what plain data cannot carry: say so, never pay it
            log.warning("%s: its tests make a call the checker cannot carry to the sandbox (reward 0, counted in "
                        "unsupported_calls): %s", problem_name, run.unsupported)
            counted.append("unsupported_calls")
        if run.unplain:  # every value forge lands here, as would a task whose answer is an object
            counted.append("unplain_results")
        if run.checker_error:
            log.warning("%s: the trusted checker could not run its tests (reward 0, counted in errors): %s",
                        problem_name, run.checker_error)
            counted.append("errors")
        return float(run.passed), counted

    def _safe(self, check, *args) -> float:
        try:
            return float(check(*args))
        except Exception:  # noqa: BLE001 - a checker's failure is reward 0, never a crash
            self.stats["errors"] += 1
            return 0.0


__all__ = ["ANSWER_FORMATS", "KINDS", "graded_answer", "SandboxConfig", "SandboxUnavailable", "Verifier", "exact_match", "math_verify_reward"]
