"""Closed forms of the two-stage dynamic paper (two-stage paper (arXiv 2510.04028), Lemma 1 and Theorem 1).

For a softmax policy pi = softmax(z) over V actions and the group-relative policy gradient
g = (1/G) sum_i A(u_i) grad_z log pi(u_i) with u_i ~ pi, Theorem 1 gives the expected update

    E[dz_v] = eta * pi_v * [ (1 - pi_v) A(v) - sum_{u != v} pi_u A(u) ]

where A(v) is the expected advantage of a sample that drew action v. With the group-mean
baseline A(u_i) = r(u_i) - mean_j r(u_j) (Alg. 1), A(v) = (G - 1)/G * (r_v - sum_u pi_u r_u).
"""

from __future__ import annotations

import torch


def expected_logit_update(probs: torch.Tensor, advantages: torch.Tensor, lr: float = 1.0) -> torch.Tensor:
    """Theorem 1: E[dz] (..., V) from probabilities and per-action expected advantages (..., V)."""
    if probs.shape != advantages.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and advantages {tuple(advantages.shape)} must match")
    weighted = (probs * advantages).sum(-1, keepdim=True)
    # (1 - pi_v) A(v) - sum_{u != v} pi_u A(u) = A(v) - sum_u pi_u A(u)
    return lr * probs * (advantages - weighted)


def group_baseline_advantage(probs: torch.Tensor, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """E[r(u_i) - mean_j r(u_j) | u_i = v] = (G - 1)/G * (r_v - E_pi[r]) for each action v."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    expected_reward = (probs * rewards).sum(-1, keepdim=True)
    return (group_size - 1) / group_size * (rewards - expected_reward)


def sampled_logit_update(probs: torch.Tensor, rewards: torch.Tensor, group_size: int, lr: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw of the update of Alg. 1 (plain gradient step): eta * (1/G) sum_i A_i (e_{u_i} - pi)."""
    actions = torch.multinomial(probs, group_size, replacement=True, generator=generator)
    sampled_rewards = rewards[actions]
    adv = sampled_rewards - sampled_rewards.mean()
    one_hot = torch.nn.functional.one_hot(actions, probs.shape[-1]).to(probs.dtype)
    return lr * (adv.unsqueeze(-1) * (one_hot - probs)).mean(0)
