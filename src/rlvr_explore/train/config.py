"""The run configuration: nested dataclasses, read from YAML, overridden with ``key.sub=value``.

One semantics for every source (defaults, then the YAML file, then each ``--set`` in order):
a value replaces the field it names; a mapping merges key by key into a mapping field
(``algorithm.loss.alpha=0.3`` and ``algorithm.loss='{alpha: 0.3}'`` both change alpha alone), and
``null`` removes a key from it. Every field carries help text (``--help-config`` prints them all;
``--print-config`` prints the resolved config). Errors name the file, the line where YAML knows
it, the dotted key and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlvr_explore import advantages, losses
from rlvr_explore.documented import documented
from rlvr_explore.losses.rehearsal import DPHConfig
from rlvr_explore.recipe import ALGORITHM_LEVEL_KEYS, AlgorithmConfig, recipes
from rlvr_explore.verifiers import ANSWER_FORMATS
from rlvr_explore.verifiers.sandbox import SandboxConfig


@dataclass
class RunConfig:
    out_dir: str = documented("runs/default", "directory for checkpoints, metrics.jsonl, TensorBoard events and plots")
    seed: int = documented(0, "seed of the task split, the model init and the sampler")
    draws: int = documented(0, "another stream of the run's random draws (prompts, samples, mini-batch order, and the "
                               "weights of a model built from scratch) for the same seed's task split and evaluation: "
                               "a comparison's A/A run is its baseline with draws: 1")
    device: str = documented("auto", "'auto' (cuda when available), 'cpu' or 'cuda'")
    threads: int = documented(0, "torch CPU threads (0: one for models under 5M parameters, whose operations are too "
                                 "small to split, else torch's default)")


@dataclass
class ModelConfig:
    path: str | None = documented(None, "local directory of a transformers causal LM (nothing is downloaded); null builds a tiny GPT-2")
    n_layer: int = documented(2, "tiny GPT-2: layers")
    n_head: int = documented(4, "tiny GPT-2: attention heads")
    n_embd: int = documented(64, "tiny GPT-2: width")
    n_positions: int = documented(96, "tiny GPT-2: context length")
    dtype: str = documented("float32", "weights as loaded and updated: float32 (mixed precision then computes in "
                                       "bf16 from these float32 master weights, as TRL does), bfloat16 or float16 "
                                       "(half the memory, no float32 master copy)")


@dataclass
class TaskConfig:
    name: str = documented("countdown", "built-in task: countdown or graph_path (ignored when dataset is set)")
    difficulty: int = documented(3, "countdown: count of numbers (2..5); graph_path: graph size (1..4)")
    train_size: int = documented(2000, "training problems generated from the seed")
    eval_size: int = documented(64, "held-out evaluation problems (a different seed)")
    dataset: str | None = documented(None, "local jsonl/json/parquet/`datasets` directory: prompt with answer, tests (HumanEval form) or inputs/outputs (docs/reliability.md)")
    eval_dataset: str | None = documented(None, "local evaluation set (default: the last eval_size records of dataset)")
    fields: dict = documented({}, "dataset column for each of our fields, e.g. {prompt: question} for GSM8K (prompt, answer, tests, entry_point, inputs, outputs, canonical_solution)")
    truncate_prompts: bool = documented(False, "keep the end of prompts longer than the model's context allows (default: refuse them at load time)")
    verifier: str = documented("builtin", "builtin, exact, math (math-verify) or code (sandbox)")
    answer_format: str = documented(
        "boxed", "what the exact and math verifiers grade: 'boxed', the last \\boxed{} (the papers' prompts ask for "
        "one; none scores 0, and SFT targets are boxed), 'last_number' (lenient: a box, else the last number) or "
        "'full' (math-verify's search of the whole response, which credits a bare number anywhere)")
    verifier_timeout_s: float = documented(5.0, "per-answer timeout of the math verifier; per-program (per stdin input) wall clock of the code sandbox")
    verifier_workers: int = documented(0, "answers or programs checked in parallel (0: CPUs, at most 8)")


@dataclass
class RolloutConfig:
    group_size: int = documented(8, "G responses per prompt (CaSP App. E: 8 for math, 16 for logic)")
    prompts_per_step: int = documented(16, "prompts per RL step (the batch is prompts_per_step * group_size)")
    max_new_tokens: int = documented(16, "response length limit")
    temperature: float = documented(1.0, "sampling temperature for training (CaSP App. E: 1.0; code 0.6)")
    top_p: float = documented(1.0, "nucleus sampling for training")
    top_n: int = documented(3, "candidates tracked per token: Lambda^(1..N) and CaSP's N")


@dataclass
class OptimConfig:
    lr: float = documented(1e-4, "AdamW learning rate (CaSP App. E: 1e-6 for 7B models)")
    weight_decay: float = documented(0.0, "AdamW weight decay")
    grad_clip: float = documented(1.0, "max global gradient norm (0: off)")
    warmup_steps: int = documented(0, "linear learning-rate warm-up, in optimizer steps")
    schedule: str = documented("constant", "constant, linear or cosine decay after warm-up")


@dataclass
class TrainConfig:
    steps: int = documented(60, "RL steps (SFT: optimizer steps)")
    log_every: int = documented(1, "steps between metric lines")
    eval_every: int = documented(0, "steps between evaluations (0: at the start and the end only). One evaluation "
                                    "at eval.n_samples=256 costs about as much as 50 training steps of the packaged "
                                    "countdown configs, so every 20 steps would triple a run's time")
    save_every: int = documented(20, "steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = documented(2, "checkpoints kept on disk")
    max_nonfinite_updates: int = documented(3, "updates in a row with a NaN/inf loss or gradient (each skipped) before the run stops")
    mixed_precision: str = documented("auto", "bf16 autocast of the forward passes (sampling, scoring, evaluation): "
                                              "'auto' on CUDA (TRL's default), off on a CPU; 'bf16' everywhere; 'off'. "
                                              "The candidate statistics always use float32 logits")
    gradient_checkpointing: bool = documented(False, "recompute the model's activations in backward (less memory, "
                                                     "about a third more compute)")


@dataclass
class EvalConfig:
    n_samples: int = documented(64, "samples per evaluation problem (pass@k up to k = n; CaSP: 256)")
    temperature: float = documented(1.0, "sampling temperature (CaSP App. E.2: 0.6)")
    top_p: float = documented(1.0, "nucleus (CaSP App. E.2: 0.95)")
    batch_size: int = documented(1024, "responses sampled at once (at most)")
    memory_fraction: float = documented(0.8, "on a GPU, fewer responses at once where their KV cache and next-token "
                                             "work would not fit in this fraction of its free memory; 0: batch_size alone")


@dataclass
class SPSConfig:
    enabled: bool = documented(False, "interleave IRL phases with RL (SPS §4, Alg. 1)")
    every: int = documented(10, "T: RL steps between IRL phases")
    irl_steps: int = documented(4, "S: optimizer steps of each IRL phase")
    keep_per_prompt: int = documented(3, "k of the G responses per prompt kept as demonstrations (SPS: 3 of 8)")
    lr_scale: float = documented(1e-3, "IRL learning rate = lr_scale * RL lr (SPS App. C)")
    quantile: float = documented(0.5, "L2TE: demonstrations come from the responses below this likelihood quantile")


@dataclass
class RFTConfig:
    iterations: int = documented(3, "sample -> filter -> select -> SFT rounds (STILL §4.4.1)")
    samples_per_prompt: int = documented(8, "responses sampled per training prompt each round")
    select: str = documented("entropy", "selection among kept responses: entropy, branching or random")
    select_size: int = documented(512, "responses kept for SFT each round (STILL: 1.1k)")
    noisy_fraction: float = documented(0.05, "share of incorrect responses added back (STILL: 5%)")
    max_redundancy: float = documented(0.31, "3-gram redundancy filter (STILL §4.4.1)")
    sft_steps: int = documented(100, "SFT steps per round")


@dataclass
class SFTConfig:
    steps: int = documented(400, "optimizer steps")
    batch_size: int = documented(64, "sequences per step")
    lr: float = documented(3e-3, "AdamW learning rate")
    incorrect_fraction: float = documented(0.3, "share of corrupted (incorrect) attempts mixed into the data, so the base policy errs")
    solutions_per_prompt: int = documented(4, "distinct correct answers used per prompt (diversity of the base policy)")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sps: SPSConfig = field(default_factory=SPSConfig)
    dph: DPHConfig = field(default_factory=DPHConfig)
    rft: RFTConfig = field(default_factory=RFTConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)


class ConfigError(ValueError):
    pass


MIN_TEMPERATURE = 1e-6


def _type_ok(value, annotation) -> bool:
    hint = typing.get_origin(annotation)
    if hint in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(annotation) is tuple:  # YAML has no tuples: a list of the same length will do
        return isinstance(value, (list, tuple)) and len(value) == len(typing.get_args(annotation))
    return isinstance(value, annotation)


def _mapping_schema(dotted: str) -> dict | None:
    """The type of each key of a mapping setting (the losses' and the estimators'
    hyper-parameters), so a wrong type is named where it was written."""
    if dotted == "algorithm.loss":
        return losses.core.key_types()
    if dotted == "algorithm.advantage_hp":
        return typing.get_type_hints(advantages.AdvantageConfig)
    return None


def _checked(value, annotation, dotted: str, line: str):
    """``value`` as the field typed ``annotation`` takes it, or a ConfigError naming ``dotted``."""
    if isinstance(value, str) and _type_ok(1.0, annotation):
        try:  # YAML 1.1 reads 1e-6 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if not _type_ok(value, annotation):
        expected = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(f"{{source}}{line}: '{dotted}' expects {expected}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{{source}}{line}: '{dotted}' expects a finite number, got {value!r}")
    return float(value) if annotation is float and value is not None else value


def _merge(target, values: dict, where: str, lines: dict) -> None:
    hints = typing.get_type_hints(type(target))
    known = {f.name for f in dataclasses.fields(target)}
    for key, value in values.items():
        dotted = f"{where}.{key}" if where else key
        line = f", line {lines[dotted]}" if dotted in lines else ""
        if key not in known:
            raise ConfigError(f"{{source}}{line}: unknown key '{dotted}'; known keys here: {', '.join(sorted(known))}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{{source}}{line}: '{dotted}' must be a mapping, got {value!r}")
            _merge(current, value, dotted, lines)
            continue
        if isinstance(current, dict) and isinstance(value, dict):
            # mappings merge key by key, so an override changes what it names and nothing else; null removes a key
            types_ = _mapping_schema(dotted)
            if types_ is not None:
                value = {k: v if v is None or k not in types_ else
                         _checked(v, types_[k], f"{dotted}.{k}", f", line {lines[f'{dotted}.{k}']}" if f"{dotted}.{k}" in lines else line)
                         for k, v in value.items()}
            merged = {**current, **value}
            setattr(target, key, {k: v for k, v in merged.items() if v is not None})
            continue
        setattr(target, key, _checked(value, hints[key], dotted, line))


def _key_lines(text: str) -> dict[str, int]:
    """Dotted key -> line number, from YAML's node marks."""
    lines: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                lines[dotted] = key_node.start_mark.line + 1
                walk(value_node, dotted)

    walk(yaml.compose(text), "")
    return lines


def parse_override(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. algorithm.method=casp")
    if raw.strip() in ("None", "none"):  # Python's spelling of null, as --help-config once printed it
        return key.strip(), None
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def nest(key: str, value) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


PACKAGED = Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(name: str | Path) -> Path:
    """A path, or the name of a packaged config (``casp`` -> rlvr_explore/configs/casp.yaml)."""
    path = Path(name)
    if path.exists():
        return path
    packaged = PACKAGED / f"{path.stem}.yaml"
    if path.parent == Path(".") and packaged.exists():
        return packaged
    known = ", ".join(sorted(p.stem for p in PACKAGED.glob("*.yaml")))
    raise FileNotFoundError(f"config file not found: {name} (packaged configs: {known})")


def read_yaml(path: Path) -> tuple[dict, dict[str, int]]:
    """The mapping in a YAML file and the line of each dotted key."""
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data, _key_lines(text)


def _record_sources(cfg: Config, data: dict, source: str, lines: dict[str, int], prefix: str = "") -> None:
    """Remember where each dotted key was last set, so that a check made later (``validate``)
    names the file and line or the override as well as the key."""
    sources = cfg.__dict__.setdefault("sources", {})
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            _record_sources(cfg, value, source, lines, dotted)
        else:
            sources[dotted] = f"{source}, line {lines[dotted]}" if dotted in lines else source


def apply_mapping(cfg: Config, data: dict, source: str, lines: dict[str, int] | None = None) -> Config:
    try:
        _merge(cfg, data, "", lines or {})
    except ConfigError as error:
        raise ConfigError(str(error).replace("{source}", source)) from None
    _record_sources(cfg, data, source, lines or {})
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None,
                base_source: str = "base config") -> Config:
    """Defaults (or ``base``, a saved config), then the YAML file (a path or a packaged name),
    then each ``key.sub=value`` override in order; validated."""
    cfg = resolve_config(path, overrides, base, base_source)
    validate(cfg)
    return cfg


def resolve_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None,
                   base_source: str = "base config") -> Config:
    """What :func:`load_config` builds, not yet validated (a part of it may be all that is needed)."""
    cfg = apply_mapping(Config(), base, base_source) if base is not None else Config()
    if path is not None:
        path = resolve_config_path(path)
        data, lines = read_yaml(path)
        apply_mapping(cfg, data, str(path), lines)
    for text in overrides:
        key, value = parse_override(text)
        apply_mapping(cfg, nest(key, value), f"override {text!r}")
    return cfg


def config_diff(old: Config, new: Config, ignore: tuple[str, ...] = ("run.out_dir",)) -> dict[str, tuple]:
    """Dotted key -> (old value, new value) for every setting that differs."""
    def flat(value, prefix=""):
        if not (isinstance(value, dict) and value):
            return {prefix: value}
        items = {}
        for key, sub in value.items():
            items.update(flat(sub, f"{prefix}.{key}" if prefix else str(key)))
        return items

    a, b = flat(to_dict(old)), flat(to_dict(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in ignore}


def saved_config_changes(saved: Path, cfg: Config) -> dict[str, tuple]:
    """``config_diff`` of the run configuration saved at ``saved`` (a run's config.json) and ``cfg``."""
    return config_diff(load_config(base=json.loads(saved.read_text()), base_source=str(saved)), cfg)


def describe_changes(changes: dict[str, tuple]) -> str:
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


def _where_set(cfg: Config, message: str) -> str:
    """Where the keys a message names were set: "(algorithm.loss.alpha: override 'algorithm.loss.alpha=7')"."""
    sections = {f.name for f in dataclasses.fields(Config)}
    named = [k for k in re.findall(r"\b([a-z_]+(?:\.[a-z_0-9]+)+)", message) if k.split(".")[0] in sections]
    sources = cfg.__dict__.get("sources", {})
    found = {key: where for key, where in sources.items() for name in named if key == name or key.startswith(name + ".")}
    if not found:
        return " (the default)" if named else ""
    return " (" + "; ".join(f"{key} set in {where}" for key, where in found.items()) + ")"


def validate(cfg: Config) -> None:
    from rlvr_explore.tasks.synthetic import TASKS

    def need(ok: bool, message: str):
        if not ok:
            raise ConfigError(f"config: {message}{_where_set(cfg, message)}")

    a, r, t = cfg.algorithm, cfg.rollout, cfg.train
    need(a.kl_coef >= 0 and a.entropy_coeff >= 0, "algorithm.kl_coef and algorithm.entropy_coeff must be >= 0")
    try:
        method_recipes = recipes(a)
    except ValueError as error:
        need(False, str(error))
    bound = method_recipes[a.method].loss
    # the scoring pass gives the loss rollout.top_n candidates: a loss asking for more would fail at its first update
    need(bound.top_n <= r.top_n, f"algorithm.loss.top_n={bound.top_n} needs rollout.top_n >= {bound.top_n} (the "
                                 f"candidates the trainer keeps per token), got rollout.top_n={r.top_n}")
    need(cfg.task.dataset is not None or cfg.task.name in TASKS, f"task.name {cfg.task.name!r} unknown; built-in: {', '.join(TASKS)}")
    need(cfg.task.verifier in ("builtin", "exact", "math", "code"), f"task.verifier must be builtin, exact, math or code, got {cfg.task.verifier!r}")
    need(cfg.task.answer_format in ANSWER_FORMATS,
         f"task.answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {cfg.task.answer_format!r}")
    need(cfg.task.dataset is None or cfg.task.verifier != "builtin", "task.verifier 'builtin' only checks built-in tasks; use exact, math or code with task.dataset")
    need(cfg.task.train_size >= 1 and cfg.task.eval_size >= 1, "task.train_size and task.eval_size must be >= 1")
    need(r.group_size >= 2, f"rollout.group_size must be >= 2 for group baselines, got {r.group_size}")
    need(r.prompts_per_step >= 1, "rollout.prompts_per_step must be >= 1")
    need(r.max_new_tokens >= 1, "rollout.max_new_tokens must be >= 1")
    need(r.top_n >= 1, f"rollout.top_n must be >= 1, got {r.top_n}")
    for name, value in (("rollout.temperature", r.temperature), ("eval.temperature", cfg.eval.temperature)):
        # logits / temperature must stay finite in float32: below this, sampling would divide into inf and NaN
        need(value >= MIN_TEMPERATURE, f"{name} must be >= {MIN_TEMPERATURE} (smaller values overflow logits / temperature), got {value}")
    need(0 < r.top_p <= 1 and 0 < cfg.eval.top_p <= 1, "top_p must be in (0, 1]")
    need(a.micro_batch_size >= 1 and a.mini_batch_size >= a.micro_batch_size,
         "need 1 <= algorithm.micro_batch_size <= algorithm.mini_batch_size")
    need(a.micro_batch_tokens >= 0, f"algorithm.micro_batch_tokens must be >= 0 (0: by responses only), got {a.micro_batch_tokens}")
    need(a.ppo_epochs >= 1, "algorithm.ppo_epochs must be >= 1")
    need(a.max_resample >= 0 and a.warmup_method_steps >= 0 and a.kl_reset_every >= 0,
         "algorithm.max_resample, warmup_method_steps and kl_reset_every must be >= 0")
    need(cfg.optim.schedule in ("constant", "linear", "cosine"), f"optim.schedule must be constant, linear or cosine, got {cfg.optim.schedule!r}")
    need(cfg.optim.lr > 0, "optim.lr must be > 0")
    need(cfg.optim.weight_decay >= 0 and cfg.optim.grad_clip >= 0 and cfg.optim.warmup_steps >= 0,
         "optim.weight_decay, grad_clip and warmup_steps must be >= 0")
    need(t.steps >= 1, "train.steps must be >= 1")
    need(t.log_every >= 1, f"train.log_every must be >= 1, got {t.log_every}")
    need(t.eval_every >= 0 and t.save_every >= 0, f"train.eval_every and train.save_every must be >= 0 (0: only at the end), got {t.eval_every} and {t.save_every}")
    need(t.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")
    need(t.max_nonfinite_updates >= 1, f"train.max_nonfinite_updates must be >= 1, got {t.max_nonfinite_updates}")
    need(cfg.eval.n_samples >= 1 and cfg.eval.batch_size >= 1, "eval.n_samples and eval.batch_size must be >= 1")
    need(0 <= cfg.eval.memory_fraction <= 1, f"eval.memory_fraction must be in [0, 1], got {cfg.eval.memory_fraction}")
    m = cfg.model
    need(min(m.n_layer, m.n_head, m.n_embd, m.n_positions) >= 1 and m.n_embd % m.n_head == 0,
         "model.n_layer, n_head, n_embd, n_positions must be >= 1, and n_embd a multiple of n_head")
    need(cfg.rft.select in ("entropy", "branching", "random"), f"rft.select must be entropy, branching or random, got {cfg.rft.select!r}")
    need(min(cfg.rft.iterations, cfg.rft.samples_per_prompt, cfg.rft.select_size) >= 1 and cfg.rft.sft_steps >= 0,
         "rft.iterations, samples_per_prompt and select_size must be >= 1, sft_steps >= 0")
    need(0 <= cfg.rft.noisy_fraction < 1, "rft.noisy_fraction must be in [0, 1)")
    need(min(cfg.sft.steps, cfg.sft.batch_size, cfg.sft.solutions_per_prompt) >= 0 and cfg.sft.batch_size >= 1 and cfg.sft.lr > 0,
         "sft.steps >= 0, sft.batch_size >= 1, sft.lr > 0")
    need(0 <= cfg.sft.incorrect_fraction < 1, "sft.incorrect_fraction must be in [0, 1)")
    try:
        cfg.dph.validate()
    except ValueError as error:
        need(False, str(error))
    s = cfg.sps
    need(s.every >= 1 and s.irl_steps >= 0 and s.lr_scale > 0 and 0 < s.quantile <= 1,
         "sps.every >= 1, sps.irl_steps >= 0, sps.lr_scale > 0, sps.quantile in (0, 1]")
    need(not s.enabled or 1 <= s.keep_per_prompt <= r.group_size, "sps.keep_per_prompt must be in [1, rollout.group_size]")
    need(cfg.model.dtype in ("float32", "bfloat16", "float16"),
         f"model.dtype must be float32, bfloat16 or float16, got {cfg.model.dtype!r}")
    need(t.mixed_precision in ("auto", "bf16", "off"), f"train.mixed_precision must be auto, bf16 or off, got {t.mixed_precision!r}")
    need(cfg.run.device in ("auto", "cpu", "cuda"), f"run.device must be auto, cpu or cuda, got {cfg.run.device!r}")
    need(cfg.run.threads >= 0, "run.threads must be >= 0")
    need(cfg.task.verifier_timeout_s > 0, f"task.verifier_timeout_s must be > 0, got {cfg.task.verifier_timeout_s}")
    need(cfg.task.verifier_workers >= 0, f"task.verifier_workers must be >= 0, got {cfg.task.verifier_workers}")
    need(cfg.sandbox.isolation in ("bwrap", "none"), f"sandbox.isolation must be bwrap or none, got {cfg.sandbox.isolation!r}")
    for name in ("memory_mb", "scratch_mb", "shm_mb", "file_mb", "processes", "open_files", "output_kb"):
        need(getattr(cfg.sandbox, name) >= 1, f"sandbox.{name} must be >= 1, got {getattr(cfg.sandbox, name)}")
    need(cfg.sandbox.cpu_s >= 0, f"sandbox.cpu_s must be >= 0 (0: from the timeout), got {cfg.sandbox.cpu_s}")


def _yaml_value(value) -> str:
    """``value`` as it is written in YAML and in ``--set`` (null, true, [a, b])."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).removesuffix("\n...\n").strip()


def describe() -> str:
    """Every field with its default and help, section by section."""
    lines = []
    for section in dataclasses.fields(Config):
        lines.append(f"{section.name}:")
        for f in dataclasses.fields(section.default_factory()):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {f.name}: {_yaml_value(default)}  # {f.metadata['help']}")
    return "\n".join(lines)


def describe_method(name: str) -> str:
    """The keys ``name`` reads, with their defaults and help: its loss's under ``algorithm.loss``
    (its config class, declared beside the loss) and its estimator's under ``algorithm.advantage_hp``."""
    spec = losses.get_method(name)
    config = spec.default_config()
    lines = [f"{spec.name}: {spec.source}; advantage estimator {spec.advantage!r} (algorithm.advantage replaces it)",
             f"algorithm.loss ({type(config).__name__}, {spec.token_loss.__module__}):"]
    for f in dataclasses.fields(config):
        if f.name not in ALGORITHM_LEVEL_KEYS:
            lines.append(f"  {f.name}: {_yaml_value(getattr(config, f.name))}  # {f.metadata['help']}")
    lines.append("algorithm (set here, not under loss): "
                 + ", ".join(f"{key}: {_yaml_value(getattr(config, key))}" for key in ALGORITHM_LEVEL_KEYS))
    lines.append(f"algorithm.advantage_hp (estimator {spec.advantage!r}; a shaping step adds its own keys):")
    helps = {f.name: f for f in dataclasses.fields(advantages.AdvantageConfig)}
    for key in sorted(advantages.keys_read(spec.advantage)):
        lines.append(f"  {key}: {_yaml_value(helps[key].default)}  # {helps[key].metadata['help']}")
    return "\n".join(lines)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
