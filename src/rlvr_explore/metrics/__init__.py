"""Evaluation metrics (pass@k and friends), answer statistics and exploration diagnostics."""

from .answers import (
    answer_entropy, category_counts, extract_boxed, ngram_redundancy, response_quality, token_category,
    trajectory_similarity,
)
from .diagnostics import (
    accuracy_buckets, detect_stages, entropy_performance_fit, entropy_summary, expected_distinct_tokens,
    gradient_norm_proxy, greedy_logprob, grouped_candidates, mean_branching_factor, probability_bins,
    rank_logprobs, sampled_logprob, token_replacement_impact,
)
from .passk import (
    MIN_VERDICT_SEEDS, avg_at_k, benjamini_hochberg, bootstrap_ci, detectable_difference, holm, maj_at_k, majority_answer,
    paired_pass_at_k_difference, pass_at_k, pass_at_k_curve, powers_of_two, rerun_interval, seed_interval,
    seed_p_value, seeds_needed, set_overlaps, student_t_cdf, student_t_quantile, unsolvable, verdict,
)

__all__ = [
    "MIN_VERDICT_SEEDS", "accuracy_buckets", "answer_entropy", "avg_at_k", "benjamini_hochberg", "bootstrap_ci", "category_counts", "detect_stages",
    "entropy_performance_fit", "entropy_summary", "expected_distinct_tokens", "extract_boxed",
    "detectable_difference", "gradient_norm_proxy", "holm", "greedy_logprob", "grouped_candidates", "maj_at_k", "majority_answer",
    "mean_branching_factor", "ngram_redundancy", "paired_pass_at_k_difference", "pass_at_k", "pass_at_k_curve",
    "powers_of_two",
    "probability_bins", "rank_logprobs", "response_quality", "sampled_logprob", "set_overlaps",
    "rerun_interval", "seed_interval", "seed_p_value", "seeds_needed", "student_t_cdf", "student_t_quantile", "token_category", "token_replacement_impact",
    "trajectory_similarity", "unsolvable",
    "verdict",
]
