"""The logit bandit of the two-stage paper (two-stage paper (arXiv 2510.04028) Alg. 1, Figs. 1, 5, 6, 7).

Softmax over a few actions with fixed rewards; each step samples G actions, takes A = r - mean,
builds g[a_i] += (1 - pi[a_i]) A_i and g[a_j] -= pi[a_j] A_i (that is, sum_i A_i (e_{a_i} - pi)),
and applies Adam to z with gradient g / G (the paper: G = 2, eta = 0.1). In the paper's scenario
a1 is likely but suboptimal and a2 unlikely but optimal: pi(a1) first rises (exploitation),
peaks, then falls while pi(a2) rises (exploration). The sweeps repeat it over G, the temperature
and a 4-action case; ``theorem1_check`` compares the Monte Carlo update with Theorem 1.
"""

from __future__ import annotations

import torch

from rlvr_explore.theory import expected_logit_update, group_baseline_advantage

DEFAULT_REWARDS = (0.5, 1.0, 0.0)
DEFAULT_PROBS = (0.6, 0.02, 0.38)


def trajectory(rewards, init_probs, group_size=2, lr=0.1, steps=3000, temperature=1.0, seed=0) -> torch.Tensor:
    """(steps + 1, V) policy probabilities along one run of Alg. 1."""
    r = torch.tensor(rewards, dtype=torch.float64)
    z = (torch.log(torch.tensor(init_probs, dtype=torch.float64)) * temperature).requires_grad_()
    optimizer = torch.optim.Adam([z], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = [torch.softmax(z.detach() / temperature, -1)]
    for _ in range(steps):
        probs = torch.softmax(z.detach() / temperature, -1)
        actions = torch.multinomial(probs, group_size, replacement=True, generator=generator)
        adv = r[actions] - r[actions].mean()
        one_hot = torch.nn.functional.one_hot(actions, len(rewards)).double()
        ascent = (adv[:, None] * (one_hot - probs)).sum(0) / group_size
        optimizer.zero_grad()
        z.grad = -ascent  # Adam minimises: descend on -g
        optimizer.step()
        history.append(torch.softmax(z.detach() / temperature, -1))
    return torch.stack(history)


def stages(history: torch.Tensor, exploit: int = 0, explore: int = 1, rise: float = 0.1) -> dict:
    """The two stages: the step where pi(a1) peaks and the first step where pi(a2) has risen by
    ``rise`` above its initial value (None when it never does)."""
    peak = int(history[:, exploit].argmax())
    risen = (history[:, explore] > history[0, explore] + rise).nonzero()
    return {
        "a1_peak_step": peak,
        "a1_peak_prob": float(history[peak, exploit]),
        "a2_rise_step": int(risen[0]) if len(risen) else None,
        "final_probs": [round(float(p), 4) for p in history[-1]],
    }


def theorem1_check(probs=DEFAULT_PROBS, rewards=DEFAULT_REWARDS, group_size=8, draws=100_000, seed=0) -> dict:
    """Monte Carlo mean of the plain-gradient update (1/G) sum_i A_i (e_{a_i} - pi) against Theorem 1."""
    p = torch.tensor(probs, dtype=torch.float64)
    r = torch.tensor(rewards, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    actions = torch.multinomial(p.expand(draws, -1), group_size, replacement=True, generator=generator)
    adv = r[actions] - r[actions].mean(-1, keepdim=True)
    updates = (adv[..., None] * (torch.nn.functional.one_hot(actions, len(probs)).double() - p)).mean(1)
    theory = expected_logit_update(p, group_baseline_advantage(p, r, group_size))
    stderr = updates.std(0) / draws**0.5
    return {
        "monte_carlo": [float(x) for x in updates.mean(0)],
        "theorem1": [float(x) for x in theory],
        "stderr": [float(x) for x in stderr],
        "max_abs_z": float(((updates.mean(0) - theory).abs() / stderr).max()),
    }


def run(rewards=DEFAULT_REWARDS, init_probs=DEFAULT_PROBS, group_size=2, lr=0.1, steps=3000, seed=0) -> dict:
    base = trajectory(rewards, init_probs, group_size, lr, steps, seed=seed)
    sweeps = {
        "group_size": {g: trajectory(rewards, init_probs, g, lr, steps, seed=seed) for g in (2, 3, 5, 10)},
        "temperature": {t: trajectory(rewards, init_probs, group_size, lr, steps, temperature=t, seed=seed) for t in (1, 2, 5, 20)},
    }
    four = dict(rewards=(0.5, 1.0, 0.0, 0.8), init_probs=(0.55, 0.02, 0.38, 0.05))
    four_actions = trajectory(four["rewards"], four["init_probs"], group_size, lr, steps, seed=seed)
    return {
        "toy": "bandit",
        "config": {"rewards": list(rewards), "init_probs": list(init_probs), "group_size": group_size, "lr": lr,
                   "steps": steps, "seed": seed, "four_action_case": four},
        "stages": stages(base),
        "sweeps": {kind: {str(k): stages(h) for k, h in runs.items()} for kind, runs in sweeps.items()},
        "four_actions": stages(four_actions),
        "theorem1": theorem1_check(init_probs, rewards),
        "_histories": {"base": base, **{f"{kind}={k}": h for kind, runs in sweeps.items() for k, h in runs.items()},
                       "four_actions": four_actions},
    }


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    histories = summary["_histories"]
    fig, grid = plt.subplots(2, 2, figsize=(12, 8.4))
    axes = grid.flat
    base = histories["base"]
    for a in range(base.shape[1]):
        axes[0].plot(base[:, a], label=f"pi(a{a + 1}), r={summary['config']['rewards'][a]}")
    st = summary["stages"]
    axes[0].axvline(st["a1_peak_step"], color="grey", ls="--", lw=1, label="pi(a1) peak")
    if st["a2_rise_step"] is not None:
        axes[0].axvline(st["a2_rise_step"], color="black", ls=":", lw=1, label="pi(a2) rise")
    axes[0].set_title("the two-stage dynamic (Fig. 1)")
    for ax, kind, title in ((axes[1], "group_size", "group size G (Fig. 5)"), (axes[2], "temperature", "temperature (Fig. 6)")):
        for key, history in histories.items():
            if key.startswith(kind + "="):
                line, = ax.plot(history[:, 0], label=f"{key} pi(a1)")
                ax.plot(history[:, 1], color=line.get_color(), ls="--")
        ax.set_title(f"sweep over {title}; dashed: pi(a2)")
    four = histories["four_actions"]
    for a in range(four.shape[1]):
        axes[3].plot(four[:, a], label=f"pi(a{a + 1}), r={summary['config']['four_action_case']['rewards'][a]}")
    axes[3].set_title("four actions (Fig. 7)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("probability")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle("Two-stage paper (arXiv 2510.04028), Alg. 1 on a bandit")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
