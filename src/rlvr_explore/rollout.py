"""Everything that runs the policy: batched KV-cached sampling (:func:`sample`) and the
teacher-forced pass the losses differentiate (:func:`score`).

Layout (docs/architecture.md, the data flow): prompts left-padded, responses right-padded. ``response_mask`` covers the
generated tokens including the closing EOS; a response cut at ``max_new_tokens`` has none.
Both functions return the candidate statistics of ``rlvr_explore.candidates`` at the sampling
temperature, so ``old_logp`` from :func:`sample` and ``logp`` from :func:`score` are the same
quantity under the old and the current policy.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from rlvr_explore.candidates import (
    TokenStats, next_token_distribution, sampling_probabilities, token_stats, token_stats_from_hidden, top_candidates,
)


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
    """Left-padded ids and mask, the whole batch tokenised in one call; a BOS is put first when the
    tokenizer has one."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    rows = [bos + ids for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.arange(width) >= torch.tensor([width - len(r) for r in rows])[:, None]
    return ids, mask


def cache_keyword_of(model) -> str:
    """transformers >= 5.2x names the KV cache ``cache``; earlier versions ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the valid tokens, so left padding does not shift them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


NUCLEUS_FIRST = 64  # candidates ranked first for top-p; the vocabulary is sorted only past them


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set of tokens with mass >= top_p, renormalised.

    The kept set is a prefix of the descending order, so the top 64 candidates decide it for
    every row whose nucleus ends inside them; only the other rows are sorted."""
    ordered, order = top_candidates(probs, min(NUCLEUS_FIRST, probs.shape[-1]))
    wide = (ordered.cumsum(-1) - ordered)[:, -1] <= top_p  # the nucleus may reach past the top 64
    if wide.any():
        wide_rows = wide.nonzero().squeeze(-1)
        full_ordered, full_order = probs[wide_rows].sort(-1, descending=True)
        kept_wide = _keep_prefix(probs[wide_rows], full_ordered, full_order, top_p)
    kept = _keep_prefix(probs, ordered, order, top_p)
    if wide.any():
        kept[wide_rows] = kept_wide
    return kept / kept.sum(-1, keepdim=True)


def _keep_prefix(probs, ordered, order, top_p):
    """``probs`` zeroed but for the ranked candidates whose preceding mass is at most ``top_p``."""
    inside = ordered.masked_fill(ordered.cumsum(-1) - ordered > top_p, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, inside)


DEFERRED_STATISTICS_ELEMENTS = 1 << 22  # B * max_new_tokens * V up to which logits are kept (16 MB)
DRAW_GROUP = 128  # tokens per group when drawing: a group first, then a token inside it


def sampling_uniforms(generator: torch.Generator | None, steps: int, rows: int, device: torch.device) -> torch.Tensor:
    """(steps, rows) float64 uniforms, every one a sampling call needs, drawn at once on the model's
    device. On a GPU they come from a device generator seeded by one draw of ``generator`` (the
    run's CPU generator, which checkpoints keep), so no token waits for a host-to-device copy."""
    device = torch.device(device)
    if device.type == "cpu" or (generator is not None and generator.device == device):
        return torch.rand(steps, rows, generator=generator, dtype=torch.float64, device=device)
    seed = int(torch.randint(2**63 - 1, (), generator=generator))
    return torch.rand(steps, rows, generator=torch.Generator(device).manual_seed(seed), dtype=torch.float64,
                      device=device)


def draw(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` (B, V) by inverse CDF with one ``uniform`` (B,) per row: the group of
    DRAW_GROUP tokens from the cumulative group sums (each group summed in float32, a relative
    error of about 1e-7, accumulated in float64), then the token inside the group (float64).
    (torch.multinomial draws one exponential per vocabulary entry, which at V = 151,936 costs more
    than a small model's forward pass.) Zero-probability tokens are never drawn."""
    vocab = probs.shape[1]
    uniform = uniform.to(device=probs.device, dtype=torch.float64)[:, None]
    if vocab <= 4 * DRAW_GROUP:
        cumulative = probs.double().cumsum(-1)
        return _first_reaching(cumulative, uniform * cumulative[:, -1:]).squeeze(-1)
    groups = -(-vocab // DRAW_GROUP)
    full = vocab // DRAW_GROUP * DRAW_GROUP
    sums = probs[:, :full].unflatten(-1, (-1, DRAW_GROUP)).sum(-1)
    if full < vocab:
        sums = torch.cat([sums, probs[:, full:].sum(-1, keepdim=True)], 1)
    cumulative = sums.double().cumsum(-1)
    target = uniform * cumulative[:, -1:]
    group = torch.searchsorted(cumulative, target, right=True).clamp(max=groups - 1)
    below = torch.where(group > 0, cumulative.gather(1, (group - 1).clamp(min=0)), 0.0)
    ids = group * DRAW_GROUP + torch.arange(DRAW_GROUP, device=probs.device)
    inner = (probs.gather(1, ids.clamp(max=vocab - 1)).double() * (ids < vocab)).cumsum(-1)
    return ids.gather(1, _first_reaching(inner, target - below)).squeeze(-1)


def _first_reaching(cumulative: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 1) index of the first entry whose cumulative mass reaches ``target``, held inside
    (0, total] so that rounding never picks an entry without mass."""
    target = torch.minimum(target.clamp(min=torch.finfo(torch.float64).tiny), cumulative[:, -1:])
    # the clamp only acts on NaN masses, so a non-finite distribution yields an index, not a fault
    return torch.searchsorted(cumulative, target).clamp(max=cumulative.shape[-1] - 1)


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
    batch, eos = len(prompts), tokenizer.eos_token_id
    attention = prompt_mask.long()
    cache_keyword = cache_keyword_of(model)
    # the prompt's last position only: at V = 151,936 the logits of every prompt position cost more than the rest
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(input_ids=prompt_ids, attention_mask=attention, position_ids=position_ids_from_mask(prompt_mask),
                use_cache=True, **last_only)
    logits, past = out.logits[:, -1], out[cache_keyword]
    next_position = attention.sum(-1)
    prompt_width = attention.shape[1]
    attention = torch.cat([attention, torch.ones(batch, max_new_tokens, dtype=attention.dtype, device=device)], 1)
    # finished rows keep decoding (their tokens ignored) until a quarter of the running batch has
    # finished; then they leave the batch and the KV cache, when the cache can drop rows
    can_drop_rows = hasattr(past, "batch_select_indices")
    # small vocabularies keep every step's logits and take the statistics in one call at the end
    # (the same values: fewer, larger operations); large ones take them step by step, from the
    # pass that makes the sampling probabilities
    deferred = batch * max_new_tokens * logits.shape[-1] <= DEFERRED_STATISTICS_ELEMENTS
    rows = torch.arange(batch, device=device)  # original index of each row of the running batch
    live = torch.ones(batch, dtype=torch.bool, device=device)
    steps = []  # per step: the original rows it wrote, their token, and their logits or statistics
    uniforms = None if greedy else sampling_uniforms(generator, max_new_tokens, batch, device)
    for position in range(max_new_tokens):
        if deferred:
            probs = sampling_probabilities(logits, temperature)
            finite = torch.isfinite(probs).all()
        else:
            step = next_token_distribution(logits, temperature, top_n, branching_mass)
            probs, finite = step.probs, torch.isfinite(step.log_normalizer).all()
        token = probs.argmax(-1) if greedy else draw(_nucleus(probs, top_p) if top_p < 1 else probs,
                                                         uniforms[position, rows])
        next_live = live & (token != eos)
        # one host synchronisation per token, for all three (on a GPU each would wait for the queue);
        # a token drawn from non-finite probabilities is a valid index (see _first_reaching) and is dropped
        finite, everyone, still_live = torch.stack([finite.long(), live.all().long(), next_live.sum()]).tolist()
        if not finite:
            raise NonFiniteError("sampling: the policy's next-token probabilities are NaN or inf "
                                 "(its logits or weights are not finite)")
        columns = (rows, token, logits) if deferred else (
            rows, token, step.logp(logits, token, temperature).float(), step.entropy.float(), step.topn_logp.float(),
            step.topn_ids, step.branching_factor)
        steps.append([column if everyone else column[live] for column in columns])
        live = next_live
        finished = len(rows) - still_live
        if finished == len(rows) or position == max_new_tokens - 1:
            break
        if can_drop_rows and finished >= max(1, len(rows) // 4):
            keep = live.nonzero().squeeze(-1)
            past.batch_select_indices(keep)
            rows, token, attention, next_position = rows[keep], token[keep], attention[keep], next_position[keep]
            live = live[keep]
        out = model(input_ids=token[:, None], attention_mask=attention[:, : prompt_width + position + 1],
                    position_ids=next_position[:, None], use_cache=True, **{cache_keyword: past})
        logits, past = out.logits[:, -1], out[cache_keyword]
        next_position = next_position + 1
    written_rows = torch.cat([s[0] for s in steps]).cpu()
    positions = torch.cat([torch.full((len(s[0]),), i) for i, s in enumerate(steps)])

    def layout(column: int, fill=0, dtype=None):
        """(B, T, ...) of one per-step column, ``fill`` where no token was written."""
        values = torch.cat([s[column] for s in steps]).cpu()
        out = torch.full((batch, len(steps), *values.shape[1:]), fill, dtype=dtype or values.dtype)
        out[written_rows, positions] = values if dtype is None else values.to(dtype)
        return out

    response_ids = layout(1, fill=tokenizer.pad_token_id)
    response_mask = torch.zeros(batch, len(steps), dtype=torch.bool)
    response_mask[written_rows, positions] = True
    kept = (response_mask & (response_ids != eos)).tolist()
    texts = tokenizer.batch_decode([[t for t, k in zip(ids, keep) if k] for ids, keep in zip(response_ids.tolist(), kept)],
                                   skip_special_tokens=True)
    if deferred:
        stats = token_stats(layout(2), response_ids, top_n=top_n, temperature=temperature,
                            branching_mass=branching_mass)
        unwritten = ~response_mask
        fields = {name: getattr(stats, name).masked_fill(unwritten if name in ("logp", "entropy", "branching_factor")
                                                         else unwritten[..., None], 0)
                  for name in ("logp", "entropy", "topn_logp", "topn_ids", "branching_factor")}
        fields = {k: v.float() if v.is_floating_point() else v for k, v in fields.items()}
    else:
        fields = dict(zip(("logp", "entropy", "topn_logp", "topn_ids", "branching_factor"), map(layout, range(2, 7))))
    return Rollout(prompts=list(prompts), prompt_ids=prompt_ids.cpu(), prompt_mask=prompt_mask.cpu(),
                   response_ids=response_ids, response_mask=response_mask, old_logp=fields["logp"],
                   entropy=fields["entropy"], topn_logp=fields["topn_logp"], topn_ids=fields["topn_ids"],
                   branching_factor=fields["branching_factor"], texts=texts)


def score(model, prompt_ids, prompt_mask, response_ids, response_mask, top_n: int = 3, temperature: float = 1.0,
          chunk_tokens: int = 1024, entropy: bool = True) -> TokenStats:
    """Teacher-forced candidate statistics of the responses, with gradient (``top_n=0`` and
    ``entropy=False`` for the log-probs alone).

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
                                       lm_head_bias=getattr(head, "bias", None), chunk_tokens=chunk_tokens,
                                       entropy=entropy)
    logits = model(**kwargs).logits[:, start:end]
    return token_stats(logits, response_ids, top_n=top_n, temperature=temperature, entropy=entropy)
