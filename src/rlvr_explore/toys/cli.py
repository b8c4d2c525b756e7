"""`rlvr-explore toy {tree-mdp,bandit,squeeze}`: each prints a summary (``--json`` for machines)
and can save its figure with ``--plot FILE``."""

from __future__ import annotations

import json

from . import bandit, squeeze, tree_mdp


def _public(summary: dict) -> dict:
    """The summary without the raw tensors kept for plotting (keys starting with '_')."""
    return {k: v for k, v in summary.items() if not k.startswith("_") and k != "train_reward"}


def _emit(summary: dict, args, module, human: str) -> int:
    if args.plot:
        module.plot(summary, args.plot)
    if args.json:
        print(json.dumps(_public(summary), indent=2))
    else:
        print(human)
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def _parse_hp(pairs: list[str]) -> dict:
    hp = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--loss-hp expects KEY=VALUE, got {pair!r}")
        try:
            hp[key] = json.loads(value)
        except json.JSONDecodeError:
            hp[key] = value
    return hp


def _tree_mdp(args) -> int:
    cfg = tree_mdp.TreeMDPConfig(
        method=args.method, steps=args.steps, group_size=args.group_size, groups_per_step=args.groups_per_step,
        lr=args.lr, init_std=args.init_std, entropy_coeff=args.entropy_coeff, eval_samples=args.eval_samples,
        loss_hp=_parse_hp(args.loss_hp),
    )
    summary = tree_mdp.run(cfg, list(range(args.seeds)))
    lines = [f"tree MDP, {cfg.method}: mean accuracy {summary['mean_accuracy']:.3f}, mean modes {summary['mean_modes']:.1f} of 6"]
    lines += [f"  seed {s['seed']}: accuracy {s['accuracy']:.3f}, modes {s['modes']}, root {s['state_probs']['root']}"
              for s in summary["seeds"]]
    paper = FIG5.get((cfg.method, cfg.entropy_coeff)) if not cfg.loss_hp else None
    if paper is not None:
        modes, accuracy = paper
        agrees = abs(summary["mean_modes"] - modes) < 0.5 and abs(summary["mean_accuracy"] - accuracy) <= 0.02
        lines.append(f"CaSP Fig. 5 reports {modes} mode{'s' if modes > 1 else ''} at accuracy {accuracy:.2f} for this "
                     f"setting; this run {'agrees' if agrees else 'differs'} ({summary['mean_modes']:.1f} modes, "
                     f"accuracy {summary['mean_accuracy']:.3f}; docs/reproductions.md has every setting)")
    return _emit(summary, args, tree_mdp, "\n".join(lines))


# (method, entropy coefficient) -> (modes, accuracy) that CaSP Fig. 5 (arXiv 2510.14807) reports
FIG5 = {("grpo", 0.0): (1, 1.00), ("grpo", 1.0): (6, 0.48), ("casp", 0.0): (6, 1.00)}


def _bandit(args) -> int:
    summary = bandit.run(group_size=args.group_size, lr=args.lr, steps=args.steps, seed=args.seed)
    st, th = summary["stages"], summary["theorem1"]
    human = (f"pi(a1) peaks at step {st['a1_peak_step']} ({st['a1_peak_prob']:.3f}); pi(a2) rises at step "
             f"{st['a2_rise_step']}; final {st['final_probs']}\n"
             f"Theorem 1 {[round(x, 5) for x in th['theorem1']]} vs Monte Carlo "
             f"{[round(x, 5) for x in th['monte_carlo']]} (max |z| {th['max_abs_z']:.2f})")
    return _emit(summary, args, bandit, human)


def _squeeze(args) -> int:
    summary = squeeze.run(lr=args.lr, steps=args.steps)
    human = "\n".join(
        f"penalise rank {r['penalised_rank']}: max prob {r['max_prob_before']} -> {r['max_prob_after']}, "
        f"entropy {r['entropy_before']} -> {r['entropy_after']}" for r in summary["by_rank"])
    return _emit(summary, args, squeeze, human)


def add_parser(subparsers) -> None:
    toy = subparsers.add_parser("toy", help="the papers' toy experiments (seconds on a CPU)")
    kinds = toy.add_subparsers(dest="toy", metavar="TOY")
    kinds.required = True

    def common(p):
        p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
        p.add_argument("--plot", metavar="FILE", help="save the figure as PNG")

    defaults = tree_mdp.TreeMDPConfig()
    p = kinds.add_parser("tree-mdp", help="CaSP §4.3 Fig. 5: mode coverage and accuracy on a tabular tree MDP")
    p.add_argument("--method", default=defaults.method, help="any registered loss (see `rlvr-explore methods`)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds 0..S-1 (default 5)")
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--group-size", type=int, default=defaults.group_size)
    p.add_argument("--groups-per-step", type=int, default=defaults.groups_per_step)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--init-std", type=float, default=defaults.init_std)
    p.add_argument("--entropy-coeff", type=float, default=defaults.entropy_coeff, help="entropy bonus c")
    p.add_argument("--eval-samples", type=int, default=defaults.eval_samples)
    p.add_argument("--loss-hp", nargs="*", default=[], metavar="KEY=VALUE", help="loss hyper-parameters, e.g. alpha=0.01 lam=1.1")
    common(p)
    p.set_defaults(func=_tree_mdp)

    p = kinds.add_parser("bandit", help="two-stage paper (arXiv 2510.04028) Alg. 1: the two-stage dynamic, sweeps, and Theorem 1 vs Monte Carlo")
    p.add_argument("--group-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    common(p)
    p.set_defaults(func=_bandit)

    p = kinds.add_parser("squeeze", help="CaSP Lemma 2 / SPS App. A.1: negative updates by rank of the penalised token")
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=1)
    common(p)
    p.set_defaults(func=_squeeze)
