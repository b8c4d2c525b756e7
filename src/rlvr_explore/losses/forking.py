"""Forking tokens (Wang et al. 2025, "Beyond the 80/20 rule"): the policy gradient flows only
through tokens whose entropy is in the top (1 - q) of the batch; normalisation is unchanged."""

from __future__ import annotations

from .core import EntropyGateConfig, clipped_token_loss, entropy_gate, masked_mean, ratio, register_loss


@register_loss("forking", "Wang et al. 2025; CaSP §5.1 baseline", config=EntropyGateConfig, defaults={"quantile_scope": "batch"}, gate=entropy_gate,
               batch_wide_gate=lambda cfg: cfg.quantile_scope == "batch", reads=("entropy",))
def forking(inputs, cfg):
    mask, gate = inputs.response_mask.bool(), inputs.token_gate
    loss, is_clipped = clipped_token_loss(ratio(inputs), inputs.advantages, cfg)
    return loss * gate, {"pg_clipfrac": masked_mean(is_clipped.float(), mask), "gate_frac": masked_mean(gate.float(), mask)}
