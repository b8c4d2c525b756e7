"""Rejection-sampling fine-tuning with exploration-aware data selection (STILL §4.4.1).

Each round: sample ``samples_per_prompt`` responses per training prompt; apply the rule filters
(for boxed-answer tasks: exactly one \\boxed{}, a digit present, text cut after the first boxed
answer; for all: 3-gram redundancy <= 0.31); keep the correct ones and rank them by mean token
entropy or mean rollout branching factor (or at random); take the top ``select_size``, add a
``noisy_fraction`` of incorrect responses, and fine-tune on the selection.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from rlvr_explore.metrics.answers import BOXED, extract_boxed, ngram_redundancy

from .checkpoints import lock_run_dir, mark_finished, plan_run
from .config import Config, to_dict
from .evaluate import evaluate_and_record, sample_and_verify
from .runtime import RunLogger, build_policy, load_tasks, make_verifier, resolve_device, save_policy, seed_everything
from .sft import train_sft


def rule_filter(problem: dict, response: str, max_redundancy: float) -> str | None:
    """The response as kept for SFT, or None when a rule rejects it."""
    text = response
    if problem.get("task") == "math":
        if len(BOXED.findall(text)) != 1 or not any(ch.isdigit() for ch in text):
            return None
        answer = extract_boxed(text)
        text = text[: text.index(answer) + len(answer) + 1] if answer is not None else text
    tokens = text.split() if " " in text.strip() else list(text)
    return text if ngram_redundancy(tokens) <= max_redundancy else None


def select(candidates: list[dict], how: str, size: int, rng: random.Random) -> list[dict]:
    if how == "random":
        return rng.sample(candidates, min(size, len(candidates)))
    key = "entropy" if how == "entropy" else "branching"
    return sorted(candidates, key=lambda c: c[key], reverse=True)[:size]


def run_rft(cfg: Config, init_policy: str | None = None, overwrite: bool = False) -> dict:
    out = Path(cfg.run.out_dir)
    with lock_run_dir(out, "rft"):
        plan = plan_run(out, "rft", cfg.rft.iterations, resume=False, overwrite=overwrite)
        seed_everything(cfg.run.seed)
        device = resolve_device(cfg)
        model, tokenizer = build_policy(cfg, init_policy)
        model.to(device)
        train_problems, eval_problems = load_tasks(cfg, tokenizer, model)
        verifier = make_verifier(cfg)
        plan.apply(init=init_policy)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        logger = RunLogger(out)
        rng = random.Random(cfg.run.seed)
        generator = torch.Generator().manual_seed(cfg.run.seed)
        r = cfg.rft
        result = evaluate_and_record(model, tokenizer, eval_problems, verifier, cfg, out, 0, logger)
        for iteration in range(1, r.iterations + 1):
            model.eval()
            rollout, problems, rewards = sample_and_verify(model, tokenizer, train_problems, r.samples_per_prompt,
                                                           verifier, cfg, generator)
            mask = rollout.response_mask.float()
            entropy = (rollout.entropy * mask).sum(1) / mask.sum(1)
            branching = (rollout.branching_factor.float() * mask).sum(1) / mask.sum(1)
            right, wrong = [], []
            for i, (problem, text) in enumerate(zip(problems, rollout.texts)):
                kept = rule_filter(problem, text, r.max_redundancy)
                if kept is not None:
                    item = {"prompt": problem["prompt"], "response": kept, "entropy": float(entropy[i]), "branching": float(branching[i])}
                    (right if rewards[i] > 0.5 else wrong).append(item)
            chosen = select(right, r.select, r.select_size, rng)
            noisy = rng.sample(wrong, min(len(wrong), int(round(r.noisy_fraction * len(chosen)))))
            pairs = [(c["prompt"], c["response"]) for c in chosen + noisy]
            record = {"kind": "rft", "step": iteration, "sampled": len(problems), "correct_kept": len(right),
                      "incorrect_kept": len(wrong), "selected": len(chosen), "noisy": len(noisy),
                      "selected_entropy": sum(c["entropy"] for c in chosen) / max(1, len(chosen))}
            if pairs:
                curve = train_sft(model, tokenizer, pairs, r.sft_steps, cfg.sft.batch_size, cfg.optim.lr, rng, desc=f"rft {iteration}")
                record["sft_nll"] = curve[-1]
            logger.log(record)
            result = evaluate_and_record(model, tokenizer, eval_problems, verifier, cfg, out, iteration, logger)
        save_policy(model, tokenizer, out / "policy")
        mark_finished(out, r.iterations)
        logger.close()
        verifier.close()
        return result
