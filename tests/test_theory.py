"""Theorem 1 of the two-stage paper (two-stage paper (arXiv 2510.04028)) against a Monte Carlo estimate of Alg. 1's update."""

import torch

from rlvr_explore.theory import expected_logit_update, group_baseline_advantage, sampled_logit_update


def test_theorem1_matches_monte_carlo():
    probs = torch.tensor([0.55, 0.3, 0.1, 0.05], dtype=torch.float64)
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    G, lr, draws = 8, 0.5, 200_000
    g = torch.Generator().manual_seed(0)
    actions = torch.multinomial(probs.expand(draws, -1), G, replacement=True, generator=g)
    r = rewards[actions]
    adv = r - r.mean(-1, keepdim=True)
    one_hot = torch.nn.functional.one_hot(actions, 4).double()
    updates = lr * (adv[..., None] * (one_hot - probs)).mean(1)
    mc_mean, mc_err = updates.mean(0), updates.std(0) / draws**0.5
    theory = expected_logit_update(probs, group_baseline_advantage(probs, rewards, G), lr)
    assert ((mc_mean - theory).abs() < 4 * mc_err + 1e-12).all(), (mc_mean, theory, mc_err)
    # the closed form differs from a wrong baseline (no (G-1)/G factor) by more than the noise
    wrong = expected_logit_update(probs, rewards - (probs * rewards).sum(), lr)
    assert ((mc_mean - wrong).abs() > 4 * mc_err).any()


def test_sampled_update_agrees_with_theorem_on_average():
    probs = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    rewards = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([sampled_logit_update(probs, rewards, 4, 1.0, generator=g) for _ in range(20_000)])
    theory = expected_logit_update(probs, group_baseline_advantage(probs, rewards, 4))
    assert ((draws.mean(0) - theory).abs() < 4 * draws.std(0) / 20_000**0.5).all()


def test_updates_sum_to_zero_and_rare_actions_barely_move():
    probs = torch.tensor([0.9, 0.0999, 0.0001], dtype=torch.float64)
    rewards = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    update = expected_logit_update(probs, group_baseline_advantage(probs, rewards, 8))
    assert abs(float(update.sum())) < 1e-15  # softmax logits are shift-invariant
    assert update[2] < 1e-4  # Remark 3: the optimal action is ignored while pi(v) -> 0
