"""The demo's comparison over several seeds: for each seed, SFT a base policy and train every run
of the demo file from it; print mean and range of the final metrics per run.

Usage: python benchmarks/compare_methods.py [--seeds 0 1 2] [--out runs/compare] [--config demo]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np

from rlvr_explore.demo import load_demo
from rlvr_explore.train.config import apply_mapping, validate
from rlvr_explore.train.rl import RLTrainer
from rlvr_explore.train.sft import run_sft

KEYS = ("pass@1", "pass@16", "pass@256", "distinct_correct", "unsolvable")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--config", default="demo")
    args = parser.parse_args()
    base, runs = load_demo(args.config)
    results: dict[str, list[dict]] = {"base": []}
    for seed in args.seeds:
        cfg = copy.deepcopy(base)
        cfg.run.seed = seed
        cfg.run.out_dir = f"{args.out}/seed{seed}/base"
        validate(cfg)
        policy = run_sft(cfg, overwrite=True)
        for index, (name, overrides) in enumerate(runs.items()):
            run_cfg = apply_mapping(copy.deepcopy(cfg), overrides or {}, f"run '{name}'")
            run_cfg.run.out_dir = f"{args.out}/seed{seed}/{name}"
            validate(run_cfg)
            results.setdefault(name, []).append(RLTrainer(run_cfg, init_policy=str(policy), overwrite=True).run()["summary"])
            if index == 0:  # the base policy's evaluation is the first run's step 0
                first = sorted(Path(run_cfg.run.out_dir, "eval").glob("step_*.json"))[0]
                results["base"].append(json.loads(first.read_text())["summary"])
    print(f"seeds {args.seeds}; mean [min, max] over seeds")
    print(f"{'run':<18}" + "".join(f"{k:>26}" for k in KEYS))
    for name, summaries in results.items():
        cells = []
        for key in KEYS:
            values = np.array([s[key] for s in summaries], dtype=float)
            cells.append(f"{values.mean():.3f} [{values.min():.3f}, {values.max():.3f}]")
        print(f"{name:<18}" + "".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
