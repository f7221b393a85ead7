"""Stage plumbing: one-line errors, and outputs that appear whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class PipelineError(Exception):
    """Bad params or bad data: printed as one line, exit code 2, no traceback."""


LOG_DIR = Path("logs")


def run_stage(main: Callable[[], None], name: str) -> None:
    """Run a stage's main(); a PipelineError becomes `error: ...` on stderr and exit 2.

    Wall-clock timings go to logs/<name>.json (not tracked): metrics/ holds only what the model did.
    """
    import time

    start = time.time()
    try:
        main()
        _log_timing(name, start)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


def _log_timing(name: str, start: float) -> None:
    import time

    import psutil

    now = time.time()
    created = psutil.Process().create_time()
    LOG_DIR.mkdir(exist_ok=True)
    write_json_atomic(LOG_DIR / f"{name}.json", {"stage": name, "seconds_total": round(now - created, 2),
                                                  "seconds_startup": round(start - created, 2),
                                                  "seconds_work": round(now - start, 2)})


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a scratch folder next to `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    os.replace(tmp, path)


def save_dataset_dict(splits, out_dir: str | Path) -> None:
    """DatasetDict.save_to_disk with content-derived fingerprints.

    A dataset built from a scratch file gets a fingerprint from that file's (random) path, which
    save_to_disk writes into state.json: the same data would then hash differently for DVC on
    every run and make every downstream stage rerun. A hash of the Arrow files is stable and still
    changes whenever the data does (datasets keys its caches on it).
    """
    import hashlib

    out_dir = Path(out_dir)
    splits.save_to_disk(str(out_dir))
    for split in splits:
        digest = hashlib.blake2b(digest_size=8)
        for arrow in sorted((out_dir / split).glob("*.arrow")):
            with arrow.open("rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
        state_file = out_dir / split / "state.json"
        state = json.loads(state_file.read_text())
        state["_fingerprint"] = digest.hexdigest()
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True))


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: missing; run the stage that writes it first (dvc repro)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PipelineError(f"{path}: corrupt JSON ({err}); delete it and rerun dvc repro") from None
