"""One config semantics: overrides merge into mappings, repeat, print; --resume keeps the run's
own settings unless told otherwise, and records the change."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import TINY
from rlvr_explore.train.config import ConfigError, config_diff, load_config, resolve_config


def test_dotted_and_mapping_overrides_change_only_what_they_name():
    base = load_config("casp_logic")
    assert {"alpha", "lam", "top_n", "clip_eps_high"} <= set(base.algorithm.loss)
    dotted = load_config("casp_logic", ["algorithm.loss.alpha=0.3"])
    mapping = load_config("casp_logic", ["algorithm.loss={alpha: 0.3}"])
    assert dotted.algorithm.loss == mapping.algorithm.loss == {**base.algorithm.loss, "alpha": 0.3}
    removed = load_config("casp_logic", ["algorithm.loss.clip_eps_high=null"])
    assert "clip_eps_high" not in removed.algorithm.loss and removed.algorithm.loss["lam"] == base.algorithm.loss["lam"]
    assert config_diff(base, dotted) == {"algorithm.loss.alpha": (base.algorithm.loss["alpha"], 0.3)}
    with pytest.raises(ConfigError, match="unknown key 'alpah'"):
        load_config("casp_logic", ["algorithm.loss.alpah=0.3"])


def cli(*args, check=True):
    done = subprocess.run([sys.executable, "-m", "rlvr_explore", *args], capture_output=True, text=True, timeout=300)
    assert not check or done.returncode == 0, done.stderr[-2000:]
    return done


def test_repeated_set_flags_accumulate_and_print_config_shows_the_result():
    done = cli("train", "--config", "casp_logic", "--set", "algorithm.loss.alpha=0.3", "--set", "run.out_dir=elsewhere",
               "--print-config")
    shown = yaml.safe_load(done.stdout)
    assert shown["run"]["out_dir"] == "elsewhere" and shown["algorithm"]["method"] == "casp"
    assert shown["algorithm"]["loss"]["alpha"] == 0.3 and shown["algorithm"]["loss"]["lam"] == 1.05


def test_resume_uses_the_runs_own_settings_and_refuses_silent_changes(tmp_path):
    out = tmp_path / "run"
    cli("train", "--set", *TINY, f"run.out_dir={out}", "train.steps=2", "train.save_every=1", "algorithm.method=casp",
        "algorithm.loss.alpha=0.3")
    (out / "finished.json").unlink()  # pretend it was killed after its step-2 checkpoint
    # resumed without repeating the original settings: the run's own config.json is the base
    done = cli("train", "--set", f"run.out_dir={out}", "--resume")
    saved = json.loads((out / "config.json").read_text())
    assert saved["algorithm"]["loss"]["alpha"] == 0.3 and saved["algorithm"]["method"] == "casp"
    assert not (out / "config_history.jsonl").exists()
    (out / "finished.json").unlink()
    refused = cli("train", "--set", f"run.out_dir={out}", "train.steps=3", "--resume", check=False)
    assert refused.returncode == 2 and "train.steps: 2 -> 3" in refused.stderr and "--accept-changes" in refused.stderr
    assert json.loads((out / "config.json").read_text()) == saved  # untouched
    # an override valid only for the run's own method (CaSP's alpha) is judged against the run's settings
    cli("train", "--set", f"run.out_dir={out}", "train.steps=3", "algorithm.loss.alpha=0.3", "--resume", "--accept-changes")
    history = [json.loads(line) for line in (out / "config_history.jsonl").read_text().splitlines()]
    assert history[0]["resumed_at_step"] == 2 and history[0]["changes"] == {"train.steps": {"from": 2, "to": 3}}
    assert done.returncode == 0


def test_progress_off_a_terminal_prints_steady_lines():
    import io

    from rlvr_explore.train.runtime import Progress

    stream = io.StringIO()
    progress = Progress(4, "casp run", every_s=0.0, stream=stream)
    for _ in range(4):
        progress.update(1, reward=0.25, lambda1=-0.5, label="not a number")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("[casp run] 4/4 reward 0.25 lambda1 -0.5 |") and "ETA 0 s" in lines[-1]
    quiet = io.StringIO()
    slow = Progress(100, "sft", every_s=3600.0, stream=quiet)
    for _ in range(99):
        slow.update(1)
    assert quiet.getvalue() == ""  # within the interval nothing is printed ...
    slow.update(1)
    assert quiet.getvalue().startswith("[sft] 100/100")  # ... and the end always is


def test_evaluation_builds_no_training_set(monkeypatch, tmp_path):
    from rlvr_explore.train import runtime

    built = []
    real_generate = runtime.generate
    monkeypatch.setattr(runtime, "generate", lambda name, n, **kw: built.append(n) or real_generate(name, n, **kw))
    cfg = load_config(None, ["task.train_size=777", "task.eval_size=5"])
    train, held_out = runtime.load_tasks(cfg, with_train=False)
    assert train == [] and built == [5]
    assert held_out == runtime.load_tasks(cfg)[1]  # the same held-out problems as a training run's

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(8)))
    cfg = load_config(None, [f"task.dataset={data}", "task.eval_size=3", "task.verifier=exact"])
    assert [p["prompt"] for p in runtime.load_tasks(cfg, with_train=False)[1]] == ["q5", "q6", "q7"]


# ------------------------------------------------------------------ errors name the key and where it was set


@pytest.mark.parametrize("yaml_text,override,message", [
    ("algorithm:\n  method: casp\n  loss:\n    alpha: lots\n", None,
     r"c.yaml, line 4: 'algorithm.loss.alpha' expects float, got 'lots'"),
    ("algorithm:\n  method: casp\n", "algorithm.loss.alpha=lots",
     r"override 'algorithm.loss.alpha=lots': 'algorithm.loss.alpha' expects float, got 'lots'"),
    ("algorithm:\n  advantage_hp:\n    passk_k: four\n", None,
     r"c.yaml, line 3: 'algorithm.advantage_hp.passk_k' expects int, got 'four'"),
    ("algorithm:\n  method: casp\n  loss:\n    alpha: 7\n", None,
     r"config: algorithm.loss: alpha must be in \[0, 1\], got 7.0 \(algorithm.loss.alpha set in .*c.yaml, line 4\)"),
    ("rollout:\n  top_n: 3\n", "rollout.top_n=0",
     r"config: rollout.top_n must be >= 1, got 0 \(rollout.top_n set in override 'rollout.top_n=0'\)"),
])
def test_every_config_error_names_its_key_and_source(tmp_path, yaml_text, override, message):
    (tmp_path / "c.yaml").write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yaml", [override] if override else [])


def test_a_quoted_number_is_read_as_the_number_its_field_takes(tmp_path):
    (tmp_path / "c.yaml").write_text('algorithm:\n  method: casp\n  loss:\n    alpha: "0.3"\n    lam: 1e-1\n')
    cfg = load_config(tmp_path / "c.yaml", ["algorithm.loss.lam=1.2"])
    assert cfg.algorithm.loss == {"alpha": 0.3, "lam": 1.2}


def test_help_config_prints_what_set_accepts_and_none_means_null():
    """Each default that --help-config prints, pasted into --set, gives that default back."""
    from rlvr_explore.train.config import Config, describe

    pasted = 0
    for line in describe().splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
            continue
        key, printed = line.strip().split("  # ")[0].split(": ", 1)
        default = getattr(getattr(Config(), section), key)
        value = getattr(getattr(resolve_config(None, [f"{section}.{key}={printed}"]), section), key)
        assert value == default or (isinstance(default, tuple) and tuple(value) == default), (section, key, printed)
        pasted += 1
    assert pasted > 60 and "  path: null  #" in describe()
    assert load_config(None, ["model.path=None"]).model.path is None
    assert load_config(None, ["model.path=null"]).model.path is None


def test_a_loss_that_needs_more_candidates_than_the_rollout_keeps_is_refused_at_load():
    from rlvr_explore.train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"algorithm.loss.top_n=5 needs rollout.top_n >= 5.*got rollout.top_n=3"):
        load_config(None, ["algorithm.method=casp", "algorithm.loss={top_n: 5}", "rollout.top_n=3"])
    assert load_config(None, ["algorithm.method=casp", "algorithm.loss={top_n: 3}", "rollout.top_n=3"])
    assert load_config(None, ["algorithm.method=grpo", "rollout.top_n=1"])  # GRPO reads no candidates


def test_advantage_settings_the_estimator_does_not_read_are_refused_at_load():
    from rlvr_explore.train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"\['pkpo_k'\] are not read by algorithm.advantage='grpo' \(it reads correct_threshold, eps\)"):
        load_config(None, ["algorithm.method=grpo", "algorithm.advantage_hp={pkpo_k: 8}"])
    with pytest.raises(ConfigError, match=r"\['outcome_b0'\] are not read by algorithm.advantage='grpo' with algorithm.shaping=\['outcome_batch'\]"):
        load_config(None, ["algorithm.shaping=[outcome_batch]", "algorithm.advantage_hp={outcome_b0: 0.3}"])
    assert load_config(None, ["algorithm.advantage=pkpo", "algorithm.advantage_hp={pkpo_k: 4}"])
    assert load_config(None, ["algorithm.shaping=[outcome_ucb]", "algorithm.advantage_hp={outcome_b0: 0.3}"])
    assert load_config(None, ["algorithm.method=w_reinforce", "algorithm.advantage_hp={w_reinforce_lambda: 0.1}"])
