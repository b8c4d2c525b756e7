"""Advantage estimators and advantage shaping, as pure tensor functions in registries.

An estimator maps sequence rewards to token advantages, reading any other input it needs (the
training ``step`` for a schedule) from ``extra``:
    ``estimator(rewards (B,), group_ids (B,), response_mask (B, T), cfg, extra) -> (B, T)``
A shaping step rewrites token advantages, reading what it needs from ``extra``:
    ``shaping(advantages (B, T), response_mask, group_ids, cfg, extra) -> (B, T)``
:func:`compute_advantages` runs one estimator followed by any shaping steps, in order.
Responses of the same prompt share a group id; padding positions get advantage 0.
"""

from __future__ import annotations

import collections
import functools
import json
import os
from dataclasses import dataclass, fields
from fractions import Fraction
from math import comb, sqrt
from typing import Callable

import torch

from rlvr_explore.documented import documented


PKPO_BASELINES = ("loo_minus_one", "loo", "none")
GTPO_O_MINUS = ("inverse_entropy", "entropy", "none")
GTPO_NORMALIZE = ("joint", "separate")
OUTCOME_VARIANTS = ("ucb", "ucb_mean", "ucb_con")


@dataclass
class AdvantageConfig:
    """Hyper-parameters of the estimators and shaping steps."""

    eps: float = documented(1e-6, "Added to the group std in GRPO's normalisation (CaSP §2).")
    correct_threshold: float = documented(0.5, "A response counts as correct when its reward exceeds this (PSR/NSR, pass@k).")
    w_reinforce_lambda: float = documented(0.1, "W-REINFORCE weight of correct responses, A = +lambda (Zhu et al. 2025).")
    passk_k: int = documented(4, "k of the pass@k advantage, k < group size (Chen et al. 2025b).")
    entropy_adv_alpha: float = documented(0.4, "alpha of the entropy advantage term min(alpha H, |A| / kappa) (Cheng et al. 2025).")
    entropy_adv_kappa: float = documented(2.0, "kappa, the cap |A| / kappa of the entropy advantage term (Cheng et al. 2025).")
    ppl_alpha: float = documented(0.01, "alpha of the PPL weight A (1 - alpha w_ppl) (STILL §4.4.2 Eq. 11).")
    position_gamma: float = documented(0.1, "gamma of the position bonus gamma * sigmoid(d m (l - n)) (STILL §4.4.2 Eq. 8).")
    position_direction: float = documented(1.0, "d: +1 favours late tokens, -1 early ones (STILL §3.2.4).")
    position_scale: float = documented(15.0, "m, the slope of the position sigmoid (STILL §4.4.2).")
    position_shift: float = documented(
        0.5, "n, the centre of the position sigmoid. STILL's text prints n = -0.5 with r = m (l - n), which "
        "saturates the sigmoid over the whole response and makes the bonus a constant; we centre it at 0.5."
    )
    position_window: tuple[int, int] = documented((200, 300), "Steps [start, end) in which the position bonus applies (STILL §4.4.2).")
    pkpo_k: int = documented(4, "k of PKPO's pass@k / max@k transform, 1 <= k <= group size (PKPO, arXiv 2505.15201).")
    pkpo_baseline: str = documented(
        "loo_minus_one", "PKPO baseline: 'loo_minus_one' (the paper's lowest-variance one, 0 for incorrect binary "
        "samples), 'loo' (the leave-one-out of its Listing 1, k < group size) or 'none' (the plain transform).")
    pkpo_k_switch_step: int | None = documented(
        None, "PKPO's k annealing: from this training step on k = 1 (pkpo_k before). The paper anneals from a "
        "large k to 1; its exact schedule is unverified.")

    unlikeliness_beta: float = documented(
        0.25, "beta of the unlikeliness reward r (1 - beta rank/G), rank 0 = least likely (arXiv 2506.02355, official script).")
    unlikeliness_keep_saturated: bool = documented(
        False, "Keep groups whose every response is correct (their reshaped rewards differ by rank); the official "
        "pipeline drops them, so they get 0 by default.")
    gtpo_alpha1: float = documented(1.0, "alpha_1 of GTPO / GRPO-S, the weight of the reward (arXiv 2508.04349; third-party reading).")
    gtpo_alpha2: float = documented(0.1, "alpha_2 of GTPO / GRPO-S, the weight of the entropy share (arXiv 2508.04349; third-party reading).")
    gtpo_o_minus: str = documented(
        "inverse_entropy", "How incorrect responses share their penalty: 'inverse_entropy' (confident mistakes "
        "penalised more, the Eq. 5 reading), 'entropy' (the v6 caption's reading) or 'none' (-alpha_1 alone).")
    gtpo_normalize: str = documented(
        "joint", "'joint' (our own reading, with no source): one mean and std over all the group's tokens "
        "(sequences for GRPO-S); 'separate': per polarity, as the third-party 'paper-exact' reading, which "
        "cancels alpha_1 r and gives half of the correct tokens a negative advantage.")
    gtpo_keep_equal_groups: bool = documented(
        False, "GTPO / GRPO-S: keep groups whose rewards are all equal (their advantages are then normalised entropy "
        "noise); by default they get 0, as in GRPO, whose normalisation leaves them no signal.")

    outcome_variant: str = documented(
        "ucb_con", "Outcome-based exploration bonus (arXiv 2509.06941): 'ucb' b, 'ucb_mean' b - group mean of b, "
        "'ucb_con' b - outcome_b0 (the paper's best), b = min(1, N(x, a)^-1/2).")
    outcome_coef: float = documented(1.0, "c, the weight of the outcome UCB bonus added to the advantage (unverified).")
    outcome_b0: float = documented(0.5, "b0 of UCB-Con: answers seen more than 1/b0^2 times get a negative bonus (the paper's example).")
    outcome_batch_coef: float = documented(
        1.0, "Weight of the within-group repetition penalty -(1/n) sum_{j != i} 1{a_i = a_j} (outcome_batch).")
    outcome_unparsed: str = documented(
        "one_answer", "Responses without an extractable answer: 'one_answer' (they share the answer None) or "
        "'exclude' (no bonus, no count, never a repeat).")

    def validate(self) -> None:
        if self.passk_k < 1:
            raise ValueError(f"passk_k must be >= 1, got {self.passk_k}")
        if self.entropy_adv_kappa <= 0:
            raise ValueError(f"entropy_adv_kappa must be > 0, got {self.entropy_adv_kappa}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.pkpo_k < 1:
            raise ValueError(f"pkpo_k must be >= 1, got {self.pkpo_k}")
        if self.pkpo_baseline not in PKPO_BASELINES:
            raise ValueError(f"pkpo_baseline must be one of {', '.join(PKPO_BASELINES)}, got {self.pkpo_baseline!r}")
        if not 0 <= self.unlikeliness_beta <= 1:
            raise ValueError(f"unlikeliness_beta must be in [0, 1], got {self.unlikeliness_beta}")
        if self.gtpo_o_minus not in GTPO_O_MINUS:
            raise ValueError(f"gtpo_o_minus must be one of {', '.join(GTPO_O_MINUS)}, got {self.gtpo_o_minus!r}")
        if self.gtpo_normalize not in GTPO_NORMALIZE:
            raise ValueError(f"gtpo_normalize must be one of {', '.join(GTPO_NORMALIZE)}, got {self.gtpo_normalize!r}")
        if self.outcome_variant not in OUTCOME_VARIANTS:
            raise ValueError(f"outcome_variant must be one of {', '.join(OUTCOME_VARIANTS)}, got {self.outcome_variant!r}")
        if self.outcome_unparsed not in ("one_answer", "exclude"):
            raise ValueError(f"outcome_unparsed must be 'one_answer' or 'exclude', got {self.outcome_unparsed!r}")
        if self.pkpo_k_switch_step is not None and self.pkpo_k_switch_step < 0:
            raise ValueError(f"pkpo_k_switch_step must be >= 0 or null, got {self.pkpo_k_switch_step}")


ADVANTAGE_CONFIG_KEYS = tuple(f.name for f in fields(AdvantageConfig))


def checked_config(hyperparameters: dict) -> AdvantageConfig:
    """The config of these keys, each known and every value valid (ValueError naming the first fault)."""
    for key in hyperparameters:
        if key not in ADVANTAGE_CONFIG_KEYS:
            raise ValueError(f"unknown key {key!r}; accepted: {', '.join(ADVANTAGE_CONFIG_KEYS)}")
    cfg = AdvantageConfig(**hyperparameters)
    cfg.validate()
    return cfg
Estimator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AdvantageConfig, dict], torch.Tensor]
ESTIMATORS: dict[str, Estimator] = {}
SHAPINGS: dict[str, Callable] = {}
READS: dict[str, frozenset[str]] = {}  # estimator or shaping step -> inputs it needs
KEYS: dict[str, frozenset[str]] = {}  # estimator or shaping step -> the advantage_hp keys it reads
COMMON_KEYS = frozenset({"eps", "correct_threshold"})  # read by most estimators


def _registrar(registry: dict, kind: str, name: str, reads: tuple[str, ...], keys: tuple[str, ...]):
    def wrap(fn):
        if name in READS:  # one namespace for estimators and shaping steps; a second definition is a mistake
            raise ValueError(f"{kind} {name!r} is registered already ({(ESTIMATORS | SHAPINGS)[name].__module__})")
        unknown = set(keys) - set(ADVANTAGE_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"{kind} {name!r} declares unknown keys {sorted(unknown)}")
        registry[name] = fn
        READS[name] = frozenset(reads)
        KEYS[name] = frozenset(keys) | COMMON_KEYS
        return fn

    return wrap


def register_advantage(name: str, reads: tuple[str, ...] = (), keys: tuple[str, ...] = ()):
    """``reads``: what the estimator needs beyond rewards, groups and mask (``old_logp``,
    ``entropy``, ``step``), so an integration knows what to collect (:func:`inputs_read`);
    ``keys``: the ``advantage_hp`` keys it reads beside ``COMMON_KEYS``. A name registered twice
    is an error."""
    return _registrar(ESTIMATORS, "advantage estimator", name, reads, keys)


def register_shaping(name: str, reads: tuple[str, ...] = (), keys: tuple[str, ...] = ()):
    """``reads`` and ``keys`` as for :func:`register_advantage`; ``answers`` (with the prompt ids
    and the answer counts) is extracted only for the steps that read it."""
    return _registrar(SHAPINGS, "shaping step", name, reads, keys)


def keys_read(estimator: str, shaping=()) -> frozenset[str]:
    """The ``advantage_hp`` keys an estimator and its shaping steps read: any other is set in vain."""
    return frozenset().union(KEYS.get(estimator, COMMON_KEYS), *(KEYS.get(step, frozenset()) for step in shaping))


def inputs_read(estimator: str, shaping=()) -> frozenset[str]:
    """What an estimator and its shaping steps read beyond rewards, groups and mask."""
    return frozenset().union(READS.get(estimator, frozenset()), *(READS.get(step, frozenset()) for step in shaping))


# ---------------------------------------------------------------- group statistics


def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Dense group index 0..G-1 for each response, and the number of groups."""
    _, index = torch.unique(group_ids, return_inverse=True)
    return index, int(index.max()) + 1 if index.numel() else 0


def group_mean_std(values: torch.Tensor, group_ids: torch.Tensor):
    """Per-response group mean, unbiased group std (torch.std, as verl) and group size."""
    index, n_groups = group_index(group_ids)
    values = values.double()
    size = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, index, torch.ones_like(values))
    total = torch.zeros_like(size).index_add_(0, index, values)
    mean = (total / size)[index]
    square = torch.zeros_like(size).index_add_(0, index, (values - mean) ** 2)
    std = (square / (size - 1).clamp(min=1)).sqrt()[index]
    return mean, std, size[index]


def broadcast(per_response: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, T), zero at padding."""
    return per_response.unsqueeze(-1).to(torch.float32) * response_mask.to(torch.float32)


def response_mean(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B,) float64 mean over each response's tokens (0 for an empty response)."""
    mask = response_mask.double()
    return (values.double() * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def is_correct(rewards: torch.Tensor, cfg: AdvantageConfig) -> torch.Tensor:
    return rewards > cfg.correct_threshold


# ---------------------------------------------------------------- estimators


@register_advantage("grpo")
def grpo(rewards, group_ids, response_mask, cfg, extra):
    """A_i = (R_i - mean_g R) / (std_g R + eps); 0 for a group of one (CaSP §2)."""
    mean, std, size = group_mean_std(rewards, group_ids)
    adv = torch.where(size > 1, (rewards.double() - mean) / (std + cfg.eps), torch.zeros_like(mean))
    return broadcast(adv, response_mask)


@register_advantage("dr_grpo")
def dr_grpo(rewards, group_ids, response_mask, cfg, extra):
    """A_i = R_i - mean_g R, no std normalisation (Liu et al. 2025)."""
    mean, _, _ = group_mean_std(rewards, group_ids)
    return broadcast(rewards.double() - mean, response_mask)


@register_advantage("rloo")
def rloo(rewards, group_ids, response_mask, cfg, extra):
    """Leave-one-out baseline: A_i = R_i - mean_{j != i} R_j = G/(G-1) (R_i - mean_g R)."""
    mean, _, size = group_mean_std(rewards, group_ids)
    adv = torch.where(size > 1, (rewards.double() - mean) * size / (size - 1).clamp(min=1), torch.zeros_like(mean))
    return broadcast(adv, response_mask)


@register_advantage("psr")
def psr(rewards, group_ids, response_mask, cfg, extra):
    """A = +1 for correct responses, 0 otherwise; no baseline (Zhu et al. 2025)."""
    return broadcast(is_correct(rewards, cfg).double(), response_mask)


@register_advantage("nsr")
def nsr(rewards, group_ids, response_mask, cfg, extra):
    """A = -1 for incorrect responses, 0 otherwise; no baseline (Zhu et al. 2025)."""
    return broadcast(torch.where(is_correct(rewards, cfg), 0.0, -1.0).double(), response_mask)


@register_advantage("w_reinforce", keys=("w_reinforce_lambda",))
def w_reinforce(rewards, group_ids, response_mask, cfg, extra):
    """A = +lambda for correct, -1 for incorrect; no baseline (Zhu et al. 2025)."""
    correct = is_correct(rewards, cfg)
    return broadcast(torch.where(correct, cfg.w_reinforce_lambda, -1.0).double(), response_mask)


def passk_group_advantages(n: int, c: int, k: int) -> tuple[float, float]:
    """(advantage of a correct, of an incorrect response) for a group of n with c correct.

    rho = 1 - C(n-c, k)/C(n, k) is the mean pass@k of the group's k-subsets and
    sigma = sqrt(rho (1 - rho)) their std; a response's advantage is the mean normalised reward
    of the k-subsets that contain it (Chen et al. 2025b). Exact rational arithmetic.
    """
    if not 1 <= k < n:
        raise ValueError(f"passk_adv needs 1 <= k < group size; got k={k} for a group of {n}")
    rho = 1 - Fraction(comb(n - c, k), comb(n, k))
    if rho in (0, 1):
        return 0.0, 0.0
    sigma = sqrt(rho * (1 - rho))
    all_wrong_with_me = Fraction(comb(n - c - 1, k - 1), comb(n - 1, k - 1))
    return float(1 - rho) / sigma, float(1 - rho - all_wrong_with_me) / sigma


@register_advantage("passk_adv", keys=("passk_k",))
def passk_adv(rewards, group_ids, response_mask, cfg, extra):
    """Pass@k advantages of Chen et al. (2025b), group by group."""
    index, n_groups = group_index(group_ids)
    correct = is_correct(rewards, cfg)
    adv = torch.zeros(rewards.shape[0], dtype=torch.float64, device=rewards.device)
    for g in range(n_groups):
        members = index == g
        n, c = int(members.sum()), int(correct[members].sum())
        pos, neg = passk_group_advantages(n, c, cfg.passk_k)
        adv[members] = torch.where(correct[members], pos, neg).double()
    return broadcast(adv, response_mask)


@register_advantage("maxrl")
def maxrl(rewards, group_ids, response_mask, cfg, extra):
    """A_i = (r_i - mean_g r) / (mean_g r + eps): GRPO normalised by the group's mean reward instead of
    its std, the gradient of the truncated maximum-likelihood objective (MaxRL, arXiv 2602.02710).
    A group of one, or with mean reward <= 0, gets 0 (for non-negative rewards; as prime-rl; the
    official code gives a singleton r / eps and SkyRL r)."""
    mean, _, size = group_mean_std(rewards, group_ids)
    usable = (size > 1) & (mean > 0)
    adv = torch.where(usable, (rewards.double() - mean) / (mean + cfg.eps), torch.zeros_like(mean))
    return broadcast(adv, response_mask)


def _choose(a: int, b: int) -> int:
    """C(a, b), 0 outside 0 <= b <= a."""
    return comb(a, b) if 0 <= b <= a else 0


@functools.lru_cache(maxsize=256)
def _pkpo_weights(n: int, k: int, baseline: str) -> torch.Tensor:
    """(n, n) float64 W with PKPO's transform = W @ (the group's rewards sorted ascending), exact
    rationals rounded once. Row i of the plain transform: the mean over the k-subsets I holding
    sample i of max_I g, i.e. C(i, k-1) on the diagonal and C(j-1, k-2) for j > i, over C(n, k)
    (0-based ranks). A baseline subtracts c * rho(g without sample i, k'), the mean max over
    k'-subsets of the others: 'loo_minus_one' k' = k - 1 and c = k / n (then the row is the mean of
    max_I g - max_{I without i} g), 'loo' k' = k and c = k / (n - 1)."""
    plain = [[Fraction(_choose(i, k - 1) if j == i else _choose(j - 1, k - 2) if j > i else 0, comb(n, k))
              for j in range(n)] for i in range(n)]
    if baseline == "none":
        return torch.tensor([[float(w) for w in row] for row in plain], dtype=torch.float64)
    sub_k, scale = (k - 1, Fraction(k, n)) if baseline == "loo_minus_one" else (k, Fraction(k, n - 1))
    # removing rank i shifts the ranks above it down by one
    others = [[Fraction(_choose(j, sub_k - 1) if j < i else _choose(j - 1, sub_k - 1) if j > i else 0,
                        comb(n - 1, sub_k))
               for j in range(n)] for i in range(n)]
    return torch.tensor([[float(p - scale * o) for p, o in zip(row, other)] for row, other in zip(plain, others)],
                        dtype=torch.float64)


def pkpo_group(rewards: torch.Tensor, k: int, baseline: str = "loo_minus_one") -> torch.Tensor:
    """PKPO's transformed rewards of one group (any real rewards; binary ones give pass@k): REINFORCE
    with them is an unbiased gradient of max@k (PKPO, arXiv 2505.15201, the sorted-order closed
    forms). With k = 1 'loo_minus_one' is undefined and falls back to the leave-one-out centring of
    the paper's Eq. 26, r_i - mean_{j != i} r_j = (r_i - mean r) n / (n - 1)."""
    n = rewards.numel()
    if not 1 <= k <= n:
        raise ValueError(f"PKPO needs 1 <= k <= group size; got k={k} for a group of {n}")
    if baseline == "loo" and k == n:
        raise ValueError(f"PKPO's 'loo' baseline needs k < group size; got k={k} for a group of {n}")
    values = rewards.double()
    if baseline == "loo_minus_one" and k == 1:
        return (values - values.mean()) * (n / (n - 1)) if n > 1 else torch.zeros_like(values)
    order = torch.argsort(values, stable=True)
    transformed = torch.empty_like(values)
    transformed[order] = _pkpo_weights(n, k, baseline).to(values.device) @ values[order]
    return transformed


@register_advantage("pkpo", reads=("step",), keys=("pkpo_k", "pkpo_baseline", "pkpo_k_switch_step"))
def pkpo(rewards, group_ids, response_mask, cfg, extra):
    """PKPO's pass@k / max@k transform per group, no std normalisation; k = 1 from
    ``pkpo_k_switch_step`` on (PKPO, arXiv 2505.15201)."""
    switch, step = cfg.pkpo_k_switch_step, extra.get("step")
    if switch is not None and step is None:
        raise ValueError("pkpo with pkpo_k_switch_step needs step=...")
    k = 1 if switch is not None and step >= switch else cfg.pkpo_k
    index, n_groups = group_index(group_ids)
    adv = torch.zeros(rewards.shape[0], dtype=torch.float64, device=rewards.device)
    for g in range(n_groups):
        members = index == g
        adv[members] = pkpo_group(rewards[members], k, cfg.pkpo_baseline)
    return broadcast(adv, response_mask)


@register_advantage("unlikeliness", reads=("old_logp",), keys=("unlikeliness_beta", "unlikeliness_keep_saturated"))
def unlikeliness(rewards, group_ids, response_mask, cfg, extra):
    """GRPO on r~_i = r_i (1 - beta rank_i / G), rank_i the place of the response's mean token
    log-prob under the old policy among its group's (0 = least likely, stable on ties): correct
    but already likely responses are reinforced less (unlikeliness reward, arXiv 2506.02355).
    Groups whose every response is correct get 0 unless ``unlikeliness_keep_saturated``."""
    likelihood = response_mean(_need(extra, "old_logp", "unlikeliness").detach(), response_mask)
    index, n_groups = group_index(group_ids)
    rank = torch.zeros_like(likelihood)
    for g in range(n_groups):
        members = (index == g).nonzero().squeeze(-1)
        order = torch.argsort(likelihood[members], stable=True)
        rank[members[order]] = torch.arange(len(members), dtype=rank.dtype, device=rank.device)
    _, _, size = group_mean_std(rewards, group_ids)
    adv = grpo(rewards.double() * (1 - cfg.unlikeliness_beta * rank / size), group_ids, response_mask, cfg, extra)
    if not cfg.unlikeliness_keep_saturated:
        share_correct, _, _ = group_mean_std(is_correct(rewards, cfg).double(), group_ids)
        adv = adv * (share_correct < 1).unsqueeze(-1)
    return adv


def _entropy_shares(values: torch.Tensor, active: torch.Tensor, eps: float) -> torch.Tensor:
    """values / (sum of values over the active members) * (number of active members), per column
    (token position) of (members, T); 0 where the sum is 0."""
    values = values * active
    total = values.sum(0, keepdim=True)
    count = active.sum(0, keepdim=True)
    return torch.where(total > 0, values / total.clamp(min=eps) * count, torch.zeros_like(values))


def _gtpo_shape(rewards, entropy, active, cfg) -> torch.Tensor:
    """GTPO's shaped rewards (members, T) of one group (its Eqs. 3 and 5 in the third-party reading):
    correct r~+ = a1 r + a2 H / sum_{O+_t} H * d_t; incorrect r~- = -a1 - a2 w / sum_{O-_t} w * h_t
    with w = 1 / (H + eps), w = H, or no second term (``gtpo_o_minus``)."""
    eps = 1e-8
    positive = is_correct(rewards, cfg).unsqueeze(-1) & active
    negative = ~is_correct(rewards, cfg).unsqueeze(-1) & active
    shaped = cfg.gtpo_alpha1 * rewards.unsqueeze(-1) + cfg.gtpo_alpha2 * _entropy_shares(entropy, positive, eps)
    if cfg.gtpo_o_minus == "none":
        penalty = torch.zeros_like(entropy)
    else:
        weight = 1 / (entropy + eps) if cfg.gtpo_o_minus == "inverse_entropy" else entropy
        penalty = cfg.gtpo_alpha2 * _entropy_shares(weight, negative, eps)
    return torch.where(positive, shaped, -cfg.gtpo_alpha1 - penalty) * active


# a standard deviation this small relative to the values is rounding, not spread: values that are
# equal in exact arithmetic (one response's tokens in 'separate') must not become +-1
STD_TOLERANCE = 1e-9


def _gtpo_normalize(shaped, active, correct, cfg) -> torch.Tensor:
    """(shaped - mean) / std (population) over the active entries of the group, or of each polarity
    (``gtpo_normalize``); 0 where the std is 0 up to rounding (``STD_TOLERANCE`` of the values'
    scale)."""
    out = torch.zeros_like(shaped)
    parts = [active] if cfg.gtpo_normalize == "joint" else [active & correct, active & ~correct]
    for part in parts:
        if part.any():
            values = shaped[part]
            std = values.std(unbiased=False)
            spread = std > STD_TOLERANCE * values.abs().max().clamp(min=1)
            out[part] = (values - values.mean()) / std if spread else torch.zeros_like(values)
    return out


def _no_signal(rewards: torch.Tensor, cfg) -> bool:
    """A group whose rewards are all equal, left at 0 unless ``gtpo_keep_equal_groups``."""
    return not cfg.gtpo_keep_equal_groups and bool((rewards == rewards[0]).all())


@register_advantage("gtpo", reads=("entropy",), keys=("gtpo_alpha1", "gtpo_alpha2", "gtpo_o_minus", "gtpo_normalize", "gtpo_keep_equal_groups"))
def gtpo(rewards, group_ids, response_mask, cfg, extra):
    """Token-level entropy-weighted advantages of GTPO (arXiv 2508.04349): the reward is shared out
    over each position's correct responses in proportion to their (detached) old-policy entropy,
    and the penalty over its incorrect ones (``gtpo_o_minus``), then normalised per group."""
    entropy = _need(extra, "entropy", "gtpo").detach().double()
    index, n_groups = group_index(group_ids)
    adv = torch.zeros(response_mask.shape, dtype=torch.float64, device=rewards.device)
    for g in range(n_groups):
        members = index == g
        active, r = response_mask[members], rewards[members].double()
        if _no_signal(r, cfg):
            continue
        shaped = _gtpo_shape(r, entropy[members], active, cfg)
        correct = is_correct(r, cfg).unsqueeze(-1).expand_as(active)
        adv[members] = _gtpo_normalize(shaped, active, correct, cfg)
    return adv


@register_advantage("grpo_s", reads=("entropy",), keys=("gtpo_alpha1", "gtpo_alpha2", "gtpo_o_minus", "gtpo_normalize", "gtpo_keep_equal_groups"))
def grpo_s(rewards, group_ids, response_mask, cfg, extra):
    """GRPO-S (arXiv 2508.04349): GTPO at the sequence level, each response's mean token entropy
    in place of the token's, normalised over the group's responses, then broadcast (the
    sequence-level details are unverified)."""
    mean_entropy = response_mean(_need(extra, "entropy", "grpo_s").detach(), response_mask)
    index, n_groups = group_index(group_ids)
    adv = torch.zeros_like(mean_entropy)
    for g in range(n_groups):
        members = index == g
        r = rewards[members].double()
        if _no_signal(r, cfg):
            continue
        one = torch.ones(len(r), 1, dtype=torch.bool, device=r.device)
        shaped = _gtpo_shape(r, mean_entropy[members].unsqueeze(-1), one, cfg)
        adv[members] = _gtpo_normalize(shaped, one, is_correct(r, cfg).unsqueeze(-1), cfg).squeeze(-1)
    return broadcast(adv, response_mask)


# ---------------------------------------------------------------- shaping


def _need(extra: dict, name: str, step: str):
    if extra.get(name) is None:
        raise ValueError(f"advantage shaping '{step}' needs {name}=...")
    return extra[name]


@register_shaping("entropy_adv", reads=("entropy",), keys=("entropy_adv_alpha", "entropy_adv_kappa"))
def entropy_adv(advantages, response_mask, group_ids, cfg, extra):
    """A'_t = A_t + min(alpha sg(H_t), |A_t| / kappa) (Cheng et al. 2025)."""
    entropy = _need(extra, "entropy", "entropy_adv").detach().to(advantages.dtype)
    bonus = torch.minimum(cfg.entropy_adv_alpha * entropy, advantages.abs() / cfg.entropy_adv_kappa)
    return (advantages + bonus) * response_mask


@register_shaping("ppl_shaping", reads=("old_logp",), keys=("ppl_alpha",))
def ppl_shaping(advantages, response_mask, group_ids, cfg, extra):
    """A'_i = A_i (1 - alpha w_i), w_i = (ln PPL_i - mu_g) / sigma_g under the old policy (STILL Eq. 7, 11)."""
    log_ppl = -response_mean(_need(extra, "old_logp", "ppl_shaping").detach(), response_mask)
    mean, std, size = group_mean_std(log_ppl, group_ids)
    weight = torch.where((size > 1) & (std > 0), (log_ppl - mean) / (std + cfg.eps), torch.zeros_like(mean))
    return advantages * (1.0 - cfg.ppl_alpha * weight).unsqueeze(-1).to(advantages.dtype)


@register_shaping("position_bonus", reads=("step",), keys=("position_gamma", "position_direction", "position_scale", "position_shift", "position_window"))
def position_bonus(advantages, response_mask, group_ids, cfg, extra):
    """A'_t = A_t + sign(A_t) min(b_t, |A_t| / 2), b_t = gamma sigmoid(d m (l_t - n)), inside the
    step window only (STILL Eq. 8, 12)."""
    step = _need(extra, "step", "position_bonus")
    start, end = cfg.position_window
    if not start <= step < end:
        return advantages
    mask = response_mask.to(advantages.dtype)
    index = mask.cumsum(-1) - 1
    length = mask.sum(-1, keepdim=True)
    relative = index / (length - 1).clamp(min=1)
    bonus = cfg.position_gamma * torch.sigmoid(
        cfg.position_direction * cfg.position_scale * (relative - cfg.position_shift)
    )
    return (advantages + advantages.sign() * torch.minimum(bonus, advantages.abs() / 2)) * mask


def _answer_keys(extra: dict, step: str, cfg: AdvantageConfig) -> list:
    """(question, answer) per response, None where the response's answer is excluded."""
    answers, prompt_ids = _need(extra, "answers", step), _need(extra, "prompt_ids", step)
    return [None if answer is None and cfg.outcome_unparsed == "exclude" else (prompt, answer)
            for prompt, answer in zip(prompt_ids, answers)]


@register_shaping("outcome_ucb", reads=("answers",), keys=("outcome_variant", "outcome_coef", "outcome_b0", "outcome_unparsed"))
def outcome_ucb(advantages, response_mask, group_ids, cfg, extra):
    """A' = A + c bonus_i with b_i = min(1, N(x, a_i)^-1/2), N the times answer a_i was seen for
    question x over training, this batch included (so N >= 1); bonus b (UCB), b - group mean of b
    (UCB-Mean) or b - b0 (UCB-Con) (outcome-based exploration, arXiv 2509.06941). The counts are
    ``extra['answer_counts']``, updated in place: the state the trainer checkpoints. Questions
    must have stable ids across steps (``prompt_ids``, the prompt text in the trainer)."""
    counts = _need(extra, "answer_counts", "outcome_ucb")
    keys = _answer_keys(extra, "outcome_ucb", cfg)
    for key in keys:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    seen = torch.tensor([counts[key] if key is not None else 0 for key in keys], dtype=torch.float64)
    included = seen > 0
    bonus = torch.where(included, seen.clamp(min=1).rsqrt().clamp(max=1.0), torch.zeros_like(seen))
    if cfg.outcome_variant == "ucb_mean":
        index, n_groups = group_index(group_ids)
        total = torch.zeros(n_groups, dtype=bonus.dtype).index_add_(0, index.cpu(), bonus)
        members = torch.zeros(n_groups, dtype=bonus.dtype).index_add_(0, index.cpu(), included.double())
        bonus = torch.where(included, bonus - (total / members.clamp(min=1))[index.cpu()], bonus)
    elif cfg.outcome_variant == "ucb_con":
        bonus = torch.where(included, bonus - cfg.outcome_b0, bonus)
    return (advantages + cfg.outcome_coef * bonus.to(advantages).unsqueeze(-1)) * response_mask


@register_shaping("outcome_batch", reads=("answers",), keys=("outcome_batch_coef", "outcome_unparsed"))
def outcome_batch(advantages, response_mask, group_ids, cfg, extra):
    """A' = A - c_batch (1/n) sum_{j != i} 1{a_i = a_j} over the response's group of n: answers the
    group repeats are penalised (outcome-based exploration's batch exploration, arXiv 2509.06941)."""
    keys = _answer_keys(extra, "outcome_batch", cfg)
    group = group_ids.tolist()
    size = {g: group.count(g) for g in set(group)}
    repeats = collections.Counter((g, key) for g, key in zip(group, keys) if key is not None)
    penalty = torch.tensor([(repeats[(g, key)] - 1) / size[g] if key is not None else 0.0 for g, key in zip(group, keys)],
                           dtype=torch.float64)
    return (advantages - cfg.outcome_batch_coef * penalty.to(advantages).unsqueeze(-1)) * response_mask


ANSWER_COUNTS_FILE = "rlvr_answer_counts.json"


def save_answer_counts(folder: str, counts: dict) -> None:
    """The outcome-exploration counts as ``folder/rlvr_answer_counts.json``, for the integrations'
    checkpoints (TRL's checkpoint-<n>, verl's global_step_<n>); written atomically."""
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, ANSWER_COUNTS_FILE + ".tmp")
    with open(temporary, "w") as f:
        json.dump([[prompt, answer, n] for (prompt, answer), n in counts.items()], f)
    os.replace(temporary, os.path.join(folder, ANSWER_COUNTS_FILE))


def load_answer_counts(folder: str) -> dict:
    """What :func:`save_answer_counts` wrote, or {} when the checkpoint has none."""
    path = os.path.join(folder, ANSWER_COUNTS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {(prompt, answer): n for prompt, answer, n in json.load(f)}


# ---------------------------------------------------------------- entry point


def available() -> dict[str, list[str]]:
    return {"estimators": sorted(ESTIMATORS), "shaping": sorted(SHAPINGS)}


def compute_advantages(
    estimator: str,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    shaping: tuple[str, ...] | list[str] = (),
    entropy: torch.Tensor | None = None,
    old_logp: torch.Tensor | None = None,
    step: int | None = None,
    answers: list | None = None,
    prompt_ids: list | None = None,
    answer_counts: dict | None = None,
    config: AdvantageConfig | None = None,
    **hyperparameters,
) -> torch.Tensor:
    """Token advantages (B, T): ``estimator`` then each ``shaping`` step in order. ``answers`` and
    ``prompt_ids`` (one per response) and the mutable ``answer_counts`` serve the outcome steps.
    The hyper-parameters come as keywords or, checked once already, as ``config``
    (a :class:`rlvr_explore.recipe.Recipe` passes its own)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; available: {', '.join(sorted(ESTIMATORS))}")
    unknown_steps = [s for s in shaping if s not in SHAPINGS]
    if unknown_steps:
        raise ValueError(f"unknown advantage shaping {unknown_steps}; available: {', '.join(sorted(SHAPINGS))}")
    if config is not None and hyperparameters:
        raise TypeError(f"{sorted(hyperparameters)} would be ignored beside config=: set them in the config")
    bad = sorted(set(hyperparameters) - set(ADVANTAGE_CONFIG_KEYS))
    if bad:
        raise ValueError(f"unknown advantage hyper-parameter(s) {bad}; known: {list(ADVANTAGE_CONFIG_KEYS)}")
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(f"rewards and group_ids must both be (B,), got {tuple(rewards.shape)} and {tuple(group_ids.shape)}")
    if response_mask.dim() != 2 or response_mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"response_mask must be (B={rewards.shape[0]}, T), got {tuple(response_mask.shape)}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf")
    cfg = config if config is not None else checked_config(hyperparameters)
    mask = response_mask.bool()
    extra = {"entropy": entropy, "old_logp": old_logp, "step": step, "answers": answers, "prompt_ids": prompt_ids,
             "answer_counts": answer_counts}
    advantages = ESTIMATORS[estimator](rewards, group_ids, mask, cfg, extra).float()
    for name in shaping:
        advantages = SHAPINGS[name](advantages, mask, group_ids, cfg, extra).float()
    return advantages


def informative_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(B,) bool: responses whose group's rewards are not all equal (DAPO dynamic sampling)."""
    _, std, size = group_mean_std(rewards, group_ids)
    return (size > 1) & (std > 0)


def overlong_penalty(lengths: torch.Tensor, max_length: int, cache_length: int) -> torch.Tensor:
    """DAPO's soft overlong punishment added to the reward (Yu et al. 2025; SPS App. B.2):
    0 up to max - cache tokens, then falling linearly to -1 at max, -1 beyond."""
    if not 0 < cache_length <= max_length:
        raise ValueError(f"need 0 < cache_length <= max_length, got {cache_length} and {max_length}")
    excess = lengths.double() - (max_length - cache_length)
    return (-excess / cache_length).clamp(min=-1.0, max=0.0)
