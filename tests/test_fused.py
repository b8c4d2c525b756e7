"""The Triton kernels of ``rlvr_explore.fused`` against the block path, on the CPU under Triton's
interpreter (on a GPU, ``make test-gpu`` runs them compiled): the same log-probs, entropy, top-N
and gradients, from logits and from hidden states, across tiles, temperatures and dtypes."""

import os

import pytest
import torch

# conftest.py sets TRITON_INTERPRET=1 on a machine without CUDA, before anything imports Triton
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the kernels run compiled, in the tests "
                                                                   "marked gpu")
pytest.importorskip("triton")
assert os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()

from rlvr_explore import candidates  # noqa: E402
from rlvr_explore.candidates import token_stats, token_stats_from_hidden  # noqa: E402


def both_paths(monkeypatch, run):
    """``run()`` with the blocks, then with the kernels."""
    monkeypatch.setattr(candidates, "FUSED", "never")
    blocks = run()
    monkeypatch.setattr(candidates, "FUSED", "always")
    return blocks, run()


def statistics_and_gradient(logits, ids, top_n, entropy, temperature, weights):
    logits = logits.detach().clone().requires_grad_()
    stats = token_stats(logits, ids, top_n=top_n, temperature=temperature, entropy=entropy)
    loss = (weights[0] * stats.logp).sum()
    if entropy:
        loss = loss + (weights[1] * stats.entropy).sum()
    if top_n:
        loss = loss + (weights[2][..., :top_n] * stats.topn_logp).sum()
    loss.backward()
    return stats, logits.grad


@pytest.mark.parametrize("vocab", [37, 9000], ids=["one-tile", "three-tiles"])
@pytest.mark.parametrize("top_n,entropy", [(3, True), (0, False), (5, False), (1, True)])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_the_kernels_give_the_block_paths_values_and_gradients(monkeypatch, vocab, top_n, entropy, temperature):
    g = torch.Generator().manual_seed(vocab + top_n)
    logits = torch.randn(2, 5, vocab, generator=g) * 3
    ids = torch.randint(vocab, (2, 5), generator=g)
    weights = (torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g), torch.randn(2, 5, 5, generator=g))
    (ref, ref_grad), (got, got_grad) = both_paths(
        monkeypatch, lambda: statistics_and_gradient(logits, ids, top_n, entropy, temperature, weights))
    torch.testing.assert_close(got.logp, ref.logp)
    if entropy:
        torch.testing.assert_close(got.entropy, ref.entropy)
    if top_n:
        torch.testing.assert_close(got.topn_logp, ref.topn_logp)
        assert torch.equal(got.topn_ids, ref.topn_ids)
    torch.testing.assert_close(got_grad, ref_grad)


def test_strided_response_ids_give_the_block_paths_values_and_gradients(monkeypatch):
    """A one-token completion cut from a longer row (TRL's ``ids[:, -1:]``) flattens to a strided
    view of the ids: the kernels must read each row's own id, not its neighbour's memory."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 1, 300, generator=g)
    ids = torch.randint(300, (4, 9), generator=g)[:, -1:]
    assert not ids.reshape(-1).is_contiguous()
    weights = (torch.randn(4, 1, generator=g), torch.randn(4, 1, generator=g), torch.randn(4, 1, 3, generator=g))
    (ref, ref_grad), (got, got_grad) = both_paths(
        monkeypatch, lambda: statistics_and_gradient(logits, ids, 3, True, 1.0, weights))
    torch.testing.assert_close(got.logp, ref.logp)
    torch.testing.assert_close(got_grad, ref_grad)


def test_masked_logits_give_the_block_paths_log_probs_top_n_and_gradients(monkeypatch):
    """-inf logits (masked tokens), down to a whole tile of them at the start of a row: the
    log-normaliser, log-probs, top-N and their gradient are those of the blocks. (Both paths give
    NaN entropy there: p log p reads 0 * -inf.)"""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 2, 9000, generator=g)
    logits[0, :, 100:200] = float("-inf")
    logits[1, :, :5000] = float("-inf")  # more than the first tile
    ids = torch.randint(5000, 9000, (3, 2), generator=g)
    weights = (torch.randn(3, 2, generator=g), torch.zeros(3, 2), torch.randn(3, 2, 3, generator=g))
    (ref, ref_grad), (got, got_grad) = both_paths(
        monkeypatch, lambda: statistics_and_gradient(logits, ids, 3, False, 1.0, weights))
    assert torch.isfinite(ref.logp).all() and torch.isfinite(ref_grad).all()
    torch.testing.assert_close(got.logp, ref.logp)
    torch.testing.assert_close(got.topn_logp, ref.topn_logp)
    assert torch.equal(got.topn_ids, ref.topn_ids)
    torch.testing.assert_close(got_grad, ref_grad)


def test_an_id_outside_the_vocabulary_gives_nan_not_another_rows_logit(monkeypatch):
    """The blocks' gather refuses such an id; the kernels cannot raise, so they give NaN (which the
    trainer's non-finite checks name) and leave the other rows as they were."""
    monkeypatch.setattr(candidates, "FUSED", "always")
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 4, 300, generator=g)
    ids = torch.tensor([[5, -100, 300, 7]])
    logp = token_stats(logits, ids, top_n=0, entropy=False).logp
    assert logp[0, 1:3].isnan().all()
    torch.testing.assert_close(logp[0, [0, 3]], logits[0, [0, 3]].log_softmax(-1)[[0, 1], [5, 7]])


def test_bf16_logits_give_float32_statistics_and_a_bf16_gradient(monkeypatch):
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(3, 4, 300, generator=g) * 2).bfloat16()
    ids = torch.randint(300, (3, 4), generator=g)
    weights = (torch.ones(3, 4), torch.ones(3, 4), torch.ones(3, 4, 3))
    (ref, ref_grad), (got, got_grad) = both_paths(
        monkeypatch, lambda: statistics_and_gradient(logits, ids, 3, True, 1.0, weights))
    assert got.logp.dtype == torch.float32 and got_grad.dtype == torch.bfloat16
    torch.testing.assert_close(got.entropy, ref.entropy)
    torch.testing.assert_close(got_grad, ref_grad)  # bf16 tolerance: each is one rounding of the float32 value


def test_the_kernels_serve_the_hidden_state_path_chunk_by_chunk(monkeypatch):
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 7, 16, generator=g)
    weight = torch.randn(500, 16, generator=g)
    bias = torch.randn(500, generator=g)
    ids = torch.randint(500, (2, 7), generator=g)

    def run():
        h, w, b = (t.detach().clone().requires_grad_() for t in (hidden, weight, bias))
        stats = token_stats_from_hidden(h, w, ids, top_n=3, lm_head_bias=b, chunk_tokens=4, temperature=0.8)
        (stats.logp.sum() + 0.5 * stats.entropy.sum() + stats.topn_logp.sum()).backward()
        return stats, (h.grad, w.grad, b.grad)

    (ref, ref_grads), (got, got_grads) = both_paths(monkeypatch, run)
    for name in ("logp", "entropy", "topn_logp"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name))
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_float64_and_the_branching_factor_keep_the_blocks(monkeypatch):
    monkeypatch.setattr(candidates, "FUSED", "always")
    assert candidates._fused_kernels(torch.zeros(1), torch.float64, None) is None
    assert candidates._fused_kernels(torch.zeros(1), torch.float32, 0.95) is None
    assert candidates._fused_kernels(torch.zeros(1), torch.float32, None) is not None
    monkeypatch.setattr(candidates, "FUSED", "auto")
    assert candidates._fused_kernels(torch.zeros(1), torch.float32, None) is None  # a CPU tensor


def test_the_kernels_check_themselves_once_per_device_and_a_failure_falls_back_to_the_blocks(monkeypatch, caplog):
    from rlvr_explore import fused

    assert fused.works_on(torch.device("cpu"))
    monkeypatch.setattr(fused, "_WORKS", {})
    monkeypatch.setattr(fused, "TILE", 3)  # not a power of two: Triton refuses to build the kernel
    with caplog.at_level("WARNING"):
        assert not fused.works_on(torch.device("cpu"))
    assert "the fused statistics kernels do not run on cpu" in caplog.text
    monkeypatch.setattr(candidates, "FUSED", "always")
    assert candidates._fused_kernels(torch.zeros(1), torch.float32, None) is None


def test_the_verl_hook_takes_the_kernels_with_the_block_paths_columns(monkeypatch, kernel_calls):
    """verl's model-output hook computes its columns through ``token_stats``, so on CUDA it runs
    the kernels, forward and backward, with the columns and gradients of the block path."""
    from rlvr_explore.integrations.verl.engine import candidate_columns

    g = torch.Generator().manual_seed(3)
    packed = torch.randn(1, 11, 5000, generator=g) * 2  # verl packs the micro-batch's tokens: (1, nnz, V)

    def run():
        logits = packed.clone().requires_grad_()
        columns = candidate_columns(logits, top_n=3)
        sum(column.sum() for key, column in columns.items() if not key.endswith("_id")).backward()
        return columns, logits.grad

    (ref, ref_grad), (got, got_grad) = both_paths(monkeypatch, run)
    assert kernel_calls == ["forward", "backward"]
    assert ref.keys() == got.keys()
    for key in ref:
        exact = key.endswith("_id")
        torch.testing.assert_close(got[key], ref[key], rtol=0 if exact else None, atol=0 if exact else None, msg=key)
    torch.testing.assert_close(got_grad, ref_grad)
