"""The clipped policy-gradient family: GRPO, Dr.GRPO, DAPO, PSR/NSR/W-REINFORCE, GRPO-N.

They share one token loss, the PPO clipped term, and differ in which tokens may contribute
(a sign filter on A), in aggregation, in clip range and in the advantage estimator they pair
with (``advantage=``; see ``rlvr_explore.advantages``).
"""

from __future__ import annotations

from .core import LossConfig, LossInputs, clipped_token_loss, masked_mean, ratio, register_loss


def _clipped_pg(inputs: LossInputs, cfg: LossConfig, keep=None):
    loss, is_clipped = clipped_token_loss(ratio(inputs), inputs.advantages, cfg)
    metrics = {"pg_clipfrac": masked_mean(is_clipped.float(), inputs.response_mask)}
    if keep is not None:
        keep = keep(inputs.advantages)
        loss = loss * keep
        metrics["kept_token_frac"] = masked_mean(keep.float(), inputs.response_mask)
    return loss, metrics


@register_loss("grpo", "Shao et al. 2024; CaSP §2 Eq. 1")
def grpo(inputs, cfg):
    """Clipped term with group-normalised advantages, seq-mean-token-mean."""
    return _clipped_pg(inputs, cfg)


@register_loss("dr_grpo", "Liu et al. 2025 (Dr.GRPO)", defaults={"loss_agg_mode": "seq-mean-token-sum-norm"}, advantage="dr_grpo")
def dr_grpo(inputs, cfg):
    """Clipped term; advantages without std normalisation, a constant length divisor."""
    return _clipped_pg(inputs, cfg)


@register_loss("dapo", "Yu et al. 2025; SPS App. B.2", defaults={"clip_eps_high": 0.28, "loss_agg_mode": "token-mean"})
def dapo(inputs, cfg):
    """Clip-higher (0.2 / 0.28) and token-mean; dynamic sampling and the soft overlong penalty
    act on the batch and the rewards (``advantages.overlong_penalty``), not on the loss."""
    return _clipped_pg(inputs, cfg)


@register_loss("psr", "Zhu et al. 2025 (as in CaSP baselines)", defaults={"loss_agg_mode": "token-mean"}, advantage="psr")
def psr(inputs, cfg):
    """Positive sample reinforcement: only tokens with A > 0 contribute."""
    return _clipped_pg(inputs, cfg, keep=lambda a: a > 0)


@register_loss("nsr", "Zhu et al. 2025 (as in CaSP baselines)", defaults={"loss_agg_mode": "token-mean"}, advantage="nsr")
def nsr(inputs, cfg):
    """Negative sample reinforcement: only tokens with A < 0 contribute."""
    return _clipped_pg(inputs, cfg, keep=lambda a: a < 0)


@register_loss("w_reinforce", "Zhu et al. 2025 (as in CaSP baselines)", defaults={"loss_agg_mode": "token-mean"}, advantage="w_reinforce")
def w_reinforce(inputs, cfg):
    """Weighted REINFORCE: every token; the +lambda / -1 weighting is in its advantage."""
    return _clipped_pg(inputs, cfg)


@register_loss("grpo_n", "two-stage paper (arXiv 2510.04028) §4, App. B.5 (GRPO-N)")
def grpo_n(inputs, cfg):
    """GRPO advantages, but only relative negative tokens contribute: indicator 1[A < 0]."""
    return _clipped_pg(inputs, cfg, keep=lambda a: a < 0)
