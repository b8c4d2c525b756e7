"""Reward functions. :class:`Verifier` turns (problem, response) pairs into rewards and never
raises: an error or a timeout in a checker is reward 0 and is counted in its statistics.

* ``builtin``: the checker of a built-in synthetic task (``rlvr_explore.tasks``);
* ``exact``: string match after normalising spaces, or numeric equality within 1e-6;
* ``math``: the `math-verify` package in a process pool with a per-answer timeout (it relies on
  signals, which only work in a process's main thread);
* ``code``: the response's code and the problem's tests in a sandboxed subprocess (``sandbox``).
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass, field

from rlvr_explore.metrics.answers import extract_boxed
from rlvr_explore.tasks.synthetic import TASKS

from .sandbox import run_code_tests


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def exact_match(response: str, reference: str) -> float:
    """1 if the (boxed, when present) answer equals the reference as text or as a number."""
    answer = extract_boxed(response) or response
    a, b = " ".join(answer.split()), " ".join(str(reference).split())
    if a == b:
        return 1.0
    x, y = _number(a), _number(b)
    return float(x is not None and y is not None and abs(x - y) <= 1e-6 * max(1.0, abs(y)))


def math_verify_reward(response: str, reference: str) -> float:
    """math-verify's equivalence of the response's last answer and the reference."""
    from math_verify import parse, verify

    gold = parse(reference if "\\boxed" in reference or "$" in reference else f"${reference}$")
    return float(verify(gold, parse(response)))


def _check(kind: str, problem: dict, response: str) -> float:
    if kind == "builtin":
        return TASKS[problem["task"]][1](problem["prompt"], response)
    if kind == "exact":
        return exact_match(response, problem["answer"])
    if kind == "math":
        return math_verify_reward(response, problem["answer"])
    if kind == "code":
        return run_code_tests(response, problem["tests"])
    raise ValueError(f"unknown verifier {kind!r}; use builtin, exact, math or code")


@dataclass
class Verifier:
    """Rewards for batches of responses; ``stats`` counts errors and timeouts since creation."""

    kind: str = "builtin"
    timeout_s: float = 5.0
    workers: int = 2
    stats: dict = field(default_factory=lambda: {"calls": 0, "errors": 0, "timeouts": 0})

    def __post_init__(self):
        if self.kind not in ("builtin", "exact", "math", "code"):
            raise ValueError(f"unknown verifier {self.kind!r}; use builtin, exact, math or code")
        self._pool = None

    def _in_pool(self) -> bool:
        return self.kind in ("math",)

    def _get_pool(self):
        if self._pool is None:
            self._pool = mp.get_context("spawn").Pool(self.workers)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __call__(self, problems: list[dict], responses: list[str]) -> list[float]:
        if len(problems) != len(responses):
            raise ValueError(f"{len(problems)} problems for {len(responses)} responses")
        self.stats["calls"] += len(responses)
        if not self._in_pool():
            return [self._safe(problem, response) for problem, response in zip(problems, responses)]
        pending = [self._get_pool().apply_async(_check, (self.kind, p, r)) for p, r in zip(problems, responses)]
        rewards = []
        for job in pending:
            try:
                rewards.append(float(job.get(timeout=self.timeout_s)))
            except mp.TimeoutError:
                self.stats["timeouts"] += 1
                rewards.append(0.0)
            except Exception:  # noqa: BLE001 - a checker's failure is reward 0, never a crash
                self.stats["errors"] += 1
                rewards.append(0.0)
        if self.stats["timeouts"] and any(not job.ready() for job in pending):
            self.close()  # a worker is stuck: start a fresh pool next time
        return rewards

    def _safe(self, problem: dict, response: str) -> float:
        try:
            return float(_check(self.kind, problem, response))
        except Exception:  # noqa: BLE001 - a checker's failure is reward 0, never a crash
            self.stats["errors"] += 1
            return 0.0
