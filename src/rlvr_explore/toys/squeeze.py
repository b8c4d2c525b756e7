"""The squeezing effect (CaSP Lemma 2; SPS App. A.1).

A negative gradient step on one token's log-prob, dz = -eta (e_y - pi), moves logit mass to every
other token in proportion to its probability: dz_v = eta pi_v for v != y. When y is a
low-probability token, the rank-1 token gains the most, so the maximum probability rises and the
distribution sharpens ("squeezes"). When y is the rank-1 token, its mass is spread over the
others and the distribution flattens. CaSP's stronger rank-1 penalty (lambda > 1) uses the
second case; its avoidance of the first motivates penalising only the rank-1 candidate.
"""

from __future__ import annotations

import torch

DEFAULT_PROBS = (0.5, 0.25, 0.12, 0.08, 0.05)


def entropy(p: torch.Tensor) -> float:
    return float(-(p * p.clamp_min(1e-30).log()).sum())


def negative_step(probs: torch.Tensor, token: int, lr: float) -> torch.Tensor:
    """Probabilities after one step of gradient descent on log pi(token) (a negative sample)."""
    z = probs.log().clone().requires_grad_()
    torch.log_softmax(z, -1)[token].backward()
    return torch.softmax(z.detach() - lr * z.grad, -1)


def run(probs=DEFAULT_PROBS, lr: float = 0.5, steps: int = 1) -> dict:
    p0 = torch.tensor(probs, dtype=torch.float64)
    p0 = p0 / p0.sum()
    rows = []
    trajectories = {}
    for rank, token in enumerate(p0.argsort(descending=True).tolist(), start=1):
        p = p0
        path = [p]
        for _ in range(steps):
            p = negative_step(p, token, lr)
            path.append(p)
        trajectories[rank] = torch.stack(path)
        rows.append({
            "penalised_rank": rank,
            "max_prob_before": round(float(p0.max()), 4),
            "max_prob_after": round(float(p.max()), 4),
            "entropy_before": round(entropy(p0), 4),
            "entropy_after": round(entropy(p), 4),
            "squeezes": bool(p.max() > p0.max()),
            "probs_after": [round(float(x), 4) for x in p],
        })
    return {"toy": "squeeze", "config": {"probs": [float(x) for x in p0], "lr": lr, "steps": steps},
            "by_rank": rows, "_trajectories": trajectories}


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["by_rank"]
    n = len(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / (n + 1)
    x = torch.arange(n).float()
    axes[0].bar(x, summary["config"]["probs"], width, label="before", color="black")
    for i, row in enumerate(rows):
        axes[0].bar(x + (i + 1) * width, row["probs_after"], width, label=f"after penalising rank {row['penalised_rank']}")
    axes[0].set_xticks(x + n * width / 2, [f"token {i}" for i in range(n)])
    axes[0].set_ylabel("probability")
    steps = summary["config"]["steps"]
    axes[0].set_title(f"{steps} negative step{'s' if steps != 1 else ''} (lr {summary['config']['lr']})")
    axes[0].legend(fontsize=7)
    ranks = [r["penalised_rank"] for r in rows]
    axes[1].plot(ranks, [r["max_prob_after"] for r in rows], "o-", label="max prob after")
    axes[1].axhline(rows[0]["max_prob_before"], color="grey", ls="--", label="max prob before")
    axes[1].set_xticks(ranks)  # ranks are whole numbers
    axes[1].set_xlabel("rank of the penalised token")
    axes[1].set_ylabel("maximum probability")
    axes[1].set_title("penalising a low-rank token sharpens the peak")
    axes[1].legend(fontsize=8)
    fig.suptitle("The squeeze effect (CaSP Lemma 2)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
