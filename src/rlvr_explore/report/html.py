"""`rlvr-explore report`: one HTML page comparing runs side by side: the summary table, pass@k
curves, Lambda^(n) dynamics, entropy over training and its histogram, probability bins,
accuracy buckets, the unsolvable-set overlap and a grouped candidate matrix per run. It opens with
its answer: each run against the first one and against the policy before RL, at pass@1 and pass@n,
as paired differences over problems with 95% bootstrap intervals."""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

from rlvr_explore import metrics
from rlvr_explore.report.verdicts import verdicts_html
from rlvr_explore.train.checkpoints import claim_directory, write_owner
from rlvr_explore.train.runtime import read_metrics

from . import page, plots

SUMMARY_KEYS = ("pass@1", "maj@", "distinct_correct", "answer_entropy", "entropy", "branching_factor",
                "lambda1", "lambda2", "unsolvable")


def run_label(run_dir: Path) -> str:
    """The directory's name, with the method when the name is not it and every loss or advantage
    setting that differs from the method's defaults: ``casp (alpha=0.3)``."""
    try:
        algorithm = json.loads((run_dir / "config.json").read_text())["algorithm"]
    except (OSError, ValueError, KeyError):
        return run_dir.name
    from rlvr_explore.advantages import AdvantageConfig
    from rlvr_explore.losses import get_method

    method = algorithm.get("method", "")
    try:
        defaults = {**asdict(get_method(method).default_config()), **asdict(AdvantageConfig())}
    except (KeyError, ValueError):
        defaults = {}
    settings = {**algorithm.get("loss", {}), **algorithm.get("advantage_hp", {})}
    changed = [f"{key}={value}" for key, value in settings.items() if defaults.get(key) != value]
    changed += [f"{key}={algorithm[key]}" for key in ("advantage", "entropy_coeff", "kl_coef") if algorithm.get(key)]
    changed += [f"+{step}" for step in algorithm.get("shaping", [])]
    shown = ([method] if method and method != run_dir.name else []) + changed
    return f"{run_dir.name} ({', '.join(shown)})" if shown else run_dir.name


def load_run(run_dir: Path) -> dict:
    records = read_metrics(run_dir)
    evals = sorted((run_dir / "eval").glob("step_*.json")) if (run_dir / "eval").exists() else []
    if not evals:
        raise FileNotFoundError(f"{run_dir}: no eval/step_*.json; run an evaluation first")
    try:
        seed = json.loads((run_dir / "config.json").read_text())["run"]["seed"]
    except (OSError, ValueError, KeyError):
        seed = None
    return {
        "name": run_label(run_dir),
        "seed": seed,
        "train": [r for r in records if r.get("kind") == "train"],
        "evals": [r for r in records if r.get("kind") == "eval"],
        "first": json.loads(evals[0].read_text()),
        "final": json.loads(evals[-1].read_text()),
    }


def _summary_table(runs: list[dict], n: int) -> str:
    """One row per metric and one column per run. avg@n is not shown: it is pass@1 (the mean
    accuracy of the n samples)."""
    keys = [k for k in runs[0]["final"]["summary"] if k.startswith(SUMMARY_KEYS)]
    keys = ["pass@1"] + [f"pass@{k}" for k in (4, 16, 64, n) if f"pass@{k}" in runs[0]["final"]["summary"] and k != 1] + [
        k for k in keys if not k.startswith("pass@")]
    head = "".join(f"<th>{html.escape(run['name'])}</th>" for run in runs)
    rows = []
    for key in keys:
        cells = "".join(f"<td>{page.number(run['final']['summary'][key])}</td>" for run in runs)
        rows.append(f"<tr><th>{html.escape(key)}</th>{cells}</tr>")
    return f"<div class='scroll'><table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table></div>"


def _paired(final: dict, reference: dict, k: int) -> tuple[float, float, float] | None:
    """Mean per-problem pass@k difference (final - reference) on the same problems, with a 95%
    bootstrap interval over problems; None when the two were not evaluated alike."""
    a, b = final["details"], reference["details"]
    if a["n_samples"] != b["n_samples"] or len(a["correct_counts"]) != len(b["correct_counts"]):
        return None
    diff = metrics.paired_pass_at_k_difference([a["correct_counts"]], [b["correct_counts"]], a["n_samples"], k)
    return (float(diff.mean()), *metrics.seed_interval(diff))


def _verdicts(finals: dict, reference: str, n: int, listed: set[frozenset] | None = None) -> str:
    """The page's answer: each run against ``reference`` at pass@1 and pass@n, as a paired
    difference with its interval, and the verdict the interval allows; a pair in ``listed`` is
    not repeated (and the pairs shown are added to it)."""
    items, listed = [], set() if listed is None else listed
    for name, final in finals.items():
        if name == reference or frozenset((name, reference)) in listed:
            continue
        listed.add(frozenset((name, reference)))
        cells = []
        for k in (1, n):
            found = _paired(final, finals[reference], k)
            if found is None:
                cells.append(f"pass@{k}: not comparable (other problems or n)")
                continue
            mean, low, high = found
            cells.append(f"pass@{k} {mean:+.3f} [{low:+.3f}, {high:+.3f}]: <b>{metrics.verdict(low, high, seeds=1)}</b>")
        items.append(f"<li><b>{html.escape(name)}</b>: {'; '.join(cells)}</li>")
    return (f"<p>Against <b>{html.escape(reference)}</b> (mean paired difference over problems, 95% bootstrap "
            f"interval):</p><ul>{''.join(items)}</ul>")


def _unsolvable_table(finals: dict, reference: str) -> str:
    """For every run: problems no sample solved, and how that set moved against ``reference``."""
    base = set(finals[reference]["details"]["unsolvable_ids"])
    rows = []
    for name, final in finals.items():
        ids = set(final["details"]["unsolvable_ids"])
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{len(ids)}</td><td>{len(ids - base)}</td><td>{len(base - ids)}</td></tr>")
    return (f"<div class='scroll'><table><tr><th>run</th><th>unsolvable</th><th>newly unsolvable vs "
            f"{html.escape(reference)}</th><th>newly solved</th></tr>{''.join(rows)}</table></div>")


def build_report(run_dirs: list[str | Path], out_html: str | Path, title: str = "rlvr-explore report",
                 baseline: str | None = "base (before RL)", comparison: dict | None = None,
                 comparison_page: str | None = None) -> Path:
    """Write ``out_html`` and its figures; ``baseline`` labels the first run's step-0 evaluation.
    With ``comparison`` (a ``rlvr-explore compare`` summary) the page opens with its verdicts over
    seeds instead of its own over these runs' problems, and links to ``comparison_page``."""
    out_html = Path(out_html)
    out_dir = out_html.parent
    runs = [load_run(Path(d)) for d in run_dirs]
    claim_directory(out_dir, "report")
    write_owner(out_dir, "report")
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    n = runs[0]["final"]["details"]["n_samples"]
    problems = len(runs[0]["final"]["details"]["correct_counts"])
    finals = {r["name"]: r["final"] for r in runs}
    if baseline:
        finals = {baseline: runs[0]["first"], **finals}
    plots.set_run_colours(list(finals))
    seeds = sorted({r["seed"] for r in runs if r["seed"] is not None})
    rests_on = (f"<p>These figures rest on {problems} evaluation problems × {n} samples each, from "
                f"{'one seed' if len(seeds) == 1 else f'{len(seeds)} seeds'} ({', '.join(map(str, seeds))}) of "
                f"{len(runs)} run{'s' if len(runs) > 1 else ''}.</p>")
    if comparison:
        verdicts = verdicts_html(comparison)
    else:
        listed: set[frozenset] = set()
        verdicts = (f"<h2>Paired differences</h2><p>One evaluation per run, so <b>no verdict</b>: the intervals cover "
                    "the problems drawn, not the variation between training runs (rlvr-explore compare trains several "
                    f"seeds; {metrics.MIN_VERDICT_SEEDS} are needed for a verdict).</p>"
                    + _verdicts(finals, runs[0]["name"], n, listed) + (_verdicts(finals, baseline, n, listed) if baseline else ""))
    parts = []

    def add(file: str, caption: str, wide: bool = False) -> None:
        parts.append(page.figure(f"figures/{file}", caption, wide))

    plots.pass_at_k_curves({k: v["details"]["pass_at_k"] for k, v in finals.items()}, str(figures / "pass_at_k.png"),
                           title=f"pass@k on {problems} held-out problems, n = {n}")
    add("pass_at_k.png", "Unbiased pass@k with 95% bootstrap bands (STILL Eq. 2).")
    trained = [r for r in runs if r["train"]]
    warnings = ""
    if trained:
        series = {r["name"]: {"step": [t["step"] for t in r["train"]],
                              **{f"rank{key[6:]}": [t[key] for t in r["train"]] for key in r["train"][0]
                                 if key.startswith("lambda") and key[6:].isdigit()},
                              "sample": [t["lambda_sample"] for t in r["train"]]} for r in trained}
        plots.rank_logprob_dynamics(series, str(figures / "lambda.png"))
        add("lambda.png", "Λ⁽ⁿ⁾: mean log-prob of the rank-n candidate on training rollouts, smoothed, raw values "
                          "faint; each panel in its run's colour, ranks by line style (CaSP Fig. 3, 7).", wide=True)
        entropy = {r["name"]: ([t["step"] for t in r["train"]], [t["rollout_entropy"] for t in r["train"]]) for r in trained}
        plots.metric_over_steps(entropy, str(figures / "entropy_steps.png"), "mean token entropy (nats)",
                                "entropy of training rollouts")
        add("entropy_steps.png", "Token entropy during training.")
        reward = {r["name"]: ([t["step"] for t in r["train"]], [t["reward"] for t in r["train"]]) for r in trained}
        plots.metric_over_steps(reward, str(figures / "reward.png"), "mean reward", "training reward")
        add("reward.png", "Mean reward of training rollouts.")
        warnings = page.collapse_warnings(reward, {k: v["summary"]["pass@1"] for k, v in finals.items()},
                                          "figures/reward.png")
    plots.entropy_histograms({k: v["details"]["token_entropy_sample"] for k, v in finals.items()},
                             str(figures / "entropy_hist.png"),
                             means={k: v["summary"]["entropy"] for k, v in finals.items() if "entropy" in v["summary"]})
    add("entropy_hist.png", "Token entropy of evaluation samples (CaSP Fig. 8); the legend gives each run's mean "
                            "over every token, as the table does, the histogram a sample of them.")
    plots.probability_bins({k: v["details"]["probability_bins"] for k, v in finals.items()},
                           str(figures / "probability_bins.png"))
    add("probability_bins.png", "Probability bins of the top-3 candidates (CaSP Fig. 9).")
    plots.accuracy_buckets({k: v["details"]["accuracy_buckets"] for k, v in finals.items()},
                           str(figures / "accuracy_buckets.png"))
    add("accuracy_buckets.png", "Per-problem accuracy (SPS Fig. 2).")
    unsolvable = {k: set(v["details"]["unsolvable_ids"]) for k, v in finals.items()}
    draw = plots.unsolvable_overlap if len(unsolvable) <= 3 else plots.unsolvable_matrix  # a Venn up to three sets
    draw(unsolvable, str(figures / "unsolvable.png"), title=f"{n}-rollout unsolvable problems")
    add("unsolvable.png", "Problems no sample solved, and their overlap across runs (STILL §2.1).")
    for name, final in finals.items():
        example = final["details"]["example"]
        file = f"candidates_{''.join(c if c.isalnum() else '_' for c in name)}.png"
        plots.grouped_candidate_matrix([[(t, p, s) for t, p, s in col] for col in example["columns"]], str(figures / file),
                                       title=f"{name}: {example['prompt']} -> {example['response']}")
        add(file, f"{name}: candidates up to 0.95 mass per position, sampled path in red (CaSP App. G).", wide=True)

    nav = (f'<nav>The comparison over seeds: <a href="{html.escape(comparison_page)}">{html.escape(comparison_page)}</a>'
           "</nav>" if comparison_page else "")
    page_html = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>{page.STYLE}</head><body>
<h1>{html.escape(title)}</h1>
{nav}{rests_on}
{verdicts}
{warnings}
<p>Final evaluation of each run; the baseline row is the first run's policy before RL.</p>
{_summary_table([{"name": k, "final": v} for k, v in finals.items()], n)}
<p>{n}-rollout unsolvable problems of every run:</p>
{_unsolvable_table(finals, next(iter(finals)))}
{''.join(parts)}
</body></html>"""
    out_html.write_text(page_html)
    return out_html
