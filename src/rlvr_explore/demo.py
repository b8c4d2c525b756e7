"""`rlvr-explore demo`, the main job: SFT a base policy on a built-in task, train several methods
from it, evaluate pass@1..256 and write an HTML report comparing them.

The demo is ``rlvr-explore compare`` on the comparison file ``configs/demo.yaml`` with one seed
(``--seeds`` for more), followed by the full report of the first seed's runs, which opens with
the comparison's verdicts.
"""

from __future__ import annotations

import time
from pathlib import Path

from rlvr_explore.compare import compare, load_comparison, select_runs
from rlvr_explore.report.html import build_report


def run(args) -> int:
    started = time.time()
    source = args.config or "demo"
    base, runs, primary = load_comparison(source)
    runs = select_runs(runs, args.methods, source)
    out = Path(args.out)
    baseline = next(iter(runs))
    print(f"[demo] {len(runs)} runs from an SFT base policy on {base.task.name}, seed{'s' if len(args.seeds) > 1 else ''} "
          f"{', '.join(map(str, args.seeds))} -> {out}", flush=True)
    summary = compare(base, runs, args.seeds, out, baseline, args.jobs, report_page="report/index.html",
                      primary=primary)
    run_dirs = [out / f"seed{args.seeds[0]}" / name for name in runs]
    report = build_report(run_dirs, out / "report" / "index.html", comparison=summary,
                          title="rlvr-explore demo: does exploration survive RL?", comparison_page="../comparison.html")
    print(f"[demo] done in {time.time() - started:.0f} s. Open the report: {report.resolve()}")
    return 0
