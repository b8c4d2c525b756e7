import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton's kernels (rlvr_explore.fused) run in its interpreter on a CPU. This must be set before
    # anything imports triton.language (transformers does), whose own helpers are then interpreted too.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from rlvr_explore.train.config import load_config  # noqa: E402

TINY = [
    "run.threads=1", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "task.train_size=40", "task.eval_size=4",
    "task.difficulty=2", "rollout.group_size=4", "rollout.prompts_per_step=4", "rollout.max_new_tokens=8",
    "algorithm.mini_batch_size=16", "algorithm.micro_batch_size=8", "train.steps=2", "train.eval_every=0",
    "train.save_every=0", "eval.n_samples=4", "sft.steps=5", "sft.batch_size=8", "optim.lr=1e-3",
]


@pytest.fixture
def tiny_config(tmp_path):
    def make(*overrides):
        return load_config(None, [*TINY, f"run.out_dir={tmp_path / 'run'}", *overrides])

    return make


@pytest.fixture
def kernel_calls(monkeypatch):
    """The names of the ``rlvr_explore.fused`` entry points called from here on, in order ("forward",
    "backward"), after the kernels' one-time self-check on the CPU (which calls them too)."""
    fused = pytest.importorskip("rlvr_explore.fused")  # needs Triton
    assert fused.works_on(torch.device("cpu"))
    calls = []
    for name in ("forward", "backward"):
        monkeypatch.setattr(fused, name, lambda *a, _run=getattr(fused, name), _name=name, **k:
                            calls.append(_name) or _run(*a, **k))
    return calls


def sideways_overflow(page: "Path", window: int) -> int | None:
    """How many pixels ``page`` scrolls sideways in headless Chromium at ``window`` pixels wide
    (0: none); None where Chromium is not installed."""
    import re
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(page.read_text().replace("</body>", "<script>document.body.dataset.width = "
                     "document.documentElement.scrollWidth - document.documentElement.clientWidth</script></body>"))
    try:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={window},1000",
                              "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    finally:
        probe.unlink()
    return int(re.search(r'data-width="(-?\d+)"', dom).group(1))
