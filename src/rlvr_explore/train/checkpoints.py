"""The run directory and its checkpoints (guarantees: docs/reliability.md).

* **One owner.** A run holds an exclusive lock on ``<out_dir>/.lock`` while it lives. A fresh run
  refuses a directory that holds another run unless told to overwrite it; ``--resume`` of a
  finished run does nothing; a run killed before its first checkpoint restarts clean.
* **Atomic, verified checkpoints.** A checkpoint is written into a temporary sibling and renamed;
  its ``manifest.json`` (size and SHA-256 of every file) is written last. ``--resume`` takes the
  newest checkpoint whose manifest holds and sets damaged ones aside, named in a warning.
* **Nothing non-finite on disk.** Weights and optimizer state are checked before they are saved.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlvr_explore.rollout import NonFiniteError

log = logging.getLogger(__name__)

RUN_ENTRIES = ("metrics.jsonl", "config.json", "checkpoints", "eval", "policy", "tensorboard", "report", "finished.json")
STEP_DIR = re.compile(r"step_\d{6}")
MANIFEST = "manifest.json"


class RunDirectoryError(ValueError):
    """A run directory that this run may not use as asked; the message says what to do."""


class RunAlreadyFinished(Exception):
    """``--resume`` of a run that already reached its last step: nothing to do."""


# ------------------------------------------------------------------ atomic directories


def atomic_dir(final: Path, write) -> None:
    """Write into a temporary sibling, then rename: a crash never leaves a half directory."""
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        old = final.with_name(final.name + f".old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)


def clean_orphans(out: Path) -> list[str]:
    """Remove what a killed ``atomic_dir`` left: ``*.tmp-PID`` always, ``*.old-PID`` when its
    final directory exists (otherwise it is the only copy, and is put back)."""
    cleaned = []
    for parent in (out, out / "checkpoints"):
        if not parent.is_dir():
            continue
        for entry in sorted(parent.iterdir()):
            match = re.fullmatch(r"(.+)\.(tmp|old)-\d+", entry.name)
            if not match or not entry.is_dir():
                continue
            final = parent / match.group(1)
            if match.group(2) == "old" and not final.exists():
                entry.rename(final)
            else:
                shutil.rmtree(entry)
            cleaned.append(str(entry))
    return cleaned


# ------------------------------------------------------------------ manifests


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def write_manifest(directory: Path) -> None:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": _digest(p)} for p in files}
    (directory / MANIFEST).write_text(json.dumps({"files": entries}, indent=1))


def checkpoint_damage(directory: Path) -> str | None:
    """None if every file the manifest lists is there with its size and checksum; else what is wrong."""
    try:
        entries = json.loads((directory / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (the write did not finish)"
    except (ValueError, KeyError, TypeError):
        return f"{MANIFEST} is not readable"
    for name, expected in entries.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {expected['bytes']}"
        if _digest(path) != expected["sha256"]:
            return f"{name} does not match its checksum"
    return None


def list_checkpoints(out: Path) -> list[Path]:
    root = out / "checkpoints"
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if STEP_DIR.fullmatch(p.name) and p.is_dir())


# ------------------------------------------------------------------ non-finite values


def nonfinite_tensors(named: dict[str, torch.Tensor]) -> list[str]:
    return [name for name, t in named.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def assert_savable(model, optimizer) -> None:
    """Refuse to write a checkpoint that holds a NaN or inf."""
    bad = nonfinite_tensors(dict(model.state_dict()))
    for index, state in optimizer.state_dict()["state"].items():
        bad += [f"optimizer state {index}.{key}" for key in nonfinite_tensors({k: v for k, v in state.items() if torch.is_tensor(v)})]
    if bad:
        raise NonFiniteError(f"not saving a checkpoint with non-finite values in {len(bad)} tensors ({', '.join(bad[:3])}...)")


# ------------------------------------------------------------------ the run directory


def _entries(out: Path) -> list[str]:
    return [name for name in RUN_ENTRIES if (out / name).exists()]


def finished_step(out: Path) -> int | None:
    try:
        return int(json.loads((out / "finished.json").read_text())["step"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


@dataclass
class RunPlan:
    """What a starting run will do with its directory; ``apply`` does it, after every refusal."""

    out: Path
    resume_from: Path | None = None
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    clear: list[str] = field(default_factory=list)  # entries removed before the run writes

    def apply(self) -> None:
        for path in clean_orphans(self.out):
            log.warning("removed %s, left by an interrupted write", path)
        for path, reason in self.damaged:
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            path.rename(aside)
            log.warning("checkpoint %s is damaged (%s): moved to %s", path, reason, aside.name)
        for name in self.clear:
            target = self.out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()


def lock_run_dir(out: Path):
    """An exclusive lock held while the returned file stays open (until the process ends)."""
    out.mkdir(parents=True, exist_ok=True)
    handle = (out / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        raise RunDirectoryError(f"{out} is in use by another run (pid {handle.read().strip() or '?'}); "
                                "wait for it, or choose another run.out_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def plan_run(out: Path, steps: int, resume: bool, overwrite: bool) -> RunPlan:
    """Decide, without writing anything, how a run starts in ``out``; raise when it may not."""
    present = _entries(out)
    if not resume:
        if present and not overwrite:
            raise RunDirectoryError(
                f"{out} already holds a run ({', '.join(present)}); use --resume to continue it, "
                "--overwrite to replace it, or another run.out_dir")
        return RunPlan(out, clear=present)
    finished = finished_step(out)
    if finished is not None and finished >= steps:
        raise RunAlreadyFinished(f"{out}: the run already finished at step {finished} (train.steps={steps}); "
                                 "nothing to do. Raise train.steps to train further.")
    damaged = []
    for checkpoint in reversed(list_checkpoints(out)):
        problem = checkpoint_damage(checkpoint)
        if problem is None:
            return RunPlan(out, resume_from=checkpoint, damaged=damaged, clear=[] if finished is None else ["finished.json"])
        damaged.append((checkpoint, problem))
    if damaged:
        raise RunDirectoryError(f"--resume: no intact checkpoint in {out / 'checkpoints'}: "
                                + "; ".join(f"{p.name}: {why}" for p, why in damaged)
                                + ". Use --overwrite to start the run again.")
    if not present:  # so a job script may always pass --resume, from its first launch on
        log.warning("%s: no run to resume there; starting a new one", out)
        return RunPlan(out)
    log.warning("%s: no checkpoint was written before the run stopped; starting it again from step 0", out)
    return RunPlan(out, clear=present)


def save_checkpoint(out: Path, step: int, write_files, keep: int) -> Path:
    """checkpoints/step_NNNNNN, written by ``write_files(directory)``, its manifest last; then the
    oldest beyond ``keep`` are removed."""
    final = out / "checkpoints" / f"step_{step:06d}"

    def write(tmp: Path):
        write_files(tmp)
        write_manifest(tmp)

    atomic_dir(final, write)
    for old in list_checkpoints(out)[:-keep]:
        doomed = old.rename(old.with_name(f"{old.name}.tmp-{os.getpid()}"))  # a kill mid-delete leaves an orphan, not a torn checkpoint
        shutil.rmtree(doomed)
    return final


def mark_finished(out: Path, step: int) -> None:
    (out / "finished.json").write_text(json.dumps({"step": step}))
