"""Exploration diagnostics as pure functions over tensors (docs/methods.md, "Diagnostics").

They read the tensors the trainer already has (masks, log-probs, top-N, entropy, logits) and
are used from the trainer's logging, the integrations, and on saved rollouts alike.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch


def _per_response_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum(-1) / m.sum(-1).clamp(min=1)


def rank_logprobs(topn_logp: torch.Tensor, response_mask: torch.Tensor) -> list[float]:
    """Lambda^(n), n = 1..N (CaSP Eq. 2): mean over responses of the mean over tokens of log pi(v(n))."""
    mask = response_mask.bool()
    has_tokens = mask.any(-1)
    return [float(_per_response_mean(topn_logp[..., n].detach(), mask)[has_tokens].mean()) for n in range(topn_logp.shape[-1])]


def sampled_logprob(logp: torch.Tensor, response_mask: torch.Tensor) -> float:
    """Lambda^sample: the same average for the sampled token."""
    mask = response_mask.bool()
    return float(_per_response_mean(logp.detach(), mask)[mask.any(-1)].mean())


def entropy_summary(entropy: torch.Tensor, response_mask: torch.Tensor, correct: torch.Tensor | None = None,
                    position_bins: int = 10) -> dict:
    """Token entropy (STILL Eq. 3): overall mean, by correctness, and by relative position."""
    mask = response_mask.bool()
    H = entropy.detach().float()
    out = {"mean": float(H[mask].mean())}
    if correct is not None:
        rows = correct.bool()[:, None] & mask
        wrong = ~correct.bool()[:, None] & mask
        out["correct_mean"] = float(H[rows].mean()) if rows.any() else None
        out["incorrect_mean"] = float(H[wrong].mean()) if wrong.any() else None
    m = mask.float()
    relative = (m.cumsum(-1) - 1) / (m.sum(-1, keepdim=True) - 1).clamp(min=1)
    which = (relative * position_bins).long().clamp(max=position_bins - 1)
    out["by_position"] = [float(H[mask & (which == b)].mean()) if (mask & (which == b)).any() else None
                          for b in range(position_bins)]
    return out


def mean_branching_factor(branching_factor: torch.Tensor, response_mask: torch.Tensor) -> float:
    """Rollout branching factor (STILL §2.2): candidates to reach the mass, averaged over tokens."""
    return float(branching_factor[response_mask.bool()].float().mean())


def expected_distinct_tokens(probs: torch.Tensor, num_samples: int) -> torch.Tensor:
    """CaSP Prop. 3: E[# distinct tokens in K draws] = sum_v 1 - (1 - p_v)^K."""
    return (1.0 - (1.0 - probs.double()) ** num_samples).sum(-1)


def probability_bins(topn_logp: torch.Tensor, response_mask: torch.Tensor,
                     edges: Sequence[float] = (0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 1.0)) -> dict:
    """CaSP App. D.2: fraction of tokens whose rank-n candidate probability falls in each bin."""
    mask = response_mask.bool()
    probs = topn_logp.detach().exp()[mask]
    hist = {}
    for n in range(probs.shape[-1]):
        counts, _ = np.histogram(probs[:, n].float().numpy(), bins=np.asarray(edges))
        hist[f"rank{n + 1}"] = (counts / max(1, len(probs))).tolist()
    return {"edges": list(edges), "fractions": hist}


def grouped_candidates(probs: torch.Tensor, sampled_ids: torch.Tensor, mass: float = 0.95) -> list[list[tuple[int, float, bool]]]:
    """CaSP App. G: per position, candidates in descending probability until ``mass`` is reached,
    the sampled token always included; entries are (token id, probability, is sampled)."""
    columns = []
    for p, sampled in zip(probs.detach(), sampled_ids.tolist()):
        order = p.argsort(descending=True)
        keep = int((p[order].cumsum(0) < mass).sum()) + 1
        chosen = order[:keep].tolist()
        if sampled not in chosen:
            chosen.append(sampled)
        columns.append([(v, float(p[v]), v == sampled) for v in chosen])
    return columns


def gradient_norm_proxy(advantages: torch.Tensor, probs: torch.Tensor, response_ids: torch.Tensor,
                        hidden: torch.Tensor) -> torch.Tensor:
    """STILL Eq. 4: G_t = |A_t| * ||e(o_t) - pi_t|| * ||h_t||, the norm of the lm_head gradient
    (the Frobenius norm of an outer product is the product of the norms)."""
    one_hot = torch.nn.functional.one_hot(response_ids, probs.shape[-1]).to(probs.dtype)
    return advantages.abs() * (one_hot - probs).norm(dim=-1) * hidden.norm(dim=-1)


def token_replacement_impact(probs: torch.Tensor, sampled_id: int, accuracy_with: Callable[[int], float]) -> dict:
    """STILL Eq. 5-6: replace the sampled token by the most likely other candidate and compare
    the accuracy of continuations (``accuracy_with(token)`` samples k of them from that prefix)."""
    masked = probs.detach().clone()
    masked[sampled_id] = -1.0
    replacement = int(masked.argmax())
    original, replaced = accuracy_with(sampled_id), accuracy_with(replacement)
    return {"replacement": replacement, "original_accuracy": original, "replaced_accuracy": replaced,
            "impact": original - replaced}


def accuracy_buckets(per_problem_accuracy: Sequence[float], bins: int = 10) -> dict:
    """SPS Fig. 2: histogram of per-problem mean accuracy; 0 and 1 get bins of their own and the
    open interval between them is cut into ``bins`` right-closed pieces."""
    acc = np.asarray(per_problem_accuracy, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    labels = ["0"] + [f"({lo:.2g},{hi:.2g}]" for lo, hi in zip(edges[:-1], edges[1:])] + ["1"]
    counts = [int((acc == 0).sum())]
    counts += [int(((acc > lo) & (acc <= hi) & (acc < 1)).sum()) for lo, hi in zip(edges[:-1], edges[1:])]
    counts.append(int((acc == 1).sum()))
    return {"labels": labels, "counts": counts}


def greedy_logprob(logp: torch.Tensor, response_mask: torch.Tensor) -> float:
    """SPS App. E.3: mean over greedy trajectories of their mean token log-prob under the policy."""
    return sampled_logprob(logp, response_mask)


def entropy_performance_fit(entropy: Sequence[float], reward: Sequence[float]) -> dict:
    """STILL §3.1: least-squares fit of R = -a exp(H) + b over checkpoints, with R^2."""
    H, R = np.asarray(entropy, float), np.asarray(reward, float)
    if len(H) < 2:
        raise ValueError("entropy_performance_fit needs at least two checkpoints")
    design = np.stack([-np.exp(H), np.ones_like(H)], 1)
    (a, b), *_ = np.linalg.lstsq(design, R, rcond=None)
    residual = R - design @ np.array([a, b])
    total = ((R - R.mean()) ** 2).sum()
    return {"a": float(a), "b": float(b), "r2": float(1 - (residual**2).sum() / total) if total > 0 else 1.0}


def detect_stages(accuracy: Sequence[float], min_segment: int = 3) -> dict:
    """Rising vs plateau (STILL §3.2.2): the breakpoint of the best two-segment linear fit.

    Returns the first plateau step and both slopes; the rising stage is every step before it.
    """
    y = np.asarray(accuracy, float)
    if len(y) < 2 * min_segment:
        raise ValueError(f"detect_stages needs at least {2 * min_segment} points, got {len(y)}")
    x = np.arange(len(y), dtype=float)

    def fit(xs, ys):
        slope, intercept = np.polyfit(xs, ys, 1)
        return slope, float(((ys - (slope * xs + intercept)) ** 2).sum())

    best = None
    for b in range(min_segment, len(y) - min_segment + 1):
        s1, e1 = fit(x[:b], y[:b])
        s2, e2 = fit(x[b:], y[b:])
        if best is None or e1 + e2 < best[0]:
            best = (e1 + e2, b, s1, s2)
    _, b, s1, s2 = best
    return {"plateau_start": int(b), "rising_slope": float(s1), "plateau_slope": float(s2)}
