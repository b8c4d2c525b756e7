"""The examples of docs/integrations.md run as written, on a CPU, with the local model the README's
Quickstart makes (here a tiny one, saved where the Quickstart saves it)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY

DOCS = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"


def python_block(section: str) -> str:
    text = DOCS.read_text()
    body = text[text.index(f"## {section}\n"):]
    return re.search(r"```python\n(.*?)```", body, re.DOTALL).group(1)


def test_the_trl_example_runs_as_written_on_a_cpu(tmp_path):
    pytest.importorskip("trl")
    sft = subprocess.run([sys.executable, "-m", "rlvr_explore", "sft", "--config", "sft", "--set", *TINY],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert sft.returncode == 0, sft.stderr[-2000:]
    assert (tmp_path / "runs" / "sft" / "policy").is_dir()
    (tmp_path / "example.py").write_text(python_block("TRL"))
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'explore/lambda1'" in done.stdout or "explore/lambda1" in done.stderr + done.stdout
    assert (tmp_path / "runs" / "trl_casp").is_dir()
