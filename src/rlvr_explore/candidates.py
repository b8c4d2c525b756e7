"""Per-token candidate statistics in one streaming pass.

Every loss and diagnostic of the project reads the same four quantities for each response
token: the sampled token's log-prob, the entropy of the next-token distribution, and the
log-probs and ids of the top-N candidates v(1..N) (CaSP Eq. 2). They are computed here, for a
chunk of tokens at a time, with a single logsumexp:

    lse      = logsumexp(z / tau)
    logp     = z_y / tau - lse
    entropy  = lse - sum_v softmax(z / tau)_v * z_v / tau
    topn     = topk(z / tau, N) - lse          (never N copies of the logits)

A custom autograd function keeps only the input, the logsumexp and the entropy per token, and
computes the gradient in closed form, recomputing the chunk's softmax once in backward. From
hidden states, each chunk's logits are made from ``hidden @ lm_head.T`` in forward and again in
backward, so a (B*T, V) float32 tensor never exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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


def _scaled_logits(x, weight, bias, temperature):
    """float32 (or float64) logits / temperature of a chunk: ``x`` is logits, or hidden states when
    ``weight`` is given (bf16/fp16 logits lose the tail of the softmax, so they are upcast)."""
    if weight is not None:
        x = _at_least_fp32(x) @ _at_least_fp32(weight).t()
        if bias is not None:
            x = x + _at_least_fp32(bias)
    x = _at_least_fp32(x)
    return x if temperature == 1.0 else x / temperature


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _CandidateStats(torch.autograd.Function):
    """Forward: the statistics chunk by chunk, one logsumexp each. Backward: the closed form
    d logp_y/dz = e_y - pi, dH/dz = -pi (log pi + H), d topn_n/dz = e_v(n) - pi, recomputing pi
    per chunk; nothing of size (rows, V) is kept between the passes."""

    @staticmethod
    def forward(ctx, x, weight, bias, ids, top_n, temperature, chunk_tokens, branching_mass):
        logp, entropy, lse, top_logp, top_ids, branching = [], [], [], [], [], []
        for start in range(0, x.shape[0], chunk_tokens):
            z = _scaled_logits(x[start : start + chunk_tokens], weight, bias, temperature)
            chunk_lse = torch.logsumexp(z, dim=-1, keepdim=True)
            probs = torch.sub(z, chunk_lse).exp_()
            logp.append(z.gather(-1, ids[start : start + chunk_tokens, None]).squeeze(-1) - chunk_lse.squeeze(-1))
            entropy.append(chunk_lse.squeeze(-1) - torch.linalg.vecdot(probs, z))
            values, indices = z.topk(top_n, dim=-1)
            top_logp.append(values - chunk_lse)
            top_ids.append(indices)
            lse.append(chunk_lse.squeeze(-1))
            if branching_mass is not None:
                ordered = probs.sort(dim=-1, descending=True).values
                # candidates strictly below the mass target, plus the one that crosses it
                branching.append(((ordered.cumsum(-1) < branching_mass).sum(-1) + 1).clamp(max=z.shape[-1]))
        cat = lambda parts: torch.cat(parts) if parts else None  # noqa: E731
        logp, entropy, lse, top_logp, top_ids = map(cat, (logp, entropy, lse, top_logp, top_ids))
        ctx.save_for_backward(x, weight, bias, ids, lse, entropy, top_ids)
        ctx.temperature, ctx.chunk_tokens = temperature, chunk_tokens
        ctx.mark_non_differentiable(top_ids)
        if branching_mass is not None:
            branching = cat(branching)
            ctx.mark_non_differentiable(branching)
        else:
            branching = torch.zeros(0, dtype=torch.long, device=x.device)
        return logp, entropy, top_logp, top_ids, branching

    @staticmethod
    def backward(ctx, g_logp, g_entropy, g_top, _ids, _branching):
        x, weight, bias, ids, lse, entropy, top_ids = ctx.saved_tensors
        rows = x.shape[0]
        zeros = lambda *shape: torch.zeros(*shape, dtype=lse.dtype, device=x.device)  # noqa: E731
        g_logp = zeros(rows) if g_logp is None else g_logp.to(lse.dtype)
        g_entropy = zeros(rows) if g_entropy is None else g_entropy.to(lse.dtype)
        g_top = zeros(rows, top_ids.shape[-1]) if g_top is None else g_top.to(lse.dtype)
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight, dtype=lse.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_b = torch.zeros_like(bias, dtype=lse.dtype) if bias is not None and ctx.needs_input_grad[2] else None
        for start in range(0, rows, ctx.chunk_tokens):
            part = slice(start, start + ctx.chunk_tokens)
            x_part = x[part]
            z = _scaled_logits(x_part, weight, bias, ctx.temperature)
            logp_all = torch.sub(z, lse[part, None])
            probs = logp_all.exp()
            coefficient = g_logp[part] + g_top[part].sum(-1)
            # grad_z = -probs * (coefficient + g_H (logp_all + H)), built in place in logp_all's buffer
            factor = logp_all.add_(entropy[part, None]).mul_(g_entropy[part, None]).add_(coefficient[:, None])
            grad_z = factor.mul_(probs).neg_()
            grad_z.scatter_add_(-1, ids[part, None], g_logp[part, None])
            grad_z.scatter_add_(-1, top_ids[part], g_top[part])
            if ctx.temperature != 1.0:
                grad_z.div_(ctx.temperature)
            if weight is None:
                if grad_x is not None:
                    grad_x[part] = grad_z.to(x.dtype)
                continue
            if grad_x is not None:
                grad_x[part] = (grad_z @ _at_least_fp32(weight)).to(x.dtype)
            if grad_w is not None:
                grad_w += grad_z.t() @ _at_least_fp32(x_part)
            if grad_b is not None:
                grad_b += grad_z.sum(0)
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_x, grad_w, grad_b, None, None, None, None, None


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


def _run(x, weight, bias, ids, leading, top_n, temperature, chunk_tokens, branching_mass) -> TokenStats:
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    logp, entropy, topn_logp, topn_ids, branching = _CandidateStats.apply(
        x, weight, bias, ids.reshape(-1).long(), top_n, temperature, chunk_tokens, branching_mass)
    return TokenStats(
        logp=logp.reshape(leading),
        entropy=entropy.reshape(leading),
        topn_logp=topn_logp.reshape(*leading, top_n),
        topn_ids=topn_ids.reshape(*leading, top_n),
        branching_factor=branching.reshape(leading) if branching_mass is not None else None,
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
    return _run(logits.reshape(-1, vocab), None, None, response_ids, leading, top_n, temperature, chunk_tokens,
                branching_mass)


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

    Logits are made one chunk of tokens at a time, in forward and again in backward, so peak memory
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
    return _run(hidden.reshape(-1, hidden.shape[-1]), lm_head_weight, lm_head_bias, response_ids, leading, top_n,
                temperature, chunk_tokens, branching_mass)
