"""Assert tests against a policy that forges: each hostile program below is paid 0 with a wrong
answer, and 1 with the same hostile code around the right answer (the attack alone never decides).

The tests run in the trusted checker, a process that holds no program code; the program only
serves calls from the sandbox, and its replies are decoded into exact built-in values. These run
the real bubblewrap sandbox."""

import pytest

from rlvr_explore.verifiers import Verifier
from rlvr_explore.verifiers.plain import NotPlain, decode, dumps, encode, loads

# A HumanEval-form problem: a trusted helper in the prompt, the entry point, and check(candidate)
PROMPT = '''import math


def poly(xs, x):
    """Evaluates a polynomial with coefficients xs at x."""
    return sum(c * x ** i for i, c in enumerate(xs))


def add_one(x):
    """Return x + 1.
    >>> add_one(1)
    2
    """
'''
TESTS = {
    "equality": "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(41) == 42\n",
    "abs": "def check(candidate):\n    assert abs(candidate(1) - 2) < 1e-9\n    assert abs(candidate(-3) + 2) < 1e-9\n",
    "round": "def check(candidate):\n    assert round(candidate(0.25), 2) == 1.25\n",
    "helper": "def check(candidate):\n    assert poly([1, 1], candidate(0)) == 2\n    assert poly([0, 2], candidate(2)) == 6\n",
    "by name": "def check(candidate):\n    assert add_one(1) == 2\n    assert candidate(2) == 3\n",
}
RIGHT, WRONG = "    return x + 1\n", "    return x\n"

# The program continues the prompt: BODY is add_one's body (right or wrong), then the attack at
# module level. FORGE wraps add_one so that the attack acts only where the answer is wrong.
FORGE = "add_one_ = add_one\ndef add_one(x):\n    r = add_one_(x)\n    return r if r == x + 1 else {}\n"

# name -> (tests, the hostile program)
ATTACKS = {
    "permissive __eq__": ("equality", "BODY" + FORGE.format("type('A', (), {'__eq__': lambda s, o: True})()")),
    "unittest.mock.ANY": ("equality", "BODY\nfrom unittest.mock import ANY\n" + FORGE.format("ANY")),
    "int subclass that equals all": ("equality", "BODY\nclass Yes(int):\n    __eq__ = lambda s, o: True\n"
                                                 "    __hash__ = int.__hash__\n" + FORGE.format("Yes(r)")),
    "str subclass that equals all": ("equality", "BODY\nclass S(str):\n    __eq__ = lambda s, o: True\n"
                                                 + FORGE.format("S()")),
    "shadowed abs": ("abs", "BODY\nabs = lambda value: 0\n"),
    "shadowed round": ("round", "BODY\nround = lambda value, digits=0: 1.25\n"),
    "builtins module patched": ("abs", "BODY\nimport builtins\nbuiltins.abs = lambda value: 0\n"),
    "helper redefined": ("helper", "BODY\ndef poly(xs, x):\n    return 2 if xs == [1, 1] else 6\n"),
    "entry point by name": ("by name", "BODY\nimport builtins\nbuiltins.add_one = lambda x: x + 1\n"),
    "frames: the harness's config": ("equality", "BODY\nimport sys\nframe = sys._getframe()\nwhile frame:\n"
                                                 "    for value in list(frame.f_locals.values()):\n"
                                                 "        if isinstance(value, dict) and 'entry_point' in value:\n"
                                                 "            value['entry_point'] = None\n"
                                                 "    frame = frame.f_back\n"),
    "gc: every dict naming an entry point": ("equality", "BODY\nimport gc\nfor o in gc.get_objects():\n"
                                                         "    if isinstance(o, dict) and 'entry_point' in o:\n"
                                                         "        o['entry_point'] = None\n"),
    "audit hook reads the tests": ("equality", "BODY\nimport sys, re\nseen = []\n"
                                               "sys.addaudithook(lambda e, a: seen.append(a[0]) if e == 'compile' and a and "
                                               "isinstance(a[0], (str, bytes)) else None)\n"
                                               "def expected(x):\n    for text in seen:\n"
                                               "        m = re.search(r'candidate\\(%d\\) == (\\d+)' % x, str(text))\n"
                                               "        if m: return int(m.group(1))\n    return -1\n"
                                               + FORGE.format("expected(x)")),
    "bytecode of check": ("equality", "BODY\nimport sys\ndef expected(x):\n    frame = sys._getframe(1)\n"
                                      "    while frame:\n        if frame.f_code.co_name == 'check':\n"
                                      "            numbers = [c for c in frame.f_code.co_consts if isinstance(c, int)]\n"
                                      "            return numbers[numbers.index(x) + 1]\n"
                                      "        frame = frame.f_back\n    return -1\n" + FORGE.format("expected(x)")),
    "trace hook that skips the asserts": ("equality", "BODY\nimport sys, threading\n"
                                                      "def tracer(frame, event, arg):\n"
                                                      "    if frame.f_code.co_name == 'check' and event == 'line':\n"
                                                      "        frame.f_lineno = frame.f_code.co_firstlineno + 3\n"
                                                      "    return tracer\nsys.settrace(tracer)\nthreading.settrace(tracer)\n"
                                                      "sys.settrace = threading.settrace = lambda f: None\n"),
    "verdict words on every fd": ("equality", "BODY\nimport os\ndef forge():\n    for fd in range(3, 64):\n"
                                              "        for word in (b'pass', b'1' * 32):\n"
                                              "            try: os.write(fd, word)\n            except OSError: pass\n"
                                              "    return -1\n" + FORGE.format("forge()")),
}


@pytest.fixture(scope="module")
def verifier():
    return Verifier("code", timeout_s=5, workers=2)


def program(attack: str, body: str) -> str:
    return attack.replace("BODY", body)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_forging_program_is_paid_only_for_the_right_answer(verifier, name):
    tests, attack = ATTACKS[name]
    problem = {"prompt": PROMPT, "tests": TESTS[tests], "entry_point": "add_one"}
    before = verifier.stats["unplain_results"]
    wrong, right = verifier([problem, problem], [program(attack, WRONG), program(attack, RIGHT)])
    assert (wrong, right) == (0.0, 1.0), name
    forges_a_value = name in ("permissive __eq__", "unittest.mock.ANY", "int subclass that equals all",
                              "str subclass that equals all")
    assert verifier.stats["unplain_results"] - before == forges_a_value  # counted where the forge was a value


def test_every_test_passes_honest_code_and_fails_a_wrong_answer(verifier):
    problems = [{"prompt": PROMPT, "tests": tests, "entry_point": "add_one"} for tests in TESTS.values()]
    assert verifier(problems, [RIGHT] * len(problems)) == [1.0] * len(problems)
    assert verifier(problems, [WRONG] * len(problems)) == [0.0] * len(problems)


def test_the_protocol_carries_mutation_iterators_and_exceptions(verifier):
    prompt = "def shuffle_in_place(xs):\n    '''Sort xs in place and return nothing.'''\n"
    tests = ("def check(candidate):\n    xs = [3, 1, 2]\n    assert candidate(xs) is None and xs == [1, 2, 3]\n"
             "    d = {}\n    candidate.__call__  # a proxy is a plain function\n")
    sorts = {"prompt": prompt, "tests": tests, "entry_point": "shuffle_in_place"}
    iterate = {"prompt": "def upto(n):\n    '''Yield 0..n-1.'''\n",
               "tests": "def check(candidate):\n    assert list(candidate(3)) == [0, 1, 2]\n", "entry_point": "upto"}
    raises = {"prompt": "class Negative(Exception):\n    pass\n\n\ndef root(x):\n    '''sqrt, Negative below 0.'''\n",
              "tests": "def check(candidate):\n    assert candidate(4.0) == 2.0\n    try:\n        candidate(-1.0)\n"
                       "    except Negative:\n        pass\n    else:\n        assert False\n"
                       "    try:\n        candidate('x')\n    except TypeError:\n        pass\n    else:\n        assert False\n"
                       "    try:\n        candidate(None)\n    except KeyError:\n        pass\n    else:\n        assert False\n",
              "entry_point": "root"}
    rewards = verifier([sorts, iterate, raises],
                       ["    xs.sort()\n", "    yield from range(n)\n",
                        "    if x is None:\n        raise KeyError(x)\n    if x < 0:\n        raise Negative(x)\n"
                        "    return x ** 0.5\n"])
    assert rewards == [1.0, 1.0, 1.0]


def test_a_call_the_protocol_cannot_carry_is_reported_not_paid(verifier):
    problem = {"prompt": "def apply(f, x):\n    '''f(x)'''\n",
               "tests": "def check(candidate):\n    assert candidate(lambda v: v + 1, 1) == 2\n", "entry_point": "apply"}
    before = verifier.stats["unsupported_calls"]
    assert verifier([problem], ["    return f(x)\n"]) == [0.0]
    assert verifier.stats["unsupported_calls"] == before + 1


PLAIN_VALUES = [None, True, False, 0, -7, 2 ** 200, -(2 ** 70), 0.1, -0.0, float("inf"), float("-inf"), 1e-310,
                complex(1.5, -2), "", "héllo\n\x00", b"\x00\xff", [1, [2, (3, {4})]], (1,), (), set(), frozenset({1, 2}),
                {1: "a", (2, 3): [4], "k": {"nested": None}, None: 0.5, frozenset(): b""}]


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=repr)
def test_plain_values_cross_exactly_with_their_types(value):
    back = loads(dumps(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, float):
        assert repr(back) == repr(value)  # -0.0 and the last bit survive
    if isinstance(value, dict):
        assert all(type(a) is type(b) for a, b in zip(back, value))


def test_nan_crosses_and_iterators_come_back_as_iterators():
    assert loads(dumps(float("nan"))) != loads(dumps(float("nan")))
    assert list(loads(dumps(iter([1, 2])))) == [1, 2]


@pytest.mark.parametrize("value", [type("A", (), {})(), type("S", (str,), {})("x"), type("I", (int,), {})(1),
                                   lambda: 0, object()], ids=lambda v: type(v).__name__)
def test_what_is_not_plain_does_not_encode(value):
    with pytest.raises(NotPlain):
        encode(value)


@pytest.mark.parametrize("tree", [["x"], ["i", 5], ["s", 5], ["d", [[["l", []], ["n"]]]], ["l", "abc"], "n", [],
                                  ["f", 1.0], ["b", 1], ["l", [["n"]] * 2 + [["q"]]]], ids=repr)
def test_the_decoder_refuses_what_the_encoder_never_sends(tree):
    with pytest.raises(NotPlain):
        decode(tree)


def test_the_decoder_caps_depth_and_size():
    deep = ["n"]
    for _ in range(200):
        deep = ["l", [deep]]
    with pytest.raises(NotPlain, match="deeper"):
        decode(deep)
    with pytest.raises(NotPlain):
        loads(b"[" * 100_000 + b"]" * 100_000)


def test_tests_or_prompts_that_do_not_run_are_errors_not_silent_zeros(verifier, caplog):
    before = verifier.stats["errors"]
    broken_tests = {"prompt": PROMPT, "tests": "def check(candidate)\n    assert candidate(1) == 2\n",
                    "entry_point": "add_one"}
    # a fenced response is the whole program, so only the checker runs this prompt
    broken_prompt = {"prompt": "raise RuntimeError('not a module')\n\ndef add_one(x):\n", "tests": TESTS["equality"],
                     "entry_point": "add_one"}
    fenced = "```python\ndef add_one(x):\n    return x + 1\n```"
    assert verifier([broken_tests, broken_prompt], [RIGHT, fenced]) == [0.0, 0.0]
    assert verifier.stats["errors"] == before + 2
    assert "tests do not compile" in caplog.text and "prompt does not run on its own" in caplog.text
