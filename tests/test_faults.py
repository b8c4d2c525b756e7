"""Training that survives faults and bad input: non-finite values never reach the disk, a run
directory has one owner, damaged checkpoints and torn logs are survived, bad input is named, and
a run SIGKILLed at random points (one of them inside a checkpoint write) resumes bit-identically."""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from rlvr_explore.models import char_tokenizer, tiny_gpt2
from rlvr_explore.rollout import NonFiniteError, sample
from rlvr_explore.train.checkpoints import (
    RunAlreadyFinished, RunDirectoryError, assert_savable, checkpoint_damage, list_checkpoints,
)
from rlvr_explore.train.config import ConfigError, load_config
from rlvr_explore.train.rl import RLTrainer
from rlvr_explore.train.runtime import read_metrics

WALL_CLOCK = ("time", "step_seconds")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def comparable(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in read_metrics(out)]


def all_finite_on_disk(out: Path) -> bool:
    for checkpoint in list_checkpoints(out):
        tensors = load_file(checkpoint / "model.safetensors")
        state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        optimizer_tensors = [v for s in state["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v)]
        if not all(torch.isfinite(t).all() for t in [*tensors.values(), *optimizer_tensors]):
            return False
    return True


# ------------------------------------------------------------------ non-finite values


@pytest.mark.parametrize("setting", ["algorithm.entropy_coeff=1e39", "algorithm.kl_coef=1e39"])
def test_a_non_finite_loss_is_skipped_then_stops_the_run_and_never_reaches_the_disk(tiny_config, setting):
    cfg = tiny_config(setting, "train.steps=6", "train.save_every=1", "train.max_nonfinite_updates=3")
    trainer = RLTrainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(NonFiniteError, match=rf"step 3: 3 updates in a row .*{setting.split('=')[0]}=1e\+39"):
        trainer.run()
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # no update was applied
    records = [r for r in read_metrics(cfg.run.out_dir) if r["kind"] == "train"]
    assert [r["nonfinite_skipped"] for r in records] == [1, 1]  # steps 1 and 2 logged; step 3 stopped the run
    assert [c.name for c in list_checkpoints(trainer.out)] == ["step_000001", "step_000002"]
    assert all_finite_on_disk(trainer.out)


def test_nothing_non_finite_is_saved_and_sampling_refuses_nan(tiny_config):
    trainer = RLTrainer(tiny_config())
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="not saving a checkpoint with non-finite values"):
        trainer.save()
    assert list_checkpoints(trainer.out) == []
    with pytest.raises(NonFiniteError, match="next-token probabilities are NaN or inf"):
        sample(trainer.model, trainer.tokenizer, ["2 4 8>20:"], 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = 0.0
    trainer.optimizer.state[next(trainer.model.parameters())] = {"exp_avg": torch.tensor([float("inf")])}
    with pytest.raises(NonFiniteError, match="optimizer state"):
        assert_savable(trainer.model, trainer.optimizer)


@pytest.mark.parametrize("override,message", [
    ("rollout.temperature=1e-40", "rollout.temperature must be >= 1e-06"),
    ("eval.temperature=0", "eval.temperature must be >= 1e-06"),
    ("optim.lr=.inf", "expects a finite number"),
    ("train.save_every=-1", "train.save_every must be >= 0"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints must be >= 1"),
    ("train.log_every=0", "train.log_every must be >= 1"),
    ("algorithm.loss={alhpa: 0.3}", "algorithm.loss: unknown key 'alhpa' for grpo; accepted: clip_eps_high"),
    ("algorithm.advantage_hp={passk: 4}", "algorithm.advantage_hp: unknown key 'passk'; accepted: eps"),
    ("model.n_embd=30", "n_embd a multiple of n_head"),
    ("sandbox.memory_mb=0", "sandbox.memory_mb must be >= 1"),
])
def test_settings_that_cannot_work_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+").replace("(", r"\(")):
        load_config(None, [override])


def test_loss_keys_of_the_method_and_its_warmup_are_accepted():
    cfg = load_config(None, ["algorithm.method=casp", "algorithm.warmup_method=grpo", "algorithm.loss={alpha: 0.1, lam: 1.2}"])
    assert cfg.algorithm.loss == {"alpha": 0.1, "lam": 1.2}
    with pytest.raises(ConfigError, match="algorithm.loss: alpha must be in"):
        load_config(None, ["algorithm.method=casp", "algorithm.loss={alpha: 7}"])


# ------------------------------------------------------------------ run directories


def test_a_fresh_run_refuses_a_directory_holding_another_run(tiny_config):
    first = tiny_config("train.steps=1", "train.save_every=1")
    RLTrainer(first).run()
    out = Path(first.run.out_dir)
    before = snapshot(out)
    with pytest.raises(RunDirectoryError, match=r"already holds a run \(metrics.jsonl.*--resume.*--overwrite"):
        RLTrainer(tiny_config("train.steps=1", "run.seed=5"))
    assert snapshot(out) == before  # nothing already written was touched
    RLTrainer(tiny_config("train.steps=1", "run.seed=5"), overwrite=True).run()
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [1]
    assert json.loads((out / "config.json").read_text())["run"]["seed"] == 5


def test_resume_of_a_finished_run_does_nothing(tiny_config):
    cfg = tiny_config("train.steps=2", "train.save_every=1")
    RLTrainer(cfg).run()
    out = Path(cfg.run.out_dir)
    before = snapshot(out)
    with pytest.raises(RunAlreadyFinished, match="already finished at step 2"):
        RLTrainer(cfg, resume=True)
    assert snapshot(out) == before
    done = subprocess.run([sys.executable, "-m", "rlvr_explore", "train", "--set", *TINY, f"run.out_dir={out}",
                           "train.steps=2", "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "already finished at step 2" in done.stdout and snapshot(out) == before


def test_a_second_process_cannot_use_a_directory_in_use(tiny_config):
    trainer = RLTrainer(tiny_config())
    with pytest.raises(RunDirectoryError, match=rf"in use by another run \(pid {os.getpid()}\)"):
        RLTrainer(tiny_config(), resume=True)
    del trainer


def test_orphans_of_an_interrupted_write_are_cleaned_and_a_killed_start_restarts_clean(tiny_config, caplog):
    cfg = tiny_config("train.steps=2", "train.save_every=1")
    out = Path(cfg.run.out_dir)
    (out / "checkpoints" / "step_000001.tmp-99999").mkdir(parents=True)
    (out / "policy.tmp-99999").mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 0}) + "\n" + '{"kind": "train", "st')
    with caplog.at_level("WARNING"):
        RLTrainer(cfg, resume=True).run()
    assert "no checkpoint was written" in caplog.text and "step_000001.tmp-99999" in caplog.text
    assert not list(out.rglob("*.tmp-*"))
    assert [r["step"] for r in read_metrics(out)] == [0, 1, 2, 2]  # eval 0, train 1-2, final eval: nothing doubled


# ------------------------------------------------------------------ damage


def _damage(path: Path, how: str) -> None:
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.unlink()


@pytest.mark.parametrize("target,how", [("model.safetensors", "truncate"), ("trainer_state.pt", "truncate"),
                                        ("model.safetensors", "flip"), ("manifest.json", "delete"),
                                        ("tokenizer.json", "delete")])
def test_a_damaged_checkpoint_falls_back_to_the_newest_intact_one(tiny_config, tmp_path, caplog, target, how):
    straight = tiny_config("train.steps=4", "train.save_every=1", f"run.out_dir={tmp_path / 'straight'}")
    reference = RLTrainer(straight)
    reference.run()
    interrupted = tiny_config("train.steps=3", "train.save_every=1", f"run.out_dir={tmp_path / 'damaged'}")
    RLTrainer(interrupted).run()
    out = tmp_path / "damaged"
    _damage(out / "checkpoints" / "step_000003" / target, how)
    assert checkpoint_damage(out / "checkpoints" / "step_000003") is not None
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "train", "step": 4, "rew')  # and a torn last line
    with caplog.at_level("WARNING"):
        resumed = RLTrainer(tiny_config("train.steps=4", "train.save_every=1", f"run.out_dir={out}"), resume=True,
                            accept_changes=True)
    assert resumed.step == 2
    assert "step_000003 is damaged" in caplog.text and f"{out / 'metrics.jsonl'}: line" in caplog.text
    resumed.run()
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()))
    assert comparable(out) == comparable(tmp_path / "straight")
    assert [p.name.split(".")[0] for p in (out / "checkpoints").iterdir() if "damaged" in p.name] == ["step_000003"]


def test_no_intact_checkpoint_is_a_clear_error(tiny_config):
    cfg = tiny_config("train.steps=1", "train.save_every=1")
    RLTrainer(cfg).run()
    out = Path(cfg.run.out_dir)
    _damage(out / "checkpoints" / "step_000001" / "model.safetensors", "truncate")
    before = snapshot(out)
    with pytest.raises(RunDirectoryError, match=r"no intact checkpoint .*step_000001: model.safetensors has \d+ bytes"):
        RLTrainer(tiny_config("train.steps=2"), resume=True, accept_changes=True)
    assert snapshot(out) == before


# ------------------------------------------------------------------ bad input


def test_prompts_longer_than_the_context_are_named_or_truncated_on_request(tiny_config, tmp_path):
    rows = [{"prompt": "1+1", "answer": "2"}] * 6 + [{"prompt": "9" * 200, "answer": "9"}] + [{"prompt": "2+2", "answer": "4"}] * 2
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config(f"task.dataset={data}", "task.verifier=exact", "task.eval_size=2", "train.steps=1")
    with pytest.raises(ValueError, match=r"long.jsonl: problem 7: the prompt has 200 tokens.*context of 96 leaves 87.*truncate_prompts"):
        RLTrainer(cfg)
    assert not (Path(cfg.run.out_dir) / "metrics.jsonl").exists()
    trainer = RLTrainer(tiny_config(f"task.dataset={data}", "task.verifier=exact", "task.eval_size=2", "train.steps=1",
                                    "task.truncate_prompts=true", f"run.out_dir={tmp_path / 'truncated'}"))
    assert trainer.train_problems[6]["prompt"] == "9" * 87
    trainer.run()


def test_a_tokenizer_larger_than_the_embedding_is_refused(tiny_config, tmp_path):
    tokenizer = char_tokenizer("0123456789+-*>: abcdefghij|")
    tiny_gpt2(10, n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path / "small")
    tokenizer.save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match=r"small: the tokenizer has 31 tokens but the model's embedding only 10 rows"):
        RLTrainer(tiny_config(f"model.path={tmp_path / 'small'}"))


# ------------------------------------------------------------------ killed for real


def _last_train_step(out: Path) -> int:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if '"kind": "train"' in line and line.endswith("}")]
    return max(steps, default=0)


def test_sigkill_at_random_points_resumes_bit_identically(tmp_path):
    """SIGKILL inside a checkpoint write, then at five random moments of training (a random step
    reached, plus a random fraction of a second); the final weights and every metrics record
    (less wall-clock fields) equal an uninterrupted run's."""
    steps = 9
    base = [sys.executable, "-m", "rlvr_explore", "train", "--set", *TINY, f"train.steps={steps}", "train.save_every=1",
            "train.eval_every=4", "train.keep_checkpoints=3"]
    reference = tmp_path / "reference"
    subprocess.run([*base, f"run.out_dir={reference}"], check=True, capture_output=True, timeout=600)
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills = [None] + [(step, rng.uniform(0.0, 0.3)) for step in sorted(rng.sample(range(1, steps), 5))]
    for kill in kills:
        process = subprocess.Popen([*base, f"run.out_dir={out}", "--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if kill is None and any((out / "checkpoints").glob("step_*.tmp-*")):
                break  # inside a checkpoint write
            if kill is not None and _last_train_step(out) >= kill[0]:
                time.sleep(kill[1])
                break
            time.sleep(0.002)
        process.kill()
        process.wait()
        assert process.returncode == -9, f"the run ended before its kill: {process.stderr.read().decode()[-2000:]}"
        if kill is None:
            assert list((out / "checkpoints").glob("step_*.tmp-*")), "the first kill missed the checkpoint write"
    done = subprocess.run([*base, f"run.out_dir={out}", "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    final = load_file(out / "policy" / "model.safetensors")
    expected = load_file(reference / "policy" / "model.safetensors")
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)
    assert comparable(out) == comparable(reference)
    assert not list(out.rglob("*.tmp-*")) and all_finite_on_disk(out)


def test_sft_stops_on_a_non_finite_loss_and_saves_no_nan_policy(tiny_config):
    from rlvr_explore.train.runtime import save_policy
    from rlvr_explore.train.sft import run_sft

    cfg = tiny_config("sft.lr=1e30", "sft.steps=20")
    with pytest.raises(NonFiniteError, match=r"sft step \d+: the NLL or its gradient is NaN or inf \(lr=1e\+30\)"):
        run_sft(cfg)
    assert not (Path(cfg.run.out_dir) / "policy").exists()
    model = tiny_gpt2(10, n_layer=1, n_embd=16, n_head=2)
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="not saving"):
        save_policy(model, char_tokenizer("ab"), Path(cfg.run.out_dir) / "nan-policy")


def test_a_kill_after_the_final_checkpoint_resumes_without_doubling_the_final_evaluation(tiny_config, tmp_path):
    straight = tiny_config("train.steps=2", "train.save_every=1", f"run.out_dir={tmp_path / 'straight'}")
    RLTrainer(straight).run()
    killed = tiny_config("train.steps=2", "train.save_every=1", f"run.out_dir={tmp_path / 'killed'}")
    RLTrainer(killed).run()
    out = tmp_path / "killed"
    (out / "finished.json").unlink()  # as if killed between the final checkpoint and the end
    for entry in (out / "policy").iterdir():
        entry.unlink()
    (out / "policy").rmdir()
    RLTrainer(killed, resume=True).run()
    assert comparable(out) == comparable(tmp_path / "straight")
    final = load_file(out / "policy" / "model.safetensors")
    expected = load_file(tmp_path / "straight" / "policy" / "model.safetensors")
    assert all(torch.equal(final[k], expected[k]) for k in final)
