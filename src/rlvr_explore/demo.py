"""`rlvr-explore demo`, the main job: SFT a base policy on a built-in task, train several methods
from it, evaluate pass@1..256 and write an HTML report comparing them.

The demo file (packaged ``configs/demo.yaml``) has two parts: ``config``, a run configuration
shared by every stage, and ``runs``, a name and the overrides of each compared run.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from rlvr_explore.report.html import build_report
from rlvr_explore.train.config import ConfigError, apply_mapping, read_yaml, resolve_config_path, validate
from rlvr_explore.train.config import Config
from rlvr_explore.train.rl import RLTrainer
from rlvr_explore.train.sft import run_sft


def load_demo(path: str | Path) -> tuple[Config, dict[str, dict]]:
    path = resolve_config_path(path)
    data, lines = read_yaml(path)
    unknown = set(data) - {"config", "runs"}
    if unknown or "runs" not in data:
        raise ConfigError(f"{path}: a demo file has the sections 'config' and 'runs'; found {sorted(data)}")
    base = apply_mapping(Config(), data.get("config") or {}, str(path),
                         {k[len("config."):]: v for k, v in lines.items() if k.startswith("config.")})
    runs = data["runs"]
    if not isinstance(runs, dict) or not runs:
        raise ConfigError(f"{path}: 'runs' must map run names to config overrides")
    return base, runs


def run(args) -> int:
    started = time.time()
    base, runs = load_demo(args.config or "demo")
    if args.methods:
        missing = [m for m in args.methods if m not in runs]
        if missing:
            raise ValueError(f"--methods {missing} not in the demo file's runs: {', '.join(runs)}")
        runs = {m: runs[m] for m in args.methods}
    out = Path(args.out)
    base.run.out_dir = str(out / "base")
    validate(base)
    print(f"[demo] 1/{len(runs) + 2}: SFT of a base policy on {base.task.name} -> {out / 'base'}")
    policy = run_sft(base, overwrite=True)  # the demo owns its output directory
    run_dirs = []
    for i, (name, overrides) in enumerate(runs.items(), start=2):
        cfg = apply_mapping(copy.deepcopy(base), overrides or {}, f"demo run '{name}'")
        cfg.run.out_dir = str(out / name)
        validate(cfg)
        print(f"[demo] {i}/{len(runs) + 2}: {name} ({cfg.algorithm.method}, {cfg.train.steps} steps) -> {cfg.run.out_dir}")
        summary = RLTrainer(cfg, init_policy=str(policy), overwrite=True).run()["summary"]
        n = cfg.eval.n_samples
        print(f"[demo]     pass@1 {summary['pass@1']:.3f}  pass@{n} {summary[f'pass@{n}']:.3f}  "
              f"distinct correct {summary['distinct_correct']:.2f}  entropy {summary['entropy']:.3f}")
        run_dirs.append(cfg.run.out_dir)
    print(f"[demo] {len(runs) + 2}/{len(runs) + 2}: report")
    report = build_report(run_dirs, out / "report" / "index.html", title="rlvr-explore demo: does exploration survive RL?")
    print(f"[demo] done in {time.time() - started:.0f} s. Open the report: {report.resolve()}")
    return 0
