"""The README's quickstart, run top to bottom as written, scaled down: every `rlvr-explore`
command of its shell block, with a tiny model's `--set` overrides appended to the commands that
train or evaluate (`--set` flags accumulate, so the README's own overrides still apply first)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import TINY

README = Path(__file__).resolve().parents[1] / "README.md"
SCALED = ("sft", "train", "rft", "eval")


def quickstart_commands() -> list[list[str]]:
    block = re.search(r"```sh\n\. \.venv/bin/activate\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("rlvr-explore")]


def test_the_quickstart_runs_as_written(tmp_path):
    commands = quickstart_commands()
    assert [c[1] for c in commands][:4] == ["methods", "sft", "train", "train"] and any(c[1] == "report" for c in commands)
    for command in commands:
        args = command[1:]
        if args[0] in SCALED and "--print-config" not in args and "--help-config" not in args:
            args += ["--set", *TINY, "sft.steps=5", "train.steps=2"]
        done = subprocess.run([sys.executable, "-m", "rlvr_explore", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stderr[-2000:]}"
    assert (tmp_path / "report" / "index.html").exists() and (tmp_path / "runs" / "casp" / "policy").exists()
