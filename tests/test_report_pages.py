"""What the report and comparison pages show: one colour per method on both pages, labels that
carry a run's settings, counts as integers, each pair once, collapsed runs flagged."""

import json

import pytest

from rlvr_explore.report import page, plots
from rlvr_explore.report.html import _verdicts, run_label


def test_a_method_keeps_its_colour_on_both_pages():
    runs = ["grpo", "grpo_entropy", "casp", "casp_a0.3_l1.5", "grpo_n"]
    plots.set_run_colours([*runs, "base"])  # the comparison page: its table ends with the base row
    comparison = {name: plots.RUN_STYLES[name] for name in runs}
    plots.set_run_colours(["base (before RL)", *runs])  # the report: the policy before RL comes first
    assert {name: plots.RUN_STYLES[name] for name in runs} == comparison
    assert plots.RUN_STYLES["base (before RL)"]["color"] == "tab:gray"
    assert "tab:gray" not in {style["color"] for style in comparison.values()}
    assert len({style["color"] for style in comparison.values()}) == len(runs)


@pytest.mark.parametrize("name,algorithm,label", [
    ("casp", {"method": "casp", "loss": {"alpha": 0.3}}, "casp (alpha=0.3)"),
    ("casp", {"method": "casp", "loss": {"alpha": 0.01, "lam": 1.1}}, "casp"),  # the method's defaults
    ("mine", {"method": "casp", "loss": {"lam": 1.5}}, "mine (casp, lam=1.5)"),
    ("grpo", {"method": "grpo", "shaping": ["entropy_adv"], "advantage_hp": {"entropy_adv_alpha": 0.2}},
     "grpo (entropy_adv_alpha=0.2, +entropy_adv)"),
])
def test_run_labels_carry_the_settings_that_differ_from_the_methods_defaults(tmp_path, name, algorithm, label):
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(json.dumps({"algorithm": algorithm}))
    assert run_label(tmp_path / name) == label


def test_counts_print_as_integers():
    assert [page.number(v) for v in (13.0, 13, 0.5, 1.0, 0.1234, -3.0)] == ["13", "13", "0.500", "1.000", "0.123", "-3"]


def test_each_pair_of_runs_is_listed_once():
    final = {"details": {"n_samples": 4, "correct_counts": [1, 2, 3, 4], "unsolvable_ids": []}}
    finals = {"base (before RL)": final, "grpo": final, "casp": final}
    listed: set = set()
    html = _verdicts(finals, "grpo", 4, listed) + _verdicts(finals, "base (before RL)", 4, listed)
    assert html.count("<li>") == 3  # base-grpo, casp-grpo, casp-base: not grpo-base again


def test_a_collapsed_run_is_flagged_and_a_steady_one_is_not():
    steps = list(range(1, 101))
    collapsed = [0.3 - 0.003 * s for s in steps]  # 0.297 at first, 0 at the end
    steady = [0.3 + 0.001 * s for s in steps]
    assert page.collapse(steps, steady) is None
    first, last, from_step = page.collapse(steps, collapsed)
    assert first == pytest.approx(0.2835) and last == pytest.approx(0.0135) and from_step == 91
    warning = page.collapse_warnings({"grpo_n": (steps, collapsed), "grpo": (steps, steady)},
                                     {"grpo_n": 0.002, "grpo": 0.3}, "figures/reward.png")
    assert "grpo_n" in warning and "<b>grpo</b>" not in warning and "figures/reward.png" in warning
    assert page.collapse_warnings({"grpo": (steps, steady)}, {}, None) == ""


def test_algorithm_level_settings_are_in_the_label_too(tmp_path):
    (tmp_path / "grpo_entropy").mkdir()
    (tmp_path / "grpo_entropy" / "config.json").write_text(json.dumps(
        {"algorithm": {"method": "grpo", "entropy_coeff": 0.01, "kl_coef": 0.0, "advantage": None}}))
    assert run_label(tmp_path / "grpo_entropy") == "grpo_entropy (grpo, entropy_coeff=0.01)"
