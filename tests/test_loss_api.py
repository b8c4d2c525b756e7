"""The loss entry point: micro-batch invariance, the registry, and clear errors on bad input."""

import pytest
import torch

from rlvr_explore import losses
from rlvr_explore.candidates import token_stats

B, T, V = 8, 9, 13


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64).requires_grad_()
    ids = torch.randint(V, (B, T), generator=g)
    lengths = torch.tensor([9, 3, 7, 1, 9, 5, 6, 8])
    mask = torch.arange(T)[None] < lengths[:, None]
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    old_noise = 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref_noise = 0.1 * torch.randn(B, T, generator=g, dtype=torch.float64)
    return logits, ids, mask, adv, old_noise, ref_noise


def loss_on(method, rows, logits, ids, mask, adv, old_noise, ref_noise, hp, norm, gate):
    s = token_stats(logits[rows], ids[rows])
    return losses.policy_loss(
        method, logp=s.logp, old_logp=s.logp.detach() + old_noise[rows], advantages=adv[rows],
        response_mask=mask[rows], response_ids=ids[rows], topn_logp=s.topn_logp, topn_ids=s.topn_ids,
        entropy=s.entropy, ref_logp=s.logp.detach() + ref_noise[rows], rewards=(adv[rows] > 0).double(),
        token_gate=None if gate is None else gate[rows], **norm, **hp,
    )[0]


@pytest.mark.parametrize("method", sorted(losses.LOSSES))
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_add_up_to_the_full_batch(method, mode):
    logits, ids, mask, adv, old_noise, ref_noise = batch(1)
    hp = dict(loss_agg_mode=mode, kl_coef=0.05, entropy_coeff=0.01)
    data = (logits, ids, mask, adv, old_noise, ref_noise)
    everything = torch.arange(B)
    s = token_stats(logits.detach(), ids)
    torch.manual_seed(0)
    gate = losses.token_gate(
        method, logp=s.logp, old_logp=s.logp + old_noise, advantages=adv, response_mask=mask,
        response_ids=ids, topn_logp=s.topn_logp, topn_ids=s.topn_ids, entropy=s.entropy,
    )
    full = loss_on(method, everything, *data, hp, {}, gate)
    (full_grad,) = torch.autograd.grad(full, logits)
    norm = losses.batch_normalizers(mask)
    parts = [torch.tensor([0, 3, 5]), torch.tensor([1, 2]), torch.tensor([4, 6, 7])]
    split = sum(loss_on(method, rows, *data, hp, norm, gate) for rows in parts)
    (split_grad,) = torch.autograd.grad(split, logits)
    torch.testing.assert_close(split, full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(split_grad, full_grad, rtol=1e-9, atol=1e-12)


def test_registry_lists_every_design_method():
    expected = {"grpo", "dr_grpo", "dapo", "gspo", "psr", "nsr", "w_reinforce", "grpo_n", "gspo_n", "casp",
                "simko", "casp_softmax", "kl_cov", "clip_cov", "forking"}
    assert expected <= set(losses.available())


def kwargs():
    logits, ids, mask, adv, old_noise, _ = batch(2)
    s = token_stats(logits, ids)
    return dict(logp=s.logp, old_logp=s.logp.detach() + old_noise, advantages=adv, response_mask=mask,
                response_ids=ids, topn_logp=s.topn_logp, topn_ids=s.topn_ids, entropy=s.entropy)


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown policy loss 'cassp'.*available: .*casp.*grpo"):
        losses.policy_loss("cassp", **kwargs())


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_alpha_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        losses.policy_loss("casp", alpha=bad, **kwargs())


def test_shape_mismatch_names_the_tensor():
    k = kwargs()
    k["old_logp"] = k["old_logp"][:, :-1]
    with pytest.raises(ValueError, match=r"old_logp has shape \(8, 8\), expected \(8, 9\)"):
        losses.policy_loss("grpo", **k)


def test_mask_without_valid_token():
    k = kwargs()
    k["response_mask"] = torch.zeros_like(k["response_mask"])
    with pytest.raises(ValueError, match="response_mask has no valid token"):
        losses.policy_loss("grpo", **k)


def test_hyperparameter_of_another_method_is_refused():
    with pytest.raises(ValueError, match=r"\['alpha'\] do not apply to loss 'grpo'"):
        losses.policy_loss("grpo", alpha=0.1, **kwargs())


def test_missing_tensor_is_named():
    k = kwargs()
    del k["topn_logp"]
    with pytest.raises(ValueError, match="method 'casp' needs topn_logp"):
        losses.policy_loss("casp", **k)


def test_kl_without_reference_is_refused():
    with pytest.raises(ValueError, match="needs ref_logp"):
        losses.policy_loss("grpo", kl_coef=0.1, **kwargs())


def test_unknown_aggregation():
    with pytest.raises(ValueError, match="loss_agg_mode must be one of"):
        losses.policy_loss("grpo", loss_agg_mode="sum", **kwargs())


def test_non_finite_advantages():
    k = kwargs()
    k["advantages"] = k["advantages"].clone()
    k["advantages"][0] = float("nan")
    with pytest.raises(ValueError, match="advantages contain NaN"):
        losses.policy_loss("grpo", **k)


def test_linear_quantile_matches_torch_quantile():
    g = torch.Generator().manual_seed(3)
    values = torch.randn(5, 17, generator=g)
    mask = torch.rand(5, 17, generator=g) > 0.3
    got = losses.core.linear_quantile(values, mask, 0.8)
    for i in range(5):
        torch.testing.assert_close(got[i, 0], torch.quantile(values[i][mask[i]], 0.8))
    assert torch.isnan(losses.core.linear_quantile(values[:1], torch.zeros(1, 17, dtype=torch.bool), 0.5)).all()


def test_each_loss_declares_the_statistics_it_reads():
    statistics = lambda name, **hp: losses.bind(name, hp).statistics  # noqa: E731
    assert statistics("grpo") == frozenset()
    assert statistics("grpo", entropy_coeff=0.01) == {"entropy"}
    assert statistics("casp") == statistics("simko") == {"entropy", "topn"}
    assert statistics("forking") == {"entropy"}
    assert statistics("kl_cov") == statistics("clip_cov") == frozenset()
    # a loss that reads a statistic it did not declare fails where the trainer leaves it out
    with pytest.raises(ValueError, match="needs"):
        losses.policy_loss("casp", logp=torch.zeros(1, 2), old_logp=torch.zeros(1, 2), advantages=torch.ones(1),
                           response_mask=torch.ones(1, 2, dtype=torch.bool))


def test_bench_loss_prints_ratios_to_the_floor(capsys):
    import json

    from rlvr_explore.cli import main

    assert main(["bench", "loss", "--tokens", "16", "--vocab", "300", "--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["environment"]["torch"] == torch.__version__
    result = report["results"]["T=16"]
    assert set(result["cpu_ratio_to_floor"]) == {"floor", "casp", "grpo", "grpo_all_statistics"}
    assert result["cpu_ratio_to_floor"]["floor"] == 1.0 and result["peak_memory_mb"]["floor"] >= 0
