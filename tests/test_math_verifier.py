"""The math reward against hostile answers, a cold start and a stuck worker: no false zeros, no
false ones, every answer judged within its bound."""

import sys
import time

import pytest

from rlvr_explore.verifiers import Verifier
from rlvr_explore.verifiers.math_pool import WORKER


@pytest.fixture(scope="module")
def verifier():
    verifier = Verifier("math", timeout_s=5, workers=2)
    yield verifier
    verifier.close()


def test_right_and_wrong_answers(verifier):
    problems = [{"answer": "\\frac{1}{2}"}, {"answer": "3"}, {"answer": "2"}, {"answer": "x^2 + 1"}]
    responses = ["so \\boxed{0.5}", "\\boxed{4}", "The answer is $\\boxed{2}$.", "\\boxed{1 + x^2}"]
    assert verifier(problems, responses) == [1.0, 0.0, 1.0, 1.0]


HOSTILE = {
    "tower of exponents": "\\boxed{9^{9^{9^{9^{9^{9}}}}}}",
    "huge power": "\\boxed{10^{10^{8}}}",
    "10,000 nested parentheses": "\\boxed{" + "(" * 10000 + "1" + ")" * 10000 + "}",
    "(10^{100})!": "\\boxed{(10^{100})!}",
    "300-deep frac": "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}",
    "multi-megabyte string": "\\boxed{" + "1+" * 2_000_000 + "1}",
    "unclosed boxed": "\\boxed{" + "2" * 100,
    "invalid unicode": "\\boxed{\udc80\ud800}",
    "100,000 braces": "\\boxed{" + "{" * 100000 + "}" * 100000 + "}",
    "sum to 10^9": "\\boxed{\\sum_{k=1}^{10^{9}} k}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_answers_get_zero_within_the_bound_and_the_next_answer_still_counts(verifier, name):
    started = time.monotonic()
    rewards = verifier([{"answer": "2"}, {"answer": "2"}], [HOSTILE[name], "\\boxed{2}"])
    assert rewards == [0.0, 1.0]
    assert time.monotonic() - started < 5 + 5  # the timeout, plus a worker's replacement start-up


def test_start_up_is_not_charged_to_the_answers():
    # a 0.3 s timeout is shorter than a worker's start-up (imports): a cold pool must still pay 1
    verifier = Verifier("math", timeout_s=0.3, workers=2)
    try:
        assert verifier([{"answer": "2"}] * 4, ["\\boxed{2}"] * 4) == [1.0] * 4
        assert verifier.stats["timeouts"] == 0
    finally:
        verifier.close()


def test_a_timeout_replaces_only_the_stuck_worker():
    verifier = Verifier("math", timeout_s=0.3, workers=2)
    try:
        verifier([{"answer": "1"}], ["\\boxed{1}"])  # warm
        pids = {w.process.pid for w in verifier._math.workers}
        slow = "\\boxed{10^{10^{8}}}"  # about 2 s of big-integer arithmetic: past 0.3 s
        rewards = verifier([{"answer": "2"}] * 6, [slow] + ["\\boxed{2}"] * 5)
        assert rewards == [0.0] + [1.0] * 5
        assert verifier.stats["timeouts"] == 1 and verifier.stats["worker_restarts"] == 1
        assert len(pids & {w.process.pid for w in verifier._math.workers}) == 1  # the other worker kept going
    finally:
        verifier.close()


def test_workers_import_math_verify_only():
    import subprocess

    probe = ("import runpy, sys; sys.argv = ['w', '5', '4096']; sys.stdin = open('/dev/null'); "
             f"runpy.run_path({str(WORKER)!r}, run_name='__main__'); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rlvr_explore', 'numpy')), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ready"
    assert done.stderr.strip().splitlines()[-1] == "[]"



def test_spraying_answers_earns_nothing(verifier):
    sprays = ["\\boxed{1}, \\boxed{2}, \\boxed{3}", "\\boxed{5} \\boxed{2}", "\\boxed{\\{1,2,3,4\\}}", "\\boxed{1,2,3}",
              "\\boxed{2 \\text{ or } 3}", "\\boxed{\\pm 2}", "\\boxed{x \\in [1, 3]}", "x = 2 and \\boxed{7}"]
    assert verifier([{"answer": "2"}] * len(sprays), sprays) == [0.0] * len(sprays)


ANSWERS = {  # response: (graded text, extraction) in the formats boxed, last_number, full
    "xq 5 zz": [(None, "none"), ("5", "last_number"), ("xq 5 zz", "full")],
    "so 3 then \\boxed{5}": [("5", "boxed")] * 3,
    "\\boxed{5} or \\boxed{2}": [(None, "ambiguous")] * 3,
    "\\boxed{5}, that is \\boxed{5}": [("5", "boxed")] * 3,
    "7 apples, then -12.5 left": [(None, "none"), ("-12.5", "last_number"), ("7 apples, then -12.5 left", "full")],
    "no number here": [(None, "none"), (None, "none"), ("no number here", "full")],
}


@pytest.mark.parametrize("response", sorted(ANSWERS))
def test_each_answer_format_extracts_what_it_says(response):
    from rlvr_explore.verifiers import ANSWER_FORMATS, graded_answer

    assert [graded_answer(response, f) for f in ANSWER_FORMATS] == ANSWERS[response]


@pytest.mark.parametrize("kind", ["math", "exact"])
def test_a_bare_number_is_not_an_answer_unless_the_format_is_lenient_and_extractions_are_counted(kind):
    responses = ["xq 5 zz", "\\boxed{5}", "\\boxed{4}", "zz", "5 is it \\boxed{5} or \\boxed{6}"]
    expected = {"boxed": [0.0, 1.0, 0.0, 0.0, 0.0], "last_number": [1.0, 1.0, 0.0, 0.0, 0.0],
                "full": [1.0, 1.0, 0.0, 0.0, 0.0]}
    counted = {"boxed": {"answers_boxed": 2, "answers_none": 2, "answers_ambiguous": 1},
               "last_number": {"answers_boxed": 2, "answers_last_number": 1, "answers_none": 1, "answers_ambiguous": 1},
               "full": {"answers_boxed": 2, "answers_full": 2, "answers_ambiguous": 1}}
    for answer_format, rewards in expected.items():
        verifier = Verifier(kind, timeout_s=5, workers=1, answer_format=answer_format)
        try:
            if kind == "exact" and answer_format == "full":
                rewards = [0.0, 1.0, 0.0, 0.0, 0.0]  # exact compares the whole text, which is not '5'
            assert verifier([{"answer": "5"}] * len(responses), responses) == rewards, answer_format
            found = {k: v for k, v in verifier.stats.items() if k.startswith("answers_") and v}
            assert found == counted[answer_format], answer_format
        finally:
            verifier.close()


def test_sft_targets_are_boxed_when_the_verifier_grades_boxed_answers():
    import random

    from rlvr_explore.train.config import load_config
    from rlvr_explore.train.sft import sft_examples

    problems = [{"task": "math", "prompt": "1+1=", "answer": "2"}]
    for answer_format, target in (("boxed", "\\boxed{2}"), ("last_number", "2")):
        cfg = load_config(None, ["task.verifier=math", f"task.answer_format={answer_format}", "sft.incorrect_fraction=0"])
        assert sft_examples(problems, cfg, random.Random(0)) == [("1+1=", target)]
