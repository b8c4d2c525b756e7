"""The ``rlvr-explore`` command line. Each sub-command lives in the module that does its work and
registers itself here through ``add_parser(subparsers)``; this file only wires them together."""

from __future__ import annotations

import argparse
import sys


def _methods(args) -> int:
    from rlvr_explore import advantages, losses
    from rlvr_explore.losses.rehearsal import DIVERGENCES

    print("policy losses (rlvr_explore.losses.policy_loss):")
    for name in sorted(losses.LOSSES):
        spec = losses.LOSSES[name]
        aliases = [a for a, target in losses.core.ALIASES.items() if target == name]
        alias_text = f" (alias {', '.join(aliases)})" if aliases else ""
        default_text = ", ".join(f"{k}={v}" for k, v in spec.own_defaults().items())
        print(f"  {name}{alias_text}: {spec.source}; advantage '{spec.advantage}'" + (f"; {default_text}" if default_text else ""))
    names = advantages.available()
    print("advantage estimators:", ", ".join(names["estimators"]))
    print("advantage shaping:", ", ".join(names["shaping"]))
    print(f"rehearsal term, added to any loss: DPH-RL (arXiv 2509.07430), divergences {', '.join(DIVERGENCES)} "
          "(dph.* in the built-in trainer, dph_* in TRL and verl)")
    return 0


def _report(args) -> int:
    from rlvr_explore.report.html import build_report

    print(f"report written to {build_report(args.runs, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rlvr_explore import __version__, bench, compare
    from rlvr_explore.integrations import verl_rehearsal
    from rlvr_explore.toys import cli as toys_cli
    from rlvr_explore.train import cli as train_cli

    parser = argparse.ArgumentParser(
        prog="rlvr-explore",
        description="RL with verifiable rewards, built around the methods that keep exploration alive.",
    )
    parser.add_argument("--version", action="version", version=f"rlvr-explore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    methods = sub.add_parser("methods", help="list the registered losses, advantage estimators and shaping steps")
    methods.set_defaults(func=_methods)
    train_cli.add_parsers(sub)
    toys_cli.add_parser(sub)
    bench.add_parser(sub)
    compare.add_parser(sub)
    verl_rehearsal.add_parser(sub)
    report = sub.add_parser("report", help="HTML report comparing run directories")
    report.add_argument("runs", nargs="+", help="run directories (with metrics.jsonl and eval/)")
    report.add_argument("--out", default="report/index.html", help="HTML file to write (figures go beside it)")
    report.set_defaults(func=_report)
    demo = sub.add_parser("demo", help="the main job: SFT a base policy, train GRPO and CaSP from it, evaluate, report")
    demo.add_argument("--config", default=None, metavar="FILE", help="a comparison file (default: the packaged configs/demo.yaml)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--methods", nargs="+", default=None, help="methods to compare (default from the demo config)")
    demo.add_argument("--seeds", type=int, nargs="+", default=[0],
                      help="seeds of the comparison (default: 0); the report's figures show the first")
    demo.add_argument("--jobs", type=int, default=1,
                      help="runs trained at once, each in its own process (with run.threads=1 for 2 jobs on 2 cores)")
    demo.set_defaults(func=lambda args: __import__("rlvr_explore.demo", fromlist=["run"]).run(args))
    return parser


# What to do after Ctrl-C, for the commands that write something (``train`` says it itself).
AFTER_INTERRUPT = {
    "sft": "SFT writes no checkpoint: run the same command with --overwrite to start it again.",
    "rft": "RFT writes no checkpoint: run the same command with --overwrite to start it again.",
    "compare": "run the same command again: finished runs are reused, an interrupted RL run resumes.",
    "demo": "run the same command again: finished runs are reused, an interrupted RL run resumes.",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\nrlvr-explore {args.command}: interrupted. {AFTER_INTERRUPT.get(args.command, '')}".rstrip(),
              file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:  # bad input, a missing file, no sandbox: say so, no traceback
        print(f"rlvr-explore {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
