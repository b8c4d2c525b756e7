"""Nothing of the user's is deleted: a directory records which command made it, ``--resume``
continues only an interrupted run of its own kind, anything else is refused before anything in
it changes, a restart removes only what the run itself writes; Ctrl-C and ``--resume`` say
where the run stands and how to continue."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY
from rlvr_explore.cli import main
from rlvr_explore.train.checkpoints import RunDirectoryError, read_owner
from rlvr_explore.train.rl import RLTrainer
from rlvr_explore.train.runtime import read_metrics
from rlvr_explore.train.sft import run_sft

CLI = [sys.executable, "-m", "rlvr_explore"]


def tree(directory: Path) -> dict[str, bytes | None]:
    """Every entry below ``directory`` (the lock file too) with the bytes of each file."""
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None) for p in sorted(directory.rglob("*"))}


def user_directory(root: Path) -> Path:
    (root / "policy").mkdir(parents=True)
    (root / "policy" / "weights.bin").write_bytes(b"the user's own model")
    (root / "eval").mkdir()
    (root / "eval" / "notes.txt").write_text("hand-written notes")
    (root / "config.json").write_text('{"not": "ours"}')
    return root


def test_resume_on_an_sft_output_is_refused_and_changes_nothing(tiny_config, tmp_path, capsys):
    sft = tiny_config()
    run_sft(sft)
    out = Path(sft.run.out_dir)
    assert read_owner(out)["kind"] == "sft"
    before = tree(out)
    code = main(["train", "--resume", "--set", *TINY, f"run.out_dir={out}", "train.steps=700"])
    error = capsys.readouterr().err
    assert code == 2 and f"{out} holds an SFT run (rlvr-explore sft), not an RL run" in error
    assert f"rlvr-explore train --init {out / 'policy'}" in error
    assert tree(out) == before
    with pytest.raises(RunDirectoryError, match="holds an SFT run"):  # --overwrite of another kind: refused too
        RLTrainer(tiny_config(), overwrite=True)
    assert tree(out) == before


def test_an_sft_run_written_before_run_json_is_still_recognised(tiny_config):
    sft = tiny_config()
    run_sft(sft)
    out = Path(sft.run.out_dir)
    (out / "run.json").unlink()
    before = tree(out)
    with pytest.raises(RunDirectoryError, match="holds an SFT run"):
        RLTrainer(tiny_config(), resume=True)
    assert tree(out) == before


def test_resume_on_a_directory_no_command_made_is_refused_untouched(tiny_config, tmp_path, capsys):
    out = user_directory(tmp_path / "mine")
    before = tree(out)
    for argv in (["train", "--resume"], ["train"], ["train", "--overwrite"], ["sft", "--overwrite"], ["rft"]):
        assert main([*argv, "--set", *TINY, f"run.out_dir={out}"]) == 2
        error = capsys.readouterr().err
        assert "is not empty and no rlvr-explore command made it (it holds config.json, eval, policy)" in error
        assert tree(out) == before, argv
    assert not (out / ".lock").exists() and not (out / "run.json").exists()


def test_resume_on_a_comparison_keeps_its_report(tiny_config, tmp_path, capsys):
    demo = tmp_path / "demo"
    (demo / "seed0" / "grpo").mkdir(parents=True)
    (demo / "report").mkdir()
    (demo / "report" / "index.html").write_text("<html>the demo's report</html>")
    (demo / "comparison.json").write_text("{}")
    before = tree(demo)
    assert main(["train", "--resume", "--set", *TINY, f"run.out_dir={demo}"]) == 2
    assert "holds a comparison (rlvr-explore compare or demo), not an RL run" in capsys.readouterr().err
    assert tree(demo) == before
    assert main(["train", "--resume", "--set", *TINY, f"run.out_dir={demo / 'report'}"]) == 2
    assert "is not empty and no rlvr-explore command made it" in capsys.readouterr().err
    assert tree(demo) == before


def test_a_restart_from_step_0_removes_only_what_the_run_wrote_and_starts_from_its_init(tiny_config, tmp_path, caplog):
    init = Path(run_sft(tiny_config(f"run.out_dir={tmp_path / 'sft'}")))
    cfg = tiny_config("train.steps=1")
    trainer = RLTrainer(cfg, init_policy=str(init))
    out = trainer.out
    trainer.logger.log({"kind": "train", "step": 1, "reward": 0.0})  # killed after a step, before a checkpoint
    trainer.interrupted()
    (out / "report").mkdir()
    (out / "report" / "index.html").write_text("a report the user made of this run")
    (out / "notes.txt").write_text("mine")
    assert json.loads((out / "run.json").read_text()) == {"kind": "rl", "init": str(init)}
    with caplog.at_level("WARNING"):
        restarted = RLTrainer(cfg, resume=True)  # no --init: the run's own is used
    assert "no checkpoint was written before the run stopped" in caplog.text
    assert (out / "report" / "index.html").read_text() == "a report the user made of this run"
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "metrics.jsonl").exists()  # the killed start's log is gone
    from_init = RLTrainer(tiny_config(f"run.out_dir={tmp_path / 'direct'}"), init_policy=str(init))
    assert all((a == b).all() for a, b in zip(restarted.model.state_dict().values(), from_init.model.state_dict().values()))


def test_a_finished_run_says_how_to_train_further_and_that_command_works(tmp_path):
    out = tmp_path / "run"
    base = [*CLI, "train", "--set", *TINY, f"run.out_dir={out}", "train.steps=1"]
    subprocess.run(base, check=True, capture_output=True, timeout=300)
    done = subprocess.run([*base, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "already finished at step 1" in done.stdout
    advice = done.stdout.split("raise train.steps: ")[1].split(" (the learning-rate")[0]
    assert advice == f"rlvr-explore train --resume --set run.out_dir={out} train.steps=2 --accept-changes"
    further = subprocess.run([*CLI, *advice.split()[1:]], capture_output=True, text=True, timeout=300)
    assert further.returncode == 0, further.stderr[-2000:]
    assert f"resumed {out} from its checkpoint at step 1 of 2" in further.stdout
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [1, 2]


def _default_sigint():
    """Ctrl-C as a terminal delivers it: a test run in the background (``make test &``) inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler in the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    argv = [*CLI, "train", "--set", *TINY, f"run.out_dir={out}", "train.steps=2000", "train.save_every=1"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 300

    def newest_checkpoint() -> int:  # any step from 2 on: a poll that waits for one window could miss it
        steps = [int(path.name.split("_")[1]) for path in (out / "checkpoints").glob("step_*") if path.name[5:].isdigit()]
        return max(steps, default=0)

    while newest_checkpoint() < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("rlvr-explore train: interrupted at step ") and " of 2000; last checkpoint: step " in message
    command = message.split("Resume with: ")[1]
    assert command == f"rlvr-explore train --resume --set run.out_dir={out}"
    checkpoint = int(message.split("last checkpoint: step ")[1].split(" ")[0])
    resumed = subprocess.Popen([*CLI, *command.split()[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_sigint)
    line = resumed.stdout.readline()
    resumed.send_signal(signal.SIGINT)
    resumed.communicate(timeout=120)
    assert line.startswith(f"resumed {out} from its checkpoint at step {checkpoint} of 2000")
    assert os.path.exists(out / "run.json")


def test_a_report_written_before_run_json_is_rewritten_and_a_page_of_the_users_is_not(tiny_config, tmp_path, capsys):
    from rlvr_explore.report.html import build_report

    cfg = tiny_config()
    RLTrainer(cfg).run()
    old = tmp_path / "old_report"
    (old / "figures").mkdir(parents=True)
    (old / "figures" / "pass_at_k.png").write_bytes(b"an old figure")
    (old / "index.html").write_text("an old report")
    build_report([cfg.run.out_dir], old / "index.html")
    assert read_owner(old)["kind"] == "report" and "an old report" not in (old / "index.html").read_text()
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "index.html").write_text("my home page")
    assert main(["report", cfg.run.out_dir, "--out", str(mine / "index.html")]) == 2
    assert "no rlvr-explore command made it" in capsys.readouterr().err
    assert (mine / "index.html").read_text() == "my home page" and sorted(p.name for p in mine.iterdir()) == ["index.html"]
