"""Stage plumbing: one-line errors, outputs that appear whole or not at all, and Arrow datasets
written as shards straight from a stream, with content-derived fingerprints."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets.arrow_writer import ArrowWriter

from hfpipe import paths


class PipelineError(Exception):
    """Bad params or bad data: printed as one line, exit code 2, no traceback."""


def first_line(err: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's text, at most `limit` characters: what a one-line PipelineError
    quotes of another library's (often multi-line) error."""
    return (str(err).strip().splitlines() or [""])[0][:limit]


# Local data files load_dataset reads, by suffix -> its builder.
LOCAL_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
                  ".txt": "text", ".arrow": "arrow"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_local(path: str) -> bool:
    """A local file or folder rather than a Hub id (`nyu-mll/glue`, `gpt2`); `pkg:` names count as local."""
    return (Path(path).expanduser().exists() or path.startswith((".", "/", "~", "pkg:"))
            or Path(path).suffix.lower() in LOCAL_SUFFIXES or not HUB_ID.match(path))


def run_stage(main: Callable[[], None], name: str) -> None:
    """Run a stage's main(); a PipelineError becomes `error: ...` on stderr and exit 2.

    Wall-clock timings go to logs/<name>.json (not tracked): metrics/ holds only what the model did;
    so do the project files the stage imported (`modules`), which the end-to-end tests check against
    the stage's deps in dvc.yaml (hfpipe.stage_deps).
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
    paths.LOGS.mkdir(exist_ok=True)
    write_json_atomic(paths.LOGS / f"{name}.json", {"stage": name, "seconds_total": round(now - created, 2),
                                                    "seconds_startup": round(start - created, 2),
                                                    "seconds_work": round(now - start, 2),
                                                    "modules": project_files_imported()})


def project_files_imported(root: Path = Path(".")) -> list[str]:
    """The files of hfpipe/ and stages/ under `root` that this process has imported, relative to it."""
    root = root.resolve()
    found = set()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        # only ours are resolved (`python -m stages.x` runs as __main__)
        if not file or (name.split(".")[0] not in paths.CODE_PACKAGES and name != "__main__"):
            continue
        try:
            relative = Path(file).resolve().relative_to(root).as_posix()
        except ValueError:  # a module of that name from elsewhere
            continue
        if relative.split("/")[0] in paths.CODE_PACKAGES:
            found.add(relative)
    return sorted(found)


INCOMPLETE = ".incomplete"  # in an output folder while its stage writes it; removed last


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield the folder to write the output `path` into; the output is whole when the block ends.

    - `path` absent (a stage under `dvc repro`: DVC deletes a stage's outputs before running it):
      written in place, flagged by an `.incomplete` file that goes last. A run killed outright
      leaves the flagged folder, which `dvc status` reports as changed and the next `dvc repro`
      deletes (also when it restores the stage from the run-cache), so no scratch folder is left
      behind; `require_complete` refuses to read it meanwhile.
    - `path` present (a stage run by hand, or an old output): built in a scratch folder beside it,
      then swapped in with one atomic exchange, and the old output deleted only after that.
    An error inside the block removes what it wrote and keeps any old output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a run killed before its swap
        shutil.rmtree(stale, ignore_errors=True)
    if (path / INCOMPLETE).exists():  # left by a killed run: never an output
        shutil.rmtree(path)
    in_place = not (path.exists() or path.is_symlink())
    if in_place:
        path.mkdir()
        (path / INCOMPLETE).touch()
        target = path
    else:
        target = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield target
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    if in_place:
        (path / INCOMPLETE).unlink()
        return
    try:
        exchange_paths(target, path)  # target now holds the old output
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink()


def require_complete(path: str | Path) -> Path:
    """`path`, unless it is the half-written output of a killed stage (see atomic_dir)."""
    path = Path(path)
    if (path / INCOMPLETE).exists():
        raise PipelineError(f"{path}: half-written (the stage writing it was killed); run dvc repro to remake it")
    return path


def exchange_paths(a: Path, b: Path) -> None:
    """Swap two paths atomically: at every instant each name holds one whole folder. Where the
    kernel call is missing (another OS, a file system without it), `b` is moved aside first and put
    back if `a` cannot go in."""
    if _rename_exchange(a, b):
        return
    aside = b.with_name(f".{b.name}.tmp-old")
    os.replace(b, aside)
    try:
        os.replace(a, b)
    except BaseException:
        os.replace(aside, b)
        raise
    os.replace(aside, a)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Linux renameat2(RENAME_EXCHANGE); False where it is not available."""
    import ctypes
    import errno

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([KMGT]I?B|B)?\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes from an int or a size string as datasets' save_to_disk takes it: "500MB" (10**6),
    "64MiB" (2**20), "1GB", "2000" (bytes)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match:
        size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").upper()])
        if size > 0:
            return size
    raise ValueError("must be a positive number of bytes or a size such as 500MB, 1GB or 64MiB")


def dataset_fingerprint(split_dir: str | Path) -> str:
    """A hash of a saved split's Arrow files, in shard order: the same data, the same fingerprint."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    for arrow in sorted(Path(split_dir).glob("*.arrow")):
        with arrow.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def save_dataset_dict(splits, out_dir: str | Path, max_shard_size: int | str | None = None) -> None:
    """DatasetDict.save_to_disk with content-derived fingerprints.

    A dataset built from a scratch file gets a fingerprint from that file's (random) path, which
    save_to_disk writes into state.json: the same data would then hash differently for DVC on
    every run and make every downstream stage rerun. A hash of the Arrow files is stable and still
    changes whenever the data does (datasets keys its caches on it).
    For data that is already in memory or on disk; a stream of rows goes through ShardedArrowWriter.
    """
    out_dir = Path(out_dir)
    splits.save_to_disk(str(out_dir), max_shard_size=None if max_shard_size is None else parse_size(max_shard_size))
    for split in splits:
        state_file = out_dir / split / "state.json"
        state = json.loads(state_file.read_text())
        state["_fingerprint"] = dataset_fingerprint(out_dir / split)
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True))


WRITE_BATCH_BYTES = 16 * 10**6


class ShardedArrowWriter:
    """Streams Arrow tables into shard files of at most `max_shard_size` bytes of data each.

    Rows are regrouped into record batches as save_to_disk writes them (1,000 rows, fewer when rows
    are large: at most 100 MB or max_shard_size per batch), and a new shard starts when the next batch
    would take the current one past max_shard_size (only a single batch larger than that makes a
    bigger shard). Memory holds one pending batch, never the data. Shards are named
    `<prefix>-00000.arrow`, ... while writing; finish_split gives them save_to_disk's names.
    """

    def __init__(self, folder: str | Path, features, max_shard_size: int | str, prefix: str = "part"):
        from datasets import config

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.features = features
        self.prefix = prefix
        self.max_shard_size = parse_size(max_shard_size)
        self.batch_rows = config.DEFAULT_MAX_BATCH_SIZE
        # save_to_disk's record batches hold up to 100 MB; 16 MB keeps a stream of long documents'
        # pending rows (and their copy while a batch is cut) small, so memory stays flat
        self.batch_bytes = min(parse_size(config.MAX_ROW_GROUP_SIZE), WRITE_BATCH_BYTES, self.max_shard_size)
        self.shards: list[Path] = []
        self.rows = 0
        self._pending: list = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._writer: ArrowWriter | None = None  # the open shard's
        self._shard_bytes = 0

    def write_table(self, table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        # only once the next batch is decided: batch_rows rows, or more bytes than one batch holds
        while self._pending_rows >= self.batch_rows or self._pending_bytes > self.batch_bytes:
            self._write_batch()

    def _write_batch(self) -> None:
        """Write the next batch: the longest run of pending rows with at most batch_rows rows and
        batch_bytes bytes (at least one row). It depends on the rows only, not on how the caller
        cut them into tables, so the same rows always give the same files."""
        import pyarrow as pa

        table = pa.concat_tables(self._pending).combine_chunks()
        n = min(table.num_rows, self.batch_rows)
        if table.slice(0, n).nbytes > self.batch_bytes:  # binary search: bytes grow with rows
            low, high = 1, n  # the answer is in [low, high]; row 1 always goes
            while low < high:
                mid = (low + high + 1) // 2
                low, high = (mid, high) if table.slice(0, mid).nbytes <= self.batch_bytes else (low, mid - 1)
            n = low
        # a compact copy: buffers sized to the batch, as save_to_disk writes them (a slice would
        # write its parent's buffer padding and change the file's bytes)
        batch = pa.Table.from_arrays([pa.concat_arrays([column.chunk(0).slice(0, n)]) for column in table.columns],
                                     schema=table.schema)
        rest = table.slice(n)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows, self._pending_bytes = rest.num_rows, rest.nbytes if rest.num_rows else 0
        if self._writer is not None and self._shard_bytes + batch.nbytes > self.max_shard_size:
            self._close_shard()
        if self._writer is None:
            self._open_shard()
        assert self._writer is not None  # _open_shard opened it
        self._writer.write_table(batch)
        self._shard_bytes += batch.nbytes
        self.rows += batch.num_rows

    def _open_shard(self) -> None:
        from datasets.arrow_writer import ArrowWriter

        path = self.folder / f"{self.prefix}-{len(self.shards):05d}.arrow"
        self.shards.append(path)
        # as save_to_disk opens its writers (same schema metadata, same record batches)
        self._writer = ArrowWriter(features=self.features, path=str(path), embed_local_files=True)
        self._shard_bytes = 0

    def _close_shard(self) -> None:
        assert self._writer is not None  # called only while a shard is open
        try:
            self._writer.finalize()
        finally:
            self._writer.close()
            self._writer = None

    def close(self) -> list[Path]:
        """Write what is pending and finish the last shard; returns the shard files in order."""
        while self._pending_rows:
            self._write_batch()
        if self._writer is not None:
            self._close_shard()
        return self.shards

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ShardedArrowWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def finish_split(split_dir: str | Path, parts: list[Path], features) -> None:
    """Turn shard files (in order) into a folder `datasets.load_from_disk` reads as one dataset.

    The files are renamed to `data-00000-of-0000N.arrow`, ... in `split_dir`, and state.json /
    dataset_info.json are written as save_to_disk writes them, with a content-derived fingerprint
    (see save_dataset_dict). No part at all gives one empty shard.
    """
    from datasets import DatasetInfo
    from datasets.arrow_writer import ArrowWriter
    from datasets.utils.py_utils import asdict

    split_dir = Path(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    if not parts:
        empty = split_dir / ".empty.arrow"
        writer = ArrowWriter(features=features, path=str(empty), embed_local_files=True)
        writer.finalize()
        writer.close()
        parts = [empty]
    names = [f"data-{i:05d}-of-{len(parts):05d}.arrow" for i in range(len(parts))]
    for part, name in zip(parts, names, strict=False):
        os.replace(part, split_dir / name)
    state: dict[str, Any]  # save_to_disk's state.json, values of every JSON type
    state = {"_data_files": [{"filename": name} for name in names], "_fingerprint": dataset_fingerprint(split_dir),
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": None}
    (split_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
    info = asdict(DatasetInfo(features=features))
    (split_dir / "dataset_info.json").write_text(json.dumps({key: info[key] for key in sorted(info)}, indent=2))


def write_dataset_dict_json(out_dir: str | Path, splits: list[str]) -> None:
    """dataset_dict.json as DatasetDict.save_to_disk writes it (the split folders are written apart)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))


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
