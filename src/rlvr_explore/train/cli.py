"""`rlvr-explore sft | train | rft | eval`: each reads a YAML config (``--config``) and
``--set key.sub=value`` overrides; ``--help-config`` lists every field with its help, and
``--help-config --method casp`` the keys one method reads."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checkpoints import read_owner
from .config import describe, describe_method, load_config, resolve_config, to_dict


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (see configs/)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="overrides, applied in order; may repeat. E.g. algorithm.method=casp algorithm.loss.alpha=0.3")
    p.add_argument("--help-config", action="store_true",
                   help="print every config field with its default and help (with --method, the keys of that method), then exit")
    p.add_argument("--method", metavar="NAME", help="with --help-config: the method whose keys to list")
    p.add_argument("--print-config", action="store_true", help="print the resolved config (file + overrides) as YAML, then exit")


def _load(args):
    """The resolved config, or None after printing it for --print-config or the help of
    --help-config. ``train --resume`` without ``--config`` starts from the run's own config.json,
    then applies the overrides."""
    if args.method is not None and not args.help_config:
        raise SystemExit(f"--method {args.method} goes with --help-config; to train it, set algorithm.method={args.method}")
    if args.help_config:
        try:
            print(describe_method(args.method) if args.method else describe())
        except ValueError as error:
            raise SystemExit(f"--method: {error}") from None
        return None
    out = Path(resolve_config(args.config, args.set).run.out_dir)  # the defaults alone may not validate
    saved = out / "config.json"
    if getattr(args, "resume", False) and args.config is None and saved.exists() and (read_owner(out) or {}).get("kind") == "rl":
        cfg = load_config(None, args.set, base=json.loads(saved.read_text()), base_source=str(saved))
    else:
        cfg = load_config(args.config, args.set)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return None
    return cfg


def _overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in run.out_dir (without it, such a directory is refused)")


def _sft(args) -> int:
    from .sft import run_sft

    cfg = _load(args)
    if cfg is not None:
        run_sft(cfg, overwrite=args.overwrite)
    return 0


def _train(args) -> int:
    from .checkpoints import RunAlreadyFinished
    from .rl import RLTrainer

    cfg = _load(args)
    if cfg is None:
        return 0
    try:
        trainer = RLTrainer(cfg, resume=args.resume, init_policy=args.init, overwrite=args.overwrite,
                            accept_changes=args.accept_changes)
    except RunAlreadyFinished as done:
        print(done)
        return 0
    try:
        result = trainer.run()
    except KeyboardInterrupt:
        print(f"\nrlvr-explore train: {trainer.interrupted()}", file=sys.stderr)
        return 130
    print(json.dumps(result["summary"], indent=2))
    print(f"run written to {cfg.run.out_dir} (policy in {Path(cfg.run.out_dir) / 'policy'})")
    return 0


def _rft(args) -> int:
    from .rft import run_rft

    cfg = _load(args)
    if cfg is not None:
        print(json.dumps(run_rft(cfg, init_policy=args.init, overwrite=args.overwrite)["summary"], indent=2))
    return 0


def _eval(args) -> int:
    import torch

    from .evaluate import evaluate
    from .runtime import build_policy, load_tasks, make_verifier, resolve_device

    cfg = _load(args)
    if cfg is None:
        return 0
    if args.model is None:
        raise SystemExit("eval: --model DIR is required (a saved policy directory)")
    model, tokenizer = build_policy(cfg, args.model)
    model.to(resolve_device(cfg))
    _, eval_problems = load_tasks(cfg, tokenizer, model, with_train=False)
    verifier = make_verifier(cfg)
    result = evaluate(model, tokenizer, eval_problems, verifier, cfg, torch.Generator().manual_seed(cfg.run.seed + 1))
    verifier.close()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result))
    print(json.dumps(result["summary"], indent=2))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning on a task's solutions (the base policy)")
    _common(p)
    _overwrite(p)
    p.set_defaults(func=_sft)
    p = sub.add_parser("train", help="RL training with any registered loss and advantage")
    _common(p)
    p.add_argument("--init", metavar="DIR", help="start from this saved policy (e.g. an SFT run's policy/)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest intact checkpoint in run.out_dir, with the run's own settings "
                        "(without --config, they are read from its config.json)")
    p.add_argument("--accept-changes", action="store_true",
                   help="with --resume: continue with settings that differ from the run's (recorded in config_history.jsonl)")
    _overwrite(p)
    p.set_defaults(func=_train)
    p = sub.add_parser("rft", help="rejection-sampling fine-tuning with exploration-aware selection (STILL §4.4.1)")
    _common(p)
    p.add_argument("--init", metavar="DIR", help="start from this saved policy")
    _overwrite(p)
    p.set_defaults(func=_rft)
    p = sub.add_parser("eval", help="pass@1..n, avg@n, maj@n and diagnostics of a saved policy")
    _common(p)
    p.add_argument("--model", metavar="DIR", help="saved policy directory (required)")
    p.add_argument("--out", metavar="FILE", help="also write the full result as JSON")
    p.set_defaults(func=_eval)
