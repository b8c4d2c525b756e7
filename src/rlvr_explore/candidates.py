"""Per-token candidate statistics in one streaming pass.

Every loss and diagnostic of the project reads some of these quantities for each response
token: the sampled token's log-prob, the entropy of the next-token distribution, and the
log-probs and ids of the top-N candidates v(1..N) (CaSP, arXiv 2510.14807, Eq. 2). A caller asks
only for what it reads (``top_n=0`` and ``entropy=False`` leave a log-prob alone). They are
computed over blocks of rows, with one exponential pass per block. The block size depends on the
device: on a CPU a few rows (about 4 MB, so every pass over a block stays in cache); on a GPU up
to 1 GiB of float32, so a call is a handful of blocks and the kernels, not their launches, take
the time (at Qwen2.5's vocabulary, 4 MB blocks are 6 rows: 1,400 blocks of small kernels for
8,192 tokens). On CUDA with Triton installed, ``rlvr_explore.fused`` computes the same in one
streaming pass per row instead (``FUSED``).

    m        = max(z / tau),   e = exp(z / tau - m),   s = sum e,   lse = m + log s
    logp     = z_y / tau - lse
    entropy  = lse - sum_v e_v z_v / (tau s)
    topn     = top-N of z / tau - lse   (the N groups of 128 logits with the largest maxima hold
                                         the top N, so only those are ranked)

A custom autograd function keeps only the input, the logsumexp and the entropy per token, and
computes the gradient in closed form, recomputing each block's softmax in backward. From hidden
states, each chunk's logits are made from ``hidden @ lm_head.T`` in forward and again in
backward, so a (B*T, V) float32 tensor never exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

DEFAULT_CHUNK_TOKENS = 1024  # hidden-state path: logits are built for this many tokens at a time
CPU_BLOCK_ELEMENTS = 1 << 20  # rows per block = this // V: one block of float32 is 4 MB, in cache
GPU_BLOCK_ELEMENTS = 1 << 28  # one block of float32 is 1 GiB: few launches, a fraction of the logits' size
TOP_GROUP = 128  # logits per group when ranking the top-N by group maxima
# The Triton kernels of ``rlvr_explore.fused``: "auto" uses them for CUDA tensors when Triton is
# installed, "never" keeps the blocks everywhere, "always" uses them on any device (the tests run
# them on the CPU under TRITON_INTERPRET=1). Not for float64, nor with the branching factor.
FUSED = "auto"


@dataclass
class TokenStats:
    """Statistics of the policy at each response position; every tensor is (B, T) or (B, T, N).

    ``logp``, ``entropy`` and ``topn_logp`` carry gradient; ``topn_ids`` are the ids of the
    rank-1..N candidates in descending probability; ``entropy`` is None when not asked for, the
    top-N when ``top_n=0``; ``branching_factor`` (no gradient) is the number of candidates needed
    to reach the requested cumulative mass (STILL §2.2), when asked.
    """

    logp: torch.Tensor
    entropy: torch.Tensor | None
    topn_logp: torch.Tensor | None
    topn_ids: torch.Tensor | None
    branching_factor: torch.Tensor | None = None

    def padded_to(self, width: int) -> "TokenStats":
        """The same statistics with zero positions appended up to ``width`` (gradient flows through)."""
        def pad(value):
            missing = width - value.shape[1]
            return value if missing <= 0 else torch.nn.functional.pad(value, (0, 0) * (value.ndim - 2) + (0, missing))
        return TokenStats(*(None if value is None else pad(value) for value in
                            (self.logp, self.entropy, self.topn_logp, self.topn_ids, self.branching_factor)))


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or in its own dtype when wider (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _chunk_logits(x, weight, bias):
    """Logits of a chunk: ``x`` itself, or ``x @ weight.T + bias`` in at least float32 (bf16/fp16
    logits lose the tail of the softmax)."""
    if weight is None:
        return x
    z = at_least_fp32(x) @ at_least_fp32(weight).t()
    return z if bias is None else z.add_(at_least_fp32(bias))


def _scaled(block: torch.Tensor, temperature: float) -> torch.Tensor:
    block = at_least_fp32(block)
    return block if temperature == 1.0 else block / temperature


def top_candidates(z: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` largest entries of each row of ``z`` (rows, V) and their ids, in descending order.

    The n groups of TOP_GROUP entries with the largest maxima contain a top-n set, so only those
    (and the last, partial group) are ranked: one max pass over the row instead of a selection.
    """
    rows, vocab = z.shape
    groups = vocab // TOP_GROUP
    if groups < 4 * n:
        return z.topk(n, dim=-1)
    body = z[:, : groups * TOP_GROUP].unflatten(-1, (groups, TOP_GROUP))
    best_groups = body.amax(-1).topk(n, dim=-1).indices  # (rows, n)
    members = body.gather(1, best_groups[..., None].expand(rows, n, TOP_GROUP)).flatten(1)
    member_ids = (best_groups[..., None] * TOP_GROUP + torch.arange(TOP_GROUP, device=z.device)).flatten(1)
    tail_ids = torch.arange(groups * TOP_GROUP, vocab, device=z.device).expand(rows, -1)
    values, position = torch.cat([members, z[:, groups * TOP_GROUP :]], 1).topk(n, dim=-1)
    return values, torch.cat([member_ids, tail_ids], 1).gather(1, position)


_BUCKETS = (0x3F800000 >> 16) + 1  # float32 bit patterns of [0, 1] >> 16: exponent and 7 mantissa bits
_PEAKED = 64  # candidates tried first: a peaked distribution reaches its mass among these


def _sorted_branching(probs: torch.Tensor, mass: float) -> torch.Tensor:
    ordered = probs.double().sort(dim=-1, descending=True).values
    return (ordered.cumsum(-1) < mass).sum(-1) + 1


def branching_factor(probs: torch.Tensor, mass: float) -> torch.Tensor:
    """Candidates needed, in descending probability, to reach cumulative probability ``mass``:
    the tokens strictly below the target plus the one that crosses it (STILL §2.2). Sums are
    float64, in descending order, so the count is that of sorting the row.

    Without sorting the vocabulary: rows whose top 64 candidates reach the mass are done from
    those; the others are bucketed by the float32 bit pattern of each probability (monotone for
    p >= 0), per-bucket masses find the bucket where the cumulative mass crosses the target, and
    only that bucket is sorted. float64 inputs and small vocabularies are sorted.
    """
    rows, vocab = probs.shape
    if probs.dtype != torch.float32 or vocab <= 4 * _PEAKED:
        return _sorted_branching(probs, mass).clamp(max=vocab)
    top = top_candidates(probs, _PEAKED)[0].double().cumsum(-1)
    result = (top < mass).sum(-1) + 1
    flat = top[:, -1] < mass
    if flat.any():
        result[flat] = _bucketed_branching(probs[flat].contiguous(), mass)
    return result.clamp(max=vocab)


def _bucketed_branching(p: torch.Tensor, mass: float) -> torch.Tensor:
    rows = p.shape[0]
    bucket = p.view(torch.int32) >> 16
    flat = (bucket + torch.arange(rows, dtype=torch.int32, device=p.device)[:, None] * _BUCKETS).flatten()
    masses = torch.bincount(flat, weights=p.flatten().double(), minlength=rows * _BUCKETS).view(rows, _BUCKETS).flip(-1)
    cumulative = masses.cumsum(-1)
    crossing = (cumulative < mass).sum(-1).clamp(max=_BUCKETS - 1)  # in descending bucket order
    previous = (crossing - 1).clamp(min=0)[:, None]
    mass_before = torch.where(crossing > 0, cumulative.gather(1, previous).squeeze(1), 0.0)
    crossing_bucket = (_BUCKETS - 1 - crossing).to(torch.int32)[:, None]
    count_before = (bucket > crossing_bucket).count_nonzero(-1)
    inside = bucket == crossing_bucket
    count_inside = inside.count_nonzero(-1)
    # the crossing bucket's members of every row at once, in descending order: one host
    # synchronisation for the call (the widest bucket's size), none per row
    width = max(1, int(count_inside.max()))
    members = torch.where(inside, p, -1.0).topk(width, dim=-1).values.double()
    valid = torch.arange(width, device=p.device) < count_inside[:, None]
    reached = torch.where(valid, members, 0.0).cumsum(-1) + mass_before[:, None]
    needed = ((reached < mass) & valid).sum(-1) + 1
    return count_before + torch.minimum(needed, count_inside)


def _softmax_into(z: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(z) written into ``out``, and logsumexp(z) (rows, 1): one exponential pass."""
    m = z.amax(-1, keepdim=True)
    e = torch.sub(z, m, out=out).exp_()
    s = e.sum(-1, keepdim=True)
    return e.div_(s), m + s.log()


def _block_forward(z, ids, top_n, with_entropy, branching_mass, scratch):
    """Statistics of one block of scaled logits ``z`` (rows, V); ``scratch`` ends holding the
    block's probabilities. Returns (lse, logp, entropy, top values, top ids, branching)."""
    probs, lse = _softmax_into(z, scratch)
    logp = (z.gather(-1, ids[:, None]) - lse).squeeze(-1) if ids is not None else None
    entropy = (lse.squeeze(-1) - torch.linalg.vecdot(probs, z)) if with_entropy else None
    top = top_candidates(z, top_n) if top_n else (None, None)
    top_logp = top[0] - lse if top_n else None
    branching = branching_factor(probs, branching_mass) if branching_mass is not None else None
    return lse.squeeze(-1), logp, entropy, top_logp, top[1], branching


def _fused_kernels(x: torch.Tensor, dtype: torch.dtype, branching_mass: float | None):
    """The ``fused`` module when it serves this call (see ``FUSED``), else None."""
    if FUSED == "never" or dtype != torch.float32 or branching_mass is not None or (FUSED == "auto" and not x.is_cuda):
        return None
    try:
        from rlvr_explore import fused
    except ImportError:  # Triton is not installed: the blocks serve
        return None
    return fused if fused.works_on(x.device) else None


def block_rows(vocab: int, device: torch.device) -> int:
    """Rows per block at this vocabulary on this device (see the module's docstring)."""
    return max(1, (CPU_BLOCK_ELEMENTS if device.type == "cpu" else GPU_BLOCK_ELEMENTS) // vocab)


def _blocks(rows: int, vocab: int, device: torch.device):
    step = block_rows(vocab, device)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _forward_blocks(x, weight, bias, ids, top_n, with_entropy, temperature, chunk_tokens, branching_mass,
                    probs_out=None):
    """The statistics of every row, block by block: (lse, logp, entropy, top-N log-probs, top-N
    ids, branching); the ones not asked for are empty. ``x`` is logits (``weight`` None) or hidden
    states, whose logits are made ``chunk_tokens`` rows at a time. ``probs_out`` (rows, V), when
    given, receives the probabilities; otherwise one block-sized buffer is reused."""
    with torch.autocast(x.device.type, enabled=False):  # under mixed precision too: float32 matmuls and sums
        return _forward_blocks_fp32(x, weight, bias, ids, top_n, with_entropy, temperature, chunk_tokens,
                                    branching_mass, probs_out)


def _forward_blocks_fp32(x, weight, bias, ids, top_n, with_entropy, temperature, chunk_tokens, branching_mass,
                         probs_out):
    rows = x.shape[0]
    vocab = x.shape[1] if weight is None else weight.shape[0]
    dtype = torch.promote_types(x.dtype if weight is None else torch.promote_types(x.dtype, weight.dtype),
                                torch.float32)
    new = lambda *shape, kind=dtype: torch.empty(*shape, dtype=kind, device=x.device)  # noqa: E731
    lse = new(rows)
    logp = new(rows if ids is not None else 0)
    entropy = new(rows if with_entropy else 0)
    top_logp, top_ids = new(rows, top_n), new(rows, top_n, kind=torch.long)
    branching = new(rows if branching_mass is not None else 0, kind=torch.long)
    kernels = _fused_kernels(x, dtype, branching_mass) if probs_out is None else None
    scratch = new(min(rows, block_rows(vocab, x.device)), vocab) if probs_out is None and kernels is None else None
    chunk = max(rows, 1) if weight is None else chunk_tokens
    for start in range(0, rows, chunk):
        logits = _chunk_logits(x[start : start + chunk], weight, bias)
        if kernels is not None:
            part = slice(start, start + logits.shape[0])
            found = kernels.forward(logits, None if ids is None else ids[part], top_n, with_entropy, temperature)
            lse[part] = found[0]
            if ids is not None:
                logp[part] = found[1]
            if with_entropy:
                entropy[part] = found[2]
            if top_n:
                top_logp[part], top_ids[part] = found[3], found[4]
            continue
        for block in _blocks(logits.shape[0], vocab, x.device):
            part = slice(start + block.start, start + block.stop)
            z = _scaled(logits[block], temperature)
            out = probs_out[part] if probs_out is not None else scratch[: z.shape[0]]
            block_lse, block_logp, block_entropy, block_top_logp, block_top_ids, block_branching = _block_forward(
                z, None if ids is None else ids[part], top_n, with_entropy, branching_mass, out)
            lse[part] = block_lse
            if ids is not None:
                logp[part] = block_logp
            if with_entropy:
                entropy[part] = block_entropy
            if top_n:
                top_logp[part], top_ids[part] = block_top_logp, block_top_ids
            if branching_mass is not None:
                branching[part] = block_branching
    return lse, logp, entropy, top_logp, top_ids, branching


def _backward_blocks(logits, grad_z, start, ids, lse, entropy, coefficient, g_logp, g_entropy, g_top, top_ids,
                     temperature, scratch):
    """The closed-form gradient of the rows ``start...`` of ``logits`` into ``grad_z``, block by
    block, recomputing each block's softmax from the saved log-normaliser."""
    for block in _blocks(logits.shape[0], logits.shape[1], logits.device):
        part = slice(start + block.start, start + block.stop)
        z, g = _scaled(logits[block], temperature), grad_z[block]
        log_probs = torch.sub(z, lse[part, None], out=scratch[: z.shape[0]])
        probs = torch.exp(log_probs, out=g)
        if g_entropy is None:
            probs.mul_(-coefficient[part, None])
        else:
            # grad_z = -pi (c + g_H (log pi + H)), with c the log-prob and top-N weights
            shift = coefficient[part, None] + g_entropy[part, None] * entropy[part, None]
            probs.mul_(torch.addcmul(shift, log_probs, g_entropy[part, None], out=log_probs)).neg_()
        g.scatter_add_(-1, ids[part, None], g_logp[part, None])
        if g_top is not None:
            g.scatter_add_(-1, top_ids[part], g_top[part])
        if temperature != 1.0:
            g.div_(temperature)


class _CandidateStats(torch.autograd.Function):
    """Forward: the statistics block by block. Backward: the closed form
    d logp_y/dz = e_y - pi, dH/dz = -pi (log pi + H), d topn_n/dz = e_v(n) - pi, recomputing pi
    per block; nothing of size (rows, V) is kept between the passes."""

    @staticmethod
    def forward(ctx, x, weight, bias, ids, top_n, with_entropy, temperature, chunk_tokens, branching_mass):
        lse, logp, entropy, top_logp, top_ids, branching = _forward_blocks(
            x, weight, bias, ids, top_n, with_entropy, temperature, chunk_tokens, branching_mass)
        ctx.save_for_backward(x, weight, bias, ids, lse, entropy, top_ids)
        ctx.temperature, ctx.chunk_tokens, ctx.with_entropy = temperature, chunk_tokens, with_entropy
        ctx.mark_non_differentiable(top_ids, branching)
        return logp, entropy, top_logp, top_ids, branching

    @staticmethod
    def backward(ctx, g_logp, g_entropy, g_top, _ids, _branching):
        x, weight, bias, ids, lse, entropy, top_ids = ctx.saved_tensors
        rows, vocab = x.shape[0], (x.shape[1] if weight is None else weight.shape[0])
        dtype = lse.dtype
        g_logp = torch.zeros_like(lse) if g_logp is None else g_logp.to(dtype)
        g_top = g_top.to(dtype) if g_top is not None and top_ids.shape[-1] else None
        g_entropy = g_entropy.to(dtype) if g_entropy is not None and ctx.with_entropy else None
        coefficient = g_logp if g_top is None else g_logp + g_top.sum(-1)
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight, dtype=dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_b = torch.zeros_like(bias, dtype=dtype) if bias is not None and ctx.needs_input_grad[2] else None
        kernels = _fused_kernels(x, dtype, None)
        scratch = torch.empty(min(rows, block_rows(vocab, x.device)), vocab, dtype=dtype, device=x.device) if (
            kernels is None) else None
        # write straight into grad_x (the kernels cast to its dtype)
        direct = weight is None and grad_x is not None and (x.dtype == dtype or kernels is not None)
        chunk = max(rows, 1) if weight is None else ctx.chunk_tokens
        for start in range(0, rows, chunk):
            x_chunk = x[start : start + chunk]
            logits = _chunk_logits(x_chunk, weight, bias)
            grad_z = grad_x[start : start + chunk] if direct else torch.empty(logits.shape, dtype=dtype, device=x.device)
            if kernels is not None:
                part = slice(start, start + logits.shape[0])
                kernels.backward(logits, grad_z, ids[part], lse[part], entropy[part] if g_entropy is not None else None,
                                 g_logp[part], None if g_entropy is None else g_entropy[part],
                                 None if g_top is None else g_top[part], None if g_top is None else top_ids[part],
                                 ctx.temperature)
            else:
                _backward_blocks(logits, grad_z, start, ids, lse, entropy, coefficient, g_logp, g_entropy, g_top,
                                 top_ids, ctx.temperature, scratch)
            if weight is None:
                if grad_x is not None and not direct:
                    grad_x[start : start + chunk] = grad_z.to(x.dtype)
                continue
            if grad_x is not None:
                grad_x[start : start + chunk] = (grad_z @ at_least_fp32(weight)).to(x.dtype)
            if grad_w is not None:
                grad_w += grad_z.t() @ at_least_fp32(x_chunk)
            if grad_b is not None:
                grad_b += grad_z.sum(0)
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def _check(response_ids: torch.Tensor, leading: torch.Size, vocab: int, top_n: int, temperature: float, what: str):
    if response_ids.shape != leading:
        raise ValueError(
            f"response_ids has shape {tuple(response_ids.shape)}, expected {tuple(leading)} to match {what}"
        )
    if response_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"response_ids must be an integer tensor, got {response_ids.dtype}")
    if not 0 <= top_n <= vocab:
        raise ValueError(f"top_n must be in [0, vocab size {vocab}], got {top_n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _run(x, weight, bias, ids, leading, top_n, entropy, temperature, chunk_tokens, branching_mass) -> TokenStats:
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    logp, entropy_, topn_logp, topn_ids, branching = _CandidateStats.apply(
        x, weight, bias, ids.reshape(-1).long(), top_n, entropy, temperature, chunk_tokens, branching_mass)
    return TokenStats(
        logp=logp.reshape(leading),
        entropy=entropy_.reshape(leading) if entropy else None,
        topn_logp=topn_logp.reshape(*leading, top_n) if top_n else None,
        topn_ids=topn_ids.reshape(*leading, top_n) if top_n else None,
        branching_factor=branching.reshape(leading) if branching_mass is not None else None,
    )


def token_stats(
    logits: torch.Tensor,
    response_ids: torch.Tensor,
    top_n: int = 3,
    temperature: float = 1.0,
    branching_mass: float | None = None,
    entropy: bool = True,
) -> TokenStats:
    """Candidate statistics from logits ``(B, T, V)`` at the positions of ``response_ids (B, T)``.

    ``logits[b, t]`` must be the distribution that produced ``response_ids[b, t]`` (shift the
    model's output by one before calling). Gradients flow into ``logits`` through ``logp``,
    ``entropy`` and ``topn_logp``. ``top_n=0`` and ``entropy=False`` skip what the caller does
    not read; ``branching_mass`` (e.g. 0.95) also returns the branching factor (STILL §2.2).
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    leading, vocab = logits.shape[:2], logits.shape[-1]
    _check(response_ids, leading, vocab, top_n, temperature, f"logits {tuple(logits.shape)}")
    # chunk_tokens only paces making logits from hidden states; here they exist already
    return _run(logits.reshape(-1, vocab), None, None, response_ids, leading, top_n, entropy, temperature,
                DEFAULT_CHUNK_TOKENS, branching_mass)


def token_stats_from_hidden(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    response_ids: torch.Tensor,
    top_n: int = 3,
    temperature: float = 1.0,
    lm_head_bias: torch.Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    branching_mass: float | None = None,
    entropy: bool = True,
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
                entropy, temperature, chunk_tokens, branching_mass)


class NextToken(NamedTuple):
    """The sampling distribution of one decoding step and its statistics, all from one pass."""

    probs: torch.Tensor  # (B, V), softmax(logits / temperature)
    log_normalizer: torch.Tensor  # (B,), logsumexp(logits / temperature)
    entropy: torch.Tensor  # (B,)
    topn_logp: torch.Tensor  # (B, N)
    topn_ids: torch.Tensor  # (B, N)
    branching_factor: torch.Tensor | None  # (B,)

    def logp(self, logits: torch.Tensor, token: torch.Tensor, temperature: float) -> torch.Tensor:
        """log-prob of the chosen ``token`` (B,), as :func:`token_stats` computes it."""
        return _scaled(logits.gather(-1, token[:, None]), temperature).squeeze(-1) - self.log_normalizer


@torch.no_grad()
def sampling_probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(logits / temperature) of (B, V) logits, computed as :func:`next_token_distribution`
    computes it for one block (the same values when B * V fits one block)."""
    z = _scaled(logits, temperature)
    return _softmax_into(z, torch.empty_like(z))[0]


@torch.no_grad()
def next_token_distribution(logits: torch.Tensor, temperature: float = 1.0, top_n: int = 3,
                            branching_mass: float | None = None) -> NextToken:
    """softmax(logits / temperature) of (B, V) logits for sampling, with the entropy, the top-N
    and the branching factor computed in the same pass over each block."""
    probs = torch.empty(logits.shape, dtype=torch.promote_types(logits.dtype, torch.float32), device=logits.device)
    lse, _, entropy, top_logp, top_ids, branching = _forward_blocks(
        logits, None, None, None, top_n, True, temperature, logits.shape[0], branching_mass, probs_out=probs)
    return NextToken(probs, lse, entropy, top_logp, top_ids, branching if branching_mass is not None else None)
