"""``rlvr-explore dph-prepare``: DPH-RL's data for a verl run (arXiv 2509.07430), built before
training as the official pipeline does (its code is a verl fork that reads both from files).

From verl's training parquet and the initial policy pi_0 (a local model directory):

1. pi_0 samples ``--presample`` responses per prompt; the reward function scores them; prompts
   solved (reward > 0.5) in all of them are mastered;
2. pi_0 samples ``--samples`` responses per mastered prompt and keeps the first
   ``--keep-per-prompt`` correct ones (the official set keeps one), with its token log-probs at
   ``--temperature``;
3. ``--out`` receives ``rl.parquet`` (the training file without the mastered prompts, columns
   unchanged: verl's ``data.train_files``), ``rehearsal.pt`` (the plugin's ``dph_rehearsal``) and
   ``dph_prepare.json`` (the counts and settings).

The reward function is verl's: ``compute_score(data_source, solution_str, ground_truth,
extra_info)`` from ``--reward-function FILE:NAME`` (verl's ``custom_reward_function``), or verl's
``default_compute_score``. Prompts go through the tokenizer's chat template with the generation
prompt, as verl's RLHFDataset renders them. Sampling uses rlvr-explore's own sampler (the built-in
trainer's, KV-cached); a file written by another sampler (vLLM, verl's rollout) with the same five
tensors serves as well.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)


def chat_text(prompt, tokenizer, where: str) -> str:
    """The prompt as verl renders it: chat messages through the tokenizer's template with the
    generation prompt, a plain string as it is; less a leading BOS, which the sampler puts first."""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in prompt):
        if not tokenizer.chat_template:
            raise ValueError(f"{where}: chat messages, but the tokenizer has no chat template to render them")
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    else:
        raise ValueError(f"{where}: expected a string or a list of {{'role', 'content'}} messages, got {prompt!r:.80}")
    bos = tokenizer.bos_token
    return text[len(bos):] if bos and tokenizer.bos_token_id is not None and text.startswith(bos) else text


def load_reward_function(spec: str | None) -> Callable:
    """``FILE:NAME`` (verl's custom_reward_function.path / name), or verl's default_compute_score."""
    if spec is None:
        try:
            from verl.utils.reward_score import default_compute_score
        except ImportError:
            raise ValueError("--reward-function FILE:NAME is needed where verl is not installed "
                             "(its default_compute_score is the default)") from None
        return default_compute_score
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise ValueError(f"--reward-function {spec!r}: expected FILE:NAME")
    if not Path(path).is_file():
        raise FileNotFoundError(f"--reward-function: {path} does not exist")
    module_spec = importlib.util.spec_from_file_location("dph_reward_function", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, name, None)):
        raise ValueError(f"--reward-function: {path} defines no function {name!r}")
    return getattr(module, name)


def verl_verifier(rows: list[dict], compute_score: Callable) -> Callable:
    """A verifier over problems that carry their parquet row's index, scoring as verl's reward
    loop does; a reward function that raises scores 0, counted and logged, never stops the job."""
    def verify(problems: list[dict], texts: list[str]) -> list[float]:
        rewards, failures = [], []
        for problem, text in zip(problems, texts):
            row = rows[problem["row"]]
            try:
                score = compute_score(row.get("data_source"), text, (row.get("reward_model") or {}).get("ground_truth"),
                                      row.get("extra_info"))
                rewards.append(float(score["score"] if isinstance(score, dict) else score))
            except Exception as error:  # noqa: BLE001 - a reward function must not end the job
                failures.append(repr(error))
                rewards.append(0.0)
        if failures:
            log.warning("the reward function raised %d times (scored 0); first: %s", len(failures), failures[0])
        return rewards

    return verify


def prepare(train_file: str, model_dir: str, out: str, reward_function: str | None = None, presample: int = 8,
            samples: int = 16, temperature: float = 1.0, max_new_tokens: int = 1024, batch_size: int = 64,
            seed: int = 0, keep_per_prompt: int = 1) -> dict:
    """Write rl.parquet, rehearsal.pt and dph_prepare.json into ``out``; returns the summary."""
    import pyarrow.parquet as pq

    from rlvr_explore.integrations.verl import rehearsal_tensors
    from rlvr_explore.models import load_policy
    from rlvr_explore.train.config import Config
    from rlvr_explore.train.rehearsal import build_rehearsal

    if not Path(train_file).is_file():
        raise FileNotFoundError(f"--train-file: {train_file} does not exist")
    table = pq.read_table(train_file)
    if "prompt" not in table.column_names:
        raise ValueError(f"{train_file}: no 'prompt' column (verl's RLHFDataset reads data.prompt_key, 'prompt')")
    rows = table.to_pylist()
    compute_score = load_reward_function(reward_function)
    model, tokenizer = load_policy(model_dir)
    problems = [{"prompt": chat_text(row["prompt"], tokenizer, f"{train_file} row {i} 'prompt'"), "row": i}
                for i, row in enumerate(rows)]
    cfg = Config()
    cfg.dph.presample, cfg.dph.samples, cfg.dph.keep_per_prompt = presample, samples, keep_per_prompt
    cfg.dph.validate(prefix="--")
    cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_n = temperature, 1.0, 1
    cfg.rollout.max_new_tokens, cfg.eval.batch_size = max_new_tokens, batch_size
    data = build_rehearsal(model, tokenizer, problems, verl_verifier(rows, compute_score), cfg,
                           torch.Generator().manual_seed(seed))

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.take(data["rl_rows"]), folder / "rl.parquet")
    torch.save(rehearsal_tensors(data["rehearsal"]), folder / "rehearsal.pt")
    summary = {**data["stats"], "train_file": str(train_file), "model": str(model_dir), "presample": presample,
               "samples": samples, "keep_per_prompt": keep_per_prompt, "temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed}
    (folder / "dph_prepare.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_parser(sub) -> None:
    import argparse

    parser = sub.add_parser("dph-prepare", help="DPH-RL's data for verl: the RL prompts and the rehearsal set of pi_0",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-file", required=True, help="verl's training parquet (data.train_files)")
    parser.add_argument("--model", required=True, help="the initial policy pi_0, a local model directory")
    parser.add_argument("--out", required=True, help="folder for rl.parquet, rehearsal.pt, dph_prepare.json")
    parser.add_argument("--reward-function", default=None, metavar="FILE:NAME",
                        help="verl's custom_reward_function (default: verl's default_compute_score)")
    parser.add_argument("--presample", type=int, default=8, help="pi_0 samples per prompt; prompts solved in all are "
                                                                  "rehearsed, the others left to RL (DPH-RL README: 8)")
    parser.add_argument("--samples", type=int, default=16, help="pi_0 samples per mastered prompt (official: 16)")
    parser.add_argument("--keep-per-prompt", type=int, default=1,
                        help="correct pi_0 responses kept per mastered prompt (official: 1; 0 keeps all)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="verl's actor_rollout_ref.rollout.temperature: the log-probs are pi_0's at it")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="the response length limit: verl's data.max_response_length")
    parser.add_argument("--batch-size", type=int, default=64, help="responses sampled at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=lambda args: print(json.dumps(prepare(
        args.train_file, args.model, args.out, args.reward_function, args.presample, args.samples, args.temperature,
        args.max_new_tokens, args.batch_size, args.seed, args.keep_per_prompt), indent=2)))
