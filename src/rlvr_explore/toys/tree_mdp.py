"""The tree MDP of CaSP §4.3, Fig. 5: horizon 3, actions {A, B, C, D}, six rewarding sequences.

A tabular policy holds one logit vector per prefix (1 + 4 + 16 states). Each step samples groups
of G responses from the root, rewards 1 for a rewarding sequence, computes the method's own
advantage estimator and its loss through ``rlvr_explore.losses.policy_loss`` on the (G, 3, 4)
logits of the visited states, and takes one Adam step. Any registered loss works; the entropy
bonus is ``entropy_coeff``. Evaluation draws 1,000 responses: accuracy, and ``modes``, the
number of distinct rewarding sequences among them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses
from rlvr_explore.candidates import token_stats

ACTIONS = "ABCD"
HORIZON = 3
REWARDING = ("ACD", "ACB", "BDC", "BDA", "CAB", "DBA")
PREFIXES = [""] + [a for a in ACTIONS] + [a + b for a in ACTIONS for b in ACTIONS]
STATE = {prefix: i for i, prefix in enumerate(PREFIXES)}


@dataclass
class TreeMDPConfig:
    method: str = field(default="grpo", metadata={"help": "any registered policy loss"})
    steps: int = field(default=1000, metadata={"help": "optimisation steps"})
    group_size: int = field(default=8, metadata={"help": "G responses per group (CaSP App. E: 8)"})
    groups_per_step: int = field(default=4, metadata={"help": "groups sampled per step"})
    lr: float = field(default=0.3, metadata={"help": "Adam learning rate on the logits"})
    init_std: float = field(default=0.0, metadata={"help": "std of the initial logits (0: uniform policy)"})
    entropy_coeff: float = field(default=0.0, metadata={"help": "entropy bonus c (CaSP baseline 0.01)"})
    eval_samples: int = field(default=1000, metadata={"help": "responses drawn for accuracy and modes (Fig. 5e)"})
    loss_hp: dict = field(default_factory=dict, metadata={"help": "hyper-parameters of the loss (alpha, lam, q, ...)"})


def _state_indices(actions: torch.Tensor) -> torch.Tensor:
    """(n, 3) action ids -> (n, 3) index of the state each action was taken in."""
    n = actions.shape[0]
    first = torch.zeros(n, dtype=torch.long)
    second = 1 + actions[:, 0]
    third = 5 + 4 * actions[:, 0] + actions[:, 1]
    return torch.stack([first, second, third], dim=1)


def sample(table: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Draw n responses (n, 3) from the tabular policy."""
    actions = torch.zeros(n, HORIZON, dtype=torch.long)
    with torch.no_grad():
        for t in range(HORIZON):
            states = _state_indices(actions)[:, t]
            probs = torch.softmax(table[states], dim=-1)
            actions[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return actions


def _strings(actions: torch.Tensor) -> list[str]:
    return ["".join(ACTIONS[a] for a in row) for row in actions.tolist()]


def reward(actions: torch.Tensor) -> torch.Tensor:
    return torch.tensor([float(s in REWARDING) for s in _strings(actions)])


def evaluate(table: torch.Tensor, n: int, generator: torch.Generator) -> dict:
    responses = _strings(sample(table, n, generator))
    correct = [s for s in responses if s in REWARDING]
    probs = torch.softmax(table.detach(), -1)
    return {
        "accuracy": len(correct) / n,
        "modes": len(set(correct)),
        "mode_counts": {m: correct.count(m) for m in REWARDING},
        "state_probs": {p or "root": [round(x, 4) for x in probs[STATE[p]].tolist()] for p in PREFIXES},
    }


def train_one(cfg: TreeMDPConfig, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    table = (cfg.init_std * torch.randn(len(PREFIXES), len(ACTIONS), generator=generator)).requires_grad_()
    optimizer = torch.optim.Adam([table], lr=cfg.lr)
    bound = losses.bind(cfg.method, {**cfg.loss_hp, "entropy_coeff": cfg.entropy_coeff})
    n = cfg.group_size * cfg.groups_per_step
    group_ids = torch.arange(cfg.groups_per_step).repeat_interleave(cfg.group_size)
    mask = torch.ones(n, HORIZON, dtype=torch.bool)
    curve = []
    for _ in range(cfg.steps):
        actions = sample(table, n, generator)
        rewards = reward(actions)
        logits = table[_state_indices(actions)]  # (n, 3, 4)
        stats = token_stats(logits, actions, top_n=min(getattr(bound.config, "top_n", 3), len(ACTIONS)))
        advantages = adv_lib.compute_advantages(bound.method.advantage, rewards, group_ids, mask)
        loss, _ = losses.policy_loss(
            bound, logp=stats.logp, old_logp=stats.logp.detach(), advantages=advantages,
            response_mask=mask, response_ids=actions, topn_logp=stats.topn_logp, topn_ids=stats.topn_ids,
            entropy=stats.entropy, rewards=rewards,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(float(rewards.mean()))
    result = evaluate(table, cfg.eval_samples, generator)
    result["seed"] = seed
    result["train_reward"] = curve
    return result


def run(cfg: TreeMDPConfig, seeds: list[int]) -> dict:
    """Train one policy per seed; the summary holds per-seed results, their means and the config."""
    bound = losses.bind(cfg.method, {**cfg.loss_hp, "entropy_coeff": cfg.entropy_coeff})  # fails early, naming the fault
    runs = [train_one(cfg, seed) for seed in seeds]
    return {
        "toy": "tree-mdp",
        "config": asdict(cfg),
        "loss_config": asdict(bound.config),
        "advantage": bound.method.advantage,
        "seeds": [{k: v for k, v in r.items() if k != "train_reward"} for r in runs],
        "mean_accuracy": sum(r["accuracy"] for r in runs) / len(runs),
        "mean_modes": sum(r["modes"] for r in runs) / len(runs),
        "train_reward": [r["train_reward"] for r in runs],
    }


def plot(summary: dict, path: str) -> None:
    """Fig. 5-style panels: root and second-level action probabilities, mode counts, and reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = summary["seeds"][0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    shown = ["root", "A", "B", "C", "D", "AC", "BD", "CA", "DB"]
    probs = torch.tensor([first["state_probs"][s] for s in shown])
    image = axes[0].imshow(probs.T, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes[0].set_xticks(range(len(shown)), shown)
    axes[0].set_yticks(range(4), list(ACTIONS))
    axes[0].set_xlabel("state (prefix)")
    axes[0].set_ylabel("action")
    axes[0].set_title(f"pi(action | state), seed {first['seed']}")
    fig.colorbar(image, ax=axes[0])
    for i, s in enumerate(summary["seeds"]):
        axes[1].bar([j + 0.8 * i / len(summary["seeds"]) for j in range(6)], [s["mode_counts"][m] for m in REWARDING],
                    width=0.8 / len(summary["seeds"]), label=f"seed {s['seed']}")
    axes[1].set_xticks(range(6), REWARDING)
    axes[1].set_ylabel(f"count among {summary['config']['eval_samples']} samples")
    axes[1].set_title(f"modes: mean {summary['mean_modes']:.1f} of 6, accuracy {summary['mean_accuracy']:.2f}")
    axes[1].legend(fontsize=7)
    for curve in summary["train_reward"]:
        axes[2].plot(curve, alpha=0.7)
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("mean training reward")
    axes[2].set_title("training reward per seed")
    fig.suptitle(f"Tree MDP (CaSP Fig. 5): {summary['config']['method']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
