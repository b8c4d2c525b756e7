"""CaSP / SimKO: candidate-aware support preservation (CaSP (arXiv 2510.14807) §4, Fig. 10, App. A; SimKO).

At forking tokens, w_t = 1[H_t > quantile_q(H)] (the current policy's entropy, detached):
  A > 0:                 ratio+ = (1 - alpha w) r + (alpha w) sum_n c_n sg(r) exp(logp(v(n)) - sg(logp(v(n))))
  A < 0, y_t = v(1), w:  ratio- = lam * r
  otherwise:             r
with c_n = 1/N (``casp``) or softmax of the top-N log-probs (``casp_softmax``, App. F.3). The
auxiliary term has value r and gradient r * grad logp(v(n)), so ratio+ equals r in value (clip
decisions match GRPO) and its gradient is the top-N smoothed target of Eq. 4:
  dJ/dz = A r [(1 - alpha w)(e_y - pi) + alpha w sum_n c_n (e_v(n) - pi)].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvr_explore.documented import documented

from .core import EntropyGateConfig, clipped_token_loss, entropy_gate, masked_mean, ratio, register_loss


@dataclass
class CaspConfig(EntropyGateConfig):
    """CaSP's settings beside the entropy gate's (q, quantile_scope) and the common ones."""

    alpha: float = documented(0.01, "CaSP smoothing strength in [0, 1] (CaSP §4.1 Eq. 4; App. E: math 0.01, logic 0.005, code 0.05).")
    top_n: int = documented(3, "N, the number of top candidates CaSP smooths over (CaSP §4.1, App. E: 3).")
    lam: float = documented(1.1, "lambda_top1 > 1, the rank-1 penalty on negatives (CaSP §4.2 Eq. 5; App. E: math 1.1, logic 1.05).")
    positive_on: str = documented(
        "advantage", "CaSP positive branch keys on 'advantage' > 0 (the paper) or 'reward' == 1 (the SimKO code)."
    )

    def validate(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {self.top_n}")
        if self.lam <= 0:
            raise ValueError(f"lam must be > 0, got {self.lam}")
        if self.positive_on not in ("advantage", "reward"):
            raise ValueError(f"positive_on must be 'advantage' or 'reward', got {self.positive_on!r}")
        super().validate()


def _casp(inputs, cfg: CaspConfig, weighting: str):
    inputs.require("casp", "response_ids", "topn_logp", "topn_ids", "entropy")
    if inputs.topn_logp.shape[-1] < cfg.top_n:
        raise ValueError(f"topn_logp has {inputs.topn_logp.shape[-1]} candidates, top_n={cfg.top_n} needs that many")
    mask = inputs.response_mask.bool()
    gate = inputs.token_gate
    w = gate.to(inputs.logp.dtype)

    r = ratio(inputs)
    topn_logp = inputs.topn_logp[..., : cfg.top_n]
    if weighting == "softmax":
        weights = torch.softmax(topn_logp.detach(), dim=-1)
    else:
        weights = torch.full_like(topn_logp, 1.0 / cfg.top_n)
    candidate_ratio = r.detach() * (weights * torch.exp(topn_logp - topn_logp.detach())).sum(-1)
    positive_ratio = (1.0 - cfg.alpha * w) * r + cfg.alpha * w * candidate_ratio

    if cfg.positive_on == "reward":
        inputs.require("casp (positive_on='reward')", "rewards")
        positive = (inputs.rewards == 1).unsqueeze(-1).expand_as(r)
    else:
        positive = inputs.advantages > 0
    is_top1 = inputs.response_ids == inputs.topn_ids[..., 0]
    penalised = (inputs.advantages < 0) & is_top1 & gate
    mixed = torch.where(positive, positive_ratio, torch.where(penalised, cfg.lam * r, r))

    loss, is_clipped = clipped_token_loss(mixed, inputs.advantages, cfg)
    metrics = {
        "pg_clipfrac": masked_mean(is_clipped.float(), mask),
        "gate_frac": masked_mean(w, mask),
        "top1_penalised_frac": masked_mean(penalised.float(), mask),
        "gated_entropy": (inputs.entropy.detach() * w).sum() / w.sum().clamp(min=1),
    }
    return loss, metrics


@register_loss("casp", "CaSP (arXiv 2510.14807) §4, Fig. 10, App. E (SimKO)", config=CaspConfig, aliases=("simko",), gate=entropy_gate,
               batch_wide_gate=lambda cfg: cfg.quantile_scope == "batch", reads=("entropy", "topn"))
def casp(inputs, cfg):
    return _casp(inputs, cfg, weighting="uniform")


@register_loss("casp_softmax", "CaSP (arXiv 2510.14807) App. F.3", config=CaspConfig, gate=entropy_gate,
               batch_wide_gate=lambda cfg: cfg.quantile_scope == "batch", reads=("entropy", "topn"))
def casp_softmax(inputs, cfg):
    return _casp(inputs, cfg, weighting="softmax")
