"""Advantage estimators and shaping against brute force and the papers' formulas."""

import itertools
import math

import pytest
import torch

from rlvr_explore.advantages import compute_advantages, informative_groups, overlong_penalty


def brute_force_passk(rewards, k):
    """Mean normalised max-reward of the k-subsets containing each response (Chen et al. 2025b)."""
    n = len(rewards)
    subsets = list(itertools.combinations(range(n), k))
    values = [max(rewards[i] for i in s) for s in subsets]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if std == 0:
        return [0.0] * n
    return [
        sum((v - mean) / std for s, v in zip(subsets, values) if i in s) / sum(1 for s in subsets if i in s)
        for i in range(n)
    ]


@pytest.mark.parametrize("n,k", [(2, 1), (4, 2), (5, 3), (6, 4), (8, 4), (7, 6)])
def test_passk_matches_enumeration_of_all_k_subsets(n, k):
    g = torch.Generator().manual_seed(n * 10 + k)
    for _ in range(6):
        rewards = (torch.rand(n, generator=g) < 0.4).double()
        got = compute_advantages("passk_adv", rewards, torch.zeros(n, dtype=torch.long), torch.ones(n, 2), passk_k=k)
        expected = torch.tensor(brute_force_passk(rewards.tolist(), k), dtype=torch.float32)
        torch.testing.assert_close(got[:, 0], expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[:, 1], expected, rtol=1e-6, atol=1e-6)


def test_passk_k_not_below_group_size_is_an_error():
    with pytest.raises(ValueError, match="k < group size; got k=4 for a group of 4"):
        compute_advantages("passk_adv", torch.ones(4), torch.zeros(4, dtype=torch.long), torch.ones(4, 3), passk_k=4)


def test_grpo_dr_grpo_rloo_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 7, 7, 7, 7, 3])  # a group of one gets advantage 0
    mask = torch.ones(9, 2)
    mask[1, 1] = 0
    grpo = compute_advantages("grpo", rewards, groups, mask)
    std0 = torch.tensor([1.0, 0, 0, 1]).std()
    assert grpo[0, 0] == pytest.approx(0.5 / (float(std0) + 1e-6))
    assert grpo[6, 0] == pytest.approx(-0.75 / (float(torch.tensor([1.0, 1, 0, 1]).std()) + 1e-6))
    assert grpo[8].tolist() == [0.0, 0.0] and grpo[1, 1] == 0
    dr = compute_advantages("dr_grpo", rewards, groups, mask)
    assert dr[:4, 0].tolist() == [0.5, -0.5, -0.5, 0.5]
    rloo = compute_advantages("rloo", rewards, groups, mask)
    assert rloo[0, 0] == pytest.approx(1 - 1 / 3) and rloo[6, 0] == pytest.approx(0 - 1)


def test_signed_estimators():
    rewards = torch.tensor([1.0, 0.0, 1.0])
    groups = torch.zeros(3, dtype=torch.long)
    mask = torch.ones(3, 1)
    assert compute_advantages("psr", rewards, groups, mask)[:, 0].tolist() == [1, 0, 1]
    assert compute_advantages("nsr", rewards, groups, mask)[:, 0].tolist() == [0, -1, 0]
    w = compute_advantages("w_reinforce", rewards, groups, mask, w_reinforce_lambda=0.1)
    assert w[:, 0].tolist() == pytest.approx([0.1, -1, 0.1])


def test_entropy_adv_is_capped_by_advantage():
    entropy = torch.tensor([[0.5, 3.0], [0.5, 3.0]])
    rewards = torch.tensor([1.0, 0.0])
    out = compute_advantages("dr_grpo", rewards, torch.zeros(2, dtype=torch.long), torch.ones(2, 2),
                             shaping=["entropy_adv"], entropy=entropy)
    # A = +-0.5; min(0.4 * H, |A| / 2) = min(0.2, 0.25) and min(1.2, 0.25), added whatever A's sign
    assert out.flatten().tolist() == pytest.approx([0.7, 0.75, -0.3, -0.25])


def test_ppl_shaping_favours_low_perplexity():
    old_logp = torch.tensor([[-0.1, -0.1], [-2.0, -2.0], [-0.5, -0.5], [-3.0, -1.0]])
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])
    groups = torch.zeros(4, dtype=torch.long)
    mask = torch.ones(4, 2)
    base = compute_advantages("dr_grpo", rewards, groups, mask)
    shaped = compute_advantages("dr_grpo", rewards, groups, mask, shaping=["ppl_shaping"], old_logp=old_logp, ppl_alpha=0.1)
    log_ppl = torch.tensor([0.1, 2.0, 0.5, 2.0], dtype=torch.float64)
    w = (log_ppl - log_ppl.mean()) / (log_ppl.std() + 1e-6)
    torch.testing.assert_close(shaped, base * (1 - 0.1 * w).float()[:, None])


def test_position_bonus_inside_window_only():
    rewards = torch.tensor([1.0, 0.0])
    groups = torch.zeros(2, dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    base = compute_advantages("dr_grpo", rewards, groups, mask)
    outside = compute_advantages("dr_grpo", rewards, groups, mask, shaping=["position_bonus"], step=10)
    assert torch.equal(outside, base)
    inside = compute_advantages("dr_grpo", rewards, groups, mask, shaping=["position_bonus"], step=250)
    rel0 = torch.tensor([0.0, 0.5, 1.0])
    bonus0 = torch.minimum(0.1 * torch.sigmoid(15 * (rel0 - 0.5)), torch.tensor(0.25))
    torch.testing.assert_close(inside[0, :3], 0.5 + bonus0)
    assert inside[0, 3:].tolist() == [0, 0]
    rel1 = torch.linspace(0, 1, 5)
    torch.testing.assert_close(inside[1], -0.5 - torch.minimum(0.1 * torch.sigmoid(15 * (rel1 - 0.5)), torch.tensor(0.25)))
    with pytest.raises(ValueError, match="position_bonus' needs step"):
        compute_advantages("dr_grpo", rewards, groups, mask, shaping=["position_bonus"])


def test_composition_order_is_respected():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    groups = torch.zeros(4, dtype=torch.long)
    mask = torch.ones(4, 3)
    entropy = torch.full((4, 3), 0.3)
    old_logp = torch.tensor([[-0.1] * 3, [-1.0] * 3, [-0.2] * 3, [-2.0] * 3])
    a = compute_advantages("grpo", rewards, groups, mask, shaping=["ppl_shaping", "entropy_adv"], entropy=entropy, old_logp=old_logp, ppl_alpha=0.5)
    b = compute_advantages("grpo", rewards, groups, mask, shaping=["entropy_adv", "ppl_shaping"], entropy=entropy, old_logp=old_logp, ppl_alpha=0.5)
    assert not torch.allclose(a, b)


def test_unknown_names_are_listed():
    args = (torch.ones(2), torch.zeros(2, dtype=torch.long), torch.ones(2, 1))
    with pytest.raises(ValueError, match="unknown advantage estimator 'grop'; available: .*grpo"):
        compute_advantages("grop", *args)
    with pytest.raises(ValueError, match=r"unknown advantage shaping \['ppl'\]"):
        compute_advantages("grpo", *args, shaping=["ppl"])
    with pytest.raises(ValueError, match=r"unknown advantage hyper-parameter\(s\) \['kappa'\]"):
        compute_advantages("grpo", *args, kappa=2)


def test_dynamic_sampling_and_overlong_penalty():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    assert informative_groups(rewards, groups).tolist() == [False, False, True, True, False, False]
    penalty = overlong_penalty(torch.tensor([10, 16, 18, 20, 25]), max_length=20, cache_length=4)
    assert penalty.tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])


def test_a_name_registered_twice_is_refused():
    from rlvr_explore import losses
    from rlvr_explore.advantages import register_advantage, register_shaping
    from rlvr_explore.losses.core import register_loss

    with pytest.raises(ValueError, match="advantage estimator 'grpo' is registered already"):
        register_advantage("grpo")(lambda *args: None)
    with pytest.raises(ValueError, match="shaping step 'outcome_ucb' is registered already"):
        register_shaping("outcome_ucb")(lambda *args: None)
    with pytest.raises(ValueError, match=r"policy loss \['casp'\] is registered already"):
        register_loss("casp", "a second CaSP")(lambda inputs, cfg: None)
    assert losses.get_method("casp").source != "a second CaSP"
