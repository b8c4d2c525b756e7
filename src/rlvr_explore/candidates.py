"""Per-token candidate statistics in one streaming pass.

Every loss and diagnostic of the project reads the same four quantities for each response
token: the sampled token's log-prob, the entropy of the next-token distribution, and the
log-probs and ids of the top-N candidates v(1..N) (CaSP Eq. 2). They are computed here, for a
chunk of tokens at a time, with a single logsumexp:

    lse      = logsumexp(z / tau)
    logp     = z_y / tau - lse
    entropy  = lse - sum_v softmax(z / tau)_v * z_v / tau
    topn     = topk(z / tau, N) - lse          (never N copies of the logits)

Each chunk runs under activation checkpointing, so autograd keeps only the chunk's input and
recomputes the float32 softmax in backward. From hidden states, the chunk's logits are made
from ``hidden @ lm_head.T`` inside the checkpoint, so a (B*T, V) float32 tensor never exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_TOKENS = 1024


@dataclass
class TokenStats:
    """Statistics of the policy at each response position; every tensor is (B, T) or (B, T, N).

    ``logp``, ``entropy`` and ``topn_logp`` carry gradient; ``topn_ids`` are the ids of the
    rank-1..N candidates in descending probability; ``branching_factor`` (no gradient) is the
    number of candidates needed to reach the requested cumulative mass (STILL §2.2), when asked.
    """

    logp: torch.Tensor
    entropy: torch.Tensor
    topn_logp: torch.Tensor
    topn_ids: torch.Tensor
    branching_factor: torch.Tensor | None = None



def _stats_of_scaled_logits(z: torch.Tensor, ids: torch.Tensor, top_n: int, branching_mass: float | None):
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    logp_all = z - lse
    probs = logp_all.exp()
    logp = logp_all.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    entropy = lse.squeeze(-1) - (probs * z).sum(-1)
    top_z, top_ids = z.topk(top_n, dim=-1)
    topn_logp = top_z - lse
    if branching_mass is None:
        return logp, entropy, topn_logp, top_ids
    with torch.no_grad():
        sorted_probs = probs.sort(dim=-1, descending=True).values
        # candidates strictly below the mass target, plus the one that crosses it
        branching = (sorted_probs.cumsum(-1) < branching_mass).sum(-1) + 1
    return logp, entropy, topn_logp, top_ids, branching.clamp(max=z.shape[-1])


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    # bf16/fp16 logits lose the tail of the softmax; float64 input stays float64
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _chunk_from_logits(logits, ids, temperature, top_n, branching_mass):
    return _stats_of_scaled_logits(_at_least_fp32(logits) / temperature, ids, top_n, branching_mass)


def _chunk_from_hidden(hidden, weight, bias, ids, temperature, top_n, branching_mass):
    logits = _at_least_fp32(hidden) @ _at_least_fp32(weight).t()
    if bias is not None:
        logits = logits + _at_least_fp32(bias)
    return _stats_of_scaled_logits(logits / temperature, ids, top_n, branching_mass)


def _check(response_ids: torch.Tensor, leading: torch.Size, vocab: int, top_n: int, temperature: float, what: str):
    if response_ids.shape != leading:
        raise ValueError(
            f"response_ids has shape {tuple(response_ids.shape)}, expected {tuple(leading)} to match {what}"
        )
    if response_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"response_ids must be an integer tensor, got {response_ids.dtype}")
    if not 1 <= top_n <= vocab:
        raise ValueError(f"top_n must be in [1, vocab size {vocab}], got {top_n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _run_chunked(chunk_fn, row_inputs, n_rows: int, chunk_tokens: int, with_branching: bool, params=()):
    """Apply ``chunk_fn`` to consecutive row blocks of ``row_inputs``, checkpointed when grad is on."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    need_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in [*row_inputs, *params])
    outputs = []
    for start in range(0, max(n_rows, 1), chunk_tokens):
        rows = [x[start : start + chunk_tokens] for x in row_inputs]
        outputs.append(checkpoint(chunk_fn, *rows, use_reentrant=False) if need_grad else chunk_fn(*rows))
    return [torch.cat([o[i] for o in outputs]) for i in range(5 if with_branching else 4)]


def _pack(fields, leading: torch.Size, top_n: int) -> TokenStats:
    logp, entropy, topn_logp, topn_ids, *branching = fields
    return TokenStats(
        logp=logp.reshape(leading),
        entropy=entropy.reshape(leading),
        topn_logp=topn_logp.reshape(*leading, top_n),
        topn_ids=topn_ids.reshape(*leading, top_n),
        branching_factor=branching[0].reshape(leading) if branching else None,
    )


def token_stats(
    logits: torch.Tensor,
    response_ids: torch.Tensor,
    top_n: int = 3,
    temperature: float = 1.0,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    branching_mass: float | None = None,
) -> TokenStats:
    """Candidate statistics from logits ``(B, T, V)`` at the positions of ``response_ids (B, T)``.

    ``logits[b, t]`` must be the distribution that produced ``response_ids[b, t]`` (shift the
    model's output by one before calling). Gradients flow into ``logits`` through ``logp``,
    ``entropy`` and ``topn_logp``. ``branching_mass`` (e.g. 0.95) also returns the rollout
    branching factor (STILL §2.2).
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    leading, vocab = logits.shape[:2], logits.shape[-1]
    _check(response_ids, leading, vocab, top_n, temperature, f"logits {tuple(logits.shape)}")
    chunk_fn = partial(_chunk_from_logits, temperature=temperature, top_n=top_n, branching_mass=branching_mass)
    fields = _run_chunked(
        chunk_fn, [logits.reshape(-1, vocab), response_ids.reshape(-1)], leading.numel(), chunk_tokens,
        branching_mass is not None,
    )
    return _pack(fields, leading, top_n)


def token_stats_from_hidden(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    response_ids: torch.Tensor,
    top_n: int = 3,
    temperature: float = 1.0,
    lm_head_bias: torch.Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    branching_mass: float | None = None,
) -> TokenStats:
    """The same statistics from final hidden states ``(B, T, d)`` and an lm_head weight ``(V, d)``.

    Logits are made one chunk of tokens at a time inside an activation checkpoint, so peak memory
    is ``chunk_tokens * V`` floats instead of ``B * T * V``; gradients reach ``hidden``, the
    weight and the bias.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (B, T, d), got shape {tuple(hidden.shape)}")
    if lm_head_weight.dim() != 2 or lm_head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"lm_head_weight must be (V, d={hidden.shape[-1]}), got shape {tuple(lm_head_weight.shape)}"
        )
    leading, vocab = hidden.shape[:2], lm_head_weight.shape[0]
    _check(response_ids, leading, vocab, top_n, temperature, f"hidden {tuple(hidden.shape)}")

    def chunk_fn(h, ids):
        return _chunk_from_hidden(h, lm_head_weight, lm_head_bias, ids, temperature, top_n, branching_mass)

    fields = _run_chunked(
        chunk_fn, [hidden.reshape(-1, hidden.shape[-1]), response_ids.reshape(-1)], leading.numel(),
        chunk_tokens, branching_mass is not None, params=(lm_head_weight, lm_head_bias),
    )
    return _pack(fields, leading, top_n)
