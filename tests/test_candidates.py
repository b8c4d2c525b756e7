"""Candidate statistics against a direct computation, through both paths, with gradients."""

import pytest
import torch

from rlvr_explore import candidates
from rlvr_explore.candidates import (
    branching_factor, next_token_distribution, token_stats, token_stats_from_hidden, top_candidates,
)


@pytest.fixture(params=[None, 40], ids=["one-block", "blocks-of-2-rows"])
def blocks(request, monkeypatch):
    """Run a test with the default block size and with blocks of two rows of the 19-wide logits."""
    if request.param:
        monkeypatch.setattr(candidates, "CPU_BLOCK_ELEMENTS", request.param)


def reference(logits, ids, top_n, temperature):
    logp_all = torch.log_softmax(logits / temperature, -1)
    probs = logp_all.exp()
    top = logp_all.topk(top_n, -1)
    return dict(
        logp=logp_all.gather(-1, ids[..., None])[..., 0],
        entropy=-(probs * logp_all).sum(-1),
        topn_logp=top.values,
        topn_ids=top.indices,
    )


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.3])
def test_matches_direct_computation_with_gradients(temperature, blocks):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 19, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(19, (3, 7), generator=g)
    stats = token_stats(logits, ids, top_n=4, temperature=temperature)
    ref = reference(logits, ids, 4, temperature)
    for name in ("logp", "entropy", "topn_logp"):
        torch.testing.assert_close(getattr(stats, name), ref[name])
    assert torch.equal(stats.topn_ids, ref["topn_ids"])
    weights = [torch.rand(ref[n].shape, generator=g, dtype=torch.float64) for n in ("logp", "entropy", "topn_logp")]
    ours = sum((w * getattr(stats, n)).sum() for w, n in zip(weights, ("logp", "entropy", "topn_logp")))
    theirs = sum((w * ref[n]).sum() for w, n in zip(weights, ("logp", "entropy", "topn_logp")))
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(theirs, logits)[0])


@pytest.mark.parametrize("top_n,entropy", [(0, False), (0, True), (2, False)])
def test_only_what_is_asked_is_computed_and_its_gradient_is_exact(top_n, entropy, blocks):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 7, 19, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(19, (3, 7), generator=g)
    stats = token_stats(logits, ids, top_n=top_n, temperature=0.8, entropy=entropy)
    ref = reference(logits, ids, max(top_n, 1), 0.8)
    assert (stats.entropy is not None) == entropy and (stats.topn_logp is not None) == bool(top_n)
    names = ["logp"] + ["entropy"] * entropy + ["topn_logp"] * bool(top_n)
    ours = sum((getattr(stats, n) * (i + 1)).sum() for i, n in enumerate(names))
    theirs = sum((ref[n] * (i + 1)).sum() for i, n in enumerate(names))
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(theirs, logits)[0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_large_vocabulary_in_many_blocks_matches_direct_computation(dtype, blocks):
    """V = 3,000: the grouped top-N, one block or a block per row, the gradient
    written straight into the logits' gradient (float64) or through a float32 block (bfloat16)."""
    g = torch.Generator().manual_seed(7)
    logits = (3 * torch.randn(2, 9, 3000, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    ids = torch.randint(3000, (2, 9), generator=g)
    stats = token_stats(logits, ids, top_n=3, temperature=0.8)
    wide = logits.detach().double().requires_grad_()
    ref = reference(wide, ids, 3, 0.8)
    tolerance = {} if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for name in ("logp", "entropy", "topn_logp"):
        torch.testing.assert_close(getattr(stats, name).double(), ref[name], **tolerance)
    assert torch.equal(stats.topn_ids, ref["topn_ids"])
    weights = [torch.rand(ref[n].shape, generator=g, dtype=torch.float64) for n in ("logp", "entropy", "topn_logp")]
    ours = sum((w.to(getattr(stats, n).dtype) * getattr(stats, n)).sum() for w, n in zip(weights, ("logp", "entropy", "topn_logp")))
    theirs = sum((w * ref[n]).sum() for w, n in zip(weights, ("logp", "entropy", "topn_logp")))
    (ours_grad,), (their_grad,) = torch.autograd.grad(ours, logits), torch.autograd.grad(theirs, wide)
    assert ours_grad.dtype == dtype
    torch.testing.assert_close(ours_grad.double(), their_grad.to(dtype).double() if dtype != torch.float64 else their_grad,
                               **({} if dtype == torch.float64 else dict(rtol=2e-2, atol=1e-4)))


@pytest.mark.parametrize("vocab,n", [(5000, 1), (5000, 3), (5000, 8), (151936, 3)])
def test_grouped_top_candidates_equal_topk(vocab, n):
    g = torch.Generator().manual_seed(vocab + n)
    z = torch.randn(6, vocab, generator=g)
    z[1, -3:] = 10.0 + torch.arange(3.0)  # the best candidates in the partial last group
    z[2, 130:133] = 9.0 + torch.arange(3.0)  # all in one group
    values, ids = top_candidates(z, n)
    expected = z.topk(n, dim=-1).values
    assert torch.equal(values, expected)
    assert torch.equal(z.gather(1, ids), values)
    assert all(len(set(row)) == n for row in ids.tolist())


def sorted_branching(probs, mass):
    ordered = probs.double().sort(dim=-1, descending=True).values
    return ((ordered.cumsum(-1) < mass).sum(-1) + 1).clamp(max=probs.shape[-1])


@pytest.mark.parametrize("scale", [0.0, 0.01, 1.0, 4.0, 30.0])
def test_bucketed_branching_factor_equals_the_sorted_count(scale):
    g = torch.Generator().manual_seed(int(scale * 10))
    vocab = 70001  # above the size where the bucketed path is taken
    probs = torch.softmax(scale * torch.randn(5, vocab, generator=g), -1)
    for mass in (0.5, 0.95, 0.999):
        assert torch.equal(branching_factor(probs, mass), sorted_branching(probs, mass))


def test_next_token_distribution_matches_token_stats(blocks):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(5, 19, generator=g)
    step = next_token_distribution(logits, temperature=0.7, top_n=3, branching_mass=0.9)
    token = torch.multinomial(step.probs, 1, generator=g).squeeze(-1)
    stats = token_stats(logits[:, None], token[:, None], top_n=3, temperature=0.7, branching_mass=0.9)
    torch.testing.assert_close(step.probs, torch.softmax(logits / 0.7, -1))
    torch.testing.assert_close(step.logp(logits, token, 0.7), stats.logp[:, 0])
    torch.testing.assert_close(step.entropy, stats.entropy[:, 0])
    torch.testing.assert_close(step.topn_logp, stats.topn_logp[:, 0])
    assert torch.equal(step.topn_ids, stats.topn_ids[:, 0])
    assert torch.equal(step.branching_factor, sorted_branching(step.probs, 0.9))


def test_hidden_state_path_matches_logits_path():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 9, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(23, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(23, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(23, (2, 9), generator=g)
    chunked = token_stats_from_hidden(hidden, weight, ids, top_n=3, temperature=0.9, lm_head_bias=bias, chunk_tokens=4)
    direct = token_stats(hidden @ weight.t() + bias, ids, top_n=3, temperature=0.9)
    for name in ("logp", "entropy", "topn_logp"):
        torch.testing.assert_close(getattr(chunked, name), getattr(direct, name))
    params = (hidden, weight, bias)
    a = torch.autograd.grad(chunked.logp.sum() + chunked.entropy.sum() + chunked.topn_logp.sum(), params)
    b = torch.autograd.grad(direct.logp.sum() + direct.entropy.sum() + direct.topn_logp.sum(), params)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_hidden_path_never_keeps_full_logits_for_backward():
    """No tensor of B*T*V elements or more is saved for backward: logits are recomputed per chunk."""
    B, T, d, V = 4, 32, 8, 64
    hidden = torch.randn(B, T, d, requires_grad=True)
    weight = torch.randn(V, d, requires_grad=True)
    ids = torch.randint(V, (B, T))
    largest = []

    def pack(t):
        largest.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        stats = token_stats_from_hidden(hidden, weight, ids, chunk_tokens=16)
        loss = stats.logp.sum() + stats.entropy.sum() + stats.topn_logp.sum()
    loss.backward()
    assert max(largest) < B * T * V
    assert max(largest) <= max(16 * V, B * T * d, V * d)
    assert hidden.grad is not None and weight.grad is not None


def test_branching_factor_counts_candidates_to_the_mass():
    probs = torch.tensor([[[0.5, 0.3, 0.15, 0.05], [0.97, 0.01, 0.01, 0.01], [0.25, 0.25, 0.25, 0.25]]])
    stats = token_stats(probs.log(), torch.zeros(1, 3, dtype=torch.long), top_n=2, branching_mass=0.95)
    assert stats.branching_factor.tolist() == [[3, 1, 4]]


@pytest.mark.parametrize("call,match", [
    (lambda: token_stats(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long)), r"logits must be \(B, T, V\)"),
    (lambda: token_stats(torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)), r"response_ids has shape \(2, 4\)"),
    (lambda: token_stats(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), top_n=6), "top_n must be in"),
    (lambda: token_stats(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), top_n=-1), "top_n must be in"),
    (lambda: token_stats(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), temperature=0), "temperature must be > 0"),
    (lambda: token_stats_from_hidden(torch.randn(2, 3, 4), torch.randn(5, 3), torch.zeros(2, 3, dtype=torch.long)), r"lm_head_weight must be \(V, d=4\)"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_closed_form_backward_passes_gradcheck(blocks):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    hidden = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(7, (2, 3), generator=g)

    def from_logits(z):
        s = token_stats(z, ids, top_n=2, temperature=0.7)
        return s.logp, s.entropy, s.topn_logp

    def from_hidden(h, w, b):
        s = token_stats_from_hidden(h, w, ids, top_n=3, temperature=1.3, lm_head_bias=b, chunk_tokens=2)
        return s.logp, s.entropy, s.topn_logp

    assert torch.autograd.gradcheck(from_logits, (logits,))
    assert torch.autograd.gradcheck(from_hidden, (hidden, weight, bias))


def test_low_precision_inputs_are_upcast():
    logits = torch.randn(2, 3, 50, dtype=torch.bfloat16, requires_grad=True)
    ids = torch.randint(50, (2, 3))
    stats = token_stats(logits, ids)
    reference = token_stats(logits.detach().float(), ids)
    assert stats.logp.dtype == torch.float32
    torch.testing.assert_close(stats.entropy, reference.entropy)
    stats.logp.sum().backward()
    assert logits.grad.dtype == torch.bfloat16
