"""The code reward: which program a response stands for, and how a problem's tests judge it.

A problem carries either assert tests (``tests``, HumanEval's ``check`` with an ``entry_point``)
or stdin/stdout pairs (``inputs``/``outputs``); ``tasks.data.load_problems`` reads both forms.
"""

from __future__ import annotations

import re

from rlvr_explore.metrics.answers import CODE_BLOCK
from rlvr_explore.tasks.data import DEFINES_CHECK

from .sandbox import ProgramRun, SandboxConfig, run_program, same_output

IMPORT_LINE = re.compile(r"^(?:import|from)\s.*$", re.MULTILINE)


def defines_entry_point(problem: dict) -> bool:
    """Whether the prompt is code that defines the entry point (HumanEval's form), not prose."""
    entry_point = problem.get("entry_point")
    return bool(entry_point) and bool(re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", problem.get("prompt", ""),
                                                re.MULTILINE))


def program_of(problem: dict, response: str) -> str:
    """The program a response stands for.

    A fenced block is a whole program (the prompt's own import lines go first, so a model that
    repeats the signature without ``from typing import List`` is not failed for it). Without a
    fence, a HumanEval-style prompt (one that defines the entry point) is continued by the
    response, as in HumanEval's own harness; otherwise the response is the program.
    """
    blocks = CODE_BLOCK.findall(response)
    prompt = problem.get("prompt", "")
    defines_entry = defines_entry_point(problem)
    if blocks:
        imports = "\n".join(IMPORT_LINE.findall(prompt))
        return f"{imports}\n{blocks[-1]}" if defines_entry and imports else blocks[-1]
    return prompt + response if defines_entry else response


def judge(problem: dict, response: str, config: SandboxConfig, timeout_s: float) -> ProgramRun:
    """Run the response's program against the problem's tests; ``passed`` is the verdict.

    Assert tests run in one sandbox; stdin/stdout tests run one sandbox per input, stopping at the
    first failure (the reward is all-or-nothing), and ``timeout_s`` bounds each input.
    """
    program = program_of(problem, response)
    if "tests" in problem and not problem.get("entry_point") and DEFINES_CHECK.search(problem["tests"]):
        raise ValueError("the tests define check() but the problem has no entry_point: nothing would call it")
    if "tests" in problem:
        return run_program(program, config, timeout_s, tests=problem["tests"], entry_point=problem.get("entry_point"),
                           prompt=problem["prompt"] if defines_entry_point(problem) else "")
    if "inputs" not in problem:
        raise KeyError("a code problem needs 'tests' (asserts) or 'inputs' and 'outputs' (stdin/stdout)")
    run = ProgramRun(passed=False, returncode=None)
    for given, expected in zip(problem["inputs"], problem["outputs"], strict=True):
        run = run_program(program, config, timeout_s, stdin=given)
        run.passed = run.passed and same_output(run.stdout, expected)
        if not run.passed:
            return run
    return run
