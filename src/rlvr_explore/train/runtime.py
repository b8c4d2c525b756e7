"""What every command shares: device and seeds, the policy, the problems, the verifier, the
metric log (metrics.jsonl + TensorBoard + a progress bar) and atomic checkpoints."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from rlvr_explore.models import char_tokenizer, load_policy, tiny_gpt2
from rlvr_explore.tasks import characters, generate, load_problems
from rlvr_explore.tasks.synthetic import countdown_value
from rlvr_explore.verifiers import Verifier

from .config import Config, to_dict


def resolve_device(cfg: Config) -> torch.device:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if cfg.run.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.run.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device is 'cuda' but no CUDA device is available")
    return torch.device(cfg.run.device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_policy(cfg: Config, path: str | None = None):
    """(model, tokenizer): from ``path`` / ``model.path`` when given, else a tiny GPT-2 + char tokenizer."""
    path = path or cfg.model.path
    if path:
        return load_policy(path)
    tokenizer = char_tokenizer(characters())
    model = tiny_gpt2(len(tokenizer), n_layer=cfg.model.n_layer, n_head=cfg.model.n_head, n_embd=cfg.model.n_embd,
                      n_positions=cfg.model.n_positions, seed=cfg.run.seed, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return model, tokenizer


def load_tasks(cfg: Config) -> tuple[list[dict], list[dict]]:
    """(train, eval) problems: generated from the seed, or read from local files."""
    t = cfg.task
    if t.dataset:
        problems = load_problems(t.dataset, verifier=t.verifier)
        if t.eval_dataset:
            return problems, load_problems(t.eval_dataset, limit=t.eval_size, verifier=t.verifier)
        if len(problems) <= t.eval_size:
            raise ValueError(f"{t.dataset}: {len(problems)} records leave none for training after eval_size={t.eval_size}")
        return problems[: -t.eval_size], problems[-t.eval_size :]
    train = generate(t.name, t.train_size, seed=cfg.run.seed, difficulty=t.difficulty)
    held_out = generate(t.name, t.eval_size, seed=10_000 + cfg.run.seed, difficulty=t.difficulty)
    return train, held_out


def make_verifier(cfg: Config) -> Verifier:
    t = cfg.task
    return Verifier(t.verifier, timeout_s=t.verifier_timeout_s, workers=t.verifier_workers, sandbox=cfg.sandbox)


def extract_answer(problem: dict, response: str):
    """The answer that majority voting compares: a countdown expression's value, a path, or a boxed answer."""
    text = response.strip()
    if problem.get("task") == "countdown":
        return countdown_value(text)
    if problem.get("task") == "graph_path":
        return text or None
    from rlvr_explore.metrics import extract_boxed

    return extract_boxed(text) or (text.split()[-1] if text.split() else None)


# ------------------------------------------------------------------ logging


class RunLogger:
    """Appends one JSON line per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, out_dir: Path, resume_step: int | None = None):
        self.out_dir = out_dir
        self.path = out_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # drop records written after the checkpoint we resume from, so steps are not doubled
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:  # tensorboard is a dependency; tolerate its absence in minimal installs
            self.writer = None

    def log(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            kind = record.get("kind", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "time"):
                    self.writer.add_scalar(f"{kind}/{key}", value, record.get("step", 0))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(out_dir: str | Path) -> list[dict]:
    path = Path(out_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no metrics.jsonl in {out_dir}: not a run directory")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ checkpoints


def _atomic_dir(final: Path, write) -> None:
    """Write into a temporary sibling, then rename: a crash never leaves a half checkpoint."""
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        old = final.with_name(final.name + f".old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)


def save_policy(model, tokenizer, directory: Path) -> None:
    """A directory that ``AutoModelForCausalLM.from_pretrained`` loads, written atomically."""

    def write(tmp: Path):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    _atomic_dir(directory, write)


def save_checkpoint(out_dir: Path, step: int, model, tokenizer, state: dict, cfg: Config, keep: int) -> Path:
    """checkpoints/step_NNNNNN: the policy (loadable by transformers) and trainer_state.pt
    (optimizer, scheduler, RNG states, reference weights, counters)."""
    final = out_dir / "checkpoints" / f"step_{step:06d}"

    def write(tmp: Path):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / "trainer_state.pt")
        (tmp / "config.yaml.json").write_text(json.dumps(to_dict(cfg), indent=2))

    _atomic_dir(final, write)
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def list_checkpoints(out_dir: Path) -> list[Path]:
    root = out_dir / "checkpoints"
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if re.fullmatch(r"step_\d{6}", p.name) and (p / "trainer_state.pt").exists())


def rng_state(generator: torch.Generator) -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "sampler": generator.get_state()}


def restore_rng(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])


def make_schedule(optimizer, cfg: Config, total_steps: int):
    o = cfg.optim

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        progress = (step - o.warmup_steps) / max(1, total_steps - o.warmup_steps)
        if o.schedule == "linear":
            return max(0.0, 1.0 - progress)
        if o.schedule == "cosine":
            return 0.5 * (1.0 + np.cos(np.pi * min(1.0, progress)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
