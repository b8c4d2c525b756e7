"""``rlvr-explore compare``: methods trained from the same base policy on several seeds, with
verdicts whose intervals account for both the problems and the seeds.

For each seed, a base policy is fine-tuned (SFT) once, then every run of the comparison file
trains from it with the same rollout budget and is evaluated on the same problems (the seed
draws them). A finished SFT or run is reused, an unfinished one resumes from its last
checkpoint, so the command can be run again after a kill or with more seeds. ``--jobs`` trains
that many seeds at once in separate processes.

The verdict of a method against the baseline at pass@k is the mean paired difference
d = pass@k(method) - pass@k(baseline) over problems and seeds, with a two-level percentile
bootstrap interval: seeds are resampled, then problems within each resampled seed. A verdict
says "higher" or "lower" only when its interval excludes 0.
"""

from __future__ import annotations

import concurrent.futures
import copy
import html
import json
import multiprocessing
from pathlib import Path

import numpy as np

from rlvr_explore import metrics


def paired_difference(method_counts, baseline_counts, n: int, k: int) -> tuple[float, float, float]:
    """(mean, low, high) of pass@k(method) - pass@k(baseline). ``*_counts`` are (seeds, problems)
    correct counts out of ``n`` samples, the same problems in a row of both."""
    method_counts, baseline_counts = np.asarray(method_counts), np.asarray(baseline_counts)
    if method_counts.shape != baseline_counts.shape or method_counts.ndim != 2:
        raise ValueError(f"correct counts must be (seeds, problems) of one shape, got {method_counts.shape} "
                         f"and {baseline_counts.shape}")
    diff = _pass_at_k(method_counts, n, k) - _pass_at_k(baseline_counts, n, k)
    return (float(diff.mean()), *metrics.two_level_bootstrap_ci(diff))


def _pass_at_k(counts: np.ndarray, n: int, k: int) -> np.ndarray:
    """Per-problem pass@k of (seeds, problems) correct counts, in that shape."""
    return np.asarray(metrics.pass_at_k(n, counts, k)).reshape(counts.shape)


def _final_eval(run_dir: Path) -> dict:
    evals = sorted((run_dir / "eval").glob("step_*.json"))
    if not evals:
        raise FileNotFoundError(f"{run_dir}: no eval/step_*.json")
    return json.loads(evals[-1].read_text())


def _train_seed(base, runs: dict, seed: int, out: Path) -> None:
    """The base policy of ``seed`` and every run from it; finished ones are reused."""
    from rlvr_explore.train.checkpoints import finished_step
    from rlvr_explore.train.config import apply_mapping, config_diff, load_config, validate
    from rlvr_explore.train.rl import RLTrainer
    from rlvr_explore.train.sft import run_sft

    cfg = copy.deepcopy(base)
    cfg.run.seed = seed
    cfg.run.out_dir = str(out / f"seed{seed}" / "base")
    validate(cfg)
    policy = Path(cfg.run.out_dir) / "policy"
    if finished_step(Path(cfg.run.out_dir)) is None:
        print(f"[compare] seed {seed}: SFT of the base policy -> {cfg.run.out_dir}", flush=True)
        policy = run_sft(cfg, overwrite=True)
    else:
        saved = Path(cfg.run.out_dir) / "config.json"
        changes = config_diff(load_config(base=json.loads(saved.read_text()), base_source=str(saved)), cfg)
        if changes:
            listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
            raise ValueError(f"{saved}: the base policy there was trained with other settings ({listed}); "
                             "compare into another --out")
        print(f"[compare] seed {seed}: base policy reused from {policy}", flush=True)
    for name, overrides in runs.items():
        run_cfg = apply_mapping(copy.deepcopy(cfg), overrides or {}, f"compare run '{name}'")
        run_cfg.run.out_dir = str(out / f"seed{seed}" / name)
        validate(run_cfg)
        finished = finished_step(Path(run_cfg.run.out_dir))
        if finished is not None and finished >= run_cfg.train.steps:
            print(f"[compare] seed {seed}: {name} finished already", flush=True)
            continue
        print(f"[compare] seed {seed}: {name} -> {run_cfg.run.out_dir}", flush=True)
        RLTrainer(run_cfg, resume=Path(run_cfg.run.out_dir).exists(), init_policy=str(policy)).run()


def _train_all(base, runs: dict, seeds: list[int], out: Path, jobs: int) -> None:
    """Every seed, ``jobs`` seeds at a time in separate processes (each seed's runs in turn)."""
    if jobs <= 1:
        for seed in seeds:
            _train_seed(base, runs, seed, out)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        for future in [pool.submit(_train_seed, base, runs, seed, out) for seed in seeds]:
            future.result()


def summarise(out: Path, runs: list[str], seeds: list[int], baseline: str) -> dict:
    """Per run: pass@k over problems and seeds; per method: its paired differences to ``baseline``.
    The base policy (step 0 of the first run) is the row ``base``."""
    finals = {name: [_final_eval(out / f"seed{s}" / name) for s in seeds] for name in runs}
    first = runs[0]
    finals["base"] = [json.loads(sorted((out / f"seed{s}" / first / "eval").glob("step_*.json"))[0].read_text())
                      for s in seeds]
    n = finals[first][0]["details"]["n_samples"]
    counts = {name: np.array([e["details"]["correct_counts"] for e in evals]) for name, evals in finals.items()}
    ks = metrics.powers_of_two(n)
    table = {}
    for name, c in counts.items():
        table[name] = {}
        for k in ks:
            values = _pass_at_k(c, n, k)
            low, high = metrics.two_level_bootstrap_ci(values)
            per_seed = values.mean(1)
            table[name][f"pass@{k}"] = {"mean": float(values.mean()), "ci_low": low, "ci_high": high,
                                        "per_seed": [round(float(v), 4) for v in per_seed]}
        for key in ("distinct_correct", "unsolvable", "answer_entropy", "entropy"):
            values = [e["summary"][key] for e in finals[name] if key in e["summary"]]
            if values:
                table[name][key] = {"mean": float(np.mean(values)), "min": float(np.min(values)),
                                    "max": float(np.max(values))}
    verdicts = {}
    for name in ["base", *runs]:
        if name == baseline:
            continue
        verdicts[name] = {}
        for k in (1, n):
            mean, low, high = paired_difference(counts[name], counts[baseline], n, k)
            verdicts[name][f"pass@{k}"] = {"difference": mean, "ci_low": low, "ci_high": high,
                                           "verdict": metrics.verdict(low, high)}
    return {"seeds": seeds, "n_samples": n, "problems_per_seed": int(counts[first].shape[1]), "baseline": baseline,
            "verdicts": verdicts, "runs": table}


def verdict_lines(summary: dict) -> list[str]:
    lines = []
    for name, by_k in summary["verdicts"].items():
        cells = [f"{k} {v['difference']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}] ({v['verdict']})"
                 for k, v in by_k.items()]
        lines.append(f"{name} vs {summary['baseline']}: " + "; ".join(cells))
    return lines


def write_html(summary: dict, path: Path) -> None:
    n = summary["n_samples"]
    shown = [k for k in (1, 4, 16, 64, n) if f"pass@{k}" in next(iter(summary["runs"].values()))]
    head = "".join(f"<th>pass@{k}</th>" for k in shown)
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(
            f"<td>{row[f'pass@{k}']['mean']:.3f} [{row[f'pass@{k}']['ci_low']:.3f}, {row[f'pass@{k}']['ci_high']:.3f}]</td>"
            for k in shown) + "</tr>" for name, row in summary["runs"].items())
    items = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_lines(summary))
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>rlvr-explore compare</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}td,th{padding:.2em .6em;text-align:right}"
        "</style><h1>Verdicts</h1>"
        f"<p>Mean paired difference over {summary['problems_per_seed']} problems × {len(summary['seeds'])} seeds "
        f"(seeds {', '.join(map(str, summary['seeds']))}), 95% two-level bootstrap interval (seeds, then problems); "
        f"a verdict names a direction only when its interval excludes 0.</p><ul>{items}</ul>"
        f"<h2>pass@k, mean over problems and seeds [95% interval]</h2><table><tr><th>run</th>{head}</tr>{rows}</table>")


def run(args) -> int:
    from rlvr_explore.demo import load_demo

    base, runs = load_demo(args.config)
    if args.methods:
        missing = [m for m in args.methods if m not in runs]
        if missing:
            raise ValueError(f"--methods {missing} are not runs of {args.config}: {', '.join(runs)}")
        runs = {m: runs[m] for m in args.methods}
    baseline = args.baseline or next(iter(runs))
    if baseline not in runs and baseline != "base":
        raise ValueError(f"--baseline {baseline!r} is not one of the runs ({', '.join(runs)}) or 'base'")
    out = Path(args.out)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    _train_all(base, runs, args.seeds, out, args.jobs)
    summary = summarise(out, list(runs), args.seeds, baseline)
    (out / "comparison.json").write_text(json.dumps(summary, indent=2))
    write_html(summary, out / "comparison.html")
    print("\n".join(verdict_lines(summary)))
    print(f"[compare] {out / 'comparison.json'}, {out / 'comparison.html'}")
    return 0


def add_parser(sub) -> None:
    import argparse

    parser = sub.add_parser("compare", help="train methods on several seeds from one base policy; verdicts with intervals",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo", help="a comparison file: 'config' (the shared settings) and "
                                                         "'runs' (name: overrides), as configs/demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None, help="the runs to compare (default: all of the file)")
    parser.add_argument("--baseline", default=None, help="the run the others are compared with (default: the first)")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--jobs", type=int, default=1,
                        help="seeds trained at once, each in its own process (set run.threads so that jobs x "
                             "threads fits the cores)")
    parser.set_defaults(func=run)
