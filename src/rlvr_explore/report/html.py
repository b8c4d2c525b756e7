"""`rlvr-explore report`: one HTML page comparing runs side by side: the summary table, pass@k
curves, Lambda^(n) dynamics, entropy over training and its histogram, probability bins,
accuracy buckets, the unsolvable-set overlap and a grouped candidate matrix per run. It opens with
its answer: each run against the first one and against the policy before RL, at pass@1 and pass@n,
as paired differences over problems with 95% bootstrap intervals."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from rlvr_explore import metrics
from rlvr_explore.compare import verdicts_html
from rlvr_explore.train.checkpoints import claim_directory, write_owner
from rlvr_explore.train.runtime import read_metrics

from . import plots

SUMMARY_KEYS = ("pass@1", "avg@", "maj@", "distinct_correct", "answer_entropy", "entropy", "branching_factor",
                "lambda1", "lambda2", "unsolvable")


def load_run(run_dir: Path) -> dict:
    records = read_metrics(run_dir)
    evals = sorted((run_dir / "eval").glob("step_*.json")) if (run_dir / "eval").exists() else []
    if not evals:
        raise FileNotFoundError(f"{run_dir}: no eval/step_*.json; run an evaluation first")
    return {
        "name": run_dir.name,
        "train": [r for r in records if r.get("kind") == "train"],
        "evals": [r for r in records if r.get("kind") == "eval"],
        "first": json.loads(evals[0].read_text()),
        "final": json.loads(evals[-1].read_text()),
    }


def _img(path: Path, out_dir: Path, caption: str, wide: bool = False) -> str:
    """A figure that opens at full size on a click; ``wide`` ones take the page's width."""
    src = path.relative_to(out_dir)
    return (f'<figure class="{"wide" if wide else ""}"><a href="{src}"><img src="{src}" alt="{html.escape(caption)}"></a>'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>')


def _summary_table(runs: list[dict], n: int) -> str:
    """One row per metric and one column per run, so the table fits the page for a few runs."""
    keys = [k for k in runs[0]["final"]["summary"] if k.startswith(SUMMARY_KEYS)]
    keys = ["pass@1"] + [f"pass@{k}" for k in (4, 16, 64, n) if f"pass@{k}" in runs[0]["final"]["summary"] and k != 1] + [
        k for k in keys if not k.startswith("pass@")]
    head = "".join(f"<th>{html.escape(run['name'])}</th>" for run in runs)
    rows = []
    for key in keys:
        cells = "".join(f"<td>{run['final']['summary'][key]:.3f}</td>" for run in runs)
        rows.append(f"<tr><th>{html.escape(key)}</th>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _paired(final: dict, reference: dict, k: int) -> tuple[float, float, float] | None:
    """Mean per-problem pass@k difference (final - reference) on the same problems, with a 95%
    bootstrap interval over problems; None when the two were not evaluated alike."""
    a, b = final["details"], reference["details"]
    if a["n_samples"] != b["n_samples"] or len(a["correct_counts"]) != len(b["correct_counts"]):
        return None
    diff = metrics.paired_pass_at_k_difference([a["correct_counts"]], [b["correct_counts"]], a["n_samples"], k)
    return (float(diff.mean()), *metrics.seed_interval(diff))


def _verdicts(finals: dict, reference: str, n: int) -> str:
    """The page's answer: each run against ``reference`` at pass@1 and pass@n, as a paired
    difference with its interval, and the verdict the interval allows."""
    items = []
    for name, final in finals.items():
        if name == reference:
            continue
        cells = []
        for k in (1, n):
            found = _paired(final, finals[reference], k)
            if found is None:
                cells.append(f"pass@{k}: not comparable (other problems or n)")
                continue
            mean, low, high = found
            cells.append(f"pass@{k} {mean:+.3f} [{low:+.3f}, {high:+.3f}]: <b>{metrics.verdict(low, high)}</b>")
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
    return (f"<table><tr><th>run</th><th>unsolvable</th><th>newly unsolvable vs {html.escape(reference)}</th>"
            f"<th>newly solved</th></tr>{''.join(rows)}</table>")


def build_report(run_dirs: list[str | Path], out_html: str | Path, title: str = "rlvr-explore report",
                 baseline: str | None = "base (before RL)", comparison: dict | None = None) -> Path:
    """Write ``out_html`` and its figures; ``baseline`` labels the first run's step-0 evaluation.
    With ``comparison`` (a ``rlvr-explore compare`` summary) the page opens with its verdicts over
    seeds instead of its own over these runs' problems."""
    out_html = Path(out_html)
    out_dir = out_html.parent
    runs = [load_run(Path(d)) for d in run_dirs]
    claim_directory(out_dir, "report")
    write_owner(out_dir, "report")
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    n = runs[0]["final"]["details"]["n_samples"]
    finals = {r["name"]: r["final"] for r in runs}
    if baseline:
        finals = {baseline: runs[0]["first"], **finals}
    parts = []
    first_run = runs[0]["name"]
    plots.set_run_colours(list(finals))
    if comparison:
        verdicts = verdicts_html(comparison)
    else:
        verdicts = _verdicts(finals, first_run, n) + (_verdicts(finals, baseline, n) if baseline else "")

    path = plots.pass_at_k_curves({k: v["details"]["pass_at_k"] for k, v in finals.items()}, str(figures / "pass_at_k.png"),
                                  title=f"pass@k on {len(runs[0]['final']['details']['correct_counts'])} held-out problems, n = {n}")
    parts.append(_img(Path(path), out_dir, "Unbiased pass@k with 95% bootstrap bands (STILL Eq. 2)."))
    series = {r["name"]: {"step": [t["step"] for t in r["train"]],
                          **{key: [t[key] for t in r["train"]] for key in r["train"][0] if key.startswith("lambda") and key[6:].isdigit()},
                          "sample": [t["lambda_sample"] for t in r["train"]]} for r in runs if r["train"]}
    if series:
        series = {name: {("rank" + k[6:] if k.startswith("lambda") else k): v for k, v in s.items()} for name, s in series.items()}
        parts.append(_img(Path(plots.rank_logprob_dynamics(series, str(figures / "lambda.png"))), out_dir,
                          "Lambda^(n): mean log-prob of the rank-n candidate on training rollouts, smoothed, raw values faint "
                          "(CaSP Fig. 3, 7).", wide=True))
        entropy = {r["name"]: ([t["step"] for t in r["train"]], [t["rollout_entropy"] for t in r["train"]]) for r in runs if r["train"]}
        parts.append(_img(Path(plots.metric_over_steps(entropy, str(figures / "entropy_steps.png"), "mean token entropy (nats)",
                                                       "entropy of training rollouts")), out_dir, "Token entropy during training."))
        reward = {r["name"]: ([t["step"] for t in r["train"]], [t["reward"] for t in r["train"]]) for r in runs if r["train"]}
        parts.append(_img(Path(plots.metric_over_steps(reward, str(figures / "reward.png"), "mean reward", "training reward")),
                          out_dir, "Mean reward of training rollouts."))
    parts.append(_img(Path(plots.entropy_histograms({k: v["details"]["token_entropy_sample"] for k, v in finals.items()},
                                                    str(figures / "entropy_hist.png"))), out_dir,
                      "Token entropy of evaluation samples (CaSP Fig. 8)."))
    parts.append(_img(Path(plots.probability_bins({k: v["details"]["probability_bins"] for k, v in finals.items()},
                                                  str(figures / "probability_bins.png"))), out_dir,
                      "Probability bins of the top-3 candidates (CaSP Fig. 9).", wide=True))
    parts.append(_img(Path(plots.accuracy_buckets({k: v["details"]["accuracy_buckets"] for k, v in finals.items()},
                                                  str(figures / "accuracy_buckets.png"))), out_dir,
                      "Per-problem accuracy (SPS Fig. 2)."))
    unsolvable = {k: set(v["details"]["unsolvable_ids"]) for k, v in finals.items()}
    draw = plots.unsolvable_overlap if len(unsolvable) <= 3 else plots.unsolvable_matrix  # a Venn up to three sets
    parts.append(_img(Path(draw(unsolvable, str(figures / "unsolvable.png"), title=f"{n}-rollout unsolvable problems")),
                      out_dir, "Problems no sample solved, and their overlap across runs (STILL §2.1)."))
    for name, final in finals.items():
        example = final["details"]["example"]
        file = figures / f"candidates_{''.join(c if c.isalnum() else '_' for c in name)}.png"
        plots.grouped_candidate_matrix([[(t, p, s) for t, p, s in col] for col in example["columns"]], str(file),
                                       title=f"{name}: {example['prompt']} -> {example['response']}")
        parts.append(_img(file, out_dir, f"{name}: candidates up to 0.95 mass per position, sampled path in red (CaSP App. G).",
                          wide=True))

    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;font-size:0.9em}} figure{{display:inline-block;margin:8px;vertical-align:top}}
img{{max-width:560px}} figcaption{{font-size:0.85em;color:#444;max-width:560px}}
figure.wide{{display:block}} figure.wide img{{max-width:100%}} figure.wide figcaption{{max-width:none}}</style></head><body>
<h1>{html.escape(title)}</h1>
{verdicts}
<p>Final evaluation of each run; the baseline row is the first run's policy before RL.</p>
<div style="overflow-x:auto">{_summary_table([{"name": k, "final": v} for k, v in finals.items()], n)}</div>
<p>{n}-rollout unsolvable problems of every run:</p>
{_unsolvable_table(finals, next(iter(finals)))}
{''.join(parts)}
</body></html>"""
    out_html.write_text(page)
    return out_html
