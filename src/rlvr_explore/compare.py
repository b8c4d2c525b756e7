"""``rlvr-explore compare``: methods trained from the same base policy on several seeds, with
verdicts whose intervals account for both the problems and the seeds (with a dataset file, every
seed is evaluated on the same problems: the intervals are then about this evaluation set, and the
page says so).

For each seed, a base policy is fine-tuned (SFT) once, then every run of the comparison file
trains from it with the same rollout budget and is evaluated on the same problems (the seed
draws them). A finished SFT or run is reused, an unfinished one resumes from its last
checkpoint, so the command can be run again after a kill or with more seeds. ``--jobs`` trains
that many base policies, then that many runs, at once in separate processes.

The verdict of a method against the baseline at pass@k is the mean paired difference
d = pass@k(method) - pass@k(baseline) over problems and seeds, with a 95% Student-t interval over
the per-seed means (each seed trains its own runs and draws its own problems, so its mean carries
both sources of variation; with one seed, a bootstrap over problems). A verdict says "higher" or
"lower" only when its interval excludes 0, and there is none from fewer than ``--min-seeds`` (3)
seeds: the intervals are shown with "no verdict". ``rerun_interval`` in the JSON is where a rerun with as
many other seeds should land 95% of the time; the verdict's interval covers the true difference,
and a rerun's estimate only about 85% of the time.
"""

from __future__ import annotations

import concurrent.futures
import copy
import ctypes
import html
import json
import multiprocessing
import signal
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rlvr_explore import metrics
from rlvr_explore.report.verdicts import verdict_cell, verdict_lines, verdicts_html
from rlvr_explore.report import page
from rlvr_explore.train.config import (
    Config, ConfigError, apply_mapping, describe_changes, read_yaml, resolve_config_path, saved_config_changes, validate,
)


TRAINERS = ("rl", "rft")  # a run's optional 'trainer' key: RL steps (the default) or STILL's RFT rounds


class Comparison(NamedTuple):
    base: Config
    runs: dict[str, dict]
    primary: list[str]  # runs whose verdicts were declared primary: Holm-corrected among themselves


def load_comparison(path: str | Path) -> Comparison:
    """A comparison file: ``config``, the settings every stage shares, ``runs``, each run's name
    and its overrides of them (plus ``trainer: rft`` for a run of RFT rounds), and optionally
    ``primary``, the runs whose verdicts the comparison is for (declared before the results)."""
    path = resolve_config_path(path)
    data, lines = read_yaml(path)
    unknown = set(data) - {"config", "runs", "primary"}
    if unknown or "runs" not in data:
        raise ConfigError(f"{path}: a comparison file has the sections 'config', 'runs' and optionally 'primary'; "
                          f"found {sorted(data)}")
    base = apply_mapping(Config(), data.get("config") or {}, str(path),
                         {k[len("config."):]: v for k, v in lines.items() if k.startswith("config.")})
    runs = data["runs"]
    if not isinstance(runs, dict) or not runs:
        raise ConfigError(f"{path}: 'runs' must map run names to config overrides")
    for name, overrides in runs.items():
        trainer = (overrides or {}).get("trainer", "rl")
        if trainer not in TRAINERS:
            raise ConfigError(f"{path}: runs.{name}.trainer is {trainer!r}; expected one of {', '.join(TRAINERS)}")
    primary = data.get("primary") or []
    if not isinstance(primary, list) or set(primary) - set(runs) - {"base"}:
        raise ConfigError(f"{path}: 'primary' must list runs of the file (or 'base'); got {primary!r}")
    return Comparison(base, runs, primary)


def _pass_at_k(counts: np.ndarray, n: int, k: int) -> np.ndarray:
    """Per-problem pass@k of (seeds, problems) correct counts, in that shape."""
    return np.asarray(metrics.pass_at_k(n, counts, k)).reshape(counts.shape)


def _final_eval(run_dir: Path) -> dict:
    evals = sorted((run_dir / "eval").glob("step_*.json"))
    if not evals:
        raise FileNotFoundError(f"{run_dir}: no eval/step_*.json")
    return json.loads(evals[-1].read_text())


def _refuse_other_settings(run_dir: Path, cfg, what: str) -> None:
    """A finished run is reused only when it was trained with ``cfg``'s settings."""
    saved = run_dir / "config.json"
    changes = saved_config_changes(saved, cfg)
    if changes:
        raise ValueError(f"{saved}: {what} there was trained with other settings ({describe_changes(changes)}); "
                         "compare into another --out")


def _start_eval(seed_dir: Path, runs: list[str]) -> dict:
    """The base policy's evaluation: step 0 of a run of that seed (the first run of the file makes
    it). ``--methods`` may leave that run out; every run of the seed directory starts from its one
    base policy (refused when trained with other settings) and evaluates the same samples, so
    another run's step 0 is the same row."""
    others = sorted(d.name for d in seed_dir.iterdir() if d.is_dir() and d.name != "base" and d.name not in runs)
    for name in [*runs, *others]:
        path = seed_dir / name / "eval" / "step_000000.json"
        if path.exists():
            return json.loads(path.read_text())
    raise FileNotFoundError(f"{seed_dir}: no run holds eval/step_000000.json, the base policy's evaluation")


def _seed_config(base, seed: int, out: Path):
    cfg = copy.deepcopy(base)
    cfg.run.seed = seed
    cfg.run.out_dir = str(out / f"seed{seed}" / "base")
    return cfg


def _run_config(base, seed: int, out: Path, name: str, overrides: dict | None):
    """(config, trainer) of run ``name`` of ``seed``, validated."""
    overrides = dict(overrides or {})
    trainer = overrides.pop("trainer", "rl")
    cfg = apply_mapping(_seed_config(base, seed, out), overrides, f"compare run '{name}'")
    cfg.run.out_dir = str(out / f"seed{seed}" / name)
    validate(cfg)
    return cfg, trainer


def _train_base(base, seed: int, out: Path) -> None:
    """The SFT base policy of ``seed``, or the finished one already there."""
    from rlvr_explore.train.checkpoints import finished_step
    from rlvr_explore.train.sft import run_sft

    cfg = _seed_config(base, seed, out)
    validate(cfg)
    if finished_step(Path(cfg.run.out_dir)) is None:
        print(f"[compare] seed {seed}: SFT of the base policy -> {cfg.run.out_dir}", flush=True)
        run_sft(cfg, overwrite=True)
    else:
        _refuse_other_settings(Path(cfg.run.out_dir), cfg, "the base policy")
        print(f"[compare] seed {seed}: base policy reused from {cfg.run.out_dir}", flush=True)


def _train_run(base, seed: int, out: Path, name: str, overrides: dict | None, evaluate_start: bool) -> None:
    """Run ``name`` of ``seed`` from that seed's base policy; a finished one is reused, an unfinished
    RL run resumes."""
    from rlvr_explore.train.checkpoints import finished_step
    from rlvr_explore.train.rft import run_rft
    from rlvr_explore.train.rl import RLTrainer

    cfg, trainer = _run_config(base, seed, out, name, overrides)
    run_dir, policy = Path(cfg.run.out_dir), out / f"seed{seed}" / "base" / "policy"
    finished = finished_step(run_dir)
    if finished is not None and finished >= (cfg.rft.iterations if trainer == "rft" else cfg.train.steps):
        _refuse_other_settings(run_dir, cfg, f"run '{name}'")
        print(f"[compare] seed {seed}: {name} finished already", flush=True)
        return
    print(f"[compare] seed {seed}: {name} -> {run_dir}", flush=True)
    if trainer == "rft":  # a few rounds, so an unfinished one starts again rather than resuming
        run_rft(cfg, init_policy=str(policy), overwrite=True)
    else:
        RLTrainer(cfg, resume=run_dir.exists(), init_policy=str(policy), evaluate_start=evaluate_start).run()


def _end_with_parent() -> None:
    """A worker gets SIGTERM when the compare process dies (Linux), so a killed comparison leaves no
    training behind it; the run directories' locks would refuse a second comparison meanwhile."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends the workers
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _train_all(base, runs: dict, seeds: list[int], out: Path, jobs: int) -> None:
    """Every seed's base policy, then every (seed, run), ``jobs`` at a time in separate processes.
    Every run's settings are checked before anything trains."""
    for seed in seeds:
        for name, overrides in runs.items():
            _run_config(base, seed, out, name, overrides)
    # every run of a seed starts from one policy, evaluated on the same samples: the first run's
    # evaluation at step 0 is the base row, the others would repeat it
    run_tasks = [(base, seed, out, name, overrides, i == 0) for seed in seeds
                 for i, (name, overrides) in enumerate(runs.items())]
    if jobs <= 1:
        for seed in seeds:
            _train_base(base, seed, out)
        for task in run_tasks:
            _train_run(*task)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                                initializer=_end_with_parent) as pool:
        try:
            for future in [pool.submit(_train_base, base, seed, out) for seed in seeds]:
                future.result()
            for future in [pool.submit(_train_run, *task) for task in run_tasks]:
                future.result()
        except KeyboardInterrupt:  # the workers ignore Ctrl-C; end them rather than wait for them
            for process in list(pool._processes.values()):
                process.terminate()
            raise


CURVE_KEYS = ("lambda1", "lambda2", "lambda3", "lambda_sample", "rollout_entropy", "reward")
EVAL_KEYS = ("distinct_correct", "answer_entropy", "entropy", "lambda1", "lambda2", "lambda3", "lambda_sample",
             "unsolvable")


def _training_curves(run_dirs: list[Path]) -> dict[str, list[float]]:
    """Per training step (those every seed logged), the mean of each of ``CURVE_KEYS`` over the seeds
    that logged it there: a step DAPO's filter skipped (no group with unequal rewards) has none,
    and is NaN only if every seed skipped it."""
    from rlvr_explore.train.runtime import read_metrics

    by_seed = [{r["step"]: r for r in read_metrics(d) if r.get("kind") == "train"} for d in run_dirs]
    steps = sorted(set.intersection(*(set(s) for s in by_seed)))
    curves = {"step": steps}
    for key in CURVE_KEYS:
        values = [[seed[step][key] for seed in by_seed if key in seed[step]] for step in steps]
        if any(values):
            curves[key] = [float(np.mean(v)) if v else float("nan") for v in values]
    return curves


def _unsolvable_against(ids: list[list[int]], baseline_ids: list[list[int]]) -> dict[str, int]:
    """Problems no sample solved, summed over seeds: by both, by the run only, by the baseline only."""
    pairs = [(set(a), set(b)) for a, b in zip(ids, baseline_ids)]
    return {"both": sum(len(a & b) for a, b in pairs), "run_only": sum(len(a - b) for a, b in pairs),
            "baseline_only": sum(len(b - a) for a, b in pairs)}


def _within(interval: tuple[float, float], lowest: float) -> list[float]:
    """A t interval knows no bounds: pass@k lies in [0, 1], a difference of two in [-1, 1]."""
    return [min(max(float(end), lowest), 1.0) for end in interval]


def _final_evaluations(out: Path, runs: list[str], seeds: list[int]) -> tuple[dict, int, dict]:
    """Each run's final evaluation per seed (the base policy's as ``base``), the samples per
    problem, and the (seeds, problems) correct counts per run."""
    finals = {name: [_final_eval(out / f"seed{s}" / name) for s in seeds] for name in runs}
    finals["base"] = [_start_eval(out / f"seed{s}", runs) for s in seeds]
    n = finals[runs[0]][0]["details"]["n_samples"]
    return finals, n, {name: np.array([e["details"]["correct_counts"] for e in evals]) for name, evals in finals.items()}


def calibration_runs(runs: dict, baseline: str) -> list[str]:
    """The A/A runs: the baseline again with other random draws (``run.draws``) and nothing else
    changed. Their true difference is 0, so any verdict they get is a false one: the table's
    calibration check."""
    def without_draws(overrides):
        overrides = copy.deepcopy(overrides or {})
        draws = (overrides.get("run") or {}).pop("draws", 0)
        if not overrides.get("run", True):
            overrides.pop("run")
        return overrides, draws

    reference = without_draws(runs.get(baseline))
    return [name for name, (settings, draws) in ((n, without_draws(o)) for n, o in runs.items())
            if name != baseline and settings == reference[0] and draws != reference[1]]


def summarise(out: Path, runs: list[str], seeds: list[int], baseline: str,
              min_seeds: int = metrics.MIN_VERDICT_SEEDS, calibration: list[str] = (), primary: list[str] = (),
              shared_problems: bool = False) -> dict:
    """Per run: pass@k over problems and seeds, the final evaluation's diagnostics, its unsolvable
    problems against ``baseline``'s and its training curves; per method: its paired differences to
    ``baseline``. The base policy (step 0 of the first run) is the row ``base``."""
    finals, n, counts = _final_evaluations(out, runs, seeds)
    first = runs[0]
    unsolvable_ids = {name: [e["details"]["unsolvable_ids"] for e in evals] for name, evals in finals.items()}
    table = {}
    for name, c in counts.items():
        table[name] = {}
        for k in metrics.powers_of_two(n):
            values = _pass_at_k(c, n, k)
            low, high = _within(metrics.seed_interval(values), 0.0)
            table[name][f"pass@{k}"] = {"mean": float(values.mean()), "ci_low": low, "ci_high": high,
                                        "per_seed": [round(float(v), 4) for v in values.mean(1)]}
        for key in EVAL_KEYS:
            values = [e["summary"][key] for e in finals[name] if key in e["summary"]]
            if values:
                table[name][key] = {"mean": float(np.mean(values)), "min": float(np.min(values)),
                                    "max": float(np.max(values))}
        table[name]["unsolvable_vs_baseline"] = _unsolvable_against(unsolvable_ids[name], unsolvable_ids[baseline])
    differences = {}  # every method against the baseline at every k; the verdicts are those at 1 and n
    for name in ["base", *runs]:
        if name == baseline:
            continue
        differences[name] = {}
        for k in metrics.powers_of_two(n):
            diff = metrics.paired_pass_at_k_difference(counts[name], counts[baseline], n, k)
            low, high = _within(metrics.seed_interval(diff), -1.0)
            rerun = metrics.rerun_interval(diff)
            detectable = metrics.detectable_difference(diff)
            differences[name][f"pass@{k}"] = {"difference": float(diff.mean()), "ci_low": low, "ci_high": high,
                                              "p_value": metrics.seed_p_value(diff),
                                              "verdict": metrics.verdict(low, high, len(seeds), min_seeds),
                                              "rerun_interval": None if rerun is None else _within(rerun, -1.0),
                                              "detectable_80": None if detectable is None else round(detectable, 4)}
    verdicts = {name: {key: by_k[key] for key in ("pass@1", f"pass@{n}")} for name, by_k in differences.items()}
    _correct_for_the_table(verdicts, len(seeds) >= min_seeds, primary)
    curves = {name: _training_curves([out / f"seed{s}" / name for s in seeds]) for name in runs}
    return {"seeds": seeds, "min_seeds": min_seeds, "n_samples": n, "problems_per_seed": int(counts[first].shape[1]),
            "baseline": baseline, "calibration": list(calibration), "primary": list(primary),
            "shared_problems": shared_problems,
            "verdicts": verdicts, "differences": differences, "runs": table, "unsolvable_ids": unsolvable_ids,
            "curves": curves}


def _correct_for_the_table(verdicts: dict, replicated: bool, primary: list[str] = ()) -> None:
    """Benjamini-Hochberg over every verdict of the table (each method at pass@1 and pass@n): each
    gets its ``q_value`` and an ``adjusted_verdict``, its direction only where q < 0.05. The
    verdicts of the ``primary`` runs also get Holm's adjusted p-value among themselves
    (``holm_p_value``) and a ``primary_verdict`` kept where it is below 0.05."""
    def adjusted(cell, value, word):
        return (cell["verdict"] if not replicated or value < 0.05 or cell["verdict"] == "no detectable difference"
                else f"not distinguishable after {word}")

    cells = [v for by_k in verdicts.values() for v in by_k.values()]
    for cell, q in zip(cells, metrics.benjamini_hochberg([c["p_value"] for c in cells])):
        cell["q_value"] = q
        cell["adjusted_verdict"] = adjusted(cell, q, "correction")
    declared = [v for name, by_k in verdicts.items() if name in primary for v in by_k.values()]
    for cell, value in zip(declared, metrics.holm([c["p_value"] for c in declared])):
        cell["holm_p_value"] = value
        cell["primary_verdict"] = adjusted(cell, value, "Holm's correction")


def _figures(summary: dict, directory: Path) -> list[tuple[str, str]]:
    """(file name, caption) of each figure of the comparison page, drawn into ``directory``."""
    from rlvr_explore.report import plots

    directory.mkdir(parents=True, exist_ok=True)
    runs, n = summary["runs"], summary["n_samples"]
    plots.set_run_colours(list(runs))
    ks = metrics.powers_of_two(n)
    plots.pass_at_k_curves({name: {k: row[f"pass@{k}"] for k in ks} for name, row in runs.items()},
                           str(directory / "pass_at_k.png"), title=f"pass@k, mean over problems and seeds, n = {n}")
    figures = [("pass_at_k.png", "pass@k with the 95% intervals of the table (STILL Eq. 2).")]
    plots.difference_curves({name: {k: by_k[f"pass@{k}"] for k in ks} for name, by_k in summary["differences"].items()},
                            str(directory / "differences.png"), summary["baseline"])
    figures.append(("differences.png", f"pass@k minus {summary['baseline']}'s on the same problems, with 95% "
                                       "intervals: above 0 where the band is, the method keeps more at that k."))
    curves = {name: c for name, c in summary["curves"].items() if c["step"]}
    lambdas = {name: {"step": c["step"], **{f"rank{i}": c[f"lambda{i}"] for i in (1, 2, 3) if f"lambda{i}" in c},
                      **({"sample": c["lambda_sample"]} if "lambda_sample" in c else {})} for name, c in curves.items()}
    plots.rank_logprob_dynamics(lambdas, str(directory / "lambda.png"))
    figures.append(("lambda.png", "Λ⁽ⁿ⁾ and Λ^sample: mean log-prob of the rank-n candidate and of the sampled token "
                                  "on training rollouts, mean over seeds (CaSP Eq. 2, Fig. 3)."))
    for key, file, label, caption in (("rollout_entropy", "entropy.png", "mean token entropy (nats)",
                                       "Token entropy of training rollouts, mean over seeds."),
                                      ("reward", "reward.png", "mean reward", "Training reward, mean over seeds.")):
        plots.metric_over_steps({name: (c["step"], c[key]) for name, c in curves.items() if key in c},
                                str(directory / file), label, caption.split(",")[0])
        figures.append((file, caption))
    tagged = {name: {(s, i) for s, ids in zip(summary["seeds"], per_seed) for i in ids}
              for name, per_seed in summary["unsolvable_ids"].items()}
    plots.unsolvable_matrix(tagged, str(directory / "unsolvable.png"), title=f"{n}-rollout unsolvable problems")
    figures.append(("unsolvable.png", "Problems no sample solved, summed over seeds, and how many two runs share "
                                      "(STILL §2.1)."))
    return figures


def _cell(entry: dict) -> str:
    if "ci_low" in entry:
        return f"{entry['mean']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"
    return f"{entry['mean']:.3g} [{entry['min']:.3g}, {entry['max']:.3g}]"


def write_html(summary: dict, path: Path, report_page: str | None = None) -> None:
    """The comparison page, its figures in ``figures/`` beside it, linking to ``report_page``."""
    n, runs = summary["n_samples"], summary["runs"]
    shown = [f"pass@{k}" for k in (1, 4, 16, 64, n) if f"pass@{k}" in next(iter(runs.values()))]
    diagnostics = [key for key in EVAL_KEYS if all(key in row for row in runs.values())]

    def table(keys: list[str]) -> str:
        head = "".join(f"<th>{html.escape(key)}</th>" for key in keys)
        rows = "".join(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_cell(row[key])}</td>" for key in keys)
                       + "</tr>" for name, row in runs.items())
        return f"<table><tr><th>run</th>{head}</tr>{rows}</table>"

    baseline = html.escape(summary["baseline"])
    overlap = "".join(f"<tr><th>{html.escape(name)}</th><td>{u['both']}</td><td>{u['run_only']}</td>"
                      f"<td>{u['baseline_only']}</td></tr>"
                      for name, row in runs.items() for u in [row["unsolvable_vs_baseline"]])
    figures = "".join(page.figure(f"figures/{file}", caption, wide=file == "lambda.png")
                      for file, caption in _figures(summary, path.parent / "figures"))
    nav = (f"<nav>The first seed's runs in detail: <a href='{html.escape(report_page)}'>{html.escape(report_page)}</a>"
           "</nav>" if report_page else "")
    warnings = page.collapse_warnings({name: (c["step"], c["reward"]) for name, c in summary["curves"].items()
                                       if "reward" in c}, {name: row["pass@1"]["mean"] for name, row in runs.items()},
                                      "figures/reward.png")
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>rlvr-explore compare</title>{page.STYLE}</head><body>"
        f"<h1>rlvr-explore compare</h1>{nav}"
        + verdicts_html(summary) + warnings
        + f"<h2>pass@k, mean over problems and seeds [95% interval]</h2><div class='scroll'>{table(shown)}</div>"
        f"<h2>Final evaluation, mean over seeds [min, max]</h2><div class='scroll'>{table(diagnostics)}</div>"
        f"<h2>{n}-rollout unsolvable problems against {baseline}, summed over seeds</h2>"
        f"<div class='scroll'><table><tr><th>run</th><th>unsolved by both</th><th>by the run only</th>"
        f"<th>by {baseline} only</th></tr>{overlap}</table></div>{figures}</body></html>")


def write_markdown(summary: dict, path: Path) -> None:
    """The two tables of the page as Markdown, to paste into notes: pass@k and diagnostics per run
    (mean [95% interval] over seeds; diagnostics mean [min, max]), then the verdicts."""
    n, runs = summary["n_samples"], summary["runs"]
    ks = [f"pass@{k}" for k in (1, 16, n) if f"pass@{k}" in next(iter(runs.values()))]
    diagnostics = [key for key in ("distinct_correct", "unsolvable", "lambda1", "lambda2", "lambda3")
                   if all(key in row for row in runs.values())]
    lines = ["| run | " + " | ".join(ks + diagnostics) + " |", "|---" * (1 + len(ks) + len(diagnostics)) + "|"]
    lines += [f"| {name} | " + " | ".join(_cell(row[key]) for key in ks + diagnostics) + " |" for name, row in runs.items()]
    by_k = list(next(iter(summary["verdicts"].values())))
    lines += ["", "| run | " + " | ".join(f"{k} vs {summary['baseline']}" for k in by_k) + " |",
              "|---" * (1 + len(by_k)) + "|"]
    lines += [f"| {name} | " + " | ".join(map(verdict_cell, verdict.values())) + " |"
              for name, verdict in summary["verdicts"].items()]
    path.write_text("\n".join(lines) + "\n")


def compare(base, runs: dict, seeds: list[int], out: Path, baseline: str, jobs: int = 1,
            min_seeds: int = metrics.MIN_VERDICT_SEEDS, report_page: str | None = None, primary: list[str] = ()) -> dict:
    """Train what is not finished, then write ``comparison.json``, ``.html`` (linking to
    ``report_page``, a page the caller writes) and ``.md`` in ``out``; the ``primary`` runs'
    verdicts are Holm-corrected among themselves."""
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if baseline not in runs and baseline != "base":
        raise ValueError(f"--baseline {baseline!r} is not one of the runs ({', '.join(runs)}) or 'base'")
    from rlvr_explore.train.checkpoints import claim_directory, write_owner

    claim_directory(out, "compare")
    write_owner(out, "compare")
    _train_all(base, runs, seeds, out, jobs)
    primary = [name for name in primary if name in runs or name == "base"]  # --methods may leave some out
    summary = summarise(out, list(runs), seeds, baseline, min_seeds, calibration_runs(runs, baseline), primary,
                        shared_problems=base.task.dataset is not None)
    (out / "comparison.json").write_text(json.dumps(summary, indent=2))
    write_html(summary, out / "comparison.html", report_page)
    write_markdown(summary, out / "comparison.md")
    print("\n".join(verdict_lines(summary)))
    print(f"[compare] {out / 'comparison.json'}, {out / 'comparison.html'}, {out / 'comparison.md'}")
    return summary


def select_runs(runs: dict, methods: list[str] | None, source: str) -> dict:
    if not methods:
        return runs
    missing = [m for m in methods if m not in runs]
    if missing:
        raise ValueError(f"--methods {missing} are not runs of {source}: {', '.join(runs)}")
    return {m: runs[m] for m in methods}


def plan(out: Path, runs: list[str], seeds: list[int], baseline: str, difference: float, power: float = 0.8) -> list[dict]:
    """From a pilot comparison in ``out`` (its finished runs on ``seeds``): per method and k (1 and
    n), the smallest difference the pilot's seeds detect with ``power``, and the seeds needed to
    detect ``difference`` and the observed one, at the pilot's per-seed spread."""
    if len(seeds) < 2:
        raise ValueError("--plan needs a pilot of at least 2 seeds: one seed shows no spread between training runs")
    _, n, counts = _final_evaluations(out, runs, seeds)
    rows = []
    for name in [r for r in runs if r != baseline]:
        for k in (1, n):
            diff = metrics.paired_pass_at_k_difference(counts[name], counts[baseline], n, k)
            rows.append({"run": name, "k": k, "observed": float(diff.mean()),
                         "detectable": metrics.detectable_difference(diff, power),
                         "seeds_for_difference": metrics.seeds_needed(diff, difference, power),
                         "seeds_for_observed": metrics.seeds_needed(diff, float(diff.mean()), power)})
    return rows


def print_plan(rows: list[dict], seeds: int, baseline: str, difference: float, power: float = 0.8) -> None:
    def seeds_text(value):
        return "more than 200" if value is None else str(value)

    print(f"Planning from a pilot of {seeds} seeds against {baseline} ({power:.0%} power, 95% intervals):")
    print(f"{'run':24s} {'k':>5s} {'observed':>9s} {'detectable now':>15s} {f'seeds for {difference:g}':>16s} "
          f"{'seeds for observed':>19s}")
    for row in rows:
        print(f"{row['run']:24s} {row['k']:5d} {row['observed']:+9.3f} {row['detectable']:15.3f} "
              f"{seeds_text(row['seeds_for_difference']):>16s} {seeds_text(row['seeds_for_observed']):>19s}")


def run(args) -> int:
    base, runs, primary = load_comparison(args.config)
    runs = select_runs(runs, args.methods, args.config)
    baseline = args.baseline or next(iter(runs))
    if args.plan:
        print_plan(plan(Path(args.out), list(runs), args.seeds, baseline, args.difference), len(args.seeds), baseline,
                   args.difference)
        return 0
    compare(base, runs, args.seeds, Path(args.out), baseline, args.jobs, args.min_seeds, primary=primary)
    return 0


def add_parser(sub) -> None:
    import argparse

    parser = sub.add_parser("compare", help="train methods on several seeds from one base policy; verdicts with intervals",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo", help="a comparison file: 'config' (the shared settings) and "
                                                         "'runs' (name: overrides, plus 'trainer: rft' for RFT "
                                                         "rounds), as configs/demo.yaml and configs/explore.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="each seed trains its own base policy and runs and draws its own evaluation problems")
    parser.add_argument("--methods", nargs="+", default=None, help="the runs to compare (default: all of the file)")
    parser.add_argument("--baseline", default=None, help="the run the others are compared with (default: the first)")
    parser.add_argument("--out", default="runs/compare", help="seed<N>/<run>/ per run; comparison.json, .html, .md")
    parser.add_argument("--min-seeds", type=int, default=metrics.MIN_VERDICT_SEEDS,
                        help="seeds needed for a verdict (fewer give intervals and 'no verdict'; default 3: one seed "
                             "leaves out the variation between training runs)")
    parser.add_argument("--plan", action="store_true",
                        help="train nothing: from the finished pilot in --out on --seeds (at least 2), the seeds "
                             "needed for 80%% power at --difference and at each observed difference, and the "
                             "smallest difference the pilot's seeds detect")
    parser.add_argument("--difference", type=float, default=0.05, help="the true difference --plan sizes for (default 0.05)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="base policies, then runs, trained at once, each in its own process (set run.threads "
                             "so that jobs x threads fits the cores)")
    parser.set_defaults(func=run)
