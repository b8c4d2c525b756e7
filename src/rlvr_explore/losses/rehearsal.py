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

from dataclasses import dataclass

import torch

from rlvr_explore.documented import documented

from .core import k3_kl

DIVERGENCES = ("forward", "js", "alpha")


@dataclass
class DPHConfig:
    enabled: bool = documented(False, "DPH-RL rehearsal (arXiv 2509.07430): a mass-covering divergence to the initial "
                                      "policy on responses it solved, collected once, added to any loss")
    divergence: str = documented("forward", "forward (KL(pi_0 || pi)), js or alpha (DPH-RL's generators)")
    coef: float = documented(0.01, "weight of the rehearsal term (official scripts: forward 0.01-0.05, JS 0.05-0.2)")
    alpha: float = documented(0.2, "a of the alpha divergence, in (0, 1)")
    presample: int = documented(8, "pi_0 samples per training prompt; prompts solved in all of them are rehearsed, "
                                   "the others trained with RL (DPH-RL README: 8)")
    samples: int = documented(16, "pi_0 samples per rehearsed prompt, of which the correct ones are candidates for the "
                                  "rehearsal set (official: 16)")
    keep_per_prompt: int = documented(1, "correct pi_0 responses kept per rehearsed prompt (the official set keeps one; "
                                         "0 keeps every correct one)")
    chunk: int = documented(64, "rehearsal responses mixed into each step, split over its mini-batches (official: 256 "
                                "beside 128 x 16 rollouts)")

    def validate(self, prefix: str = "dph.") -> None:
        """ValueError naming the first invalid field as ``prefix + name`` (the TRL config's fields are ``dph_*``)."""
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"{prefix}divergence={self.divergence!r}: one of {', '.join(DIVERGENCES)}")
        if self.coef < 0:
            raise ValueError(f"{prefix}coef must be >= 0, got {self.coef}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"{prefix}alpha must be in (0, 1), got {self.alpha}")
        for name in ("presample", "samples", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{prefix}{name} must be at least 1, got {getattr(self, name)}")
        if self.keep_per_prompt < 0:
            raise ValueError(f"{prefix}keep_per_prompt must be >= 0 (0: all), got {self.keep_per_prompt}")


@torch.no_grad()
def mastered(rewards: torch.Tensor) -> torch.Tensor:
    """(prompts,) bool from pi_0's pre-sample rewards (prompts, presample): the prompts it solved
    (reward > 0.5) in every sample, which DPH-RL rehearses instead of training them with RL."""
    return (rewards > 0.5).all(1)


@torch.no_grad()
def kept_correct(correct: torch.Tensor, keep_per_prompt: int) -> torch.Tensor:
    """(prompts, samples) mask of the correct responses kept for the rehearsal set: the first
    ``keep_per_prompt`` of each prompt (DPH-RL's official set keeps one), or all of them with 0."""
    return correct & (correct.long().cumsum(1) <= keep_per_prompt) if keep_per_prompt else correct


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
