"""Supervised fine-tuning: the base policy of the demo, the SFT step of RFT, and the
NLL minimisation of SPS's IRL phase all use :func:`nll_loss`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from rlvr_explore.losses import aggregate
from rlvr_explore.rollout import NonFiniteError, encode_prompts, score

from .checkpoints import lock_run_dir, mark_finished, plan_run
from .config import Config, to_dict
from .runtime import Progress, RunLogger, build_policy, load_tasks, resolve_device, save_policy, seed_everything


def encode_responses(tokenizer, responses: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded response ids ending in EOS, and their mask."""
    rows = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in responses]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids, mask


def nll_loss(model, tokenizer, prompts: list[str], responses: list[str]) -> torch.Tensor:
    """Mean negative log-likelihood of the response tokens (and the closing EOS)."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)
    response_ids, response_mask = encode_responses(tokenizer, responses)
    stats = score(model, prompt_ids, prompt_mask, response_ids, response_mask, top_n=0, entropy=False)
    return aggregate(-stats.logp, response_mask.to(stats.logp.device), "token-mean")


def corrupt(answer: str, alphabet: str, rng: random.Random) -> str:
    """An incorrect-looking attempt: one character replaced, dropped or added."""
    chars = list(answer)
    position = rng.randrange(len(chars))
    action = rng.choice(("replace", "drop", "add"))
    if action == "replace":
        chars[position] = rng.choice(alphabet)
    elif action == "drop" and len(chars) > 1:
        del chars[position]
    else:
        chars.insert(position, rng.choice(alphabet))
    return "".join(chars)


def sft_examples(problems: list[dict], cfg: Config, rng: random.Random) -> list[tuple[str, str]]:
    """(prompt, response) pairs: several distinct correct answers per prompt, mixed with corrupted
    attempts (``sft.incorrect_fraction``) so the base policy is diverse and imperfect."""
    pairs = []
    boxed = cfg.task.verifier in ("exact", "math") and cfg.task.answer_format == "boxed"
    for problem in problems:
        solutions = problem.get("solutions") or [f"\\boxed{{{problem['answer']}}}" if boxed else problem["answer"]]
        chosen = rng.sample(solutions, min(cfg.sft.solutions_per_prompt, len(solutions)))
        pairs += [(problem["prompt"], s) for s in chosen]
    n_wrong = int(len(pairs) * cfg.sft.incorrect_fraction / max(1e-9, 1 - cfg.sft.incorrect_fraction))
    alphabet = "".join(sorted({c for _, r in pairs for c in r}))
    pairs += [(p, corrupt(r, alphabet, rng)) for p, r in rng.choices(pairs, k=n_wrong)]
    rng.shuffle(pairs)
    return pairs


def train_sft(model, tokenizer, pairs: list[tuple[str, str]], steps: int, batch_size: int, lr: float,
              rng: random.Random, logger: RunLogger | None = None, desc: str = "sft") -> list[float]:
    """Plain AdamW on the NLL of the pairs; returns the loss curve."""
    if not pairs:
        raise ValueError("no SFT examples")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    curve = []
    bar = Progress(steps, desc)
    for step in range(1, steps + 1):
        batch = rng.sample(pairs, min(batch_size, len(pairs)))
        loss = nll_loss(model, tokenizer, [p for p, _ in batch], [r for _, r in batch])
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            raise NonFiniteError(f"{desc} step {step}: the NLL or its gradient is NaN or inf (lr={lr}); nothing was saved")
        optimizer.step()
        curve.append(loss.item())
        bar.update(1, nll=curve[-1])
        if logger is not None and step % 10 == 0:
            logger.log({"kind": "sft", "step": step, "nll": curve[-1]})
    bar.close()
    return curve


def run_sft(cfg: Config, overwrite: bool = False) -> Path:
    """`rlvr-explore sft`: fine-tune the policy on the task's solutions; writes out_dir/policy."""
    out = Path(cfg.run.out_dir)
    with lock_run_dir(out, "sft"):
        plan = plan_run(out, "sft", cfg.sft.steps, resume=False, overwrite=overwrite)
        seed_everything(cfg.run.seed)
        device = resolve_device(cfg)
        model, tokenizer = build_policy(cfg)
        model.to(device)
        train_problems, _ = load_tasks(cfg, tokenizer, model)
        rng = random.Random(cfg.run.seed)
        plan.apply()
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        logger = RunLogger(out)
        curve = train_sft(model, tokenizer, sft_examples(train_problems, cfg, rng), cfg.sft.steps, cfg.sft.batch_size,
                          cfg.sft.lr, rng, logger)
        logger.close()
        save_policy(model, tokenizer, out / "policy")
        mark_finished(out, cfg.sft.steps)
    print(f"sft: final NLL {curve[-1]:.3f}; policy saved to {out / 'policy'}")
    return out / "policy"
