"""Resumable training: checkpoint folders that are complete or ignored, tied to the run that wrote
them, and checked before anything in them is loaded.

Layout (scratch, not a DVC output: `dvc repro` leaves it for a killed run to resume from, and the
train stage stays one DVC's run-cache can restore):

    models/checkpoints/run-<fingerprint>/      one folder per run: the fingerprint of everything that
                                               defines it (params and data)
        checkpoint-<step>/                     one per save, the newest KEEP are kept (and the Trainer's
                                               best one with load_best_model_at_end)
            ...                                backend files: safetensors and JSON (the Accelerate loop),
                                               the Trainer's own (read with torch.load(weights_only=True))
            dvclive/                           the curves up to <step>: dvc removes dvclive/ before a rerun
            sharded/                           train.distributed fsdp: the DCP save, one __<rank>_0.distcp
                                               per process and a .metadata (their list: dcp_files)
            hfpipe_checkpoint.json             the marker, written last: step, run, sha256 of every file
                                               (and with FSDP `shards`, the number of processes)

A folder without the marker is half-written (killed mid-save) and is never resumed from. Before a
resume every file is checked against the marker's hashes: a changed, missing or added file is
refused in one line, never loaded. A sharded checkpoint is complete only when its marker lists
every process's shard and the DCP metadata too (the marker is written after all processes saved).
A run resumes only its own folder: a killed run whose params
were then changed keeps its checkpoints (reported at each start) until the user deletes them or
restores its params, which resumes it. A finished run deletes its own folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from hfpipe import paths
from hfpipe.io import PipelineError
from hfpipe.params import Params

MARKER = "hfpipe_checkpoint.json"
PREFIX = "checkpoint-"
RUN_PREFIX = "run-"
LIVE_SNAPSHOT = "dvclive"  # the copy of the curves in a checkpoint (not the pipeline's dvclive/, paths.DVCLIVE)
KEEP = 2  # the newest complete one, plus the one before in case the newest is being replaced
SHARDED_DIR = "sharded"  # the torch.distributed.checkpoint folder of an FSDP checkpoint
# Params that do not change what is computed: a resume may change them (where the machines meet
# and how often torchrun restarts them too: a run moved to another endpoint resumes).
_NOT_IN_FINGERPRINT = {"save_steps", "threads", "resume", "rdzv_endpoint", "max_restarts"}


def model_config_of(params: Params) -> dict:
    """What fixes the weights' shapes: a checkpoint with another model config cannot be loaded."""
    # (the block length is fixed by the tokenized data, which the data fingerprint covers)
    return {"task": params.task, "model": params.model.model_dump()}


def run_definition(params: Params) -> dict:
    """Every param that changes the numbers a run computes (so a resume must match all of them)."""
    train = {k: v for k, v in params.train.model_dump().items() if k not in _NOT_IN_FINGERPRINT}
    return {**model_config_of(params), "seed": params.seed, "lr": params.lr, "train": train}


def data_fingerprint(inputs: list[str | Path]) -> str:
    """sha256 of the files under `inputs` (names and contents): the tokenized data and the tokenizer.

    The Arrow files of a saved dataset are not read: hfpipe.io.save_dataset_dict (and the tokenize
    stage's sharded writer) put a hash of their bytes into the split's state.json as its
    `_fingerprint`, and state.json is hashed in full, so different data still gives a different
    fingerprint while a start costs a few small files, not a pass over gigabytes. An Arrow file
    counts as covered when its folder's state.json lists it and has a `_fingerprint`; its name and
    size are hashed. Any other file (the tokenizer, dataset_info.json, an Arrow file of a folder
    without such a state.json) is hashed byte for byte.
    """
    digest = hashlib.sha256()
    for root in inputs:
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
            hash_file_into(digest, f)
            digest.update(b"\0")
    return digest.hexdigest()


def hash_file_into(digest: hashlib._Hash, path: Path) -> None:
    """Feed a file's bytes to `digest`, a MiB at a time (a checkpoint's or a dataset's files may be large)."""
    with open(path, "rb") as fd:
        for chunk in iter(lambda: fd.read(1 << 20), b""):
            digest.update(chunk)


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
    """The completion marker: written (atomically) only after every other file of the checkpoint,
    with the sha256 of each of them (checked before a resume loads anything)."""
    data = {**data, "files": file_hashes(checkpoint)}
    tmp = checkpoint / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    with open(tmp) as fd:
        os.fsync(fd.fileno())
    os.replace(tmp, checkpoint / MARKER)


def file_hashes(checkpoint: Path) -> dict[str, str]:
    """sha256 of every file in a checkpoint but the marker, by path inside it."""
    out = {}
    for f in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        name = f.relative_to(checkpoint).as_posix()
        if name in (MARKER, f".{MARKER}.tmp"):
            continue
        digest = hashlib.sha256()
        hash_file_into(digest, f)
        out[name] = digest.hexdigest()
    return out


def read_marker(checkpoint: Path) -> dict | None:
    """The marker, None when there is none (a save killed midway); one line when it is there but
    unreadable: a complete checkpoint is never taken for a half-written one and deleted."""
    path = checkpoint / MARKER
    if not path.exists():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PipelineError(f"{path}: unreadable ({err}); restore it, or delete {checkpoint} to resume from "
                            "an older checkpoint (or its run folder to start over)") from None
    if not (isinstance(marker, dict) and isinstance(marker.get("step"), int)
            and isinstance(marker.get("files"), dict)):
        raise PipelineError(f"{path}: not a checkpoint marker (a JSON object with step and files); restore it, or "
                            f"delete {checkpoint} to resume from an older checkpoint (or its run folder to start over)")
    return marker


def dcp_files(shards: int) -> list[str]:
    """The files a complete DCP save by `shards` processes has, by path inside the checkpoint."""
    return [f"{SHARDED_DIR}/.metadata", *(f"{SHARDED_DIR}/__{rank}_0.distcp" for rank in range(shards))]


def verify_checkpoint(checkpoint: Path, marker: dict) -> None:
    """Every file as the marker recorded it, and no other: nothing is loaded from a checkpoint
    that changed after it was written. A sharded one's marker must also list every shard."""
    recorded, found = marker["files"], file_hashes(checkpoint)
    shards = marker.get("shards")
    if shards is not None:
        unlisted = [name for name in dcp_files(shards) if name not in recorded] if isinstance(shards, int) else ["?"]
        if unlisted:
            raise PipelineError(f"{checkpoint}: its marker does not list every shard of its {shards} processes "
                                f"({', '.join(unlisted[:3])}); nothing was loaded from it. Delete it to resume "
                                f"from an older checkpoint (or {checkpoint.parent} to start over)")
    problems = [f"{name} changed" for name in sorted(recorded) if name in found and found[name] != recorded[name]]
    problems += [f"{name} missing" for name in sorted(set(recorded) - set(found))]
    problems += [f"{name} added" for name in sorted(set(found) - set(recorded))]
    if problems:
        raise PipelineError(f"{checkpoint}: not as it was written ({', '.join(problems[:3])}"
                            f"{', ...' if len(problems) > 3 else ''}); nothing was loaded from it. Restore it, or "
                            f"delete it to resume from an older checkpoint (or {checkpoint.parent} to start over)")


def checkpoint_step(path: Path) -> int | None:
    m = re.fullmatch(rf"{PREFIX}(\d+)", path.name)
    return int(m.group(1)) if m else None


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints of a run folder (those with a marker), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None and (p / MARKER).exists()]
    return sorted(found, key=lambda p: cast(int, checkpoint_step(p)))  # found: each has a step


def run_dir(params: Params, data_hash: str, root: Path = paths.CHECKPOINTS) -> Path:
    """The folder of this run's checkpoints."""
    return Path(root) / f"{RUN_PREFIX}{run_fingerprint(params, data_hash)}"


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


def find_resume_checkpoint(params: Params, data_hash: str, backend: str, root: Path = paths.CHECKPOINTS,
                           log=print, cleanup: bool = True) -> ResumePoint | None:
    """The newest complete checkpoint of this very run (its folder under `root`), checked file by
    file against its marker; or None (start from scratch).

    Half-written checkpoints in the run's folder are deleted; other runs' folders are never touched,
    only reported (what differs, how much space). cleanup=False (the other processes of a
    multi-process run, after the main one has checked) only reads.
    """
    folder = run_dir(params, data_hash, root)
    if cleanup:
        report_other_runs(params, data_hash, folder, log)
    if not folder.is_dir():
        return None
    for p in (folder.iterdir() if cleanup else []):  # leftovers of a save killed midway: never used
        unfinished = checkpoint_step(p) is not None and not (p / MARKER).exists()
        if p.is_dir() and (p.name.startswith(".tmp-") or unfinished):
            shutil.rmtree(p, ignore_errors=True)
    candidates = complete_checkpoints(folder)
    if not candidates:
        return None
    if not params.train.resume:
        log(f"train.resume is false: starting over (deleting this run's {len(candidates)} checkpoint(s) in {folder})")
        if cleanup:
            remove_checkpoints(folder)
        return None
    newest = candidates[-1]
    marker = read_marker(newest)
    assert marker is not None  # complete_checkpoints lists only checkpoints with a marker
    if marker.get("backend") != backend or marker.get("fingerprint") != run_fingerprint(params, data_hash):
        raise PipelineError(f"{newest / MARKER}: written by another run than its folder's; "
                            f"delete {folder} to start over")
    if cleanup:
        verify_checkpoint(newest, marker)
    return ResumePoint(newest, marker["step"], marker)


def report_other_runs(params: Params, data_hash: str, folder: Path, log=print) -> None:
    """One line per other run that left checkpoints (killed, then its params or data changed):
    kept, as they may be hours of work; the user resumes them by restoring the params, or deletes them."""
    root = folder.parent
    if not root.is_dir():
        return
    for other in sorted(root.glob(f"{RUN_PREFIX}*")):
        if other == folder or not other.is_dir():
            continue
        found = complete_checkpoints(other)
        try:
            marker = read_marker(found[-1]) if found else None
        except PipelineError:
            marker = None
        size = sum(f.stat().st_size for f in other.rglob("*") if f.is_file()) / 1e6
        if marker is None:
            log(f"{other}: no complete checkpoint ({size:.1f} MB); delete it to reclaim the space")
            continue
        why = _changed_keys(marker.get("run", {}), run_definition(params))
        if marker.get("data") != data_hash:
            why.append("the tokenized data or tokenizer changed")
        log(f"{other}: kept, checkpoint at step {marker['step']} of a run with other params "
            f"({'; '.join(why) or 'unknown'}; {size:.1f} MB): restore those params to resume it, or delete it")


def prune_checkpoints(root: Path, keep: int = KEEP, protect: str | Path | None = None) -> None:
    """Delete all but the newest `keep` complete checkpoints, and never `protect` (the Trainer's
    best checkpoint with load_best_model_at_end: it reloads it at the end, also after a resume)."""
    protected = Path(protect).resolve() if protect else None
    for old in complete_checkpoints(root)[:-keep]:
        if protected is None or old.resolve() != protected:
            shutil.rmtree(old, ignore_errors=True)


def remove_checkpoints(folder: Path) -> None:
    """Delete a run's checkpoint folder (and models/checkpoints when nothing else is left in it):
    a finished run leaves nothing to resume."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:  # other runs' checkpoints, or already gone
        pass


def snapshot_dvclive(live_dir: Path, checkpoint: Path) -> None:
    """Copy the curves so far into the checkpoint: dvc deletes dvclive/ before rerunning the stage."""
    if Path(live_dir).is_dir():
        shutil.copytree(live_dir, checkpoint / LIVE_SNAPSHOT, dirs_exist_ok=True)


def restore_dvclive(checkpoint: Path, live_dir: Path) -> None:
    src = checkpoint / LIVE_SNAPSHOT
    if src.is_dir():
        shutil.rmtree(live_dir, ignore_errors=True)
        shutil.copytree(src, live_dir)


def last_good_checkpoint(root: Path) -> str:
    found = complete_checkpoints(root)
    return str(found[-1]) if found else "none (no checkpoint saved yet)"
