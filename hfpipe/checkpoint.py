"""Resumable training: checkpoint folders that are complete or ignored, and tied to the run that wrote them.

Layout (scratch, not a DVC output: `dvc repro` leaves it for a killed run to resume from, and the
train stage stays one DVC's run-cache can restore):

    models/checkpoints/checkpoint-<step>/      one per save, the newest KEEP are kept (and the Trainer's best
                                               one with load_best_model_at_end)
        ...                                    backend files (Trainer or accelerator.save_state)
        dvclive/                               the curves up to <step>: dvc removes dvclive/ before a rerun
        hfpipe_checkpoint.json                 the marker, written last: step + run fingerprint

A folder without the marker is half-written (killed mid-save) and is never resumed from. The
marker holds the fingerprint of everything that defines the run (params and data); a checkpoint
from another run is ignored and deleted, or refused with one line when its model config differs
(its weights cannot even be loaded). A finished run deletes its checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from hfpipe.io import PipelineError
from hfpipe.params import Params

CHECKPOINT_DIR = Path("models/checkpoints")
MARKER = "hfpipe_checkpoint.json"
PREFIX = "checkpoint-"
KEEP = 2  # the newest complete one, plus the one before in case the newest is being replaced
# Params that do not change what is computed: a resume may change them.
_NOT_IN_FINGERPRINT = {"save_steps", "threads", "resume"}


def model_config_of(params: Params) -> dict:
    """What fixes the weights' shapes: a checkpoint with another model config cannot be loaded."""
    # (the block length is fixed by the tokenized data, which the data fingerprint covers)
    return {"task": params.task, "model": params.model.model_dump()}


def run_definition(params: Params) -> dict:
    """Every param that changes the numbers a run computes (so a resume must match all of them)."""
    train = {k: v for k, v in params.train.model_dump().items() if k not in _NOT_IN_FINGERPRINT}
    return {**model_config_of(params), "seed": params.seed, "lr": params.lr, "train": train}


def data_fingerprint(paths: list[str | Path]) -> str:
    """sha256 of the files under `paths` (names and contents): the tokenized data and the tokenizer.

    The Arrow files of a saved dataset are not read: hfpipe.io.save_dataset_dict (and the tokenize
    stage's sharded writer) put a hash of their bytes into the split's state.json as its
    `_fingerprint`, and state.json is hashed in full, so different data still gives a different
    fingerprint while a start costs a few small files, not a pass over gigabytes. An Arrow file
    counts as covered when its folder's state.json lists it and has a `_fingerprint`; its name and
    size are hashed. Any other file (the tokenizer, dataset_info.json, an Arrow file of a folder
    without such a state.json) is hashed byte for byte.
    """
    digest = hashlib.sha256()
    for root in paths:
        root = Path(root)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        covered: dict[Path, set[str]] = {}
        for f in files:
            digest.update(str(f.relative_to(root.parent)).encode() + b"\0")
            if f.suffix == ".arrow":
                if f.parent not in covered:
                    covered[f.parent] = _fingerprinted_files(f.parent)
                if f.name in covered[f.parent]:
                    digest.update(f"size {f.stat().st_size}\0".encode())
                    continue
            with open(f, "rb") as fd:
                for chunk in iter(lambda: fd.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def _fingerprinted_files(split_dir: Path) -> set[str]:
    """The data files a saved split's state.json lists, when it carries a fingerprint (else none)."""
    try:
        state = json.loads((split_dir / "state.json").read_text())
        if not state.get("_fingerprint"):
            return set()
        return {entry["filename"] for entry in state.get("_data_files", [])}
    except (OSError, ValueError, TypeError, KeyError):
        return set()


def run_fingerprint(params: Params, data_hash: str) -> str:
    payload = json.dumps({"run": run_definition(params), "data": data_hash}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def marker_data(params: Params, data_hash: str, step: int, backend: str, **extra) -> dict:
    return {"step": step, "backend": backend, "fingerprint": run_fingerprint(params, data_hash),
            "data": data_hash, "run": run_definition(params), **extra}


def write_marker(checkpoint: Path, data: dict) -> None:
    """The completion marker: written (atomically) only after every other file of the checkpoint."""
    tmp = checkpoint / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    with open(tmp) as fd:
        os.fsync(fd.fileno())
    os.replace(tmp, checkpoint / MARKER)


def read_marker(checkpoint: Path) -> dict | None:
    try:
        return json.loads((checkpoint / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def checkpoint_step(path: Path) -> int | None:
    m = re.fullmatch(rf"{PREFIX}(\d+)", path.name)
    return int(m.group(1)) if m else None


def complete_checkpoints(root: Path = CHECKPOINT_DIR) -> list[Path]:
    """Complete checkpoints (those with a readable marker), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None and read_marker(p)]
    return sorted(found, key=checkpoint_step)


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return keys


@dataclass
class ResumePoint:
    path: Path
    step: int
    marker: dict


def find_resume_checkpoint(params: Params, data_hash: str, backend: str, root: Path = CHECKPOINT_DIR,
                           log=print, cleanup: bool = True) -> ResumePoint | None:
    """The newest complete checkpoint of this very run, or None (start from scratch).

    Half-written folders are deleted. Checkpoints of a run with other params or data are deleted
    (logged), except those of another model config: resuming them is refused with one line, as
    silently throwing away a killed run's work because a model param was edited would surprise.
    cleanup=False (the other processes of a multi-process run) only reads.
    """
    if not root.is_dir():
        return None

    def drop(folder: Path) -> None:
        if cleanup:  # the other processes only read: the main process deletes
            remove_checkpoints(folder)

    for p in (root.iterdir() if cleanup else []):  # leftovers of a save killed midway: never used
        if p.is_dir() and (p.name.startswith(".tmp-") or (checkpoint_step(p) is not None and not read_marker(p))):
            shutil.rmtree(p, ignore_errors=True)
    candidates = complete_checkpoints(root)
    if not candidates or not params.train.resume:
        if candidates:
            log(f"train.resume is false: deleting {len(candidates)} checkpoint(s) in {root}")
            drop(root)
        return None
    newest = candidates[-1]
    marker = read_marker(newest)
    want = run_fingerprint(params, data_hash)
    if marker.get("fingerprint") == want and marker.get("backend") == backend:
        return ResumePoint(newest, int(marker["step"]), marker)
    old_run = marker.get("run", {})
    model_changes = _changed_keys({k: old_run.get(k) for k in model_config_of(params)}, model_config_of(params))
    if model_changes:
        raise PipelineError(f"{newest}: a resume checkpoint from a different model config ({'; '.join(model_changes)}); "
                            f"restore those params to resume it, or delete {root} (or set train.resume: false) "
                            "to start over")
    why = _changed_keys(old_run, run_definition(params))
    if marker.get("data") != data_hash:
        why.append("the tokenized data or tokenizer changed")
    if marker.get("backend") != backend:
        why.append(f"backend {marker.get('backend')!r} -> {backend!r}")
    log(f"ignoring stale checkpoints in {root} (from a run with other params: {'; '.join(why) or 'unknown'}); "
        "starting from scratch")
    drop(root)
    return None


def prune_checkpoints(root: Path = CHECKPOINT_DIR, keep: int = KEEP, protect: str | Path | None = None) -> None:
    """Delete all but the newest `keep` complete checkpoints, and never `protect` (the Trainer's
    best checkpoint with load_best_model_at_end: it reloads it at the end, also after a resume)."""
    protected = Path(protect).resolve() if protect else None
    for old in complete_checkpoints(root)[:-keep]:
        if protected is None or old.resolve() != protected:
            shutil.rmtree(old, ignore_errors=True)


def remove_checkpoints(root: Path = CHECKPOINT_DIR) -> None:
    """Empty the folder (kept, as the DVC output it is): a finished run leaves nothing to resume."""
    if root.is_dir():
        for p in root.iterdir():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    root.mkdir(parents=True, exist_ok=True)


def snapshot_dvclive(live_dir: Path, checkpoint: Path) -> None:
    """Copy the curves so far into the checkpoint: dvc deletes dvclive/ before rerunning the stage."""
    if Path(live_dir).is_dir():
        shutil.copytree(live_dir, checkpoint / "dvclive", dirs_exist_ok=True)


def restore_dvclive(checkpoint: Path, live_dir: Path) -> None:
    src = checkpoint / "dvclive"
    if src.is_dir():
        shutil.rmtree(live_dir, ignore_errors=True)
        shutil.copytree(src, live_dir)


def last_good_checkpoint(root: Path = CHECKPOINT_DIR) -> str:
    found = complete_checkpoints(root)
    return str(found[-1]) if found else "none (no checkpoint saved yet)"
