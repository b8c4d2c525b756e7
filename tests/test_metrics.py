"""Evaluation metrics against exact arithmetic and brute force; diagnostics against hand-computed cases."""

import itertools
import random
from fractions import Fraction
from math import comb

import numpy as np
import pytest
import torch

from rlvr_explore import metrics


def exact_pass_at_k(n, c, k):
    return 1 - Fraction(comb(n - c, k), comb(n, k))


def test_pass_at_k_against_exact_rationals():
    rng = random.Random(0)
    cases = [(10_000, 1, 1), (10_000, 1, 10_000), (10_000, 9_999, 1), (10_000, 3, 7), (10_000, 5_000, 1024),
             (10_000, 2, 9_998), (10_000, 0, 5), (1, 1, 1), (1, 0, 1)]
    cases += [(n, rng.randint(0, n), rng.randint(1, n)) for n in (rng.randint(1, 10_000) for _ in range(300))]
    for n, c, k in cases:
        exact = exact_pass_at_k(n, c, k)
        got = metrics.pass_at_k(n, c, k)
        if exact == 0:
            assert got == 0
        else:
            assert abs(Fraction(got) - exact) / exact < Fraction(1, 10**12), (n, c, k, got, float(exact))


def test_pass_at_k_tiny_values_keep_relative_precision():
    # 1 - C(9999, 1)/C(10000, 1) = 1e-4 exactly; C(n-c,k)/C(n,k) for c = 1, k = 1 at n = 10^4
    assert metrics.pass_at_k(10_000, 1, 1) == pytest.approx(1e-4, rel=1e-14)
    assert metrics.pass_at_k(10_000, 1, 3) == pytest.approx(3e-4, rel=1e-14)


def test_pass_at_k_arrays_broadcast():
    got = metrics.pass_at_k(np.array([4, 4, 4]), np.array([0, 1, 4]), 2)
    assert got.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert metrics.pass_at_k(np.array([[5], [6]]), 2, np.array([1, 2])).shape == (2, 2)


@pytest.mark.parametrize("n,c,k,match", [
    (4, 5, 1, "c > n"), (4, 2, 5, "k > n"), (-1, 0, 1, "n must be >= 0"), (4, -1, 1, "c must be >= 0"),
    (4, 1, 0, "k must be >= 1"), (4.5, 1, 1, "n must be integers"),
])
def test_pass_at_k_rejects_impossible_input(n, c, k, match):
    with pytest.raises(ValueError, match=match):
        metrics.pass_at_k(n, c, k)


def test_pass_at_k_equals_subset_enumeration():
    samples = [True, False, False, True, False, False]
    n, c = len(samples), sum(samples)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(samples, k))
        assert metrics.pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_curve_mean_and_ci():
    curve = metrics.pass_at_k_curve([4, 4, 4, 4], [0, 1, 2, 4], ks=[1, 2])
    assert curve[1]["mean"] == pytest.approx((0 + 0.25 + 0.5 + 1) / 4)
    assert curve[2]["mean"] == pytest.approx((0 + 0.5 + 5 / 6 + 1) / 4)
    assert curve[1]["ci_low"] <= curve[1]["mean"] <= curve[1]["ci_high"]
    assert metrics.powers_of_two(10) == [1, 2, 4, 8, 10] and metrics.powers_of_two(8) == [1, 2, 4, 8]


def test_avg_maj_unsolvable():
    correct = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 1]])
    assert metrics.avg_at_k(correct, 2) == pytest.approx(1 / 6)
    assert metrics.unsolvable(correct, 2) == {1, 2} and metrics.unsolvable(correct, 4) == {1}
    answers = [["5", "3", "3", None], ["1", None, None, None], ["2", "7", "7", "2"]]
    references = ["3", "1", "2"]
    right = [[a == ref for a in row] for row, ref in zip(answers, references)]
    assert metrics.maj_at_k(answers, right, k=4) == pytest.approx(1.0)  # ties go to the first seen
    assert metrics.maj_at_k(answers, right, k=1) == pytest.approx(2 / 3)
    # brute force over all 2-subsets
    all_pairs = [metrics.majority_answer(p) == "3" for p in itertools.combinations(answers[0], 2)]
    estimate = metrics.maj_at_k([answers[0]], [right[0]], k=2, resamples=20_000, seed=1)
    assert estimate == pytest.approx(np.mean(all_pairs), abs=0.02)


def test_set_overlaps_venn_regions():
    regions = metrics.set_overlaps({"grpo": {1, 2, 3}, "casp": {2, 3, 4}, "base": {3, 5}})
    assert regions == {"base": 1, "casp": 1, "grpo": 1, "grpo&casp": 1, "grpo&casp&base": 1}


def test_answer_statistics():
    assert metrics.extract_boxed(r"so \boxed{\frac{1}{2}} and \boxed{3}") == "3"
    assert metrics.extract_boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert metrics.extract_boxed("no box") is None
    assert metrics.answer_entropy(["1", "1", None, "2"]) == pytest.approx(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)))
    q = metrics.response_quality(r"the answer is \boxed{4} 答案")
    assert q["language_mixing"] and not q["format_violation"] and not q["repetition"]
    assert metrics.response_quality("a b c a b c a b c a b c")["repetition"]
    assert metrics.ngram_redundancy("a b c a b c".split()) == pytest.approx(1 - 3 / 4)
    assert metrics.category_counts(["3.14", "=", "therefore", "Wait", "the", "banana"]) == {
        "formal_reasoning": 2, "logical_structuring": 1, "metacognitive": 1, "semantic_support": 1, "other": 1}
    assert metrics.trajectory_similarity(["abcd", "abcd", "wxyz"]) == pytest.approx((1 + 0 + 0) / 3)


def test_rank_and_sampled_logprobs_by_hand():
    topn = torch.log(torch.tensor([[[0.5, 0.3], [0.9, 0.05], [0.0001, 0.0001]], [[0.6, 0.2], [0.7, 0.1], [0.4, 0.3]]]))
    mask = torch.tensor([[True, True, False], [True, True, True]])
    expected_rank1 = (np.mean(np.log([0.5, 0.9])) + np.mean(np.log([0.6, 0.7, 0.4]))) / 2
    assert metrics.rank_logprobs(topn, mask)[0] == pytest.approx(expected_rank1, rel=1e-6)
    assert metrics.sampled_logprob(topn[..., 1], mask) == pytest.approx(
        (np.mean(np.log([0.3, 0.05])) + np.mean(np.log([0.2, 0.1, 0.3]))) / 2, rel=1e-6)


def test_entropy_summary_by_hand():
    H = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 6.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    s = metrics.entropy_summary(H, mask, correct=torch.tensor([True, False]), position_bins=2)
    assert s["mean"] == pytest.approx(16 / 5)
    assert s["correct_mean"] == pytest.approx(2.0) and s["incorrect_mean"] == pytest.approx(5.0)
    assert s["by_position"] == pytest.approx([(1 + 4) / 2, (2 + 3 + 6) / 3])  # relative positions 0 | 0.5, 1


def test_expected_distinct_tokens_matches_simulation_and_limits():
    p = torch.tensor([0.7, 0.2, 0.1])
    assert float(metrics.expected_distinct_tokens(p, 1)) == pytest.approx(1.0)
    exact = 3 - 0.3**4 - 0.8**4 - 0.9**4
    assert float(metrics.expected_distinct_tokens(p, 4)) == pytest.approx(exact)
    assert float(metrics.expected_distinct_tokens(torch.tensor([1.0, 0.0]), 1000)) == pytest.approx(1.0)


def test_probability_bins_and_grouped_candidates():
    topn = torch.log(torch.tensor([[[0.9, 0.04], [0.5, 0.3]]]))
    bins = metrics.probability_bins(topn, torch.ones(1, 2, dtype=torch.bool), edges=(0, 0.05, 0.5, 1.0))
    assert bins["fractions"]["rank1"] == [0, 0, 1.0] and bins["fractions"]["rank2"] == [0.5, 0.5, 0]
    probs = torch.tensor([[0.6, 0.3, 0.06, 0.04], [0.97, 0.01, 0.01, 0.01]])
    cols = metrics.grouped_candidates(probs, torch.tensor([1, 3]))
    assert [v for v, _, _ in cols[0]] == [0, 1, 2]
    assert [(v, s) for v, _, s in cols[1]] == [(0, False), (3, True)]


def test_gradient_norm_proxy_equals_lm_head_gradient_norm():
    torch.manual_seed(0)
    h = torch.randn(5)
    W = torch.randn(7, 5, requires_grad=True)
    logp = torch.log_softmax(W @ h, -1)
    (-1.7 * logp[3]).backward()
    probs = torch.softmax(W.detach() @ h, -1)
    proxy = metrics.gradient_norm_proxy(torch.tensor(-1.7), probs, torch.tensor(3), h)
    assert float(proxy) == pytest.approx(float(W.grad.norm()), rel=1e-5)


def test_token_replacement_impact_uses_best_other_candidate():
    probs = torch.tensor([0.5, 0.3, 0.2])
    out = metrics.token_replacement_impact(probs, 0, {0: 0.8, 1: 0.5, 2: 0.1}.get)
    assert out == {"replacement": 1, "original_accuracy": 0.8, "replaced_accuracy": 0.5, "impact": pytest.approx(0.3)}


def test_accuracy_buckets_and_greedy_logprob():
    b = metrics.accuracy_buckets([0, 0, 0.05, 0.5, 0.95, 1, 1, 1], bins=2)
    assert b["labels"] == ["0", "(0,0.5]", "(0.5,1]", "1"] and b["counts"] == [2, 2, 1, 3]
    assert metrics.greedy_logprob(torch.tensor([[-1.0, -3.0]]), torch.ones(1, 2, dtype=torch.bool)) == -2.0


def test_entropy_performance_fit_recovers_parameters():
    H = np.linspace(0.1, 1.5, 12)
    fit = metrics.entropy_performance_fit(H, -0.3 * np.exp(H) + 0.9)
    assert fit["a"] == pytest.approx(0.3) and fit["b"] == pytest.approx(0.9) and fit["r2"] == pytest.approx(1.0)


def test_detect_stages_finds_the_knee():
    curve = [0.1 + 0.05 * t for t in range(10)] + [0.58 + 0.001 * t for t in range(20)]
    stages = metrics.detect_stages(curve)
    assert stages["plateau_start"] == 10
    assert stages["rising_slope"] == pytest.approx(0.05) and stages["plateau_slope"] == pytest.approx(0.001)
