"""The next wave of advantage estimators: MaxRL, PKPO, the unlikeliness reward, GTPO and GRPO-S
against their specification's worked examples, brute-force enumeration of k-subsets and exact
arithmetic, and through the trainer."""

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
    # k = 1: the leave-one-out centring of the paper's Eq. 26, r_i - mean of the others
    assert advantages("pkpo", [1, 0, 0, 1], pkpo_k=1) == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_pkpo_at_k_1_is_leave_one_out_centring(n):
    rewards = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    others = [(rewards.sum() - r) / (n - 1) for r in rewards]
    expected = [float(r - o) for r, o in zip(rewards, others)]
    assert pkpo_group(rewards, 1).tolist() == pytest.approx(expected, abs=1e-12)
    assert pkpo_group(torch.tensor([0.7], dtype=torch.float64), 1).tolist() == [0.0]  # nobody to leave out


def test_pkpo_k_schedule_and_errors():
    rewards = [1, 0, 0, 0]
    with pytest.raises(ValueError, match="needs step"):
        advantages("pkpo", rewards, pkpo_k=4, pkpo_k_switch_step=10)
    r, g, m = torch.tensor(rewards, dtype=torch.float64), torch.zeros(4, dtype=torch.long), torch.ones(4, 2)
    before = compute_advantages("pkpo", r, g, m, step=9, pkpo_k=4, pkpo_k_switch_step=10)[:, 0]
    after = compute_advantages("pkpo", r, g, m, step=10, pkpo_k=4, pkpo_k_switch_step=10)[:, 0]
    assert before.tolist() == pytest.approx([1, 0, 0, 0]) and after.tolist() == pytest.approx([1, -1 / 3, -1 / 3, -1 / 3])
    with pytest.raises(ValueError, match="1 <= k <= group size; got k=5 for a group of 4"):
        advantages("pkpo", rewards, pkpo_k=5)
    with pytest.raises(ValueError, match="'loo' baseline needs k < group size"):
        advantages("pkpo", rewards, pkpo_k=4, pkpo_baseline="loo")
    with pytest.raises(ValueError, match="pkpo_baseline must be one of loo_minus_one, loo, none"):
        advantages("pkpo", rewards, pkpo_baseline="mean")


def grpo_by_hand(values):
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return [(v - mean) / (std + 1e-6) for v in values]


def test_unlikeliness_worked_example_saturated_groups_and_ties():
    rewards, groups, mask = torch.tensor([1.0, 0, 0, 1]), torch.zeros(4, dtype=torch.long), torch.ones(4, 3)
    old_logp = torch.tensor([-0.1, -0.5, -0.3, -0.9]).unsqueeze(-1).expand(4, 3)  # ranks 3, 1, 2, 0
    got = compute_advantages("unlikeliness", rewards, groups, mask, old_logp=old_logp)[:, 0]
    assert got.tolist() == pytest.approx(grpo_by_hand([0.8125, 0, 0, 1]), abs=1e-6)
    assert got.tolist() == pytest.approx([0.6796, -0.8569, -0.8569, 1.0342], abs=1e-4)
    ones = torch.ones(4)
    assert compute_advantages("unlikeliness", ones, groups, mask, old_logp=old_logp).abs().sum() == 0
    kept = compute_advantages("unlikeliness", ones, groups, mask, old_logp=old_logp, unlikeliness_keep_saturated=True)
    assert kept[:, 0].tolist() == pytest.approx(grpo_by_hand([0.8125, 0.9375, 0.875, 1]), abs=1e-6)
    # the mean over response tokens only; ties keep the responses' order (stable)
    padded = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]])
    logp = torch.tensor([[-1.0, -1.0, -50.0], [-1.0, -1.0, -1.0], [-2.0, 9.0, 9.0], [-0.5, -0.5, -0.5]])
    got = compute_advantages("unlikeliness", rewards, groups, padded, old_logp=logp, unlikeliness_beta=0.5)[:, 0]
    # likelihoods -1, -1, -2, -0.5 -> ranks 1, 2, 0, 3
    assert got.tolist() == pytest.approx(grpo_by_hand([1 - 0.5 * 1 / 4, 0, 0, 1 - 0.5 * 3 / 4]), abs=1e-6)
    with pytest.raises(ValueError, match="'unlikeliness' needs old_logp"):
        compute_advantages("unlikeliness", rewards, groups, mask)


GTPO_ENTROPY = torch.tensor([[2, 1], [1, 3], [0.5, 2], [1, 1.0]])
GTPO_SHAPED = [[1.1333, 1.1], [-1.0667, -1.08], [-1.1333, -1.12], [1.0667, 1.1]]  # the specification's example


@pytest.mark.parametrize("normalize,expected", [
    ("separate", [[1.4142, 0], [1.2127, 0.7276], [-1.2127, -0.7276], [-1.4142, 0]]),
    ("joint", [[1.0300, 0.9997], [-0.9694, -0.9816], [-1.0300, -1.0179], [0.9694, 0.9997]])])
def test_gtpo_worked_example(normalize, expected):
    rewards, groups = torch.tensor([1.0, 0, 0, 1]), torch.zeros(4, dtype=torch.long)
    got = compute_advantages("gtpo", rewards, groups, torch.ones(4, 2), entropy=GTPO_ENTROPY, gtpo_normalize=normalize)
    assert got.tolist() == [pytest.approx(row, abs=1e-4) for row in expected]


def test_gtpo_shares_sum_to_the_active_count_and_padding_defines_activity():
    # alpha_1 + alpha_2 = 1: the correct responses' shaped rewards at a position sum to how many
    # are active there (Prop. 2.2); a padded position neither receives nor shares
    from rlvr_explore.advantages import AdvantageConfig, _gtpo_shape

    cfg = AdvantageConfig(gtpo_alpha1=0.7, gtpo_alpha2=0.3)
    entropy = torch.tensor([[0.2, 1.5, 0.7], [0.9, 0.1, 4.0], [1.3, 2.2, 0.4]], dtype=torch.float64)
    active = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    shaped = _gtpo_shape(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64), entropy, active, cfg)
    assert shaped.sum(0).tolist() == pytest.approx([3, 2, 1]) and shaped[~active].abs().sum() == 0
    # the 'entropy' rule penalises the high-entropy mistake more, the inverse rule the confident one
    rewards = torch.tensor([0.0, 0.0], dtype=torch.float64)
    two = torch.tensor([[0.5], [2.0]], dtype=torch.float64)
    inverse = _gtpo_shape(rewards, two, torch.ones(2, 1, dtype=torch.bool), cfg)
    direct = _gtpo_shape(rewards, two, torch.ones(2, 1, dtype=torch.bool), AdvantageConfig(gtpo_o_minus="entropy"))
    plain = _gtpo_shape(rewards, two, torch.ones(2, 1, dtype=torch.bool), AdvantageConfig(gtpo_o_minus="none"))
    assert inverse[0, 0] < inverse[1, 0] and direct[0, 0] > direct[1, 0] and plain.flatten().tolist() == [-1, -1]


def test_grpo_s_worked_example():
    rewards, groups = torch.tensor([1.0, 0, 0, 1]), torch.zeros(4, dtype=torch.long)
    shaped = torch.tensor([1.12, -1.0769, -1.1231, 1.08], dtype=torch.float64)  # mean entropies 1.5, 2, 1.25, 1
    got = compute_advantages("grpo_s", rewards, groups, torch.ones(4, 2), entropy=GTPO_ENTROPY)
    expected = (shaped - shaped.mean()) / shaped.std(unbiased=False)
    assert got[:, 0].tolist() == pytest.approx(expected.tolist(), abs=1e-3) and torch.equal(got[:, 0], got[:, 1])
    single = compute_advantages("grpo_s", torch.tensor([1.0]), torch.zeros(1, dtype=torch.long), torch.ones(1, 2),
                                entropy=GTPO_ENTROPY[:1], gtpo_normalize="separate")
    assert single.abs().sum() == 0  # one response: nothing to normalise against


@pytest.mark.parametrize("estimator", ["gtpo", "grpo_s"])
def test_gtpo_separate_normalisation_leaves_one_response_at_zero_not_rounding_noise(estimator):
    """One correct response among eight: in 'separate' normalisation its polarity holds that one
    response, whose shaped values are equal in exact arithmetic (a1 + a2 x 1); the rounding in
    its entropy share must not become +-1 advantages."""
    g = torch.Generator().manual_seed(3)
    found_rounding = False
    for trial in range(200):
        rewards = torch.zeros(8, dtype=torch.float64)
        rewards[trial % 8] = 1.0
        entropy = torch.rand(8, 6, generator=g, dtype=torch.float64) * 3
        got = compute_advantages(estimator, rewards, torch.zeros(8, dtype=torch.long), torch.ones(8, 6),
                                 entropy=entropy, gtpo_normalize="separate")
        assert got[trial % 8].abs().max() < 1e-6, (trial, got[trial % 8])
        from rlvr_explore.advantages import AdvantageConfig, _gtpo_shape

        shaped = _gtpo_shape(rewards, entropy if estimator == "gtpo" else entropy.mean(1, keepdim=True),
                             torch.ones(8, 6 if estimator == "gtpo" else 1, dtype=torch.bool), AdvantageConfig())
        found_rounding |= bool(shaped[trial % 8].std(unbiased=False) > 0)
    assert found_rounding or estimator == "grpo_s"  # the case that rounding once turned into +-1 does occur


@pytest.mark.parametrize("estimator", ["gtpo", "grpo_s"])
def test_gtpo_groups_with_equal_rewards_get_zero_unless_kept(estimator):
    entropy = torch.rand(8, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for value in (0.0, 1.0):
        rewards = torch.full((8,), value, dtype=torch.float64)
        args = (estimator, rewards, torch.zeros(8, dtype=torch.long), torch.ones(8, 5))
        assert compute_advantages(*args, entropy=entropy).abs().sum() == 0
        kept = compute_advantages(*args, entropy=entropy, gtpo_keep_equal_groups=True)
        assert kept.abs().sum() > 1  # normalised entropy noise, as before the default changed


@pytest.mark.parametrize("variant,bonus", [("ucb", [0.4472, 0.7071, 0.7071, 0.4472]),
                                           ("ucb_mean", [-0.1299, 0.1299, 0.1299, -0.1299]),
                                           ("ucb_con", [-0.0528, 0.2071, 0.2071, -0.0528])])
def test_outcome_ucb_worked_example_and_counts_that_include_the_batch(variant, bonus):
    rewards, groups, mask = torch.tensor([1.0, 0, 0, 1]), torch.zeros(4, dtype=torch.long), torch.ones(4, 2)
    counts = {("x", "42"): 3}
    got = compute_advantages("grpo", rewards, groups, mask, shaping=["outcome_ucb"], answers=["42", "17", "17", "42"],
                             prompt_ids=["x"] * 4, answer_counts=counts, outcome_variant=variant)
    assert counts == {("x", "42"): 5, ("x", "17"): 2}
    assert got[:, 0].tolist() == pytest.approx([a + b for a, b in zip(grpo_by_hand([1, 0, 0, 1]), bonus)], abs=1e-4)
    again = compute_advantages("dr_grpo", torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.ones(2, 1),
                               shaping=["outcome_ucb"], answers=["17", None], prompt_ids=["x", "y"], answer_counts=counts,
                               outcome_variant="ucb", outcome_coef=2.0)
    assert again[:, 0].tolist() == pytest.approx([2 / 3 ** 0.5, 2.0])  # N(x, 17) = 3; the unparsed answer is new
    excluded = compute_advantages("dr_grpo", torch.zeros(1), torch.zeros(1, dtype=torch.long), torch.ones(1, 1),
                                  shaping=["outcome_ucb"], answers=[None], prompt_ids=["y"], answer_counts=counts,
                                  outcome_unparsed="exclude")
    assert excluded.abs().sum() == 0 and counts[("y", None)] == 1


def test_outcome_batch_penalises_repeated_answers_within_a_group():
    def penalty(answers, **hp):
        n = len(answers)
        return compute_advantages("dr_grpo", torch.zeros(n), torch.zeros(n, dtype=torch.long), torch.ones(n, 1),
                                  shaping=["outcome_batch"], answers=answers, prompt_ids=["x"] * n, **hp)[:, 0].tolist()

    assert penalty(["42", "17", "3", "42"]) == pytest.approx([-0.25, 0, 0, -0.25])
    assert penalty(["1", "2", "3"]) == [0, 0, 0] and penalty(["7"] * 4) == pytest.approx([-0.75] * 4)
    assert penalty([None, None, "1"]) == pytest.approx([-1 / 3, -1 / 3, 0])
    assert penalty([None, None, "1"], outcome_unparsed="exclude") == [0, 0, 0]
    with pytest.raises(ValueError, match="'outcome_batch' needs answers"):
        compute_advantages("grpo", torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.ones(2, 1),
                           shaping=["outcome_batch"])


def test_outcome_exploration_counts_only_answers_the_verifier_would_accept_as_well_formed():
    """A bare number or an expression over numbers the prompt does not give is an answer for
    voting, but not one outcome exploration counts: the count bonus would have an unlimited supply
    of new wrong answers (arXiv 2509.06941 assumes a small answer space)."""
    from rlvr_explore.tasks.synthetic import verify_countdown, verify_graph_path
    from rlvr_explore.train.runtime import extract_answer, outcome_answer

    countdown = {"task": "countdown", "prompt": "3 4 9>21:"}
    for response, voted, counted in (("57", 57, None), ("99*99", 9801, None), ("3*3", 9, None), ("9", 9, None),
                                     ("3+4", 7, 7), ("3*4+9", 21, 21), ("9*4-3", 33, 33)):
        assert (extract_answer(countdown, response), outcome_answer(countdown, response)) == (voted, counted), response
        assert verify_countdown(countdown["prompt"], response) == float(counted == 21)
    graph = {"task": "graph_path", "prompt": "ab bc cd ad|ad:"}
    for response, counted in (("abcd", "abcd"), ("ad", "ad"), ("acd", "acd"), ("axd", None), ("aba", None), ("da", None)):
        assert outcome_answer(graph, response) == counted, response
        assert verify_graph_path(graph["prompt"], response) == float(response in ("abcd", "ad"))
    assert outcome_answer({"prompt": "1+1?"}, "so \\boxed{2}") == "2" and outcome_answer({"prompt": "1+1?"}, "2") is None


def test_the_trainer_keeps_outcome_counts_across_steps_and_checkpoints(tiny_config):
    from rlvr_explore.train.rl import RLTrainer

    cfg = tiny_config("algorithm.shaping=[outcome_ucb, outcome_batch]", "train.save_every=1")
    trainer = RLTrainer(cfg)
    trainer.run()
    per_step = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    saved = [torch.load(f"{cfg.run.out_dir}/checkpoints/step_{s:06d}/trainer_state.pt", weights_only=False)["answer_counts"]
             for s in (1, 2)]
    assert sum(saved[0].values()) == per_step and sum(saved[1].values()) == 2 * per_step
    assert saved[1] == trainer.answer_counts and all(saved[1][key] >= n for key, n in saved[0].items())
    cfg.train.steps = 3  # continue the run: the counts come back with it
    resumed = RLTrainer(cfg, resume=True, accept_changes=True)
    assert resumed.step == 2 and resumed.answer_counts == saved[1]
    resumed.run()
    assert sum(resumed.answer_counts.values()) == 3 * per_step


@pytest.mark.parametrize("advantage,hp", [("maxrl", "{}"), ("pkpo", "{pkpo_k: 2, pkpo_k_switch_step: 1}"),
                                          ("unlikeliness", "{}"), ("gtpo", "{}"), ("grpo_s", "{}")])
def test_the_trainer_runs_the_new_estimators(tiny_config, advantage, hp):
    from rlvr_explore.train.rl import RLTrainer
    from rlvr_explore.train.runtime import read_metrics

    cfg = tiny_config(f"algorithm.advantage={advantage}", f"algorithm.advantage_hp={hp}")
    RLTrainer(cfg).run()
    records = [r for r in read_metrics(cfg.run.out_dir) if r["kind"] == "train"]
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)


def test_rlvr_explore_methods_lists_the_next_wave(capsys):
    from rlvr_explore.cli import main

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split(":")[0]: line.split(":", 1)[1] for line in lines if not line.startswith("  ")}
    estimators = set(listed["advantage estimators"].replace(",", " ").split())
    shaping = set(listed["advantage shaping"].replace(",", " ").split())
    assert {"maxrl", "pkpo", "unlikeliness", "gtpo", "grpo_s"} <= estimators
    assert {"outcome_ucb", "outcome_batch"} <= shaping
    assert "DPH-RL (arXiv 2509.07430), divergences forward, js, alpha" in listed["rehearsal term, added to any loss"]


def test_the_packaged_comparison_runs_the_next_wave_in_their_papers_settings():
    """MaxRL against a control that differs only in the advantage; PKPO at a fixed k beside its
    annealed schedule; UCB-Con and the batch penalty as separate runs; the unlikeliness reward with
    its official KL."""
    from importlib.resources import files

    import yaml

    runs = yaml.safe_load(files("rlvr_explore").joinpath("configs/explore.yaml").read_text())["runs"]

    def without(arm: dict, key: str) -> dict:
        algorithm = {k: v for k, v in arm["algorithm"].items() if k != key}
        return {**arm, "algorithm": algorithm}

    assert without(runs["maxrl"], "advantage") == runs["grpo_token_mean"]
    assert "pkpo_k_switch_step" not in runs["pkpo_fixed_k"]["algorithm"]["advantage_hp"]
    assert runs["pkpo"]["algorithm"]["advantage_hp"]["pkpo_k_switch_step"] > 0
    assert runs["outcome_ucb_con"]["algorithm"]["shaping"] == ["outcome_ucb"]
    assert runs["outcome_batch"]["algorithm"]["shaping"] == ["outcome_batch"]
    assert runs["unlikeliness"]["algorithm"]["kl_coef"] == 0.1
