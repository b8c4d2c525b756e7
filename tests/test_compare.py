"""`rlvr-explore compare`: the two-level interval against brute force, and the command end to end
on a tiny comparison (two seeds, two methods), run twice: the second run reuses every run."""

import json

import numpy as np
import yaml

from rlvr_explore.cli import main
from rlvr_explore.compare import paired_difference
from rlvr_explore.metrics import pass_at_k


def test_paired_difference_mean_is_exact_and_constant_differences_have_no_width():
    rng = np.random.default_rng(0)
    method, baseline = rng.integers(0, 9, (3, 20)), rng.integers(0, 9, (3, 20))
    mean, low, high = paired_difference(method, baseline, 8, 2)
    assert np.isclose(mean, (pass_at_k(8, method, 2) - pass_at_k(8, baseline, 2)).mean())
    assert low <= mean <= high
    same = np.full((3, 20), 4)
    assert paired_difference(same + 2, same, 8, 1) == (0.25, 0.25, 0.25)


def test_paired_difference_interval_covers_the_spread_between_seeds():
    # every problem of seed 0 differs by 0, every problem of seed 1 by 0.5: a bootstrap over
    # problems alone would give no width; over seeds, the interval reaches both ends
    method = np.array([[4] * 10, [8] * 10])
    baseline = np.array([[4] * 10, [4] * 10])
    mean, low, high = paired_difference(method, baseline, 8, 1)
    assert mean == 0.25 and low == 0.0 and high == 0.5


def test_compare_trains_every_seed_then_reuses_the_runs(tmp_path, capsys):
    spec = {
        "config": {"run": {"threads": 1}, "model": {"n_layer": 1, "n_head": 2, "n_embd": 16},
                   "task": {"name": "countdown", "difficulty": 2, "train_size": 32, "eval_size": 6},
                   "sft": {"steps": 5, "batch_size": 8}, "rollout": {"group_size": 4, "prompts_per_step": 2,
                                                                     "max_new_tokens": 6},
                   "algorithm": {"mini_batch_size": 8, "micro_batch_size": 8}, "train": {"steps": 2},
                   "eval": {"n_samples": 8}},
        "runs": {"grpo": {"algorithm": {"method": "grpo"}}, "casp": {"algorithm": {"method": "casp"}}},
    }
    config = tmp_path / "cmp.yaml"
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "out"
    argv = ["compare", "--config", str(config), "--seeds", "0", "1", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["baseline"] == "grpo" and summary["problems_per_seed"] == 6
    for name in ("casp", "base"):
        for k in ("pass@1", "pass@8"):
            v = summary["verdicts"][name][k]
            assert v["ci_low"] <= v["difference"] <= v["ci_high"]
    first_output = capsys.readouterr().out
    assert "casp vs grpo: pass@1" in first_output
    html = (out / "comparison.html").read_text()
    assert html.index("Verdicts") < html.index("pass@k, mean")
    evals = sorted(out.glob("seed*/*/eval/step_*.json"))
    stamps = [p.stat().st_mtime_ns for p in evals]
    assert main(argv) == 0
    assert "finished already" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in evals] == stamps  # nothing trained or evaluated again
    assert json.loads((out / "comparison.json").read_text()) == summary

    parallel = tmp_path / "parallel"  # two seeds at once, in their own processes: the same results
    assert main(["compare", "--config", str(config), "--seeds", "0", "1", "--out", str(parallel), "--jobs", "2"]) == 0
    assert json.loads((parallel / "comparison.json").read_text()) == summary

    spec["config"]["sft"]["steps"] = 6  # another base policy: refused, not silently reused
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(argv) == 2
    assert "sft.steps: 5 -> 6" in capsys.readouterr().err
