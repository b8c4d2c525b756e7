"""`rlvr-explore compare`: the intervals against hand computation and simulated coverage, and the
command end to end on a tiny comparison (two seeds, three runs), run twice: the second run reuses
every run; then the demo, which is the same comparison on one seed."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import sideways_overflow
from rlvr_explore.cli import main
from rlvr_explore.metrics import bootstrap_ci, pass_at_k, rerun_interval, seed_interval, student_t_quantile
from rlvr_explore.metrics import paired_pass_at_k_difference as paired_difference


def test_paired_difference_is_per_problem_and_constant_differences_have_no_width():
    rng = np.random.default_rng(0)
    method, baseline = rng.integers(0, 9, (3, 20)), rng.integers(0, 9, (3, 20))
    diff = paired_difference(method, baseline, 8, 2)
    assert np.allclose(diff, np.reshape(pass_at_k(8, method, 2) - pass_at_k(8, baseline, 2), (3, 20)))
    same = np.full((3, 20), 4)
    assert seed_interval(paired_difference(same + 2, same, 8, 1)) == (0.25, 0.25)


def test_seed_interval_is_student_t_over_seed_means_and_one_seed_is_the_problem_bootstrap():
    # every problem of seed 0 differs by 0, every problem of seed 1 by 0.5: resampling problems
    # alone would give no width; the interval is 0.25 +- t(0.975, 1) * sd / sqrt(2)
    diff = paired_difference(np.array([[4] * 10, [8] * 10]), np.array([[4] * 10, [4] * 10]), 8, 1)
    half = 12.7062047 * np.std([0.0, 0.5], ddof=1) / np.sqrt(2)
    assert np.allclose(seed_interval(diff), (0.25 - half, 0.25 + half))
    assert np.allclose(rerun_interval(diff), (0.25 - half * np.sqrt(2), 0.25 + half * np.sqrt(2)))
    one = np.random.default_rng(1).random((1, 30))
    assert seed_interval(one) == bootstrap_ci(one[0]) and rerun_interval(one) is None
    for df, tabulated in ((1, 12.7062), (4, 2.7764), (9, 2.2622), (30, 2.0423)):
        assert abs(student_t_quantile(0.975, df) - tabulated) < 1e-4


def test_intervals_cover_as_often_as_they_claim_when_seeds_differ_more_than_problems():
    # 2,000 simulated 5-seed comparisons, each seed with its own shift and its own 64 problems:
    # the interval covers the true difference, the rerun interval the next 5 seeds' estimate,
    # both about 95% of the time (a bootstrap resampling seeds then problems gives about 87%)
    rng = np.random.default_rng(0)
    true, covered, rerun_covered = 0.1, 0, 0
    for _ in range(2000):
        first, second = (true + rng.normal(0, 0.1, (5, 1)) + rng.normal(0, 0.3, (5, 64)) for _ in range(2))
        low, high = seed_interval(first)
        covered += low <= true <= high
        low, high = rerun_interval(first)
        rerun_covered += low <= second.mean() <= high
    assert 0.93 <= covered / 2000 <= 0.97 and 0.93 <= rerun_covered / 2000 <= 0.97


def test_training_curves_average_the_seeds_that_logged_each_step(tmp_path):
    """A step DAPO's filter skipped logs no rollout statistics; the curve takes the other seeds'
    mean there instead of dropping the whole curve, and NaN where every seed skipped."""
    from rlvr_explore.compare import _training_curves

    logs = {0: [{"step": 1, "reward": 0.2, "lambda1": -0.5}, {"step": 2, "skipped": 1}, {"step": 3, "skipped": 1}],
            1: [{"step": 1, "reward": 0.4, "lambda1": -0.3}, {"step": 2, "reward": 0.6, "lambda1": -0.1},
                {"step": 3, "skipped": 1}]}
    for seed, records in logs.items():
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "metrics.jsonl").write_text(
            "".join(json.dumps({"kind": "train", **r}) + "\n" for r in records))
    curves = _training_curves([tmp_path / "s0", tmp_path / "s1"])
    assert curves["step"] == [1, 2, 3] and "rollout_entropy" not in curves
    assert np.allclose(curves["reward"][:2], [0.3, 0.6]) and np.isnan(curves["reward"][2])
    assert np.allclose(curves["lambda1"][:2], [-0.4, -0.1])


def test_compare_trains_every_seed_then_reuses_the_runs(tmp_path, capsys):
    spec = {
        "config": {"run": {"threads": 1}, "model": {"n_layer": 1, "n_head": 2, "n_embd": 16},
                   "task": {"name": "countdown", "difficulty": 2, "train_size": 32, "eval_size": 6},
                   "sft": {"steps": 5, "batch_size": 8}, "rollout": {"group_size": 4, "prompts_per_step": 2,
                                                                     "max_new_tokens": 6},
                   "algorithm": {"mini_batch_size": 8, "micro_batch_size": 8}, "train": {"steps": 2},
                   "eval": {"n_samples": 8}},
        "runs": {"grpo": {"algorithm": {"method": "grpo"}}, "casp": {"algorithm": {"method": "casp"}},
                 "rft": {"trainer": "rft", "rft": {"iterations": 1, "samples_per_prompt": 2, "sft_steps": 2}}},
    }
    config = tmp_path / "cmp.yaml"
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "out"
    argv = ["compare", "--config", str(config), "--seeds", "0", "1", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["baseline"] == "grpo" and summary["problems_per_seed"] == 6
    for name in ("casp", "base"):
        for k in ("pass@1", "pass@8"):
            v = summary["verdicts"][name][k]
            assert v["ci_low"] <= v["difference"] <= v["ci_high"]
    assert summary["curves"]["rft"] == {"step": []}  # RFT rounds: evaluated like the others, no rollout curves
    assert summary["runs"]["rft"]["pass@8"]["mean"] >= 0 and "pass@1" in summary["verdicts"]["rft"]
    table = (out / "comparison.md").read_text().splitlines()  # the Markdown tables: the same numbers
    casp_row = next(line for line in table if line.startswith("| casp | "))
    pass8 = summary["runs"]["casp"]["pass@8"]
    assert f"{pass8['mean']:.3f} [{pass8['ci_low']:.3f}, {pass8['ci_high']:.3f}]" in casp_row
    verdict = summary["verdicts"]["casp"]["pass@8"]
    casp_verdict = next(line for line in table[table.index(""):] if line.startswith("| casp | "))
    assert f"{verdict['difference']:+.3f} [{verdict['ci_low']:+.3f}, {verdict['ci_high']:+.3f}]" in casp_verdict
    first_output = capsys.readouterr().out
    assert "casp vs grpo: pass@1" in first_output
    html = (out / "comparison.html").read_text()
    assert html.index("Verdicts") < html.index("pass@k, mean")
    assert {v["verdict"] for by_k in summary["verdicts"].values() for v in by_k.values()} == {"2 seeds: no verdict"}
    assert "<b>no verdict</b>: with 2 seeds" in html and "--seeds 0 1 2" in html
    final_counts = {run: np.array([json.loads(sorted((out / f"seed{s}" / run / "eval").glob("step_*.json"))[-1]
                                          .read_text())["details"]["correct_counts"] for s in (0, 1)])
                    for run in ("grpo", "casp", "rft")}
    for name, by_k in summary["differences"].items():  # every k; the verdicts are the ends
        assert list(by_k) == [f"pass@{k}" for k in (1, 2, 4, 8)]
        assert summary["verdicts"][name] == {key: by_k[key] for key in ("pass@1", "pass@8")}
        if name != "base":
            diff = pass_at_k(8, final_counts[name], 4) - pass_at_k(8, final_counts["grpo"], 4)
            assert by_k["pass@4"]["difference"] == pytest.approx(diff.mean())
    for figure in ("pass_at_k.png", "differences.png", "lambda.png", "entropy.png", "reward.png", "unsolvable.png"):
        assert f"figures/{figure}" in html and (out / "figures" / figure).stat().st_size > 1000
    # planning from this two-seed pilot: nothing is trained, every method is sized at both ends
    assert main(argv + ["--plan", "--difference", "0.1"]) == 0
    planned = capsys.readouterr().out.splitlines()
    assert planned[0].startswith("Planning from a pilot of 2 seeds against grpo") and "seeds for 0.1" in planned[1]
    assert [line.split()[:2] for line in planned[2:]] == [["casp", "1"], ["casp", "8"], ["rft", "1"], ["rft", "8"]]

    for name in ("grpo", "casp"):  # training curves: the mean over seeds of each logged step
        logged = [[r for r in map(json.loads, (out / f"seed{s}" / name / "metrics.jsonl").read_text().splitlines())
                   if r.get("kind") == "train"] for s in (0, 1)]
        curves = summary["curves"][name]
        assert curves["step"] == [1, 2]
        for key in ("lambda1", "lambda2", "lambda3", "lambda_sample", "rollout_entropy", "reward"):
            assert np.allclose(curves[key], [(a[key] + b[key]) / 2 for a, b in zip(*logged)])
    for name, row in summary["runs"].items():  # unsolvable sets against the baseline's, seed by seed
        mine, theirs = summary["unsolvable_ids"][name], summary["unsolvable_ids"]["grpo"]
        assert row["unsolvable_vs_baseline"] == {
            "both": sum(len(set(a) & set(b)) for a, b in zip(mine, theirs)),
            "run_only": sum(len(set(a) - set(b)) for a, b in zip(mine, theirs)),
            "baseline_only": sum(len(set(b) - set(a)) for a, b in zip(mine, theirs))}
        counts = [json.loads(sorted((out / f"seed{s}" / (name if name != "base" else "grpo") / "eval").glob(
            "step_*.json"))[0 if name == "base" else -1].read_text())["details"]["correct_counts"] for s in (0, 1)]
        assert mine == [[i for i, c in enumerate(seed) if c == 0] for seed in counts]
    evals = sorted(out.glob("seed*/*/eval/step_*.json"))
    stamps = [p.stat().st_mtime_ns for p in evals]
    assert main(argv) == 0
    assert "finished already" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in evals] == stamps  # nothing trained or evaluated again
    assert json.loads((out / "comparison.json").read_text()) == summary
    # a subset without the run that evaluated step 0, against another baseline: the same base row
    assert main(argv + ["--methods", "casp", "rft", "--baseline", "rft"]) == 0
    subset = json.loads((out / "comparison.json").read_text())
    assert subset["baseline"] == "rft" and subset["runs"]["base"] == summary["runs"]["base"]
    assert subset["runs"]["casp"] == {**summary["runs"]["casp"], "unsolvable_vs_baseline":
                                      subset["runs"]["casp"]["unsolvable_vs_baseline"]}
    assert main(argv) == 0

    parallel = tmp_path / "parallel"  # two seeds at once, in their own processes: the same results
    assert main(["compare", "--config", str(config), "--seeds", "0", "1", "--out", str(parallel), "--jobs", "2"]) == 0
    assert json.loads((parallel / "comparison.json").read_text()) == summary

    spec["runs"]["casp"]["algorithm"]["loss"] = {"alpha": 0.3}  # a finished run with other settings: refused
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(argv) == 2
    assert "run 'casp'" in (err := capsys.readouterr().err) and "algorithm.loss.alpha: None -> 0.3" in err

    spec["config"]["sft"]["steps"] = 6  # another base policy: refused, not silently reused
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(argv) == 2
    assert "sft.steps: 5 -> 6" in capsys.readouterr().err

    demo = tmp_path / "demo"  # the demo is the comparison on one seed, then the report of its runs
    spec["config"]["sft"]["steps"] = 5
    spec["runs"]["casp"]["algorithm"].pop("loss")
    spec["runs"]["rft"]["trainer"] = "ppo"  # an unknown trainer: named with the file and the run
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["demo", "--config", str(config), "--out", str(tmp_path / "refused")]) == 2
    assert f"{config}: runs.rft.trainer is 'ppo'; expected one of rl, rft" in capsys.readouterr().err
    del spec["runs"]["rft"]
    config.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["demo", "--config", str(config), "--out", str(demo)]) == 0
    demo_summary = json.loads((demo / "comparison.json").read_text())
    assert demo_summary["seeds"] == [0]
    for key, value in summary["runs"]["casp"].items():  # seed 0 trained alike in both
        if key.startswith("pass@"):
            assert demo_summary["runs"]["casp"][key]["per_seed"] == value["per_seed"][:1]
    page = (demo / "report" / "index.html").read_text()
    first = demo_summary["verdicts"]["casp"]["pass@1"]
    assert page.index("Verdicts") < page.index("<table")
    assert f"casp vs grpo: pass@1 {first['difference']:+.3f} [{first['ci_low']:+.3f}, {first['ci_high']:+.3f}]" in page
    assert 'href="../comparison.html"' in page and "href='report/index.html'" in (demo / "comparison.html").read_text()
    assert "from one seed (0)" in page
    for shown in (demo / "comparison.html", demo / "report" / "index.html"):  # where Chromium is installed
        for window in (800, 1280):
            assert sideways_overflow(shown, window) in (0, None), (shown, window)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_compare_ends_its_training_processes(tmp_path):
    spec = {"config": {"run": {"threads": 1}, "model": {"n_layer": 1, "n_head": 2, "n_embd": 16},
                       "task": {"name": "countdown", "difficulty": 2, "train_size": 32, "eval_size": 6},
                       "sft": {"steps": 1_000_000, "batch_size": 8}},  # still training when killed
            "runs": {"grpo": {"algorithm": {"method": "grpo"}}}}
    config = tmp_path / "cmp.yaml"
    config.write_text(yaml.safe_dump(spec))
    parent = subprocess.Popen([sys.executable, "-m", "rlvr_explore", "compare", "--config", str(config), "--seeds", "0",
                               "1", "--jobs", "2", "--out", str(tmp_path / "out")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "out").glob("seed*/base/metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.5)
    workers = [pid for pid in _children(parent.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(workers) == 2
    parent.kill()
    parent.wait()
    deadline = time.time() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_no_verdict_from_fewer_seeds_than_needed():
    from rlvr_explore.metrics import MIN_VERDICT_SEEDS, verdict

    assert MIN_VERDICT_SEEDS == 3
    assert verdict(0.1, 0.2) == "higher" and verdict(-0.2, -0.1, seeds=3) == "lower"
    assert verdict(0.1, 0.2, seeds=1) == "one seed: no verdict"
    assert verdict(-0.2, -0.1, seeds=2) == "2 seeds: no verdict"
    assert verdict(0.1, 0.2, seeds=2, min_seeds=2) == "higher"


def test_seeds_that_tie_exactly_still_give_an_interval_with_width():
    # three seeds whose per-seed means are all 0.1 (as pass@k means, in steps of 1/problems, can be):
    # the spread of a per-seed mean is floored by what its 10 problems alone give it
    diff = np.array([[0.0, 0.2] * 5, [0.2, 0.0] * 5, [0.1] * 10])
    within = np.sqrt(diff.var(axis=1, ddof=1).mean() / 10)
    half = student_t_quantile(0.975, 2) * within / np.sqrt(3)
    assert np.allclose(seed_interval(diff), (0.1 - half, 0.1 + half)) and half > 0.05


def test_p_values_agree_with_the_intervals_and_the_t_distribution():
    from rlvr_explore.metrics import seed_p_value, student_t_cdf

    for df, x, tabulated in ((4, 2.7764, 0.975), (9, 1.3830, 0.9)):
        assert abs(student_t_cdf(x, df) - tabulated) < 1e-4
    rng = np.random.default_rng(3)
    for _ in range(200):
        values = rng.normal(rng.normal(0, 0.05), 0.05, (4, 1)) + rng.normal(0, 0.3, (4, 30))
        low, high = seed_interval(values)
        assert (seed_p_value(values) < 0.05) == (low > 0 or high < 0)


def test_holm_adjusted_p_values():
    from rlvr_explore.metrics import holm

    # by hand: sorted 0.01, 0.02, 0.04, 0.3 -> 4 x 0.01, max(0.04, 3 x 0.02), max(0.06, 2 x 0.04), max(0.08, 0.3)
    assert holm([0.04, 0.01, 0.3, 0.02]) == pytest.approx([0.08, 0.04, 0.3, 0.06])
    assert holm([0.9, 0.3]) == pytest.approx([0.9, 0.6]) and holm([]) == []
    rng = np.random.default_rng(2)  # under the global null, any rejection in at most 5% of the families
    families = [holm(rng.uniform(size=6)) for _ in range(4000)]
    assert np.mean([min(f) < 0.05 for f in families]) <= 0.06


def test_primary_verdicts_are_holm_corrected_among_themselves():
    from rlvr_explore.compare import _correct_for_the_table

    def cell(p):
        return {"p_value": p, "verdict": "higher"}

    verdicts = {"a": {"pass@1": cell(0.01), "pass@8": cell(0.2)}, "b": {"pass@1": cell(0.03), "pass@8": cell(0.04)},
                "c": {"pass@1": cell(0.001), "pass@8": cell(0.5)}}
    _correct_for_the_table(verdicts, True, primary=["a", "b"])
    assert [verdicts[n][k]["holm_p_value"] for n, k in (("a", "pass@1"), ("a", "pass@8"), ("b", "pass@1"), ("b", "pass@8"))] \
        == pytest.approx([0.04, 0.2, 0.09, 0.09])
    assert verdicts["a"]["pass@1"]["primary_verdict"] == "higher"
    assert verdicts["b"]["pass@1"]["primary_verdict"] == "not distinguishable after Holm's correction"
    assert "holm_p_value" not in verdicts["c"]["pass@1"]  # not declared primary: Benjamini-Hochberg only


def test_benjamini_hochberg_q_values():
    from rlvr_explore.metrics import benjamini_hochberg

    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    # p * m / rank = 0.04, 0.06, 0.0533, 0.5 by rank; each then the least of it and those ranked above
    assert np.allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert benjamini_hochberg([]) == []


def test_a_table_under_no_true_difference_rarely_keeps_a_verdict_after_correction():
    # 200 tables of 10 methods against one shared baseline, nothing different, 5 seeds x 32 problems,
    # each seed with its own shift: uncorrected, most tables name at least one direction
    from rlvr_explore.metrics import benjamini_hochberg, seed_p_value

    rng = np.random.default_rng(7)
    raw, corrected = 0, 0
    for _ in range(200):
        baseline = rng.normal(0, 0.05, (5, 1)) + rng.normal(0, 0.3, (5, 32))
        p = [seed_p_value(rng.normal(0, 0.05, (5, 1)) + rng.normal(0, 0.3, (5, 32)) - baseline) for _ in range(10)]
        raw += min(p) < 0.05
        corrected += min(benjamini_hochberg(p)) < 0.05
    assert raw / 200 > 0.2 and corrected / 200 <= 0.09, (raw, corrected)


def test_the_detectable_difference_is_detected_about_80_percent_of_the_time():
    from rlvr_explore.metrics import detectable_difference

    rng = np.random.default_rng(11)
    spread = lambda: rng.normal(0, 0.05, (5, 1)) + rng.normal(0, 0.2, (5, 64))  # noqa: E731
    size = float(np.median([detectable_difference(spread()) for _ in range(200)]))
    found = 0
    for _ in range(1000):
        low, _ = seed_interval(size + spread())
        found += low > 0
    assert 0.7 <= found / 1000 <= 0.9, (size, found)


def test_the_seeds_a_plan_asks_for_detect_the_difference_about_80_percent_of_the_time():
    from rlvr_explore.metrics import seeds_needed

    rng = np.random.default_rng(5)
    spread = lambda seeds: rng.normal(0, 0.05, (seeds, 1)) + rng.normal(0, 0.2, (seeds, 64))  # noqa: E731
    difference = 0.08
    needed = int(np.median([seeds_needed(spread(4), difference) for _ in range(200)]))  # from 4-seed pilots
    assert 3 <= needed <= 12
    found = sum(seed_interval(difference + spread(needed))[0] > 0 for _ in range(1000))
    assert 0.7 <= found / 1000 <= 0.92, (needed, found)
    assert seeds_needed(spread(4), 0.3) < seeds_needed(spread(4), 0.03)  # a smaller difference needs more seeds
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seeds_needed(spread(1), 0.1)


def test_the_page_states_the_tables_size_and_correction_only_where_there_are_verdicts():
    from rlvr_explore.report.verdicts import verdicts_html

    cell = {"difference": 0.1, "ci_low": 0.02, "ci_high": 0.18, "p_value": 0.01, "q_value": 0.02,
            "verdict": "higher", "adjusted_verdict": "higher", "detectable_80": 0.12}
    other = {**cell, "difference": 0.05, "ci_low": 0.01, "p_value": 0.04, "q_value": 0.08,
             "adjusted_verdict": "not distinguishable after correction"}
    summary = {"seeds": [0, 1, 2], "min_seeds": 3, "problems_per_seed": 10, "baseline": "grpo",
               "verdicts": {"casp": {"pass@1": cell, "pass@8": other}}}
    page = verdicts_html(summary)
    assert "This table makes 2 comparisons" in page and "about 0.1 would name a direction by chance" in page
    assert "1 of the 2 directional verdicts keep their direction" in page and "about 0.120" in page
    assert "p 0.01, q 0.02" in page
    assert "This table makes" not in verdicts_html({**summary, "seeds": [0]})


def test_an_aa_run_is_the_baseline_with_other_draws_and_is_marked_as_the_tables_calibration(tiny_config, tmp_path):
    from rlvr_explore.compare import calibration_runs, load_comparison
    from rlvr_explore.train.rl import RLTrainer

    for name in ("demo", "explore", "dph_compare", "unlikeliness_compare"):  # every packaged comparison has one
        _, runs, _ = load_comparison(name)
        baseline = next(iter(runs))
        assert calibration_runs(runs, baseline) == [f"{baseline}_aa"], name
    runs = {"grpo": {"algorithm": {"method": "grpo"}}, "casp": {"algorithm": {"method": "casp"}},
            "again": {"algorithm": {"method": "grpo"}, "run": {"draws": 2}},
            "again_casp": {"algorithm": {"method": "casp"}, "run": {"draws": 1}}}
    assert calibration_runs(runs, "grpo") == ["again"]
    # other draws: other prompts and samples from the same task split and base policy
    first = RLTrainer(tiny_config(f"run.out_dir={tmp_path / 'first'}"))
    other = RLTrainer(tiny_config(f"run.out_dir={tmp_path / 'other'}", "run.draws=1"))
    assert first.train_problems == other.train_problems and first.eval_problems == other.eval_problems
    assert first.collect()[0].texts != other.collect()[0].texts
    from rlvr_explore.report.verdicts import verdict_lines

    cell = {"difference": 0.01, "ci_low": -0.02, "ci_high": 0.04, "verdict": "no detectable difference",
            "p_value": 0.5, "q_value": 0.6}
    lines = verdict_lines({"baseline": "grpo", "calibration": ["again"],
                           "verdicts": {"again": {"pass@1": cell}, "casp": {"pass@1": cell}}})
    assert "A/A calibration check" in lines[0] and "A/A" not in lines[1]


def test_a_shared_evaluation_set_is_stated_on_the_page():
    from rlvr_explore.report.verdicts import verdicts_html

    cell = {"difference": 0.01, "ci_low": -0.02, "ci_high": 0.04, "verdict": "no detectable difference",
            "adjusted_verdict": "no detectable difference", "p_value": 0.5, "q_value": 0.6, "detectable_80": 0.05}
    summary = {"seeds": [0, 1, 2], "min_seeds": 3, "problems_per_seed": 40, "baseline": "grpo",
               "verdicts": {"casp": {"pass@1": cell}}}
    assert "same 40 problems" not in verdicts_html({**summary, "shared_problems": False})
    assert "Every seed is evaluated on the same 40 problems" in verdicts_html({**summary, "shared_problems": True})
