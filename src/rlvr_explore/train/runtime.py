"""What every command shares: device and seeds, the policy, the problems (checked against the
model's context), the verifier and the metric log (metrics.jsonl + TensorBoard)."""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rlvr_explore.metrics import extract_boxed
from rlvr_explore.models import char_tokenizer, load_policy, tiny_gpt2
from rlvr_explore.rollout import NonFiniteError
from rlvr_explore.tasks import characters, generate, load_problems
from rlvr_explore.tasks.synthetic import countdown_answer, countdown_value, graph_path_answer
from rlvr_explore.verifiers import Verifier

from .checkpoints import atomic_dir, nonfinite_tensors
from .config import Config

log = logging.getLogger(__name__)


def mixed_precision(cfg: Config, device: torch.device):
    """The bf16 autocast context of ``train.mixed_precision`` on ``device`` (a no-op when off)."""
    on = cfg.train.mixed_precision == "bf16" or (cfg.train.mixed_precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


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


SMALL_MODEL_PARAMETERS = 5_000_000  # below this, run.threads=0 means one CPU thread


def build_policy(cfg: Config, path: str | None = None):
    """(model, tokenizer): from ``path`` / ``model.path`` when given, else a tiny GPT-2 + char tokenizer."""
    path = path or cfg.model.path
    dtype = getattr(torch, cfg.model.dtype)
    if path:
        model, tokenizer = load_policy(path, dtype)
    else:
        tokenizer = char_tokenizer(characters())
        model = tiny_gpt2(len(tokenizer), n_layer=cfg.model.n_layer, n_head=cfg.model.n_head, n_embd=cfg.model.n_embd,
                          n_positions=cfg.model.n_positions, seed=cfg.run.seed, pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id).to(dtype)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if not cfg.run.threads and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS:
        torch.set_num_threads(1)  # a tiny model's operations are too small to share: 2 threads cost 2x the CPU for no time
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ValueError(f"{path or 'the tiny model'}: the tokenizer has {len(tokenizer)} tokens but the model's embedding "
                         f"only {rows} rows; token ids past {rows - 1} would index out of range")
    return model, tokenizer


def context_length(model) -> int | None:
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def fit_prompts(problems: list[dict], tokenizer, model, max_new_tokens: int, truncate: bool, source: str) -> list[dict]:
    """Problems whose prompt plus ``max_new_tokens`` fits the model's context: longer ones are an
    error naming the record, or, with ``truncate``, keep the prompt's last tokens that fit."""
    context = context_length(model)
    if context is None:
        return problems
    room = context - max_new_tokens - (tokenizer.bos_token_id is not None)
    if room < 1:
        raise ValueError(f"rollout.max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of {context}")
    rendered = []
    for index, problem in enumerate(problems):
        if not isinstance(problem["prompt"], str):  # a chat: rendered as the model was trained to see it
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError(f"{source}: problem {index + 1} is a chat, but the tokenizer has no chat template; "
                                 "give plain-text prompts or a model whose tokenizer has one")
            problem = {**problem, "messages": problem["prompt"],
                       "prompt": tokenizer.apply_chat_template(problem["prompt"], tokenize=False, add_generation_prompt=True)}
        rendered.append(problem)
    token_ids = tokenizer([p["prompt"] for p in rendered], add_special_tokens=False)["input_ids"] if rendered else []
    fitted = []
    for index, (problem, ids) in enumerate(zip(rendered, token_ids)):
        if len(ids) > room:
            if not truncate:
                raise ValueError(f"{source}: problem {index + 1}: the prompt has {len(ids)} tokens; with "
                                 f"rollout.max_new_tokens={max_new_tokens} the model's context of {context} leaves "
                                 f"{room}. Shorten it, raise the context, or set task.truncate_prompts=true")
            problem = {**problem, "prompt": tokenizer.decode(ids[-room:])}
        fitted.append(problem)
    return fitted


def load_tasks(cfg: Config, tokenizer=None, model=None, with_train: bool = True) -> tuple[list[dict], list[dict]]:
    """(train, eval) problems: generated from the seed, or read from local files; with a model,
    checked (or truncated) against its context. ``with_train=False`` (evaluation) builds no
    training set where the held-out one does not come out of it."""
    t = cfg.task
    if t.dataset and t.eval_dataset:
        train = load_problems(t.dataset, fields=t.fields, verifier=t.verifier) if with_train else []
        held_out = load_problems(t.eval_dataset, fields=t.fields, limit=t.eval_size, verifier=t.verifier)
        sources = (t.dataset, t.eval_dataset)
    elif t.dataset:
        problems = load_problems(t.dataset, fields=t.fields, verifier=t.verifier)
        if len(problems) <= t.eval_size:
            raise ValueError(f"{t.dataset}: {len(problems)} records leave none for training after eval_size={t.eval_size}")
        train, held_out = problems[: -t.eval_size], problems[-t.eval_size :]
        sources = (t.dataset, f"{t.dataset} (last {t.eval_size} records)")
    else:
        train = generate(t.name, t.train_size, seed=cfg.run.seed, difficulty=t.difficulty) if with_train else []
        held_out = generate(t.name, t.eval_size, seed=10_000 + cfg.run.seed, difficulty=t.difficulty)
        sources = (f"task {t.name} (train)", f"task {t.name} (eval)")
    if model is None:
        return train, held_out
    return tuple(fit_prompts(problems, tokenizer, model, cfg.rollout.max_new_tokens, t.truncate_prompts, source)
                 for problems, source in zip((train, held_out), sources))


def make_verifier(cfg: Config) -> Verifier:
    t = cfg.task
    return Verifier(t.verifier, timeout_s=t.verifier_timeout_s, workers=t.verifier_workers, sandbox=cfg.sandbox,
                    answer_format=t.answer_format)


def extract_answer(problem: dict, response: str):
    """The answer that majority voting compares: a countdown expression's value, a path, or a boxed answer."""
    text = response.strip()
    if problem.get("task") == "countdown":
        return countdown_value(text)
    if problem.get("task") == "graph_path":
        return text or None
    return extract_boxed(text) or (text.split()[-1] if text.split() else None)


def outcome_answer(problem: dict, response: str):
    """The answer outcome exploration counts: only a response the verifier would accept as
    well-formed has one (a countdown expression over the given numbers, a path from the start to
    the goal over the graph's nodes, a boxed answer), so the answer space stays the small one the
    method assumes (arXiv 2509.06941); voting keeps ``extract_answer``, which is lenient."""
    if problem.get("task") == "countdown":
        return countdown_answer(problem["prompt"], response)
    if problem.get("task") == "graph_path":
        return graph_path_answer(problem["prompt"], response)
    return extract_boxed(response.strip())


# ------------------------------------------------------------------ logging


class Progress:
    """A tqdm bar on a terminal; elsewhere (nohup, CI, a job's log) one line every
    ``every_s`` seconds and at the end: done/total, the given figures, rate and ETA."""

    def __init__(self, total: int, desc: str, initial: int = 0, every_s: float = 30.0, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.done, self.every_s = total, desc, initial, every_s
        self.started = self.last = time.monotonic()
        self.first = initial
        self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False) if self.stream.isatty() else None

    def update(self, n: int = 1, **figures) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in figures.items() if isinstance(v, float)}, refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            rate = (self.done - self.first) / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            shown = " ".join(f"{k} {v:.3g}" for k, v in figures.items() if isinstance(v, float))
            print(f"[{self.desc}] {self.done}/{self.total} {shown} | {rate:.3g}/s, ETA {eta:.0f} s",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a torn last line (a write cut by a kill) is dropped with a
    warning, a bad line elsewhere is an error naming it."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                log.warning("%s: line %d is cut short (an interrupted write); dropped", path, number)
                continue
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
    return records


class RunLogger:
    """Appends one JSON line per record to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, out_dir: Path, resume_step: int | None = None):
        self.out_dir = out_dir
        self.path = out_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # drop records written after the checkpoint we resume from, so steps are not doubled
            kept = [r for r in read_records(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            # on resume, TensorBoard drops the events past the checkpoint, as metrics.jsonl does
            self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1)
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
    return read_records(path)


def save_policy(model, tokenizer, directory: Path) -> None:
    """A directory that ``AutoModelForCausalLM.from_pretrained`` loads, written atomically."""
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise NonFiniteError(f"not saving {directory}: {len(bad)} weight tensors are not finite ({bad[0]}, ...)")

    def write(tmp: Path):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_dir(directory, write)


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
