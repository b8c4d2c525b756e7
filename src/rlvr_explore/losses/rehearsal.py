"""DPH-RL's rehearsal term (arXiv 2509.07430): a mass-covering f-divergence to the initial policy
pi_0, estimated on responses pi_0 sampled and solved, with their pi_0 log-probs stored once.

Per token of a rehearsal response, with u = exp(logp - ref_logp) (ref_logp the stored pi_0 value),
the loss is f(u): no ratio, no clip, no advantage. Over pi_0's samples E[f(u)] is the divergence.

* ``forward``: f(u) = u - 1 - log u, so E_pi0[f] = KL(pi_0 || pi); df/dlogp = u - 1. verl's
  ``low_var_kl`` with its arguments swapped, clamps included (log u in [-20, 20], f in [-10, 10]).
* ``js``: f(u) = u log u - (u + 1) log((u + 1) / 2) (twice the textbook JS generator, as the
  official code); df/dlogp = u log(2u / (u + 1)).
* ``alpha``: f(u) = (u^(1-a) - (1-a) u - a) / (a (a - 1)), a in (0, 1).
"""

from __future__ import annotations

import torch

from .core import k3_kl

DIVERGENCES = ("forward", "js", "alpha")


def rehearsal_token_divergence(logp: torch.Tensor, ref_logp: torch.Tensor, divergence: str = "forward",
                               alpha: float = 0.2) -> torch.Tensor:
    """f(u) per token, u = exp(logp - ref_logp), for the divergences of DPH-RL."""
    if divergence == "forward":
        return k3_kl(ref_logp, logp)
    log_u = (logp - ref_logp).clamp(-20.0, 20.0)
    u = log_u.exp()
    if divergence == "js":
        return u * log_u - (u + 1) * torch.log((u + 1) / 2)
    if divergence == "alpha":
        if not 0 < alpha < 1:
            raise ValueError(f"the alpha divergence needs 0 < alpha < 1, got {alpha}")
        return (u ** (1 - alpha) - (1 - alpha) * u - alpha) / (alpha * (alpha - 1))
    raise ValueError(f"unknown rehearsal divergence {divergence!r}; one of {', '.join(DIVERGENCES)}")


def rehearsal_loss(logp: torch.Tensor, ref_logp: torch.Tensor, response_mask: torch.Tensor, coef: float,
                   divergence: str = "forward", alpha: float = 0.2, tokens: int | None = None) -> torch.Tensor:
    """coef x the token mean of f(u) over the rehearsal responses' tokens; ``tokens`` is the count
    to divide by when these rows are one micro-batch of a larger set (default: their own)."""
    mask = response_mask.bool()
    values = rehearsal_token_divergence(logp, ref_logp, divergence, alpha)
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return coef * total / (tokens if tokens is not None else mask.sum().clamp(min=1))
