"""The verdicts of a comparison as they are read: one line per method (interval, p, q, Holm for
the primary runs, the A/A label) and the page's opening section, which says how many seeds and
problems they rest on, what the intervals cover, and what the table's size means for them. Shared
by ``rlvr-explore compare`` and ``rlvr-explore report``."""

from __future__ import annotations

import html

from rlvr_explore import metrics


def _probability(value: float) -> str:
    """A p- or q-value as printed: below 1e-4 (the bootstrap's resolution) as a bound."""
    return f"{value:.2g}" if value >= 1e-4 else "< 1e-4"


def verdict_cell(v: dict) -> str:
    holm = f", primary: Holm p {_probability(v['holm_p_value'])}, {v['primary_verdict']}" if "holm_p_value" in v else ""
    return (f"{v['difference']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}] ({v['verdict']}; "
            f"p {_probability(v['p_value'])}, q {_probability(v['q_value'])}{holm})")


def verdict_lines(summary: dict) -> list[str]:
    lines = []
    for name, by_k in summary["verdicts"].items():
        cells = [f"{k} {verdict_cell(v)}" for k, v in by_k.items()]
        check = (" [A/A calibration check: the baseline again with other random draws; a verdict here is a false one]"
                 if name in summary.get("calibration", ()) else "")
        lines.append(f"{name} vs {summary['baseline']}{check}: " + "; ".join(cells))
    return lines


def verdicts_html(summary: dict) -> str:
    """The verdicts as the first lines of a page: one per method, each with its interval."""
    seeds = summary["seeds"]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_lines(summary))
    interval = ("Student-t interval over the per-seed means" if len(seeds) > 1 else
                "bootstrap interval over problems (one seed: the variation between seeds is not in it)")
    needed = summary.get("min_seeds", metrics.MIN_VERDICT_SEEDS)
    rule = (f"a verdict names a direction only when its interval excludes 0." if len(seeds) >= needed else
            f"<b>no verdict</b>: with {'one seed' if len(seeds) == 1 else f'{len(seeds)} seeds'} the intervals say "
            f"what these runs found, not what another training run would find ({needed} seeds are needed, e.g. "
            f"--seeds {' '.join(map(str, range(needed)))}).")
    cells = [v for by_k in summary["verdicts"].values() for v in by_k.values()]
    directional = sum(v["verdict"] in ("higher", "lower") for v in cells)
    kept = sum(v["adjusted_verdict"] in ("higher", "lower") for v in cells)
    detectable = sorted(v["detectable_80"] for v in cells if v.get("detectable_80") is not None)
    size = (f"<p>This table makes {len(cells)} comparisons: with no true difference anywhere, about "
            f"{0.05 * len(cells):.1f} would name a direction by chance. Benjamini-Hochberg q-values correct for that: "
            f"{kept} of the {directional} directional verdicts keep their direction at q &lt; 0.05."
            + (f" With these seeds, a difference of about {detectable[len(detectable) // 2]:.3f} (median over the "
               f"table) is detected with 80% power; smaller true differences are often missed." if detectable else "")
            + "</p>") if cells and len(seeds) >= needed else ""  # with no verdict, nothing to correct
    shared = (f"<p>Every seed is evaluated on the same {summary['problems_per_seed']} problems (a dataset file): "
              "the intervals cover the variation between training runs on this evaluation set, not over problems in "
              "general; another set of problems may differ more.</p>") if summary.get("shared_problems") else ""
    return (f"<h2>Verdicts</h2><p>Mean paired difference over {summary['problems_per_seed']} problems × {len(seeds)} "
            f"seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}), 95% {interval}; {rule}</p>"
            f"<ul>{items}</ul>{shared}{size}")
