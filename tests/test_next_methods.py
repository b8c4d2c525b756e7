"""The next wave of advantage estimators (NEXT_METHODS specification): MaxRL and PKPO against the
specification's worked examples, brute-force enumeration of k-subsets and exact arithmetic."""

import itertools
from fractions import Fraction
from math import comb

import numpy as np
import pytest
import torch

from rlvr_explore.advantages import compute_advantages, pkpo_group



def advantages(estimator, rewards, **hp):
    rewards = torch.tensor(rewards, dtype=torch.float64)
    group_ids = torch.zeros(len(rewards), dtype=torch.long)
    return compute_advantages(estimator, rewards, group_ids, torch.ones(len(rewards), 3), **hp)[:, 0].tolist()


@pytest.mark.parametrize("rewards,expected", [([1, 0, 0, 1], [1, -1, -1, 1]), ([1, 0, 0, 0], [3, -1, -1, -1]),
                                              ([0, 0, 0, 0], [0] * 4), ([1, 1, 1, 1], [0] * 4),
                                              ([0.5, 0.25, 0.0, 0.25], [1, 0, -1, 0])])
def test_maxrl_worked_examples(rewards, expected):
    assert advantages("maxrl", rewards) == pytest.approx(expected, rel=1e-5, abs=1e-5)  # eps = 1e-6 in the mean


def test_maxrl_zero_for_singletons_and_non_positive_means():
    rewards = torch.tensor([1.0, -1.0, 0.5, 1.0, 0.0])
    groups = torch.tensor([0, 1, 1, 2, 2])  # a group of one; a group of mean -0.25; a group of mean 0.5
    got = compute_advantages("maxrl", rewards, groups, torch.ones(5, 2))[:, 0]
    assert got.tolist() == pytest.approx([0, 0, 0, 1, -1], abs=1e-5)


def brute_force_pkpo(g, k, baseline):
    """PKPO's transforms by enumerating every k-subset (exact rationals)."""
    n = len(g)
    subsets = list(itertools.combinations(range(n), k))
    plain = [Fraction(sum(max(g[j] for j in s) for s in subsets if i in s), comb(n, k)) for i in range(n)]
    if baseline == "none":
        return plain
    if baseline == "loo_minus_one":
        return [Fraction(sum(max(g[j] for j in s) - max(g[j] for j in s if j != i) for s in subsets if i in s),
                         comb(n, k)) for i in range(n)]

    def mean_max(values, size):  # the mean max over size-subsets of values
        chosen = list(itertools.combinations(values, size))
        return Fraction(sum(max(c) for c in chosen), len(chosen))

    return [plain[i] - Fraction(k, n - 1) * mean_max([g[j] for j in range(n) if j != i], k) for i in range(n)]


@pytest.mark.parametrize("baseline", ["none", "loo_minus_one", "loo"])
@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_pkpo_equals_enumeration_of_all_k_subsets(n, baseline):
    rng = torch.Generator().manual_seed(n)
    for k in range(2 if baseline == "loo_minus_one" else 1, n + (baseline != "loo")):
        for kind in ("binary", "continuous", "ties"):
            if kind == "binary":
                g = [Fraction(int(x)) for x in (torch.rand(n, generator=rng) < 0.5)]
            elif kind == "continuous":
                g = [Fraction(int(x), 100) for x in torch.randint(0, 101, (n,), generator=rng)]
            else:
                g = [Fraction(int(x), 4) for x in torch.randint(0, 3, (n,), generator=rng)]
            got = pkpo_group(torch.tensor([float(x) for x in g], dtype=torch.float64), k, baseline)
            expected = [float(x) for x in brute_force_pkpo(g, k, baseline)]
            assert got.tolist() == pytest.approx(expected, abs=1e-12), (k, kind, g)


@pytest.mark.parametrize("n,c,k", [(4, 2, 2), (8, 3, 4), (8, 1, 8), (16, 5, 3)])
def test_pkpo_binary_closed_forms(n, c, k):
    rewards = torch.tensor([1.0] * c + [0.0] * (n - c), dtype=torch.float64)
    plain = pkpo_group(rewards, k, "none")
    assert plain[:c].tolist() == pytest.approx([k / n] * c)  # a correct sample: k/n
    rho = 1 - comb(n - 1 - c, k - 1) / comb(n - 1, k - 1)  # pass@(k-1) of the other n-1
    assert plain[c:].tolist() == pytest.approx([k / n * rho] * (n - c))
    loo = pkpo_group(rewards, k, "loo_minus_one")
    assert loo[:c].tolist() == pytest.approx([comb(n - c, k - 1) / comb(n, k)] * c)
    assert loo[c:].tolist() == [0.0] * (n - c)  # no negative gradient on binary rewards


def test_pkpo_worked_examples():
    assert advantages("pkpo", [1, 0, 0, 1], pkpo_k=2, pkpo_baseline="none") == pytest.approx([1 / 2, 1 / 3, 1 / 3, 1 / 2])
    assert advantages("pkpo", [1, 0, 0, 1], pkpo_k=2) == pytest.approx([1 / 3, 0, 0, 1 / 3])
    assert advantages("pkpo", [1, 0, 0, 1], pkpo_k=3) == pytest.approx([1 / 4, 0, 0, 1 / 4])
    assert advantages("pkpo", [1, 0, 0, 1], pkpo_k=4) == [0, 0, 0, 0]
    assert advantages("pkpo", [1, 0, 0, 0], pkpo_k=4) == pytest.approx([1, 0, 0, 0])
    assert advantages("pkpo", [0.1, 0.5, 0.2, 0.9], pkpo_k=2) == pytest.approx([0, 0.116667, 0.016667, 0.316667],
                                                                              abs=1e-6)
    assert advantages("pkpo", [0.1, 0.5, 0.2, 0.9], pkpo_k=4) == pytest.approx([0, 0, 0, 0.4])
    assert advantages("pkpo", [1, 1, 1, 1], pkpo_k=1, pkpo_baseline="loo") == pytest.approx([-1 / 12] * 4)
    assert advantages("pkpo", [1, 0, 0, 1], pkpo_k=1) == pytest.approx([0.5, -0.5, -0.5, 0.5])  # k = 1: r - mean


def test_pkpo_k_schedule_and_errors():
    rewards = [1, 0, 0, 0]
    with pytest.raises(ValueError, match="needs step"):
        advantages("pkpo", rewards, pkpo_k=4, pkpo_k_switch_step=10)
    r, g, m = torch.tensor(rewards, dtype=torch.float64), torch.zeros(4, dtype=torch.long), torch.ones(4, 2)
    before = compute_advantages("pkpo", r, g, m, step=9, pkpo_k=4, pkpo_k_switch_step=10)[:, 0]
    after = compute_advantages("pkpo", r, g, m, step=10, pkpo_k=4, pkpo_k_switch_step=10)[:, 0]
    assert before.tolist() == pytest.approx([1, 0, 0, 0]) and after.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    with pytest.raises(ValueError, match="1 <= k <= group size; got k=5 for a group of 4"):
        advantages("pkpo", rewards, pkpo_k=5)
    with pytest.raises(ValueError, match="'loo' baseline needs k < group size"):
        advantages("pkpo", rewards, pkpo_k=4, pkpo_baseline="loo")
    with pytest.raises(ValueError, match="pkpo_baseline must be one of loo_minus_one, loo, none"):
        advantages("pkpo", rewards, pkpo_baseline="mean")


@pytest.mark.parametrize("advantage,hp", [("maxrl", "{}"), ("pkpo", "{pkpo_k: 2, pkpo_k_switch_step: 1}")])
def test_the_trainer_runs_the_new_estimators(tiny_config, advantage, hp):
    from rlvr_explore.train.rl import RLTrainer
    from rlvr_explore.train.runtime import read_metrics

    cfg = tiny_config(f"algorithm.advantage={advantage}", f"algorithm.advantage_hp={hp}")
    RLTrainer(cfg).run()
    records = [r for r in read_metrics(cfg.run.out_dir) if r["kind"] == "train"]
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
