"""Built-in verifiable tasks generated from a seed, each with several distinct correct answers
per prompt so that pass@k at large k and answer diversity mean something (docs/architecture.md).

* ``countdown``: reach a target with + - * over some of the given numbers, each used at most once.
  ``difficulty`` is the count of numbers (2..5); a target is drawn from the values reachable in
  at least ``min_solutions`` distinct ways.
* ``graph_path``: a simple path between two nodes of a small random graph. ``difficulty`` grows
  the graph; only pairs joined by at least ``min_solutions`` simple paths are asked.

Every problem is a dict {"prompt", "answer", "task", "solutions"}: ``answer`` is one reference,
``solutions`` (a sample of) the distinct correct answers, used to make SFT data and measure diversity.
"""

from __future__ import annotations

import itertools
import random
import re

OPS = "+-*"


# ------------------------------------------------------------------ countdown

def _expressions(numbers: list[int]):
    """Every left-to-right expression over an ordered subset of the numbers (length >= 2)."""
    for size in range(2, len(numbers) + 1):
        for subset in itertools.permutations(numbers, size):
            for ops in itertools.product(OPS, repeat=size - 1):
                yield "".join(str(n) + op for n, op in zip(subset, ops)) + str(subset[-1])


MAX_ATTEMPTS = 10_000


def _too_hard(task: str, settings: str):
    raise ValueError(f"{task}: no problem with {settings} found in {MAX_ATTEMPTS} draws; lower min_solutions")


def countdown_problem(rng: random.Random, difficulty: int = 3, max_number: int = 9, min_solutions: int | None = None) -> dict:
    """``min_solutions`` defaults to 3 (2 with two numbers, where a+b, a*b are all there is)."""
    if not 2 <= difficulty <= 5:
        raise ValueError(f"countdown difficulty is the count of numbers, 2..5; got {difficulty}")
    if min_solutions is None:
        min_solutions = 2 if difficulty == 2 else 3
    for _ in range(MAX_ATTEMPTS):
        numbers = sorted(rng.randint(1, max_number) for _ in range(difficulty))
        by_value: dict[int, set[str]] = {}
        for expr in _expressions(numbers):
            value = eval(expr)  # only digits and + - * ever reach here
            if 0 < value <= 99:
                by_value.setdefault(value, set()).add(expr)
        rich = sorted(v for v, exprs in by_value.items() if len(exprs) >= min_solutions)
        if rich:
            target = rng.choice(rich)
            solutions = sorted(by_value[target])
            return {"task": "countdown", "prompt": f"{' '.join(map(str, numbers))}>{target}:",
                    "answer": rng.choice(solutions), "solutions": solutions, "numbers": numbers, "target": target}
    _too_hard("countdown", f"{difficulty} numbers and {min_solutions} solutions")


COUNTDOWN_EXPRESSION = re.compile(r"(0|[1-9]\d*)([+\-*](0|[1-9]\d*))*")


def countdown_value(text: str) -> int | None:
    """The value of an expression of plain integers and + - *, or None if it is not one."""
    text = text.strip()
    return eval(text) if COUNTDOWN_EXPRESSION.fullmatch(text) else None  # the grammar admits nothing else


def countdown_answer(prompt: str, response: str) -> int | None:
    """The value of a well-formed countdown answer (an expression with an operator over the
    prompt's numbers, each used at most once), or None for what the verifier refuses before it
    compares values."""
    numbers_text, _ = prompt.rstrip(":").split(">")
    pool = sorted(int(x) for x in numbers_text.split())
    answer = response.strip()
    if not COUNTDOWN_EXPRESSION.fullmatch(answer) or not any(op in answer for op in OPS):
        return None
    for n in re.findall(r"\d+", answer):  # before evaluating: a response cannot make us multiply huge numbers
        if len(n) > 6 or int(n) not in pool:
            return None
        pool.remove(int(n))
    return countdown_value(answer)


def verify_countdown(prompt: str, response: str) -> float:
    value = countdown_answer(prompt, response)
    return float(value is not None and value == int(prompt.rstrip(":").split(">")[1]))


# ------------------------------------------------------------------ graph path

NODES = "abcdefghij"


def _simple_paths(adjacency: dict[str, set[str]], start: str, goal: str, limit: int = 200) -> list[str]:
    paths, stack = [], [(start, start)]
    while stack and len(paths) < limit:
        node, path = stack.pop()
        if node == goal:
            paths.append(path)
            continue
        for nxt in sorted(adjacency[node]):
            if nxt not in path:
                stack.append((nxt, path + nxt))
    return sorted(paths)


def graph_path_problem(rng: random.Random, difficulty: int = 2, min_solutions: int = 3) -> dict:
    if not 1 <= difficulty <= 4:
        raise ValueError(f"graph_path difficulty is 1..4; got {difficulty}")
    n_nodes = 3 + 2 * difficulty
    nodes = NODES[:n_nodes]
    for _ in range(MAX_ATTEMPTS):
        edges = {tuple(sorted(e)) for e in itertools.combinations(nodes, 2) if rng.random() < 0.45}
        adjacency = {n: set() for n in nodes}
        for a, b in edges:
            adjacency[a].add(b)
            adjacency[b].add(a)
        start, goal = rng.sample(nodes, 2)
        paths = _simple_paths(adjacency, start, goal)
        if len(paths) >= min_solutions:
            edge_text = " ".join(a + b for a, b in sorted(edges))
            return {"task": "graph_path", "prompt": f"{edge_text}|{start}{goal}:", "answer": rng.choice(paths),
                    "solutions": paths}
    _too_hard("graph_path", f"difficulty {difficulty} and {min_solutions} paths")


def graph_path_answer(prompt: str, response: str) -> str | None:
    """A well-formed path (the graph's nodes, each once, from the start to the goal), or None for
    what the verifier refuses before it checks the edges."""
    edge_text, ends = prompt.rstrip(":").split("|")
    nodes = set("".join(edge_text.split()))
    path = response.strip()
    if len(path) < 2 or len(set(path)) != len(path) or path[0] != ends[0] or path[-1] != ends[1] or set(path) - nodes:
        return None
    return path


def verify_graph_path(prompt: str, response: str) -> float:
    path = graph_path_answer(prompt, response)
    edges = {frozenset(e) for e in prompt.rstrip(":").split("|")[0].split()}
    return float(path is not None and all(frozenset(pair) in edges for pair in zip(path, path[1:])))


# ------------------------------------------------------------------ registry

TASKS = {
    "countdown": (countdown_problem, verify_countdown),
    "graph_path": (graph_path_problem, verify_graph_path),
}


def generate(task: str, n: int, seed: int, difficulty: int | None = None, **kwargs) -> list[dict]:
    """``n`` problems of a built-in task, deterministic in ``seed``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; built-in tasks: {', '.join(TASKS)}")
    make, _ = TASKS[task]
    rng = random.Random(f"{task}:{seed}")
    extra = {"difficulty": difficulty} if difficulty is not None else {}
    return [make(rng, **extra, **kwargs) for _ in range(n)]


def characters() -> str:
    """Every character a built-in prompt or answer can contain."""
    return "0123456789+-*>:| " + NODES
