"""Evaluation metrics over n samples per problem (STILL Eq. 2, Tab. 4; CaSP §5).

pass@k = 1 - C(n-c, k) / C(n, k), the probability that k of the n samples, drawn without
replacement, contain a correct one. It is computed as -expm1(sum_{i=n-c+1..n} log1p(-k/i)):
no binomial is formed (no overflow at n = 10^4) and no 1 - x is taken of an x near 1 (no
cancellation when pass@k is tiny).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from typing import Hashable, Sequence

import numpy as np


def _pass_at_k_scalar(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    if c == 0:
        return 0.0
    terms = [math.log1p(-k / i) for i in range(n - c + 1, n + 1)]
    return -math.expm1(math.fsum(terms))


def pass_at_k(n, c, k):
    """Unbiased pass@k for scalars or arrays (broadcast); rejects impossible input clearly."""
    n_arr, c_arr, k_arr = np.broadcast_arrays(np.asarray(n), np.asarray(c), np.asarray(k))
    for name, arr in (("n", n_arr), ("c", c_arr), ("k", k_arr)):
        if not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"pass_at_k: {name} must be integers, got {arr.ravel()[:5].tolist()}")
        if np.any(arr < 0):
            raise ValueError(f"pass_at_k: {name} must be >= 0, got {arr[arr < 0].ravel()[:5].tolist()}")
    if np.any(k_arr < 1):
        raise ValueError("pass_at_k: k must be >= 1")
    if np.any(c_arr > n_arr):
        bad = np.argwhere(c_arr > n_arr)[0]
        raise ValueError(f"pass_at_k: c > n (c={c_arr[tuple(bad)]}, n={n_arr[tuple(bad)]}): more correct than samples")
    if np.any(k_arr > n_arr):
        bad = np.argwhere(k_arr > n_arr)[0]
        raise ValueError(f"pass_at_k: k > n (k={k_arr[tuple(bad)]}, n={n_arr[tuple(bad)]}): not enough samples")
    out = np.vectorize(_pass_at_k_scalar, otypes=[float])(n_arr.astype(int), c_arr.astype(int), k_arr.astype(int))
    return float(out) if out.ndim == 0 else out


def bootstrap_ci(per_problem: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap over problems of the mean: (low, high)."""
    per_problem = np.asarray(per_problem, dtype=float)
    rng = np.random.default_rng(seed)
    means = per_problem[rng.integers(0, len(per_problem), (n_boot, len(per_problem)))].mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def student_t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom (Simpson's rule on its density)."""
    if df < 1:
        raise ValueError(f"student_t_cdf needs df >= 1, got {df}")
    if x < 0:
        return 1.0 - student_t_cdf(-x, df)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    grid = np.linspace(0.0, x, 4001)
    pdf = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid ** 2 / df))
    return min(1.0, 0.5 + x / 12000 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum()))


@functools.lru_cache(maxsize=None)
def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on its CDF;
    within 1e-6 of the tabulated values)."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"student_t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -student_t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if student_t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


def _seed_spread(values: np.ndarray) -> float:
    """The standard deviation of a per-seed mean of (seeds >= 2, problems) ``values``: the spread of
    the seeds' means; where they tie exactly, what the problems inside a seed alone give it
    (sd / sqrt(P)). pass@k means move in steps of 1/problems, so a few seeds can tie (about 10% of
    comparisons at 2 seeds), and a spread of 0 would make a zero-width interval and a certain
    verdict. (A floor everywhere would make every interval conservative, not only the ties.)"""
    between = float(values.mean(1).std(ddof=1))
    if between > 1e-12 or values.shape[1] < 2:  # above the rounding of equal means
        return between
    return math.sqrt(float(values.var(axis=1, ddof=1).mean()) / values.shape[1])


def _seed_means(values: np.ndarray, level: float) -> tuple[float, float]:
    """(mean, t quantile x spread) of the per-seed means of (seeds >= 2, problems) ``values``."""
    return float(values.mean()), student_t_quantile((1 + level) / 2, values.shape[0] - 1) * _seed_spread(values)


def seed_p_value(values: np.ndarray, n_boot: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of "the mean of (seeds, problems) ``values`` is 0", matching
    ``seed_interval``: Student's t over the per-seed means (S - 1 degrees of freedom); with one
    seed, the bootstrap over its problems."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if values.shape[0] == 1:
        rng = np.random.default_rng(seed)
        row = values[0]
        means = row[rng.integers(0, len(row), (n_boot, len(row)))].mean(1)
        return float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    spread = _seed_spread(values)
    if spread == 0:
        return 1.0 if mean == 0 else 0.0
    t = abs(mean) / (spread / math.sqrt(values.shape[0]))
    return float(min(1.0, 2 * (1 - student_t_cdf(t, values.shape[0] - 1))))


def seed_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Interval of the mean of (seeds, problems) ``values`` when each seed trains its own run and
    draws its own problems: the per-seed means are independent replicates carrying both sources
    of variation, so the interval is Student's t over them (S - 1 degrees of freedom). A
    bootstrap that resamples seeds and problems instead covers too rarely when seeds differ
    more than problems do (about 87% for a nominal 95% at 5 seeds). Seeds whose means tie exactly
    take the spread their problems give (``_seed_spread``), so they still give an interval. With
    one seed: the bootstrap over its problems, which leaves the seed's own variation out."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"values must be (seeds, problems), got shape {values.shape}")
    if values.shape[0] == 1:
        return bootstrap_ci(values[0], level=level)
    mean, spread = _seed_means(values, level)
    half = spread / math.sqrt(values.shape[0])
    return mean - half, mean + half


def rerun_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Where the mean of a rerun with as many new seeds falls with probability ``level``: the
    prediction interval, wider than ``seed_interval`` by sqrt(2) in its t term. None with one seed."""
    values = np.asarray(values, dtype=float)
    if values.shape[0] == 1:
        return None
    mean, spread = _seed_means(values, level)
    half = spread * math.sqrt(2 / values.shape[0])
    return mean - half, mean + half


def paired_pass_at_k_difference(method_counts, baseline_counts, n: int, k: int) -> np.ndarray:
    """Per-problem pass@k(method) - pass@k(baseline), (seeds, problems), from correct counts out of
    ``n`` samples of that shape, the same problems in a row of both; ``seed_interval`` of it is the
    verdict's interval."""
    method_counts, baseline_counts = np.asarray(method_counts), np.asarray(baseline_counts)
    if method_counts.shape != baseline_counts.shape or method_counts.ndim != 2:
        raise ValueError(f"correct counts must be (seeds, problems) of one shape, got {method_counts.shape} "
                         f"and {baseline_counts.shape}")
    return (np.asarray(pass_at_k(n, method_counts, k)) - np.asarray(pass_at_k(n, baseline_counts, k))).reshape(
        method_counts.shape)


def _detectable(spread: float, seeds: int, power: float, level: float) -> float:
    """(t_(1+level)/2 + t_power, both at S - 1 degrees of freedom) x spread / sqrt(S)."""
    return (student_t_quantile((1 + level) / 2, seeds - 1) + student_t_quantile(power, seeds - 1)) * spread / math.sqrt(seeds)


def detectable_difference(values: np.ndarray, power: float = 0.8, level: float = 0.95) -> float | None:
    """The smallest true difference that ``seed_interval`` at ``level`` detects with probability
    ``power`` from as many seeds as (seeds, problems) ``values`` has, at their spread:
    (t_(1+level)/2 + t_power) x spread / sqrt(S). None with one seed (no spread between seeds)."""
    values = np.asarray(values, dtype=float)
    return None if values.shape[0] == 1 else _detectable(_seed_spread(values), values.shape[0], power, level)


def seeds_needed(values: np.ndarray, difference: float, power: float = 0.8, level: float = 0.95,
                 most: int = 200) -> int | None:
    """The fewest seeds with which ``seed_interval`` detects a true ``difference`` with probability
    ``power``, at the per-seed spread a pilot's (seeds >= 2, problems) ``values`` show; None if more
    than ``most`` would be needed (or the difference is 0)."""
    values = np.asarray(values, dtype=float)
    if values.shape[0] < 2:
        raise ValueError("planning needs a pilot of at least 2 seeds: one seed shows no spread between runs")
    spread = _seed_spread(values)
    for seeds in range(2, most + 1):
        if _detectable(spread, seeds, power, level) <= abs(difference):
            return seeds
    return None


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg q-values of ``p_values``: a verdict kept where q < 0.05 keeps the expected
    share of false ones among those kept at most 5%, however many the table makes."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    q, running = [0.0] * m, 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        q[i] = running
    return q


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values of ``p_values``: a verdict kept where the adjusted value is below
    0.05 keeps the chance of any false one among them at most 5% (for a few primary comparisons,
    declared before the results; Benjamini-Hochberg's q-values serve the rest of a table)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# Fewer seeds than this give intervals but no verdict: with one seed the interval leaves out the
# variation between training runs (a simulation with varying runs and no true difference said
# "higher" or "lower" 82-95% of the time at pass@1), and with two it barely estimates it.
MIN_VERDICT_SEEDS = 3


def verdict(low: float, high: float, seeds: int | None = None, min_seeds: int = MIN_VERDICT_SEEDS) -> str:
    """What an interval of a difference allows one to say; from fewer than ``min_seeds`` seeds
    (when ``seeds`` is given), nothing."""
    if seeds is not None and seeds < min_seeds:
        return f"{'one seed' if seeds == 1 else f'{seeds} seeds'}: no verdict"
    return "higher" if low > 0 else "lower" if high < 0 else "no detectable difference"


def pass_at_k_curve(num_samples, num_correct, ks: Sequence[int], n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean pass@k over problems for each k, with bootstrap confidence intervals.

    ``num_samples``/``num_correct`` are per problem; ks larger than a problem's n are an error.
    """
    n = np.asarray(num_samples)
    c = np.asarray(num_correct)
    curve = {}
    for k in ks:
        per_problem = pass_at_k(n, c, k)
        low, high = bootstrap_ci(np.atleast_1d(per_problem), n_boot, seed=seed)
        curve[int(k)] = {"mean": float(np.mean(per_problem)), "ci_low": low, "ci_high": high}
    return curve


def powers_of_two(n: int) -> list[int]:
    """1, 2, 4, ... up to n (and n itself): the k grid of the papers' pass@k plots."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks if ks[-1] == n else ks + [n]


def avg_at_k(correct: np.ndarray, k: int) -> float:
    """Mean correctness of the first k samples of each problem; ``correct`` is (problems, n)."""
    correct = np.asarray(correct, dtype=float)
    if not 1 <= k <= correct.shape[1]:
        raise ValueError(f"avg_at_k: k must be in [1, {correct.shape[1]}], got {k}")
    return float(correct[:, :k].mean())


def majority_answer(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most frequent non-None answer; ties go to the answer seen first."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def maj_at_k(answers: Sequence[Sequence[Hashable | None]], correct: Sequence[Sequence[bool]], k: int,
             resamples: int = 1, seed: int = 0) -> float:
    """Majority-vote accuracy over k samples per problem (STILL Tab. 4).

    ``answers[p][j]`` is sample j's extracted answer (None if none) and ``correct[p][j]`` whether
    that sample was verified correct; the vote is right when the winning answer's samples are.
    (With a reference string, pass ``correct = [[a == ref for a in row] ...]``.) With
    ``resamples`` > 1 the vote is averaged over random k-subsets (kept in sample order); with 1
    the first k samples vote. Ties go to the answer that comes first.
    """
    if len(answers) != len(correct):
        raise ValueError(f"maj_at_k: {len(answers)} answer lists for {len(correct)} correctness lists")
    rng = np.random.default_rng(seed)
    hits = []
    for sample_answers, sample_correct in zip(answers, correct):
        if len(sample_answers) != len(sample_correct):
            raise ValueError("maj_at_k: answers and correct must have the same length for every problem")
        if not 1 <= k <= len(sample_answers):
            raise ValueError(f"maj_at_k: k must be in [1, {len(sample_answers)}], got {k}")
        for _ in range(resamples):
            indices = range(k) if resamples == 1 else np.sort(rng.choice(len(sample_answers), k, replace=False))
            chosen = [sample_answers[i] for i in indices]
            winner = majority_answer(chosen)
            hits.append(winner is not None and any(sample_correct[i] for i in indices if sample_answers[i] == winner))
    return float(np.mean(hits))


def unsolvable(correct: np.ndarray, k: int) -> set[int]:
    """k-rollout unsolvable problems (STILL §2.1): indices with no correct answer among the first k."""
    correct = np.asarray(correct, dtype=bool)
    if not 1 <= k <= correct.shape[1]:
        raise ValueError(f"unsolvable: k must be in [1, {correct.shape[1]}], got {k}")
    return set(np.flatnonzero(~correct[:, :k].any(1)).tolist())


def set_overlaps(sets: dict[str, set]) -> dict[str, int]:
    """Sizes of every Venn region: key 'A&B' counts items in exactly A and B (and no other set)."""
    names = list(sets)
    everything = set().union(*sets.values()) if sets else set()
    regions: dict[str, int] = {}
    for item in everything:
        key = "&".join(n for n in names if item in sets[n])
        regions[key] = regions.get(key, 0) + 1
    return dict(sorted(regions.items()))
