"""Evaluation as the papers do it: n samples per problem, unbiased pass@1..n, avg@n, maj@n,
the n-rollout unsolvable set, and the exploration diagnostics of the samples."""

from __future__ import annotations

import json

import numpy as np
import torch

from rlvr_explore import metrics
from rlvr_explore.rollout import Rollout, sample

from .config import Config
from .runtime import Progress, extract_answer


# rows of V float32 values a sampling step holds per response (logits, probabilities, the draw's
# group sums and the statistics' temporaries), beside its KV cache
NEXT_TOKEN_WORK_ROWS = 4


def kv_cache_bytes_per_token(model) -> int:
    """Bytes of KV cache one token of one response takes: keys and values of every layer, for the
    key-value heads (grouped-query attention shares them) in the weights' dtype."""
    c = model.config
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 2 * c.num_hidden_layers * heads * head_dim * next(model.parameters()).element_size()


def responses_that_fit(model, tokens: int, budget_bytes: float) -> int:
    """How many responses of ``tokens`` (prompt and response) one sampling call holds in ``budget_bytes``."""
    per_response = kv_cache_bytes_per_token(model) * tokens + NEXT_TOKEN_WORK_ROWS * model.config.vocab_size * 4
    return max(1, int(budget_bytes // per_response))


def sampling_batch_size(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int,
                        memory_fraction: float) -> int:
    """``batch_size``, cut on a GPU to what fits in ``memory_fraction`` of its free memory."""
    device = next(model.parameters()).device
    if device.type != "cuda" or not memory_fraction:
        return batch_size
    free, _ = torch.cuda.mem_get_info(device)
    longest_prompt = max(len(tokenizer(p)["input_ids"]) for p in set(prompts)) + 1  # with the BOS the sampler adds
    return min(batch_size, responses_that_fit(model, longest_prompt + max_new_tokens, memory_fraction * free))


def sample_many(model, tokenizer, prompts: list[str], batch_size: int, desc: str = "sampling",
                memory_fraction: float = 0.0, **kwargs) -> Rollout:
    """``sample`` over ``prompts`` in batches of ``batch_size``, fewer where the GPU memory is short."""
    batch_size = sampling_batch_size(model, tokenizer, prompts, batch_size, kwargs["max_new_tokens"], memory_fraction)
    bar = Progress(len(prompts), desc)
    parts = []
    for i in range(0, len(prompts), batch_size):
        parts.append(sample(model, tokenizer, prompts[i : i + batch_size], **kwargs))
        bar.update(len(parts[-1].texts))
    bar.close()
    return Rollout.concat(parts)


def sample_and_verify(model, tokenizer, problems: list[dict], n: int, verifier, cfg: Config, generator,
                      desc: str = "sampling") -> tuple[Rollout, list[dict], list[float]]:
    """``n`` responses per problem at the rollout settings, and their rewards: (rollout, the
    problems repeated as sampled, rewards)."""
    r = cfg.rollout
    repeated = [p for p in problems for _ in range(n)]
    rollout = sample_many(model, tokenizer, [p["prompt"] for p in repeated], cfg.eval.batch_size, desc=desc,
                          memory_fraction=cfg.eval.memory_fraction,
                          max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_n=r.top_n,
                          generator=generator)
    return rollout, repeated, verifier(repeated, rollout.texts)


def evaluate_and_record(model, tokenizer, problems: list[dict], verifier, cfg: Config, out, step: int, logger) -> dict:
    """``evaluate`` on the run's fixed evaluation seed (every step sees the same samples' stream),
    written to ``out/eval/step_N.json`` and logged."""
    result = evaluate(model, tokenizer, problems, verifier, cfg, torch.Generator().manual_seed(cfg.run.seed + 1))
    (out / "eval").mkdir(exist_ok=True)
    (out / "eval" / f"step_{step:06d}.json").write_text(json.dumps(result))
    logger.log({"kind": "eval", "step": step, **result["summary"]})
    return result


@torch.no_grad()
def evaluate(model, tokenizer, problems: list[dict], verifier, cfg: Config, generator: torch.Generator) -> dict:
    """Summary metrics and per-problem details (for plots) of ``eval.n_samples`` samples per problem."""
    n = cfg.eval.n_samples
    model.eval()
    prompts = [p["prompt"] for p in problems for _ in range(n)]
    rollout = sample_many(model, tokenizer, prompts, cfg.eval.batch_size, desc="evaluation",
                          memory_fraction=cfg.eval.memory_fraction, max_new_tokens=cfg.rollout.max_new_tokens,
                          temperature=cfg.eval.temperature, top_p=cfg.eval.top_p, top_n=cfg.rollout.top_n,
                          generator=generator)
    repeated = [p for p in problems for _ in range(n)]
    rewards = np.asarray(verifier(repeated, rollout.texts), dtype=float).reshape(len(problems), n)
    correct = rewards > 0.5
    answers = [[extract_answer(p, rollout.texts[i * n + j]) for j in range(n)] for i, p in enumerate(problems)]
    ks = metrics.powers_of_two(n)
    curve = metrics.pass_at_k_curve([n] * len(problems), correct.sum(1), ks)
    mask = rollout.response_mask
    lengths = mask.sum(1).float()
    summary = {
        **{f"pass@{k}": curve[k]["mean"] for k in ks},
        f"avg@{n}": metrics.avg_at_k(correct, n),
        f"maj@{n}": metrics.maj_at_k(answers, correct.tolist(), n),
        "unsolvable": len(metrics.unsolvable(correct, n)),
        "answer_entropy": float(np.mean([metrics.answer_entropy(a) for a in answers])),
        "distinct_correct": float(np.mean([len({rollout.texts[i * n + j] for j in range(n) if correct[i, j]})
                                           for i in range(len(problems))])),
        "entropy": metrics.entropy_summary(rollout.entropy, mask)["mean"],
        "branching_factor": metrics.mean_branching_factor(rollout.branching_factor, mask),
        "response_length": float(lengths.mean()),
        **{f"lambda{i + 1}": v for i, v in enumerate(metrics.rank_logprobs(rollout.topn_logp, mask))},
        "lambda_sample": metrics.sampled_logprob(rollout.old_logp, mask),
    }
    details = {
        "pass_at_k": curve,
        "correct_counts": correct.sum(1).tolist(),
        "n_samples": n,
        "unsolvable_ids": sorted(metrics.unsolvable(correct, n)),
        "accuracy_buckets": metrics.accuracy_buckets(correct.mean(1)),
        "probability_bins": metrics.probability_bins(rollout.topn_logp, mask),
        "token_entropy_sample": rollout.entropy[mask][:20000].tolist(),
        "example": candidate_example(model, tokenizer, rollout, problems[0]["prompt"], cfg.eval.temperature),
    }
    return {"summary": summary, "details": details}


def candidate_example(model, tokenizer, rollout: Rollout, prompt: str, temperature: float) -> dict:
    """CaSP App. G for the first sample: per position, the candidates up to 0.95 mass."""
    from rlvr_explore.rollout import position_ids_from_mask

    valid = rollout.response_mask[0]
    ids = rollout.response_ids[0][valid]
    device = next(model.parameters()).device
    tokens = torch.cat([rollout.prompt_ids[0][rollout.prompt_mask[0]], ids])[None].to(device)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    logits = model(input_ids=tokens, attention_mask=mask.long(), position_ids=position_ids_from_mask(mask)).logits[0]
    start = int(rollout.prompt_mask[0].sum()) - 1
    probs = torch.softmax(logits[start : start + len(ids)].float() / temperature, -1).cpu()
    columns = metrics.grouped_candidates(probs, ids)
    name = lambda t: tokenizer.convert_ids_to_tokens(t) or "?"  # noqa: E731
    return {"prompt": prompt, "response": rollout.texts[0],
            "columns": [[(name(t), p, s) for t, p, s in col] for col in columns]}
