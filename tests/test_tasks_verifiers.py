"""Built-in tasks, the dataset loader and the verifiers (which never crash training)."""

import json
import random
import re

import pytest

from rlvr_explore.tasks import generate, load_problems
from rlvr_explore.tasks.synthetic import verify_countdown, verify_graph_path
from rlvr_explore.train.sft import corrupt
from rlvr_explore.verifiers import Verifier, exact_match


@pytest.mark.parametrize("task,difficulty", [("countdown", 2), ("countdown", 3), ("countdown", 4), ("graph_path", 1), ("graph_path", 3)])
def test_generation_is_seeded_and_every_listed_solution_verifies(task, difficulty):
    a = generate(task, 30, seed=7, difficulty=difficulty)
    assert a == generate(task, 30, seed=7, difficulty=difficulty)
    assert a != generate(task, 30, seed=8, difficulty=difficulty)
    verify = {"countdown": verify_countdown, "graph_path": verify_graph_path}[task]
    for problem in a:
        assert len(problem["solutions"]) >= 2
        assert all(verify(problem["prompt"], s) == 1.0 for s in problem["solutions"])


def test_difficulty_grows_the_problems():
    small = generate("countdown", 20, seed=0, difficulty=2)
    large = generate("countdown", 20, seed=0, difficulty=4)
    assert max(len(p["numbers"]) for p in small) < min(len(p["numbers"]) for p in large)


def test_wrong_answers_are_rejected():
    assert verify_countdown("2 4 8>20:", "8*2+4") == 1.0
    for wrong in ("8*2+5", "8*2*4", "2*2*5", "20", "8*02+4", "", "8*2+4+", "import os", "9" * 5000 + "*" + "9" * 5000):
        assert verify_countdown("2 4 8>20:", wrong) == 0.0, wrong
    prompt = "ab bc cd ad|ad:"
    assert verify_graph_path(prompt, "ad") == verify_graph_path(prompt, "abcd") == 1.0
    for wrong in ("ac", "abca", "abd", "da", "a", ""):
        assert verify_graph_path(prompt, wrong) == 0.0, wrong


def test_corrupted_sft_attempts_are_mostly_wrong():
    rng = random.Random(0)
    problems = generate("countdown", 50, seed=1)
    wrong = sum(verify_countdown(p["prompt"], corrupt(p["answer"], "0123456789+-*", rng)) == 0 for p in problems)
    assert wrong >= 40


def test_verifier_errors_and_timeouts_are_reward_zero_and_counted():
    verifier = Verifier("builtin")
    rewards = verifier([{"task": "countdown", "prompt": "2 4 8>20:"}, {"task": "unknown", "prompt": "x"}], ["8*2+4", "1"])
    assert rewards == [1.0, 0.0] and verifier.stats["errors"] == 1


def test_exact_match():
    assert exact_match("the answer is \\boxed{ 12 }", "12") == 1.0
    assert exact_match("12.0", "12") == 1.0 and exact_match("1,000", "1000") == 1.0
    assert exact_match("13", "12") == 0.0


def test_load_problems_formats_and_errors(tmp_path):
    rows = [{"prompt": "1+1?", "answer": "\\boxed{2}"}, {"prompt": "2+2?", "answer": "4"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    problems = load_problems(tmp_path / "a.jsonl")
    assert [p["answer"] for p in problems] == ["2", "4"]
    (tmp_path / "b.json").write_text(json.dumps(rows))
    assert load_problems(tmp_path / "b.json") == problems
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    assert load_problems(tmp_path / "c.parquet") == problems
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(tmp_path / "d"))
    assert load_problems(tmp_path / "d") == problems

    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "answer": "1"}\n{"prompt": oops}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_problems(tmp_path / "bad.jsonl")
    (tmp_path / "missing.jsonl").write_text('{"question": "x", "answer": "1"}\n')
    with pytest.raises(ValueError, match=r"missing.jsonl: record 1: no 'prompt' column \(a string or a chat .* expected\); "
                                         r"the record has \['answer', 'question'\]\. If one of them holds it, map it with "
                                         r"task.fields: --set task.fields.prompt=COLUMN"):
        load_problems(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="dataset not found"):
        load_problems(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("record,message", [
    ({"prompt": 123, "answer": "1"}, "field 'prompt' must be a string or a chat (a list of {role, content} messages), got 123"),
    ({"prompt": "x", "answer": None}, "field 'answer' must be a string or a number, got None"),
    ({"prompt": "x", "answer": True}, "field 'answer' must be a string or a number, got True"),
    ({"prompt": "x"}, "no 'answer' column (a string or a number expected); the record has ['prompt']"),
    ({"prompt": "x", "tests": 5}, "field 'tests' must be Python source"),
    ({"prompt": "x", "test": "", "entry_point": "not a name"}, "field 'entry_point' must be the name"),
    ({"prompt": "x", "inputs": ["1"], "outputs": "1"}, "field 'outputs' must be a non-empty list of strings"),
    ({"prompt": "x", "inputs": ["1", "2"], "outputs": ["1"]}, "2 inputs but 1 outputs"),
    ({"prompt": "x", "tests": "", "inputs": ["1"], "outputs": ["1"]}, "has both assert tests"),
    ({"prompt": "x", "test": "def check(candidate):\n    assert candidate(1) == 2\n"}, "defines check() but there is no 'entry_point'"),
])
def test_bad_records_are_named(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "answer": "1"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=rf"bad.jsonl: record 2: .*{re.escape(message)}"):
        load_problems(path)


def test_code_records_keep_their_tests(tmp_path):
    rows = [{"prompt": "def f(x):\n", "test": "def check(c):\n    assert c(1) == 2\n", "entry_point": "f",
             "canonical_solution": "    return x + 1\n", "task_id": "t/0"},
            {"prompt": "Add two numbers.", "inputs": ["1 2\n"], "outputs": ["3\n"]}]
    (tmp_path / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    humaneval, stdio = load_problems(tmp_path / "code.jsonl", verifier="code")
    assert humaneval == {"task": "code", "prompt": "def f(x):\n", "tests": rows[0]["test"], "entry_point": "f",
                         "canonical_solution": "    return x + 1\n", "answer": "    return x + 1\n"}
    assert stdio == {"task": "code", "prompt": "Add two numbers.", "inputs": ["1 2\n"], "outputs": ["3\n"]}
    assert Verifier("code", timeout_s=5)([humaneval, stdio], [humaneval["canonical_solution"], "print(sum(map(int, input().split())))"]) == [1.0, 1.0]
    (tmp_path / "math.jsonl").write_text(json.dumps({"prompt": "1+1", "answer": "2"}) + "\n")
    with pytest.raises(ValueError, match=r"math.jsonl: record 1: the code verifier needs 'tests'"):
        load_problems(tmp_path / "math.jsonl", verifier="code")


def test_undecodable_file_is_named(tmp_path):
    (tmp_path / "latin.jsonl").write_bytes(b'{"prompt": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(ValueError, match=r"latin.jsonl: not UTF-8 text"):
        load_problems(tmp_path / "latin.jsonl")


def test_columns_map_onto_our_fields(tmp_path):
    rows = [{"question": "1+1?", "solution": "#### 2"}, {"question": "2+2?", "solution": "4"}]
    (tmp_path / "gsm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = load_problems(tmp_path / "gsm.jsonl", fields={"prompt": "question", "answer": "solution"})
    assert [(p["prompt"], p["answer"]) for p in problems] == [("1+1?", "#### 2"), ("2+2?", "4")]
    with pytest.raises(ValueError, match=r"gsm.jsonl: record 1: no column \['query'\] \(task.fields maps to it\)"):
        load_problems(tmp_path / "gsm.jsonl", fields={"prompt": "query"})
    with pytest.raises(ValueError, match=r"task.fields: unknown field\(s\) \['promt'\]"):
        load_problems(tmp_path / "gsm.jsonl", fields={"promt": "question"})


def test_chat_prompts_go_through_the_chat_template(tmp_path):
    from rlvr_explore.models import char_tokenizer, tiny_gpt2
    from rlvr_explore.train.runtime import fit_prompts

    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1?"}]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"prompt": chat, "answer": "2"}) + "\n")
    (problem,) = load_problems(tmp_path / "chat.jsonl")
    assert problem["prompt"] == chat
    tokenizer = char_tokenizer("".join(chr(c) for c in range(32, 127)) + "\n")
    model = tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=256)
    with pytest.raises(ValueError, match="is a chat, but the tokenizer has no chat template"):
        fit_prompts([problem], tokenizer, model, 8, False, "chat.jsonl")
    tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    (rendered,) = fit_prompts([problem], tokenizer, model, 8, False, "chat.jsonl")
    assert rendered["prompt"] == "<system>be brief\n<user>1+1?\n<assistant>" and rendered["messages"] == chat
    with pytest.raises(ValueError, match=r"field 'prompt' must be a string or a chat"):
        (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": [{"role": "user"}], "answer": "2"}) + "\n")
        load_problems(tmp_path / "bad.jsonl")
