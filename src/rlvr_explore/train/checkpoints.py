"""The run directory and its checkpoints (guarantees: docs/reliability.md).

* **One owner, and only its own files.** ``run.json`` records which command made a directory
  (an RL, SFT or RFT run, a comparison, a report). A run holds an exclusive lock on
  ``<out_dir>/.lock`` while it lives. A fresh run refuses a directory that holds another run
  unless told to overwrite one of its own kind; ``--resume`` continues only a run of its own kind,
  does nothing for a finished one and restarts one killed before its first checkpoint. Any other
  directory that is not empty is refused before anything in it changes, and a restart or
  ``--overwrite`` removes only the entries that kind of run writes (``OWNED``).
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

MARKER = "run.json"
LOCK = ".lock"
# What each kind of run writes in its directory: the only entries a restart or --overwrite removes.
OWNED = {
    "rl": ("metrics.jsonl", "config.json", "config_history.jsonl", "checkpoints", "eval", "policy", "tensorboard",
           "rehearsal.pt", "finished.json"),
    "sft": ("metrics.jsonl", "config.json", "policy", "tensorboard", "finished.json"),
    "rft": ("metrics.jsonl", "config.json", "eval", "policy", "tensorboard", "finished.json"),
}
KINDS = {"rl": "an RL run (rlvr-explore train)", "sft": "an SFT run (rlvr-explore sft)",
         "rft": "an RFT run (rlvr-explore rft)", "compare": "a comparison (rlvr-explore compare or demo)",
         "report": "a report (rlvr-explore report)"}
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
    """The names of the floating-point tensors holding a NaN or inf. One host read per device for
    the lot (on a GPU, one read per tensor would wait for the queue hundreds of times a step)."""
    floating = {name: t for name, t in named.items() if t.is_floating_point()}
    by_device: dict[torch.device, list[str]] = {}
    for name, t in floating.items():
        by_device.setdefault(t.device, []).append(name)
    bad = []
    for names in by_device.values():
        finite = torch.stack([torch.isfinite(floating[name]).all() for name in names])
        if not bool(finite.all()):
            bad += [name for name, ok in zip(names, finite.tolist()) if not ok]
    return bad


def assert_savable(model, optimizer) -> None:
    """Refuse to write a checkpoint that holds a NaN or inf."""
    bad = nonfinite_tensors(dict(model.state_dict()))
    for index, state in optimizer.state_dict()["state"].items():
        bad += [f"optimizer state {index}.{key}" for key in nonfinite_tensors({k: v for k, v in state.items() if torch.is_tensor(v)})]
    if bad:
        raise NonFiniteError(f"not saving a checkpoint with non-finite values in {len(bad)} tensors ({', '.join(bad[:3])}...)")


# ------------------------------------------------------------------ the run directory


def read_owner(out: Path) -> dict | None:
    """The ``run.json`` record of ``out`` ({"kind": ..., and what the kind keeps}); for a run
    directory written before ``run.json`` existed, the kind its files show; None for a directory
    that no rlvr-explore command made."""
    try:
        record = json.loads((out / MARKER).read_text())
    except FileNotFoundError:
        return _legacy_owner(out)
    except ValueError:
        raise RunDirectoryError(f"{out / MARKER} is not readable JSON; it should name the kind of run that made "
                                f"{out}. Move the directory aside or repair the file.") from None
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
        raise RunDirectoryError(f"{out / MARKER}: 'kind' should be one of {', '.join(KINDS)}, got {record!r}")
    return record


def _legacy_owner(out: Path) -> dict | None:
    if (out / "checkpoints").is_dir():
        return {"kind": "rl"}
    if (out / "comparison.json").is_file() or any(re.fullmatch(r"seed\d+", e.name) and e.is_dir() for e in out.iterdir()):
        return {"kind": "compare"}
    if (out / "index.html").is_file() and (out / "figures" / "pass_at_k.png").is_file():
        return {"kind": "report"}
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or not {"run", "model", "task"} <= set(saved):  # not one of our configs
        return None
    from .runtime import read_records

    logged = {record.get("kind") for record in read_records(out / "metrics.jsonl")} if (out / "metrics.jsonl").is_file() else set()
    for kind, evidence in (("sft", "sft"), ("rft", "rft"), ("rl", "train")):
        if evidence in logged:
            return {"kind": kind}
    if (out / "eval").is_dir():  # an RL or RFT run stopped after its first evaluation
        return {"kind": "rl"}
    return {"kind": "sft"} if (out / "policy").is_dir() else None


def write_owner(out: Path, kind: str, **details) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"kind": kind, **details}, indent=1))


def _entries(out: Path) -> list[str]:
    """The entries of ``out`` but the ownership record and the lock."""
    if not out.is_dir():
        return []
    return sorted(entry.name for entry in out.iterdir() if entry.name not in (MARKER, LOCK))


def _describe(names: list[str], most: int = 6) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def claim_directory(out: Path, kind: str) -> dict | None:
    """Refuse, before anything changes, a directory that holds something other than a run of
    ``kind`` (another kind of run, or files no rlvr-explore command made); return its record."""
    owner = read_owner(out) if out.exists() else None
    if owner is not None and owner["kind"] != kind:
        hint = (f" To train from its policy: rlvr-explore train --init {out / 'policy'} --set run.out_dir=NEW_DIR."
                if (out / "policy").is_dir() and kind == "rl" else "")
        raise RunDirectoryError(f"{out} holds {KINDS[owner['kind']]}, not {KINDS[kind]}; nothing was changed. "
                                f"Choose another directory for this one.{hint}")
    foreign = _entries(out) if owner is None else []
    if foreign:
        raise RunDirectoryError(f"{out} is not empty and no rlvr-explore command made it (it holds "
                                f"{_describe(foreign)}); nothing was changed. Choose a new or empty directory.")
    return owner


def finished_step(out: Path) -> int | None:
    try:
        return int(json.loads((out / "finished.json").read_text())["step"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


@dataclass
class RunPlan:
    """What a starting run will do with its directory; ``apply`` does it, after every refusal."""

    out: Path
    kind: str
    owner: dict | None = None  # the directory's run.json record, if it holds a run of this kind
    resume_from: Path | None = None
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    clear: list[str] = field(default_factory=list)  # entries removed before the run writes

    def apply(self, **record) -> None:
        """Clear what the plan says, then record in ``run.json`` the kind of run and ``record``."""
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
        write_owner(self.out, self.kind, **record)


def lock_run_dir(out: Path, kind: str):
    """An exclusive lock held while the returned file stays open (until the process ends); a
    directory that is not a run of ``kind`` is refused first, untouched."""
    claim_directory(out, kind)
    out.mkdir(parents=True, exist_ok=True)
    handle = (out / LOCK).open("a+")
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


def plan_run(out: Path, kind: str, steps: int, resume: bool, overwrite: bool) -> RunPlan:
    """Decide, without writing anything, how a run of ``kind`` starts in ``out``; raise when it may not."""
    owner = claim_directory(out, kind)
    present = [name for name in OWNED[kind] if (out / name).exists()]
    if not resume:
        if present and not overwrite:
            raise RunDirectoryError(
                f"{out} already holds a run ({', '.join(present)}); use --resume to continue it, "
                "--overwrite to replace it, or another run.out_dir")
        return RunPlan(out, kind, clear=present)
    finished = finished_step(out)
    if finished is not None and finished >= steps:
        raise RunAlreadyFinished(f"{out}: the run already finished at step {finished} (train.steps={steps}); "
                                 f"nothing to do. To train it further, raise train.steps: rlvr-explore train "
                                 f"--resume --set run.out_dir={out} train.steps={2 * finished} --accept-changes "
                                 "(the learning-rate schedule is then sized to the new train.steps)")
    damaged = []
    for checkpoint in reversed(list_checkpoints(out)):
        problem = checkpoint_damage(checkpoint)
        if problem is None:
            return RunPlan(out, kind, owner=owner, resume_from=checkpoint, damaged=damaged,
                           clear=[] if finished is None else ["finished.json"])
        damaged.append((checkpoint, problem))
    if damaged:
        raise RunDirectoryError(f"--resume: no intact checkpoint in {out / 'checkpoints'}: "
                                + "; ".join(f"{p.name}: {why}" for p, why in damaged)
                                + ". Use --overwrite to start the run again.")
    if not present:  # so a job script may always pass --resume, from its first launch on
        log.warning("%s: no run to resume there; starting a new one", out)
        return RunPlan(out, kind, owner=owner)
    log.warning("%s: no checkpoint was written before the run stopped; starting it again from step 0", out)
    return RunPlan(out, kind, owner=owner, clear=present)


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
