"""Everything that runs the policy: batched KV-cached sampling (:func:`sample`) and the
teacher-forced pass the losses differentiate (:func:`score`).

Layout (DESIGN §2): prompts left-padded, responses right-padded. ``response_mask`` covers the
generated tokens including the closing EOS; a response cut at ``max_new_tokens`` has none.
Both functions return the candidate statistics of ``rlvr_explore.candidates`` at the sampling
temperature, so ``old_logp`` from :func:`sample` and ``logp`` from :func:`score` are the same
quantity under the old and the current policy.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from rlvr_explore.candidates import TokenStats, token_stats, token_stats_from_hidden


@dataclass
class Rollout:
    prompts: list[str]
    prompt_ids: torch.Tensor  # (B, P), left-padded
    prompt_mask: torch.Tensor  # (B, P) bool
    response_ids: torch.Tensor  # (B, T), right-padded
    response_mask: torch.Tensor  # (B, T) bool
    old_logp: torch.Tensor  # (B, T)
    entropy: torch.Tensor  # (B, T)
    topn_logp: torch.Tensor  # (B, T, N)
    topn_ids: torch.Tensor  # (B, T, N)
    branching_factor: torch.Tensor  # (B, T)
    texts: list[str]

    def select(self, rows: torch.Tensor | list[int]) -> "Rollout":
        rows = torch.as_tensor(rows, dtype=torch.long)
        picked = {k: (v[rows] if isinstance(v, torch.Tensor) else [v[i] for i in rows.tolist()])
                  for k, v in self.__dict__.items()}
        return Rollout(**picked)

    @staticmethod
    def concat(parts: list["Rollout"]) -> "Rollout":
        """Join rollouts, re-padding prompts on the left and responses on the right."""
        def pad(tensors, side, value=0):
            width = max(t.shape[1] for t in tensors)
            out = []
            for t in tensors:
                missing = width - t.shape[1]
                shape = (t.shape[0], missing, *t.shape[2:])
                filler = torch.full(shape, value, dtype=t.dtype)
                out.append(torch.cat([filler, t] if side == "left" else [t, filler], 1))
            return torch.cat(out)

        fields = {}
        for key, value in parts[0].__dict__.items():
            values = [getattr(p, key) for p in parts]
            if isinstance(value, list):
                fields[key] = [x for v in values for x in v]
            else:
                fields[key] = pad(values, "left" if key.startswith("prompt_") else "right")
        return Rollout(**fields)


class NonFiniteError(ValueError):
    """A NaN or inf where training cannot go on; the message names where and the likely cause."""


def encode_prompts(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask; a BOS is put first when the tokenizer has one."""
    rows = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        rows.append(ids)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = True
    return ids, mask


def _cache_keyword(model) -> str:
    """transformers >= 5.2x names the KV cache ``cache``; earlier versions ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the valid tokens, so left padding does not shift them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set of tokens with mass >= top_p, renormalised."""
    ordered, order = probs.sort(-1, descending=True)
    outside = ordered.cumsum(-1) - ordered > top_p
    ordered = ordered.masked_fill(outside, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, ordered)
    return kept / kept.sum(-1, keepdim=True)


@torch.no_grad()
def sample(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
           top_n: int = 3, greedy: bool = False, generator: torch.Generator | None = None,
           branching_mass: float = 0.95) -> Rollout:
    """Sample one response per prompt (repeat prompts for groups)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    batch = len(prompts)
    eos = tokenizer.eos_token_id
    attention = prompt_mask.long()
    cache_keyword = _cache_keyword(model)
    out = model(input_ids=prompt_ids, attention_mask=attention, position_ids=position_ids_from_mask(prompt_mask), use_cache=True)
    logits, past = out.logits[:, -1], out[cache_keyword]
    next_position = attention.sum(-1)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, mask, stats = [], [], []
    for _ in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, -1)
        if not torch.isfinite(probs).all():
            raise NonFiniteError("sampling: the policy's next-token probabilities are NaN or inf "
                                 "(its logits or weights are not finite)")
        if greedy:
            token = probs.argmax(-1)
        else:
            probs = _nucleus(probs, top_p) if top_p < 1 else probs
            token = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(device)
        token = torch.where(finished, torch.full_like(token, tokenizer.pad_token_id), token)
        tokens.append(token)
        mask.append(~finished)
        stats.append(token_stats(logits[:, None], token[:, None], top_n=top_n, temperature=temperature,
                                 branching_mass=branching_mass))
        finished = finished | (token == eos)
        if finished.all():
            break
        attention = torch.cat([attention, torch.ones(batch, 1, dtype=attention.dtype, device=device)], 1)
        out = model(input_ids=token[:, None], attention_mask=attention, position_ids=next_position[:, None],
                    use_cache=True, **{cache_keyword: past})
        logits, past = out.logits[:, -1], out[cache_keyword]
        next_position = next_position + 1
    response_ids = torch.stack(tokens, 1).cpu()
    response_mask = torch.stack(mask, 1).cpu()
    cat = lambda name: torch.cat([getattr(s, name) for s in stats], 1).cpu()  # noqa: E731
    texts = [tokenizer.decode(ids[m & (ids != eos)].tolist(), skip_special_tokens=True)
             for ids, m in zip(response_ids, response_mask)]
    return Rollout(prompts=list(prompts), prompt_ids=prompt_ids.cpu(), prompt_mask=prompt_mask.cpu(),
                   response_ids=response_ids, response_mask=response_mask, old_logp=cat("logp"),
                   entropy=cat("entropy"), topn_logp=cat("topn_logp"), topn_ids=cat("topn_ids"),
                   branching_factor=cat("branching_factor"), texts=texts)


def score(model, prompt_ids, prompt_mask, response_ids, response_mask, top_n: int = 3, temperature: float = 1.0,
          chunk_tokens: int = 1024) -> TokenStats:
    """Teacher-forced candidate statistics of the responses, with gradient.

    Final hidden states go through the lm_head one chunk of tokens at a time (the full-batch
    float32 logits are never built) when the model exposes ``base_model`` and output embeddings;
    otherwise the model's logits are used.
    """
    device = next(model.parameters()).device
    input_ids = torch.cat([prompt_ids, response_ids], 1).to(device)
    attention = torch.cat([prompt_mask, response_mask], 1).to(device)
    start = prompt_ids.shape[1] - 1
    end = start + response_ids.shape[1]
    response_ids = response_ids.to(device)
    head = model.get_output_embeddings()
    backbone = getattr(model, "base_model", None)
    kwargs = dict(input_ids=input_ids, attention_mask=attention.long(), position_ids=position_ids_from_mask(attention))
    if head is not None and backbone is not None and backbone is not model:
        hidden = backbone(**kwargs).last_hidden_state[:, start:end]
        return token_stats_from_hidden(hidden, head.weight, response_ids, top_n=top_n, temperature=temperature,
                                       lm_head_bias=getattr(head, "bias", None), chunk_tokens=chunk_tokens)
    logits = model(**kwargs).logits[:, start:end]
    return token_stats(logits, response_ids, top_n=top_n, temperature=temperature, chunk_tokens=chunk_tokens)
