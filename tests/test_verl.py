"""The verl plugin. With verl importable (e.g. `pip install verl==0.9.1`, CPU is enough): the entry
point registers on `import verl`, and our losses and estimators agree with verl's own. Without it:
CONTRACT TESTS against verl's documented signatures, using a stand-in registry module."""

import types

import numpy as np
import pytest
import torch

from rlvr_explore import losses
from rlvr_explore.advantages import compute_advantages
from rlvr_explore.integrations import verl as plugin

B, T = 6, 5


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    log_prob = (-1.0 - torch.rand(B, T, generator=g, dtype=torch.float64)).requires_grad_()
    old_log_prob = log_prob.detach() + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    advantages = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).contiguous()
    response_mask = torch.ones(B, T, dtype=torch.float64)
    response_mask[1, 3:] = 0
    return old_log_prob, log_prob, advantages, response_mask


# ---------------------------------------------------------------- contract tests (no verl needed)


def stand_in_core_algos():
    """verl.trainer.ppo.core_algos as documented for 0.9.x: two registries with decorators and
    agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size, batch_num_tokens, global_batch_size, loss_scale_factor)."""
    module = types.SimpleNamespace(POLICY_LOSS_REGISTRY={}, ADV_ESTIMATOR_REGISTRY={})

    def register_policy_loss(name):
        def wrap(fn):
            module.POLICY_LOSS_REGISTRY[name] = fn
            return fn
        return wrap

    def register_adv_est(name):
        def wrap(fn):
            module.ADV_ESTIMATOR_REGISTRY[name] = fn
            return fn
        return wrap

    def agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size=1, batch_num_tokens=None, global_batch_size=None,
                 loss_scale_factor=None):
        assert loss_agg_mode == "token-mean"
        tokens = loss_mask.sum() if batch_num_tokens is None else batch_num_tokens
        return (loss_mat * loss_mask).sum() / tokens * dp_size

    module.register_policy_loss, module.register_adv_est, module.agg_loss = register_policy_loss, register_adv_est, agg_loss
    return module


def test_contract_registration_names():
    module = stand_in_core_algos()
    added = plugin.register(module)
    assert set(module.POLICY_LOSS_REGISTRY) == {f"rlvr_{m}" for m in plugin.LOGPROB_ONLY_LOSSES}
    assert set(module.ADV_ESTIMATOR_REGISTRY) == {f"rlvr_{e}" for e in plugin.ESTIMATORS}
    assert plugin.register(module) == [] and len(added) == 18  # idempotent


@pytest.mark.parametrize("method", plugin.LOGPROB_ONLY_LOSSES)
def test_contract_policy_loss_signature_and_value(method, monkeypatch):
    monkeypatch.setenv("RLVR_EXPLORE_HP", '{"kl_cov_ratio": 0.2}')
    module = stand_in_core_algos()
    plugin.register(module)
    old, new, adv, mask = batch(1)
    config = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "global_batch_info": {"dp_size": 1}}
    torch.manual_seed(0)
    loss, metrics = module.POLICY_LOSS_REGISTRY[f"rlvr_{method}"](
        old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask, loss_agg_mode="token-mean",
        config=config, rollout_is_weights=None)
    hp = plugin.loss_hyperparameters(method, config)
    torch.manual_seed(0)
    expected, _ = losses.policy_loss(method, logp=new, old_logp=old, advantages=adv, response_mask=mask.bool(),
                                     loss_agg_mode="token-mean", **hp)
    torch.testing.assert_close(loss, expected)
    assert all(k.startswith("actor/") and isinstance(v, float) for k, v in metrics.items())
    if method == "kl_cov":
        assert hp["kl_cov_ratio"] == 0.2


def test_contract_advantage_signature():
    module = stand_in_core_algos()
    plugin.register(module)
    rewards = torch.zeros(B, T)
    rewards[:, -1] = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    index = np.array(["p1", "p1", "p1", "p2", "p2", "p2"], dtype=object)
    adv, returns = module.ADV_ESTIMATOR_REGISTRY["rlvr_w_reinforce"](
        token_level_rewards=rewards, response_mask=torch.ones(B, T), index=index, config=None)
    assert adv[:, 0].tolist() == pytest.approx([0.1, -1, 0.1, 0.1, -1, -1]) and torch.equal(adv, returns)
    with pytest.raises(ValueError, match="needs group ids"):
        module.ADV_ESTIMATOR_REGISTRY["rlvr_grpo"](token_level_rewards=rewards, response_mask=torch.ones(B, T))


def test_bad_environment_hyperparameters_are_named(monkeypatch):
    monkeypatch.setenv("RLVR_EXPLORE_HP", "{alpha: 1}")
    with pytest.raises(ValueError, match="RLVR_EXPLORE_HP is not valid JSON"):
        plugin.environment_hyperparameters()


# ---------------------------------------------------------------- with the real verl


def test_real_verl_registers_through_its_entry_point_and_matches_its_own_losses():
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import verl  # noqa: F401  (the import runs verl's entry-point discovery)
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos

    assert {f"rlvr_{m}" for m in plugin.LOGPROB_ONLY_LOSSES} <= set(core_algos.POLICY_LOSS_REGISTRY)
    assert {f"rlvr_{e}" for e in plugin.ESTIMATORS} <= set(core_algos.ADV_ESTIMATOR_REGISTRY)

    config = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 1e9,
                               "global_batch_info": {"dp_size": 1}, "policy_loss": {"loss_mode": "vanilla"}})
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        old, new, adv, mask = batch(2)
        ours, _ = core_algos.get_policy_loss_fn("rlvr_grpo")(old, new, adv, mask, mode, config, None)
        (our_grad,) = torch.autograd.grad(ours, new)
        theirs, _ = core_algos.get_policy_loss_fn("vanilla")(old, new, adv, mask, mode, config, None)
        (their_grad,) = torch.autograd.grad(theirs, new)
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(our_grad, their_grad)

    rewards = torch.zeros(B, T)
    rewards[:, -1] = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    index = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    ours, _ = core_algos.get_adv_estimator_fn("rlvr_grpo")(token_level_rewards=rewards, response_mask=torch.ones(B, T),
                                                          index=index, config=None)
    theirs, _ = core_algos.compute_grpo_outcome_advantage(token_level_rewards=rewards, response_mask=torch.ones(B, T),
                                                          index=index)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-5, atol=1e-5)
    reference = compute_advantages("grpo", rewards.sum(-1), torch.tensor([0, 0, 0, 1, 1, 1]), torch.ones(B, T))
    torch.testing.assert_close(ours, reference)
