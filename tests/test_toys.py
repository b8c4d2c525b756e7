"""The toys run in seconds and reproduce the papers' qualitative claims they are built on."""

import json
import subprocess
import sys

import torch

from rlvr_explore.toys import bandit, squeeze, tree_mdp


def test_tree_mdp_json_has_every_field_and_any_loss_runs():
    for method in ("grpo", "casp", "nsr", "gspo"):
        summary = tree_mdp.run(tree_mdp.TreeMDPConfig(method=method, steps=20, eval_samples=200), seeds=[0, 1])
        assert len(summary["seeds"]) == 2
        for s in summary["seeds"]:
            assert 0 <= s["accuracy"] <= 1 and 0 <= s["modes"] <= 6
            assert set(s["state_probs"]) >= {"root", "A", "AC", "DB"}
            assert abs(sum(s["state_probs"]["root"]) - 1) < 1e-3
        assert summary["config"]["method"] == method


def test_tree_mdp_rewarding_sequences_and_mode_count():
    table = torch.full((len(tree_mdp.PREFIXES), 4), -30.0)
    for seq in tree_mdp.REWARDING:  # a policy uniform over the six rewarding sequences' branches
        for t in range(3):
            table[tree_mdp.STATE[seq[:t]], tree_mdp.ACTIONS.index(seq[t])] = 0.0
    result = tree_mdp.evaluate(table, 2000, torch.Generator().manual_seed(0))
    assert result["accuracy"] == 1.0 and result["modes"] == 6


def test_tree_mdp_cli_json(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rlvr_explore", "toy", "tree-mdp", "--method", "casp", "--seeds", "2",
                           "--steps", "10", "--json", "--plot", str(tmp_path / "t.png"), "--loss-hp", "alpha=0.1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["config"]["loss_hp"] == {"alpha": 0.1} and len(data["seeds"]) == 2
    # every hyper-parameter the loss used, defaults included
    assert data["loss_config"]["alpha"] == 0.1 and data["loss_config"]["lam"] == 1.1 and data["loss_config"]["q"] == 0.8
    assert "mean_accuracy" in data and "mean_modes" in data
    assert (tmp_path / "t.png").stat().st_size > 10_000


def test_bandit_two_stage_dynamic_and_theorem1():
    history = bandit.trajectory(bandit.DEFAULT_REWARDS, bandit.DEFAULT_PROBS, steps=600)
    st = bandit.stages(history)
    assert history[0, 0] < st["a1_peak_prob"]  # stage 1: pi(a1) rises first
    assert st["a2_rise_step"] is not None and st["a1_peak_step"] < st["a2_rise_step"]  # stage 2 follows
    assert history[-1, 1] > 0.9  # the optimal action wins in the end
    check = bandit.theorem1_check(draws=50_000)
    assert check["max_abs_z"] < 4


def test_squeeze_lemma2():
    rows = {r["penalised_rank"]: r for r in squeeze.run()["by_rank"]}
    assert rows[1]["max_prob_after"] < rows[1]["max_prob_before"] and rows[1]["entropy_after"] > rows[1]["entropy_before"]
    for rank in range(2, len(rows) + 1):
        assert rows[rank]["squeezes"] and rows[rank]["entropy_after"] < rows[rank]["entropy_before"]


def test_squeeze_and_bandit_cli(tmp_path):
    for toy in ("squeeze", "bandit"):
        args = [sys.executable, "-m", "rlvr_explore", "toy", toy, "--json", "--plot", str(tmp_path / f"{toy}.png")]
        if toy == "bandit":
            args += ["--steps", "300"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        json.loads(done.stdout)
        assert (tmp_path / f"{toy}.png").stat().st_size > 10_000
