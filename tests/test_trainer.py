"""The trainer end to end on tiny sizes: every loss trains, checkpoints load with plain
transformers, --resume continues exactly, SPS, RFT, dynamic sampling and the report run."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TINY
from rlvr_explore import losses
from rlvr_explore.train.rft import rule_filter, run_rft
from rlvr_explore.train.rl import RLTrainer
from rlvr_explore.train.checkpoints import RunDirectoryError, list_checkpoints
from rlvr_explore.train.runtime import read_metrics


@pytest.mark.parametrize("method", sorted(losses.LOSSES))
def test_every_loss_trains_a_few_steps(tiny_config, method):
    cfg = tiny_config(f"algorithm.method={method}", "algorithm.kl_coef=0.01", "algorithm.entropy_coeff=0.001")
    trainer = RLTrainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.run()
    moved = sum(float((p.detach() - b).abs().sum()) for p, b in zip(trainer.model.parameters(), before))
    records = [r for r in read_metrics(cfg.run.out_dir) if r["kind"] == "train"]
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["method"] == method and "lambda1" in r and "loss" in r for r in records)
    # a loss whose tokens are all filtered (e.g. psr with no correct sample) may leave the weights;
    # the entropy bonus and KL still move them
    assert moved > 0


def test_saved_policy_loads_with_plain_transformers(tiny_config):
    cfg = tiny_config()
    RLTrainer(cfg).run()
    path = f"{cfg.run.out_dir}/policy"
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer("2 4>6:", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == len(tokenizer)
    assert ids[0, 0] == tokenizer.bos_token_id and tokenizer.decode(ids[0], skip_special_tokens=True) == "2 4>6:"


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_continues_exactly_where_the_checkpoint_left(tiny_config, tmp_path):
    straight = tiny_config("train.steps=4", "train.save_every=2", f"run.out_dir={tmp_path / 'straight'}")
    reference = RLTrainer(straight)
    reference.run()

    interrupted = tiny_config("train.steps=2", "train.save_every=2", f"run.out_dir={tmp_path / 'resumed'}")
    RLTrainer(interrupted).run()  # stops after the step-2 checkpoint, like a killed run
    continued = tiny_config("train.steps=4", "train.save_every=2", f"run.out_dir={tmp_path / 'resumed'}")
    with pytest.raises(RunDirectoryError, match=r"settings differ from the run's own .*train.steps: 2 -> 4.*--accept-changes"):
        RLTrainer(continued, resume=True)
    resumed = RLTrainer(continued, resume=True, accept_changes=True)
    assert resumed.step == 2
    resumed.run()
    assert torch.equal(_weights(resumed.model), _weights(reference.model))
    steps = [r["step"] for r in read_metrics(continued.run.out_dir) if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]
    assert [p.name for p in list_checkpoints(resumed.out)] == ["step_000002", "step_000004"]


def test_resume_of_an_empty_directory_starts_a_new_run(tiny_config, caplog):
    with caplog.at_level("WARNING"):
        trainer = RLTrainer(tiny_config(), resume=True)
    assert trainer.step == 0 and "no run to resume there; starting a new one" in caplog.text


def test_killed_run_resumes_from_the_cli(tiny_config, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "rlvr_explore", "train", "--set", *TINY,
            f"run.out_dir={out}", "train.steps=30", "train.save_every=1"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not list_checkpoints(out):
        time.sleep(0.05)
    process.kill()
    process.wait()
    saved = list_checkpoints(out)
    assert saved, "the run wrote no checkpoint before it was killed"
    last = int(saved[-1].name.split("_")[1])
    done = subprocess.run([*args[:-2], "train.steps=" + str(last + 2), "train.save_every=1", "--resume", "--accept-changes"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [r["step"] for r in read_metrics(out) if r["kind"] == "train"]
    assert steps == list(range(1, last + 3))


def test_sps_phase_and_warmup_switch(tiny_config):
    cfg = tiny_config("train.steps=3", "sps.enabled=true", "sps.every=2", "sps.keep_per_prompt=2",
                      "algorithm.method=casp", "algorithm.warmup_method=grpo", "algorithm.warmup_method_steps=1",
                      "algorithm.loss={alpha: 0.1, lam: 1.2}")
    RLTrainer(cfg).run()
    records = [r for r in read_metrics(cfg.run.out_dir) if r["kind"] == "train"]
    assert [r["method"] for r in records] == ["grpo", "casp", "casp"]
    assert [("irl_demos" in r) for r in records] == [False, True, False]
    assert records[1]["irl_demos"] == 4 * 2  # k = 2 of each prompt's group, 4 prompts


class StubVerifier:
    """Rewards by position: ``informative`` makes every other group of 4 alternate 1, 0."""

    def __init__(self, informative: bool):
        self.informative = informative
        self.stats = {"calls": 0, "errors": 0, "timeouts": 0}

    def __call__(self, problems, responses):
        return [float(self.informative and (i // 4) % 2 == 1 and i % 2 == 0) for i in range(len(responses))]

    def close(self):
        pass


def test_dynamic_sampling_keeps_informative_groups_and_refills(tiny_config):
    trainer = RLTrainer(tiny_config("algorithm.dynamic_sampling=true", "algorithm.max_resample=3"))
    trainer.verifier = StubVerifier(informative=True)
    rollout, problems, rewards, group_ids, stats = trainer.collect()
    assert stats["zero_variance_groups"] == 0.5 and stats["sampling_rounds"] == 2
    assert len(rollout.texts) == len(problems) == len(rewards) == 16  # prompts_per_step x G, refilled
    for g in group_ids.unique():
        assert rewards[group_ids == g].std() > 0


def test_dynamic_sampling_skips_a_step_with_no_informative_group(tiny_config):
    cfg = tiny_config("algorithm.dynamic_sampling=true", "algorithm.max_resample=1", "train.steps=1")
    trainer = RLTrainer(cfg)
    trainer.verifier = StubVerifier(informative=False)
    record = trainer.train_step()
    assert record == {"zero_variance_groups": 1.0, "sampling_rounds": 2, "skipped": 1}


def test_batch_wide_gate_is_shared_across_micro_batches(tiny_config):
    cfg = tiny_config("algorithm.method=kl_cov", "algorithm.micro_batch_size=4", "algorithm.loss={kl_cov_ratio: 0.2}")
    trainer = RLTrainer(cfg)
    trainer.run()
    records = [r for r in read_metrics(cfg.run.out_dir) if r["kind"] == "train"]
    # the selection is made over each mini-batch of 16, not per micro-batch of 4
    assert all(abs(r["cov_selected_frac"] - 0.2) < 0.2 for r in records)


def test_rft_round(tiny_config):
    cfg = tiny_config("rft.iterations=1", "rft.samples_per_prompt=2", "rft.sft_steps=2", "rft.select_size=8")
    result = run_rft(cfg)
    assert "pass@1" in result["summary"]
    rft = [r for r in read_metrics(cfg.run.out_dir) if r["kind"] == "rft"]
    assert rft and rft[0]["selected"] <= 8


def test_rft_rule_filters():
    math = {"task": "math"}
    assert rule_filter(math, r"so \boxed{12} then more text", 0.31) == r"so \boxed{12}"
    assert rule_filter(math, r"\boxed{1} and \boxed{2}", 0.31) is None
    assert rule_filter(math, r"\boxed{x}", 0.31) is None  # no digit
    assert rule_filter({"task": "countdown"}, "1+2", 0.31) == "1+2"
    assert rule_filter(math, "a b c " * 10 + r"\boxed{3}", 0.31) is None


def test_report_from_two_runs(tiny_config, tmp_path):
    from rlvr_explore.report.html import build_report

    dirs = []
    for method in ("grpo", "casp"):
        cfg = tiny_config(f"algorithm.method={method}", f"run.out_dir={tmp_path / method}")
        RLTrainer(cfg).run()
        dirs.append(cfg.run.out_dir)
    page = build_report(dirs, tmp_path / "report" / "index.html")
    text = page.read_text()
    for figure in ("pass_at_k.png", "lambda.png", "entropy_steps.png", "entropy_hist.png", "unsolvable.png"):
        assert figure in text and (tmp_path / "report" / "figures" / figure).stat().st_size > 1000
    assert "<th>casp</th>" in text and "<th>grpo</th>" in text


def test_eval_command_prints_summary(tiny_config, tmp_path):
    cfg = tiny_config()
    RLTrainer(cfg).run()
    done = subprocess.run([sys.executable, "-m", "rlvr_explore", "eval", "--model", f"{cfg.run.out_dir}/policy",
                           "--out", str(tmp_path / "e.json"), "--set", *TINY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert {"pass@1", "pass@4", "avg@4", "maj@4", "lambda1", "entropy"} <= set(summary)


def test_report_verdicts_are_paired_differences_with_intervals():
    from math import comb

    from rlvr_explore.report.html import _paired, _unsolvable_table, _verdicts

    def final(counts, unsolvable=()):
        return {"details": {"n_samples": 4, "correct_counts": counts, "unsolvable_ids": list(unsolvable)}}

    ref = final([0, 1, 2, 4, 0, 3], unsolvable=[0, 4])
    better = final([4, 4, 4, 4, 4, 4])
    same = final([0, 1, 2, 4, 0, 3], unsolvable=[0, 4])
    mixed = final([1, 0, 2, 4, 0, 3], unsolvable=[1, 4])
    exact = lambda c, k: 1 - comb(4 - c, k) / comb(4, k)  # noqa: E731
    mean, low, high = _paired(mixed, ref, 2)
    assert mean == pytest.approx(sum(exact(a, 2) - exact(b, 2) for a, b in zip([1, 0, 2, 4, 0, 3], [0, 1, 2, 4, 0, 3])) / 6)
    assert low < 0 < high
    page = _verdicts({"ref": ref, "better": better, "same": same, "mixed": mixed}, "ref", 4)
    # one run of each: intervals over the problems, and no verdict however clear they look (pass@1
    # excludes 0 here; pass@4 does not, only 2 of 6 problems differ)
    better_line = page.split("<b>better</b>: ")[1].split("</li>")[0]
    assert better_line.startswith("pass@1 +0.583 [") and "]: <b>one seed: no verdict</b>; pass@4 +0.333 [+0.000" in better_line
    assert float(better_line.split("[")[1].split(",")[0]) > 0
    assert "higher" not in page and "lower" not in page
    assert "<b>same</b>: pass@1 +0.000 [+0.000, +0.000]: <b>one seed: no verdict</b>" in page
    assert _paired(final([1, 2]), ref, 1) is None
    table = _unsolvable_table({"ref": ref, "mixed": mixed}, "ref")
    assert "<tr><th>mixed</th><td>2</td><td>1</td><td>1</td></tr>" in table


def test_smoothing_is_a_trailing_moving_average():
    from rlvr_explore.report.plots import smooth

    rng = np.random.default_rng(0)
    values = rng.normal(size=57)
    for window in (1, 3, 10):
        brute = [values[max(0, i - window + 1) : i + 1].mean() for i in range(len(values))]
        np.testing.assert_allclose(smooth(values, window), brute, rtol=1e-12)
    assert len(smooth(values)) == 57


def test_unsolvable_overlap_of_many_runs(tmp_path):
    from rlvr_explore.report.plots import overlap_counts, unsolvable_matrix

    sets = {"a": {1, 2, 3}, "b": {2, 3}, "c": set(), "d": {3, 4}}
    counts = overlap_counts(sets)
    names = list(sets)
    assert all(counts[i, j] == len(sets[x] & sets[y]) for i, x in enumerate(names) for j, y in enumerate(names))
    assert counts.tolist()[0] == [3, 2, 0, 1]
    assert (tmp_path / "m.png").samefile(unsolvable_matrix(sets, str(tmp_path / "m.png")))
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_bench_trainer_model_floor_runs_every_forward_a_step_needs_and_updates(tmp_path, monkeypatch):
    """The floor of `bench trainer` is a bound on any trainer only if it does the model's whole work:
    the prompts' forward, a decoding forward per further token, the scored forward, a backward and a step."""
    from rlvr_explore import bench, models

    model, tokenizer = bench._tiny_policy(None)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, load_policy = {}, models.load_policy

    def load_and_count(path, dtype=None):
        policy, tok = load_policy(path, dtype)
        loaded["calls"], loaded["before"] = [], [p.detach().clone() for p in policy.parameters()]
        loaded["policy"] = policy
        policy.register_forward_hook(lambda module, args, kwargs, out: loaded["calls"].append(kwargs["input_ids"].shape),
                                     with_kwargs=True)
        return policy, tok

    monkeypatch.setattr(models, "load_policy", load_and_count)
    times = bench._model_floor_steps(str(tmp_path), steps=2, completions=16, group=4, new_tokens=5, device="cpu")
    assert len(times) == 2 and all(cpu > 0 for cpu, _ in times)
    shapes = loaded["calls"]
    assert len(shapes) == 2 * (1 + 4 + 1)
    prompt_width = shapes[0][1]
    assert shapes[:6] == [(16, prompt_width)] + [(16, 1)] * 4 + [(16, prompt_width + 5)]
    changed = [not torch.equal(a, b) for a, b in zip(loaded["before"], loaded["policy"].parameters())]
    assert all(changed)
