"""The candidate statistics as two Triton kernels: one online pass over each row's logits for the
log-normaliser, the gathered log-prob, the entropy and the top-N, and one pass for the gradient in
closed form. ``candidates`` uses them on CUDA when Triton is installed; on a CPU they run under
``TRITON_INTERPRET=1`` in the tests.

Forward, per row, tile by tile over the vocabulary (z already divided by the temperature):

    m' = max(m, max z),  s' = s e^(m - m') + sum e^(z - m'),  t' = t e^(m - m') + sum z e^(z - m')
    lse = m + log s,     logp = z_y - lse,   entropy = lse - t / s
    top-N: the N largest of each tile replace the smallest of the N kept when larger

Backward, per row: dz = (e_y g_logp + sum_n e_v(n) g_top,n - p (c + g_H (log p + H))) / tau, with
p = exp(z - lse) and c = g_logp + sum_n g_top,n (CaSP, arXiv 2510.14807, Eq. 2 and App. C).
"""

from __future__ import annotations

import logging

import torch
import triton
import triton.language as tl

TILE = 4096  # logits per tile: a row of Qwen2.5's 151,936 is 38 tiles
log = logging.getLogger(__name__)
_WORKS: dict[torch.device, bool] = {}


@triton.jit
def _forward_kernel(z_ptr, ids_ptr, lse_ptr, logp_ptr, entropy_ptr, top_v_ptr, top_i_ptr, vocab, stride, inv_tau,
                    HAS_IDS: tl.constexpr, ENTROPY: tl.constexpr, TOP_N: tl.constexpr, TOP_SLOTS: tl.constexpr,
                    TILE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = z_ptr + row * stride
    lanes = tl.arange(0, TILE)
    m = tl.full((), float("-inf"), tl.float32)
    s = tl.zeros((), tl.float32)
    t = tl.zeros((), tl.float32)
    slots = tl.arange(0, TOP_SLOTS)
    # slots past N hold +inf, so they are never the smallest kept value and never replaced
    top_v = tl.where(slots < TOP_N, float("-inf"), float("inf")).to(tl.float32)
    top_i = tl.zeros((TOP_SLOTS,), tl.int64)
    for start in range(0, vocab, TILE):
        offsets = start + lanes
        inside = offsets < vocab
        z = tl.load(base + offsets, mask=inside, other=float("-inf")).to(tl.float32) * inv_tau
        m_new = tl.maximum(m, tl.max(z, 0))
        # while every logit so far is -inf (a masked stretch of the vocabulary), shift by 0: -inf - -inf is NaN
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        scale = tl.exp(m - shift)
        e = tl.where(inside, tl.exp(z - shift), 0.0)
        s = s * scale + tl.sum(e, 0)
        if ENTROPY:
            t = t * scale + tl.sum(e * tl.where(inside, z, 0.0), 0)
        m = m_new
        if TOP_N > 0:
            tile = z
            for _ in tl.static_range(TOP_N):
                best = tl.max(tile, 0)
                where = tl.argmax(tile, 0)
                smallest = tl.min(top_v, 0)
                slot = tl.argmin(top_v, 0)
                take = tl.where(best > smallest, slots == slot, False)
                top_v = tl.where(take, best, top_v)
                top_i = tl.where(take, (start + where).to(tl.int64), top_i)
                tile = tl.where(lanes == where, float("-inf"), tile)
    lse = m + tl.log(s)
    tl.store(lse_ptr + row, lse)
    if HAS_IDS:
        y = tl.load(ids_ptr + row)
        # an id outside the vocabulary (HF's -100 padding label) gives NaN, never a read past the row
        z_y = tl.load(base + y, mask=(y >= 0) & (y < vocab), other=float("nan")).to(tl.float32) * inv_tau
        tl.store(logp_ptr + row, z_y - lse)
    if ENTROPY:
        tl.store(entropy_ptr + row, lse - t / s)
    if TOP_N > 0:
        tl.store(top_v_ptr + row * TOP_SLOTS + slots, top_v - lse)
        tl.store(top_i_ptr + row * TOP_SLOTS + slots, top_i)


@triton.jit
def _backward_kernel(z_ptr, grad_ptr, ids_ptr, lse_ptr, entropy_ptr, g_logp_ptr, g_entropy_ptr, g_top_ptr, top_i_ptr,
                     vocab, stride, grad_stride, inv_tau, HAS_ENTROPY_GRAD: tl.constexpr, TOP_N: tl.constexpr,
                     TOP_STRIDE: tl.constexpr, TILE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    lanes = tl.arange(0, TILE)
    lse = tl.load(lse_ptr + row)
    g_logp = tl.load(g_logp_ptr + row)
    y = tl.load(ids_ptr + row)
    coefficient = g_logp
    g_h = tl.zeros((), tl.float32)
    h = tl.zeros((), tl.float32)
    if TOP_N > 0:
        for n in tl.static_range(TOP_N):
            coefficient += tl.load(g_top_ptr + row * TOP_STRIDE + n)
    if HAS_ENTROPY_GRAD:
        g_h = tl.load(g_entropy_ptr + row)
        h = tl.load(entropy_ptr + row)
    for start in range(0, vocab, TILE):
        offsets = start + lanes
        inside = offsets < vocab
        z = tl.load(z_ptr + row * stride + offsets, mask=inside, other=0.0).to(tl.float32) * inv_tau
        log_p = z - lse
        p = tl.exp(log_p)
        if HAS_ENTROPY_GRAD:
            grad = -p * (coefficient + g_h * (log_p + h))
        else:
            grad = -p * coefficient
        grad += tl.where(offsets == y, g_logp, 0.0)
        if TOP_N > 0:
            for n in tl.static_range(TOP_N):
                grad += tl.where(offsets == tl.load(top_i_ptr + row * TOP_STRIDE + n),
                                 tl.load(g_top_ptr + row * TOP_STRIDE + n), 0.0)
        tl.store(grad_ptr + row * grad_stride + offsets, (grad * inv_tau).to(grad_ptr.dtype.element_ty), mask=inside)


def forward(z: torch.Tensor, ids: torch.Tensor | None, top_n: int, with_entropy: bool, temperature: float):
    """(lse, logp, entropy, top-N log-probs, top-N ids) of the rows of ``z`` (rows, V), as
    ``candidates._forward_blocks`` returns them (float32; empty where not asked for)."""
    rows, vocab = z.shape
    z = z if z.stride(-1) == 1 else z.contiguous()
    ids = None if ids is None else ids.contiguous()  # the kernel reads ids[row] at ids_ptr + row
    new = lambda *shape, kind=torch.float32: torch.empty(*shape, dtype=kind, device=z.device)  # noqa: E731
    slots = triton.next_power_of_2(max(top_n, 1))
    lse, logp, entropy = new(rows), new(rows if ids is not None else 0), new(rows if with_entropy else 0)
    top_v, top_i = new(rows, slots), new(rows, slots, kind=torch.int64)
    if rows:
        _forward_kernel[(rows,)](z, ids if ids is not None else lse, lse, logp, entropy, top_v, top_i, vocab,
                                 z.stride(0), 1.0 / temperature, HAS_IDS=ids is not None, ENTROPY=with_entropy,
                                 TOP_N=top_n, TOP_SLOTS=slots, TILE=TILE)
    values, order = top_v[:, :top_n].sort(-1, descending=True)  # the kept N, unordered, ranked
    return lse, logp, entropy, values, top_i[:, :top_n].gather(1, order)


def backward(z: torch.Tensor, out: torch.Tensor, ids: torch.Tensor, lse: torch.Tensor, entropy: torch.Tensor | None,
             g_logp: torch.Tensor, g_entropy: torch.Tensor | None, g_top: torch.Tensor | None,
             top_ids: torch.Tensor | None, temperature: float) -> None:
    """The gradient with respect to the rows of ``z``, written into ``out`` (same shape)."""
    rows, vocab = z.shape
    z = z if z.stride(-1) == 1 else z.contiguous()
    ids = ids.contiguous()
    top_n = 0 if g_top is None else g_top.shape[-1]
    if top_n:
        g_top, top_ids = g_top.contiguous(), top_ids.contiguous()
    if rows:
        _backward_kernel[(rows,)](z, out, ids, lse, entropy if g_entropy is not None else lse, g_logp.contiguous(),
                                  g_entropy.contiguous() if g_entropy is not None else lse,
                                  g_top if top_n else lse, top_ids if top_n else ids, vocab, z.stride(0), out.stride(0),
                                  1.0 / temperature, HAS_ENTROPY_GRAD=g_entropy is not None, TOP_N=top_n,
                                  TOP_STRIDE=max(top_n, 1), TILE=TILE)


def works_on(device: torch.device) -> bool:
    """Whether the kernels compile and agree with a direct computation on ``device`` (checked once
    per device on a small input: a Triton release or GPU the kernels were not built against makes
    the statistics fall back to the blocks, with a warning, instead of failing a run)."""
    if device not in _WORKS:
        try:
            g = torch.Generator().manual_seed(0)
            z = (torch.randn(3, 2 * TILE + 5, generator=g) * 3).to(device)
            ids = torch.tensor([0, 7, 2 * TILE + 4], device=device)
            lse, logp, entropy, top_v, top_i = forward(z, ids, 3, True, 0.7)
            direct = torch.log_softmax(z / 0.7, -1)
            grad = torch.empty_like(z)
            backward(z, grad, ids, lse, entropy, torch.ones(3, device=device), torch.ones(3, device=device),
                     torch.ones(3, 3, device=device), top_i, 0.7)
            p = direct.exp()
            entropy_direct = -(p * direct).sum(-1)
            expected_grad = (-p * (4 + direct + entropy_direct[:, None])).scatter_add(
                -1, ids[:, None], torch.ones(3, 1, device=device)).scatter_add(-1, top_i, torch.ones(3, 3, device=device)) / 0.7
            agree = (torch.allclose(logp, direct.gather(-1, ids[:, None]).squeeze(-1), atol=1e-4)
                     and torch.allclose(entropy, entropy_direct, atol=1e-4)
                     and torch.allclose(top_v, direct.topk(3).values, atol=1e-4)
                     and torch.allclose(grad, expected_grad, atol=1e-4))
            _WORKS[device] = bool(agree)
            if not agree:
                log.warning("the fused statistics kernels disagree with a direct computation on %s; using the blocks", device)
        except Exception as error:  # noqa: BLE001 - any failure to build or run them means: use the blocks
            log.warning("the fused statistics kernels do not run on %s (%s: %s); using the blocks",
                        device, type(error).__name__, error)
            _WORKS[device] = False
    return _WORKS[device]
