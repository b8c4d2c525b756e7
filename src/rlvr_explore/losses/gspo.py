"""GSPO and GSPO-N: a sequence-level importance ratio (Zheng et al. 2025; SPS App. B.3; two-stage paper (arXiv 2510.04028) §2).

s_i = exp(mean_t(logp - old_logp)) over the response's valid tokens, spread over tokens as
s_{i,t} = sg(s_i) * exp(logp_t - sg(logp_t)): the value is s_i and the gradient s_i * grad logp_t.
The clip (3e-4 / 4e-4) acts on s_i.
"""

from __future__ import annotations

import torch

from .core import clipped_token_loss, masked_mean, register_loss

GSPO_DEFAULTS = {"clip_eps_low": 3e-4, "clip_eps_high": 4e-4}


def _gspo(inputs, cfg, negative_only: bool):
    mask = inputs.response_mask.to(inputs.logp.dtype)
    log_ratio = (inputs.logp - inputs.old_logp) * mask
    log_seq_ratio = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    seq_ratio_per_token = torch.exp(log_seq_ratio.detach() + inputs.logp - inputs.logp.detach())
    loss, is_clipped = clipped_token_loss(seq_ratio_per_token, inputs.advantages, cfg)
    metrics = {"pg_clipfrac": masked_mean(is_clipped.float(), inputs.response_mask)}
    if negative_only:
        loss = loss * (inputs.advantages < 0)
    return loss, metrics


@register_loss("gspo", "Zheng et al. 2025; SPS App. B.3", defaults=GSPO_DEFAULTS)
def gspo(inputs, cfg):
    return _gspo(inputs, cfg, negative_only=False)


@register_loss("gspo_n", "two-stage paper (arXiv 2510.04028) §4, App. B.5 (GSPO-N)", defaults=GSPO_DEFAULTS)
def gspo_n(inputs, cfg):
    """GSPO with only relative negative responses: indicator 1[A < 0]."""
    return _gspo(inputs, cfg, negative_only=True)
