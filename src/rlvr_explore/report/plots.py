"""The papers' figures as PNG files: each function takes plain data (dicts of per-run series)
and a path, and draws one titled, labelled figure. Used by the report and by the CLI."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402


RUN_STYLES: dict[str, dict] = {}  # name -> colour and line style, so one run looks the same in every figure
LINE_STYLES = ("-", "--", ":", "-.")
# The runs' colours: tab10 without its grey, which is the policy before RL's alone.
RUN_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
               "tab:cyan")
BASE_STYLE = {"color": "tab:gray", "linestyle": "-"}
RANK_STYLES = ("-", "--", ":")  # Lambda^(1..3) inside one run's panel: its colour, one line style per rank
CROWDED = 6  # more lines than this: the interval bands fade


def is_base(name: str) -> bool:
    return name == "base" or name.startswith("base ")


def set_run_colours(names: Sequence[str]) -> None:
    """Fix each run's colour for the figures that follow: the policy before RL in grey, the others
    in the order given (every page passes its runs in the comparison's order, so a method keeps
    its colour across pages); past nine runs, line styles tell them apart too."""
    RUN_STYLES.clear()
    runs = [name for name in names if not is_base(name)]
    RUN_STYLES.update({name: {"color": RUN_COLOURS[i % len(RUN_COLOURS)],
                              "linestyle": LINE_STYLES[i // len(RUN_COLOURS) % len(LINE_STYLES)]}
                       for i, name in enumerate(runs)})
    RUN_STYLES.update({name: dict(BASE_STYLE) for name in names if is_base(name)})


def _colour(name: str) -> str | None:
    return RUN_STYLES.get(name, {}).get("color")


def _line(name: str) -> dict:
    return RUN_STYLES.get(name, {})


def _band_alpha(lines: int) -> float:
    return 0.15 if lines <= CROWDED else 0.06


def _legend(ax) -> None:
    """Beside the axes, never on the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=9)


def smooth(values: Sequence[float], window: int | None = None) -> np.ndarray:
    """Trailing moving average (window: a twentieth of the series, at least 1)."""
    values = np.asarray(values, dtype=float)
    window = window or max(1, len(values) // 20)
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.maximum(0, np.arange(1, len(values) + 1) - window)]) / counts


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # a legend beside the axes stays in the image
    plt.close(fig)
    return path


def pass_at_k_curves(curves: Mapping[str, Mapping[int, Mapping[str, float]]], path: str, title: str = "pass@k") -> str:
    """One line per model: mean pass@k against k (log2 axis) with its bootstrap band (STILL Fig. 1, CaSP Fig. 6)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, curve in curves.items():
        curve = {int(k): v for k, v in curve.items()}  # JSON keeps keys as strings
        ks = sorted(curve)
        mean = [curve[k]["mean"] for k in ks]
        line, = ax.plot(ks, mean, marker="o", ms=3, label=name, **_line(name))
        if all("ci_low" in curve[k] for k in ks):
            ax.fill_between(ks, [curve[k]["ci_low"] for k in ks], [curve[k]["ci_high"] for k in ks],
                            color=line.get_color(), alpha=_band_alpha(len(curves)))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def difference_curves(curves: Mapping[str, Mapping[int, Mapping[str, float]]], path: str, baseline: str) -> str:
    """One line per method: its mean paired pass@k difference to ``baseline`` against k (log2 axis),
    with its interval band and the zero line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.axhline(0, color="black", lw=0.8)
    for name, curve in curves.items():
        ks = sorted(int(k) for k in curve)
        line, = ax.plot(ks, [curve[k]["difference"] for k in ks], marker="o", ms=3, label=name, **_line(name))
        ax.fill_between(ks, [curve[k]["ci_low"] for k in ks], [curve[k]["ci_high"] for k in ks],
                        color=line.get_color(), alpha=_band_alpha(len(curves)))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel(f"pass@k - pass@k of {baseline}")
    ax.set_title(f"paired difference to {baseline}")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def rank_logprob_dynamics(series: Mapping[str, Mapping[str, Sequence[float]]], path: str) -> str:
    """Lambda^(n) and Lambda^sample over training steps, one panel per run (CaSP Fig. 3, 7): the
    run's colour, ranks told apart by line style (solid rank 1, dashed 2, dotted 3), the sampled
    token's in black; one legend for the figure, below it.

    ``series[run]`` has 'step', 'rank1', 'rank2', ... and optionally 'sample'.
    """
    runs = list(series)
    cols = min(2, len(runs))  # two panels a row stay readable on an 800-pixel page
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, runs):
        data = series[name]
        colour = _colour(name) or "tab:blue"
        for key in sorted(k for k in data if k.startswith("rank")):
            rank = int(key[4:])
            ax.plot(data["step"], smooth(data[key]), color=colour, linestyle=RANK_STYLES[(rank - 1) % len(RANK_STYLES)],
                    label=f"Λ⁽{rank}⁾ (rank {rank})")
            ax.plot(data["step"], data[key], color=colour, alpha=0.15, lw=0.8)
        if "sample" in data:
            ax.plot(data["step"], smooth(data["sample"]), color="black", linestyle="-.", label="Λ^sample (sampled token)")
        ax.set_title(name, color=colour)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("mean log-prob")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles = [plt.Line2D([], [], color="dimgray" if "rank" in label else "black", linestyle=h.get_linestyle())
               for h, label in zip(handles, labels)]
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels), fontsize=9)
    fig.suptitle("rank-n candidate log-probs (CaSP Eq. 2)", y=1.0, va="bottom")  # above the first row's titles
    return _save(fig, path)


def entropy_histograms(entropies: Mapping[str, Sequence[float]], path: str, bins: int = 40,
                       means: Mapping[str, float] | None = None) -> str:
    """Token-level entropy distributions, one per run (CaSP Fig. 8). ``means`` (the mean over every
    token, as the tables give it) label the runs; without them, the drawn sample's mean does."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    values = [np.asarray(v, float) for v in entropies.values()]
    top = max((v.max() for v in values if len(v)), default=1.0)
    edges = np.linspace(0, max(top, 1e-3), bins + 1)
    for name, v in zip(entropies, values):
        mean = (means or {}).get(name, v.mean())
        ax.hist(v, bins=edges, alpha=0.45, density=True, label=f"{name} (mean {mean:.3f})", color=_colour(name))
    ax.set_yscale("log")
    ax.set_xlabel("token entropy (nats)")
    ax.set_ylabel("density (log scale)")
    ax.set_title("token entropy")
    _legend(ax)
    return _save(fig, path)


def probability_bins(bins_by_run: Mapping[str, dict], path: str) -> str:
    """Fraction of tokens per probability bin for ranks 1..3 (CaSP Fig. 9), one panel a rank,
    stacked, with one legend below them."""
    runs = list(bins_by_run)
    first = bins_by_run[runs[0]]
    edges = first["edges"]
    labels = [f"{lo:.2g}-{hi:.2g}" for lo, hi in zip(edges[:-1], edges[1:])]
    ranks = list(first["fractions"])
    fig, axes = plt.subplots(len(ranks), 1, figsize=(7.2, 2.4 * len(ranks) + 0.4 * len(runs)), squeeze=False,
                             sharey=True)
    width = 0.8 / len(runs)
    for ax, rank in zip(axes[:, 0], ranks):
        for i, name in enumerate(runs):
            ax.bar(np.arange(len(labels)) + i * width, bins_by_run[name]["fractions"][rank], width, label=name,
                   color=_colour(name))
        ax.set_xticks(np.arange(len(labels)) + width * (len(runs) - 1) / 2, labels)
        ax.set_title(f"{rank.replace('rank', 'rank-')} candidate", fontsize=10)
        ax.set_ylabel("fraction of tokens")
    axes[-1][0].set_xlabel("probability of the candidate")
    # below the panels, so they keep the figure's width for their bin labels
    axes[-1][0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=9)
    return _save(fig, path)


def grouped_candidate_matrix(columns, path: str, decode=str, title: str = "grouped candidates (CaSP App. G)") -> str:
    """Heatmap: column t holds the candidates reaching 0.95 mass at position t, most likely on top;
    the sampled token is outlined in red and the sampled path joined by a line."""
    depth = max(len(c) for c in columns)
    grid = np.full((depth, len(columns)), np.nan)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(columns)), max(3, 0.5 * depth + 1)))
    path_y = []
    for t, column in enumerate(columns):
        for row, (token, prob, sampled) in enumerate(column):
            grid[row, t] = prob
            ax.text(t, row, decode(token), ha="center", va="center", fontsize=9, color="white" if prob > 0.5 else "black")
            if sampled:
                path_y.append(row)
                ax.add_patch(plt.Rectangle((t - 0.5, row - 0.5), 1, 1, fill=False, ec="red", lw=2))
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.plot(range(len(path_y)), path_y, color="red", lw=1, alpha=0.6)
    ax.set_xlabel("position")
    ax.set_ylabel("candidate rank")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="probability")
    return _save(fig, path)


def unsolvable_overlap(sets: Mapping[str, set], path: str, title: str = "k-rollout unsolvable problems") -> str:
    """Venn diagram of up to three sets, drawn with circles and region counts (STILL Fig. 2)."""
    from rlvr_explore.metrics import set_overlaps

    names = list(sets)
    if not 1 <= len(names) <= 3:
        raise ValueError(f"unsolvable_overlap draws 1 to 3 sets, got {len(names)}")
    regions = set_overlaps(sets)
    centres = [(-0.6, 0.35), (0.6, 0.35), (0.0, -0.65)][: len(names)]
    fig, ax = plt.subplots(figsize=(6, 5.4))
    for (x, y), name, fallback in zip(centres, names, RUN_COLOURS):
        ax.add_patch(plt.Circle((x, y), 1.1, alpha=0.25, color=_colour(name) or fallback))
        ax.text(x * 1.9, y * 1.9 + (0.25 if y > 0 else -0.25), f"{name} ({len(sets[name])})", ha="center", fontsize=10)
    for key, count in regions.items():
        members = key.split("&")
        idx = [names.index(m) for m in members]
        x = np.mean([centres[i][0] for i in idx])
        y = np.mean([centres[i][1] for i in idx])
        if len(members) < len(names):  # push partial regions away from the all-sets centre
            cx = np.mean([c[0] for c in centres])
            cy = np.mean([c[1] for c in centres])
            x, y = x + 0.45 * (x - cx) / (math.hypot(x - cx, y - cy) or 1), y + 0.45 * (y - cy) / (math.hypot(x - cx, y - cy) or 1)
        ax.text(x, y, str(count), ha="center", va="center", fontsize=12, weight="bold")
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(-2.2, 2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title)
    return _save(fig, path)


def overlap_counts(sets: Mapping[str, set]) -> np.ndarray:
    """(i, j) -> how many items sets i and j share; the diagonal holds each set's size."""
    values = list(sets.values())
    return np.array([[len(a & b) for b in values] for a in values])


def unsolvable_matrix(sets: Mapping[str, set], path: str, title: str = "k-rollout unsolvable problems") -> str:
    """The overlap of any number of sets as a matrix: unsolvable by both runs (a Venn for many)."""
    names = list(sets)
    counts = overlap_counts(sets)
    fig, ax = plt.subplots(figsize=(min(9.0, 0.6 * len(names) + 3), min(8.0, 0.5 * len(names) + 2)))
    image = ax.imshow(counts, cmap="Oranges")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=11 if len(names) <= 8 else 8,
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_title(f"{title}: unsolved by both (diagonal: by the run)")
    fig.colorbar(image, ax=ax, label="problems")
    return _save(fig, path)


def accuracy_buckets(buckets_by_run: Mapping[str, dict], path: str) -> str:
    """Histogram of per-problem accuracy, one bar group per run (SPS Fig. 2)."""
    runs = list(buckets_by_run)
    labels = buckets_by_run[runs[0]]["labels"]
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(labels)), 4.2))
    for i, name in enumerate(runs):
        ax.bar(np.arange(len(labels)) + i * width, buckets_by_run[name]["counts"], width, label=name, color=_colour(name))
    ax.set_xticks(np.arange(len(labels)) + width * (len(runs) - 1) / 2, labels, rotation=30)
    ax.set_xlabel("per-problem accuracy")
    ax.set_ylabel("number of problems")
    ax.set_title("accuracy buckets (SPS Fig. 2)")
    _legend(ax)
    return _save(fig, path)


def metric_over_steps(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str, ylabel: str,
                      title: str) -> str:
    """A scalar metric (entropy, reward, branching factor) against training step, one line per run."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, (steps, values) in series.items():  # smoothed, with the raw values faint behind
        line, = ax.plot(steps, smooth(values), label=name, **_line(name))
        if len(series) <= CROWDED:
            ax.plot(steps, values, color=line.get_color(), alpha=0.2, lw=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)
