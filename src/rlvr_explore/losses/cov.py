"""KL-Cov and Clip-Cov (Cui et al. 2025, discussed in STILL §4.3).

Cov_t = (A_t - mean A)(logp_t - mean logp) over ALL valid tokens of the global batch. Computed
here over the tensors given; to use the global batch while splitting into micro-batches, build
the selection once over the whole batch with :func:`rlvr_explore.losses.token_gate` and pass
its slices as ``token_gate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvr_explore.candidates import at_least_fp32
from rlvr_explore.documented import documented

from .core import LossConfig, clipped_token_loss, masked_mean, ratio, register_loss


@dataclass
class KLCovConfig(LossConfig):
    kl_cov_ratio: float = documented(2e-3, "KL-Cov: fraction k of valid tokens with the largest covariance (Cui et al. 2025).")
    kl_cov_coef: float = documented(1.0, "KL-Cov: beta_kl of the |logp - old_logp| penalty on selected tokens (Cui et al. 2025).")

    def validate(self) -> None:
        if not 0.0 < self.kl_cov_ratio <= 1.0:
            raise ValueError(f"kl_cov_ratio must be in (0, 1], got {self.kl_cov_ratio}")
        super().validate()


@dataclass
class ClipCovConfig(LossConfig):
    clip_cov_ratio: float = documented(2e-4, "Clip-Cov: fraction of valid tokens whose gradient is cut (Cui et al. 2025).")
    clip_cov_lb: float = documented(1.0, "Clip-Cov: lower covariance bound of the candidates (Cui et al. 2025).")
    clip_cov_ub: float = documented(5.0, "Clip-Cov: upper covariance bound of the candidates (Cui et al. 2025).")

    def validate(self) -> None:
        if not 0.0 < self.clip_cov_ratio <= 1.0:
            raise ValueError(f"clip_cov_ratio must be in (0, 1], got {self.clip_cov_ratio}")
        if not self.clip_cov_lb < self.clip_cov_ub:
            raise ValueError("clip_cov_lb must be < clip_cov_ub")
        super().validate()


def token_covariance(advantages: torch.Tensor, logp: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(A_t - mean A)(logp_t - mean logp), means over the valid tokens; 0 at padding."""
    mask = response_mask.bool()
    lp = at_least_fp32(logp.detach())  # the input's own precision: float64 stays float64
    adv = advantages.detach().to(lp.dtype)
    centred = (adv - adv[mask].mean()) * (lp - lp[mask].mean())
    return centred.masked_fill(~mask, 0.0)


def kl_cov_selection(inputs, cfg) -> torch.Tensor:
    """The top ``kl_cov_ratio`` fraction of valid tokens by covariance (at least one)."""
    mask = inputs.response_mask.bool()
    cov = token_covariance(inputs.advantages, inputs.logp, mask).masked_fill(~mask, float("-inf"))
    k = max(1, int(mask.sum().item() * cfg.kl_cov_ratio))
    chosen = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    chosen[cov.reshape(-1).topk(k).indices] = True
    return chosen.reshape(mask.shape)


def clip_cov_selection(inputs, cfg) -> torch.Tensor:
    """A random ``clip_cov_ratio`` fraction of valid, unclipped tokens with lb < Cov < ub."""
    mask = inputs.response_mask.bool()
    _, already_clipped = clipped_token_loss(ratio(inputs).detach(), inputs.advantages, cfg)
    cov = token_covariance(inputs.advantages, inputs.logp, mask)
    eligible = mask & ~already_clipped & (cov > cfg.clip_cov_lb) & (cov < cfg.clip_cov_ub)
    candidates = eligible.reshape(-1).nonzero().squeeze(-1)
    budget = max(1, int(mask.sum().item() * cfg.clip_cov_ratio))
    picked = candidates[torch.randperm(candidates.numel(), device=candidates.device)[:budget]]
    chosen = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    chosen[picked] = True
    return chosen.reshape(mask.shape)


@register_loss("kl_cov", "Cui et al. 2025 (STILL §4.3)", config=KLCovConfig, gate=kl_cov_selection,
               batch_wide_gate=lambda cfg: True)
def kl_cov(inputs, cfg):
    """Selected tokens: -A r + beta_kl |logp - old_logp|; all others: unclipped -A r."""
    selected = inputs.token_gate
    pg = -inputs.advantages * ratio(inputs)
    loss = pg + cfg.kl_cov_coef * (inputs.logp - inputs.old_logp).abs() * selected
    return loss, {"cov_selected_frac": masked_mean(selected.float(), inputs.response_mask)}


# the official Clip-Cov recipes (verl recipe/entropy) set clip_ratio_low = high = 1; their
# clip_ratio_c = 10 is not read by verl's clip_cov loss, so there is no dual clip here either
CLIP_COV_DEFAULTS = {"clip_eps_low": 1.0, "clip_eps_high": 1.0}


@register_loss("clip_cov", "Cui et al. 2025 (STILL §4.3)", config=ClipCovConfig,
               defaults=CLIP_COV_DEFAULTS, gate=clip_cov_selection,
               batch_wide_gate=lambda cfg: True)
def clip_cov(inputs, cfg):
    """The clipped term, with the loss (and so the gradient) of the selected tokens set to zero."""
    selected = inputs.token_gate
    loss, is_clipped = clipped_token_loss(ratio(inputs), inputs.advantages, cfg)
    metrics = {
        "pg_clipfrac": masked_mean(is_clipped.float(), inputs.response_mask),
        "cov_selected_frac": masked_mean(selected.float(), inputs.response_mask),
    }
    return loss * ~selected, metrics
