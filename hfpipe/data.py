"""Fetch and filter: documents from installed packages, the Hub or local files -> Arrow splits.

The causal-LM corpus keeps documents that mention any filter keyword (tutorial 04's
`any_keyword_in_string`), drops exact duplicates, and splits train/validation by a seeded hash
of the document, so the split does not depend on the order the source yields documents in.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hfpipe.io import LOCAL_SUFFIXES, PipelineError, first_line, looks_local, save_dataset_dict
from hfpipe.params import DatasetParams, Params
from hfpipe.paths import REQUIREMENTS

if TYPE_CHECKING:
    from hfpipe.tasks.common import Task

# Files above this size are mostly generated tables or vendored bundles, not code people write.
MAX_FILE_BYTES = 500_000
# Any source: a document above this is skipped (counted in the stats as too_large), in either split,
# so one huge row cannot take tokenize's memory (dataset.max_document_bytes cuts train ones shorter).
MAX_DOCUMENT_CHARS = 10_000_000
# Rows per Arrow record batch when writing documents.
WRITE_BATCH = 256
# This project's own package is not part of the corpus it trains on.
EXCLUDED_DISTRIBUTIONS = {"hfpipe"}
# REQUIREMENTS (hfpipe.paths): the lock every stage depends on; it pins the installed-packages corpus too.


def any_keyword_in_string(text: str, keywords: Iterable[str]) -> bool:
    return any(keyword in text for keyword in keywords)


def hash_fraction(text: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for a document: the same text, the same number."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") / 2**64


def canonical_name(name: str) -> str:
    """A distribution's name as PEP 503 compares them (Flufl.Lock, flufl_lock -> flufl-lock)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path = REQUIREMENTS) -> dict[str, str]:
    """canonical name -> version, for every `name==version` line of the lock (requirements.txt)."""
    if not lock.is_file():
        raise PipelineError(f"{lock}: missing; the installed-packages corpus is the locked packages' files "
                            f"(restore it from git)")
    out = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            out[canonical_name(match.group(1))] = match.group(3)
    return out


def installed_python_files(seed: int, lock: Path = REQUIREMENTS) -> list[tuple[str, str, Path, str | None]]:
    """(distribution, version, file, RECORD sha256) for every .py file of the locked distributions.

    The corpus is a function of the lock, a dep of the fetch stage: a distribution the lock does not
    pin is left out, and one installed at another version than the lock's is refused, so what pip
    installed by hand can neither change the data behind DVC's back nor pass unnoticed. Ordered by a
    seeded hash of the file's path, so a `max_documents` cap takes a sample of all packages.
    """
    locked = locked_versions(lock)
    files: dict[str, tuple[str, str, Path, str | None]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() in EXCLUDED_DISTRIBUTIONS or canonical_name(name) not in locked:
            continue
        version = dist.version  # (each read parses the METADATA file again)
        # The release must match; a local label may differ: the CPU lock's torch 2.13.0+cpu and the
        # CUDA lock's (requirements-cuda.txt) 2.13.0 are builds of one release.
        if version.split("+")[0] != locked[canonical_name(name)].split("+")[0]:
            raise PipelineError(f"{name} {version} is installed but {lock} pins {locked[canonical_name(name)]}: "
                                f"the installed-packages corpus is the locked packages' files; "
                                f"pip install -r {lock}")
        for f in dist.files or []:
            if f.suffix == ".py":
                key = f"{name}/{f.as_posix()}"
                digest = f.hash.value if f.hash and f.hash.mode == "sha256" else None
                files.setdefault(key, (name, version, Path(str(dist.locate_file(f))), digest))
    return [files[k] for k in sorted(files, key=lambda k: (hash_fraction(k, seed), k))]


def iter_installed_package_documents(seed: int, lock: Path = REQUIREMENTS) -> Iterator[dict]:
    """The locked distributions' .py files, each checked against the sha256 pip recorded for it (an
    edited installed file would change the data while the lock stays the same)."""
    import base64

    for name, version, path, digest in installed_python_files(seed, lock):
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if digest is not None:
            actual = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if actual != digest:
                raise PipelineError(f"{path}: differs from what {name}=={version} installed (its RECORD sha256); "
                                    f"the corpus must match the lock: pip install --force-reinstall "
                                    f"{name}=={version}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        yield {"content": text, "source": f"{name}=={version}"}


def _local_kind(path: Path) -> str | None:
    return LOCAL_SUFFIXES.get(path.suffix.lower())


def check_regular_files(path: Path, shown: str) -> None:
    """Only regular files under a local dataset: a FIFO, a socket or a link to a device (/dev/zero)
    would block or never end a read."""
    import stat

    for f in [path] if not path.is_dir() else sorted(path.rglob("*")):
        try:
            mode = f.stat().st_mode  # (follows links: a link to a device is a device)
        except OSError as err:
            raise PipelineError(f"dataset.path = {shown!r}: {f} cannot be read ({err.strerror}); "
                                "fix or remove it") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise PipelineError(f"dataset.path = {shown!r}: {f} is not a regular file (a FIFO, socket or device); "
                                "remove it, datasets are read from regular files")


def load_source(dp: DatasetParams, streaming: bool, revision: str | None = None):
    """datasets.load_dataset for a Hub id, a local folder (files named by split) or a local file.

    `revision` (a Hub dataset's branch, tag or commit) is passed to load_dataset for Hub ids.
    Returns a DatasetDict or IterableDatasetDict. Errors become one line naming dataset.path.
    """
    import datasets

    path = dp.path or ""
    kwargs: dict = {}
    if looks_local(path):
        p = Path(path).expanduser()
        if not p.exists():
            raise PipelineError(f"dataset.path = {path!r}: no such file or folder; give an existing local "
                                f"path or a Hub dataset id such as nyu-mll/glue")
        check_regular_files(p, path)
        if p.is_file():
            kind = _local_kind(p)
            if kind is None:
                raise PipelineError(f"dataset.path = {path!r}: unsupported file type {p.suffix!r}; "
                                    f"use one of {', '.join(sorted(LOCAL_SUFFIXES))}")
            builder, kwargs["data_files"] = kind, {"train": str(p)}
        elif (p / "dataset_dict.json").exists() or (p / "state.json").exists():
            return datasets.load_from_disk(str(p))
        elif not dp.data_files and local_split_files(p):
            # One load per split file: GLUE's test.tsv has other columns than train.tsv, which a
            # single folder load refuses.
            return _load_split_files(dp, local_split_files(p), streaming)
        else:
            builder = str(p)
        if builder == "csv" or (p.is_dir() and any(p.glob("*.tsv"))):
            kwargs.update(_csv_options(dp, p))
        if dp.data_files:
            kwargs["data_files"] = dp.data_files
    else:
        builder = path
        if dp.data_files:
            kwargs["data_files"] = dp.data_files
        if revision:
            kwargs["revision"] = revision
    try:
        loaded = datasets.load_dataset(builder, dp.name, streaming=streaming, **kwargs)
        if revision and not looks_local(path) and not streaming:
            check_cached_revision(loaded, path, revision)
        return loaded
    except PipelineError:
        raise
    except Exception as err:  # datasets raises many types; the user needs the first line of any
        if looks_local(path):  # a local file that would not parse: the reader's words and the fix
            raise read_error(dp, "train" if Path(path).is_file() else "(all)", err) from None
        from hfpipe.hub import hub_error  # the Hub's answer: no repo, no revision, no access, offline, ...

        raise hub_error(err, "dataset", path, revision, "dataset") from None


def check_cached_revision(splits, path: str, commit: str) -> None:
    """Offline, datasets 5.2 ignores `revision` and reads whichever commit of the dataset its cache
    holds ("Found the latest cached dataset configuration"); its cache folders are named by commit,
    so the files read must be the locked commit's, or the run would train on other data unnoticed."""
    files = [f["filename"] for split in splits.values() for f in split.cache_files]
    if files and not all(f"/{commit}/" in f for f in files):
        raise PipelineError(f"dataset.path = {path!r} at {commit!r}: not in the local datasets cache (it holds "
                            f"another commit of it), and the Hub is offline; go online, or load that commit "
                            f"into the cache: hf download {path} --repo-type dataset --revision {commit}")


SPLIT_NAMES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
               "test": "test"}


def local_split_files(folder: Path) -> dict[str, list[Path]]:
    """Files of a folder named by split (train.*, validation.* / valid.* / dev.*, test.*), by split.

    A name like `train-00000-of-00002.parquet` counts too; files of unsupported types are ignored.
    """
    found: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file() or _local_kind(f) is None:
            continue
        stem = re.split(r"[.\-_]", f.name.lower(), maxsplit=1)[0]
        if stem in SPLIT_NAMES:
            found.setdefault(SPLIT_NAMES[stem], []).append(f)
    return found


def _load_split_files(dp: DatasetParams, files: dict[str, list[Path]], streaming: bool):
    import datasets

    out = {}
    for split, paths in files.items():
        kinds = {_local_kind(f) for f in paths}
        if len(kinds) > 1:
            raise PipelineError(f"dataset.path = {dp.path!r}: split {split!r} mixes file types "
                                f"({', '.join(f.name for f in paths)}); keep one type per split")
        kind = kinds.pop()
        kwargs = _csv_options(dp, paths[0]) if kind == "csv" else {}
        try:
            out[split] = datasets.load_dataset(kind, data_files={split: [str(f) for f in paths]}, split=split,
                                               streaming=streaming, **kwargs)
        except Exception as err:  # unreadable or corrupt file: name it
            first = first_line(err.__cause__ or err)
            if "corresponds to no data" in first:  # a header and no rows
                raise PipelineError(f"dataset.path = {dp.path!r}: split {split!r} is empty (0 rows)") from None
            raise PipelineError(f"dataset.path = {dp.path!r}: could not read {', '.join(f.name for f in paths)} "
                                f"({type(err.__cause__ or err).__name__}: {first})") from None
    return datasets.IterableDatasetDict(out) if streaming else datasets.DatasetDict(out)


def _csv_options(dp: DatasetParams, p: Path) -> dict:
    import csv

    tsv = p.suffix.lower() == ".tsv" or (p.is_dir() and any(p.glob("*.tsv")))
    sep = dp.delimiter or ("\t" if tsv else ",")
    # GLUE's raw TSVs have unbalanced quotes inside sentences: quotes are text, not quoting.
    opts: dict = {"sep": sep, "quoting": csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL,
                  "encoding": "utf-8-sig"}  # utf-8-sig strips a byte-order mark from the header
    return opts


def iter_load_dataset_documents(dp: DatasetParams, revision: str | None = None) -> Iterator[dict]:
    """Documents of every split of a Hub or local dataset, streamed where the source allows."""
    source = load_source(dp, streaming=dp.streaming, revision=revision)
    for split in source:
        columns = source[split].column_names
        if columns is not None and dp.text_column not in columns:
            raise PipelineError(f"dataset.text_column = {dp.text_column!r}: no such column in split {split!r}; "
                                f"columns are {sorted(columns)}")
        rows, row_number = iter(source[split]), 0
        while True:
            # a streamed source reads (and can fail on) its files only here, row by row
            try:
                row = next(rows)
            except StopIteration:
                break
            except Exception as err:
                raise read_error(dp, split, err) from None
            if dp.text_column not in row:  # streamed sources may not know their columns up front
                raise PipelineError(f"dataset.text_column = {dp.text_column!r}: no such column in split {split!r}; "
                                    f"columns are {sorted(row)}")
            text = row[dp.text_column]
            if text is not None and not isinstance(text, str):
                raise PipelineError(f"dataset.text_column = {dp.text_column!r}: split {split!r} holds "
                                    f"{type(text).__name__} values, not text ({str(text)[:40]!r} in row {row_number}); "
                                    "name the column that holds the text")
            row_number += 1
            # The source is the split (the dataset is stats["path"]): per-repository counts of a
            # Hub-scale corpus would not fit in the stats.
            yield {"content": text or "", "source": split}


def read_error(dp: DatasetParams, split: str, err: Exception) -> PipelineError:
    """One line for data that would not read: the file, the reader's own words (they name the row or
    line), and the fix."""
    cause = err.__cause__ or err
    first = first_line(cause)
    if isinstance(cause, UnicodeDecodeError) or "utf-8" in first.lower() or "invalid value" in first.lower():
        fix = "save the file as UTF-8 text in its format (JSON lines: one JSON object per line)"
    elif "expected" in first.lower() and "fields" in first.lower():
        fix = "give every row as many fields as the header (quote fields that contain the delimiter)"
    else:
        fix = "fix that row or line, or remove the file"
    return PipelineError(f"dataset.path = {dp.path!r}: split {split!r} could not be read "
                         f"({type(cause).__name__}: {first}); {fix}")


def _revision_stats(dp: DatasetParams, commit: str | None) -> dict:
    """A Hub dataset's provenance for the stats: the revision asked for and the commit read."""
    if dp.source != "load_dataset" or looks_local(dp.path or ""):
        return {}
    return {"revision": dp.revision, "commit": commit}


def document_head(text: str, max_bytes: int) -> str:
    """The text's first `max_bytes` UTF-8 bytes, cut after the last whole line in them (or mid-line
    when the first line alone is longer)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    head = data[:max_bytes]
    end = head.rfind(b"\n")
    return (head[:end + 1] if end >= 0 else head).decode("utf-8", "ignore")


def filter_documents(docs: Iterable[dict], keywords: list[str], seed: int, validation_fraction: float,
                     max_documents: int | None, max_bytes: int | None, stats: dict,
                     max_document_bytes: int | None = None) -> Iterator[tuple[str, dict]]:
    """Keep keyword matches, drop exact duplicates, cap, and route each to 'train' or 'validation'.

    `max_document_bytes` cuts each train document to its head (validation documents stay whole, so
    validation perplexity measures whole files whatever the cut). The keyword match, the duplicate
    check and the split all read the whole document, so a cut never moves a file between splits.

    Streams: one document at a time, and it stops pulling from `docs` as soon as a cap is reached.
    The only state that grows is the set of 16-byte hashes of the kept documents (about 100 bytes
    each with Python's overhead: ~60 MB for 600,000 kept documents), needed to drop duplicates.
    A progress bar (stderr) shows the documents seen, kept and dropped as duplicates.
    """
    from tqdm.auto import tqdm

    seen_hashes: set[bytes] = set()
    kept_bytes = 0
    with tqdm(desc="fetch/filter", unit=" docs", mininterval=1.0) as bar:
        for doc in docs:
            stats["seen"] += 1
            bar.update()
            text = doc["content"]
            if text and len(text) > MAX_DOCUMENT_CHARS:
                stats["too_large"] += 1
                continue
            if not text or not any_keyword_in_string(text, keywords):
                continue
            digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            if digest in seen_hashes:
                stats["duplicates"] += 1
                bar.set_postfix_str(f"kept={stats['kept']}, duplicates={stats['duplicates']}", refresh=False)
                continue
            seen_hashes.add(digest)
            split = "validation" if hash_fraction(text, seed) < validation_fraction else "train"
            if split == "train" and max_document_bytes is not None:
                head = document_head(text, max_document_bytes)
                if head != text:
                    stats["truncated"] += 1
                    text, doc = head, {**doc, "content": head}
            size = len(text.encode("utf-8", "surrogatepass"))
            if max_bytes is not None and kept_bytes + size > max_bytes:
                if kept_bytes:  # the cap is reached
                    break
                continue
            kept_bytes += size
            stats["kept"] += 1
            stats["bytes"] += size
            stats["sources"][doc["source"]] += 1
            stats["split_documents"][split] += 1
            bar.set_postfix_str(f"kept={stats['kept']}, duplicates={stats['duplicates']}", refresh=False)
            yield split, doc
            if max_documents is not None and stats["kept"] >= max_documents:
                break


def write_document_splits(rows: Iterable[tuple[str, dict]], out_dir: Path, columns: list[str],
                          max_shard_size: int | str = "500MB") -> dict[str, int]:
    """Stream (split, row) pairs into a DatasetDict folder `datasets.load_from_disk` reads.

    Each split is written straight to its shards (`data-0000i-of-0000N.arrow`, at most
    `max_shard_size` of data each) in batches of WRITE_BATCH rows: nothing holds the corpus.
    """
    import pyarrow as pa
    from datasets import Features, Value

    from hfpipe.io import ShardedArrowWriter, finish_split, write_dataset_dict_json

    features = Features({c: Value("string") for c in columns})
    out_dir = Path(out_dir)
    writers: dict[str, ShardedArrowWriter] = {}
    buffers: dict[str, list[dict]] = {}
    try:
        def flush(split: str) -> None:
            if buffers.get(split):
                writers[split].write_table(pa.Table.from_pylist(buffers[split], schema=features.arrow_schema))
                buffers[split] = []

        for split, row in rows:
            if split not in writers:
                writers[split] = ShardedArrowWriter(out_dir / split, features, max_shard_size)
                buffers[split] = []
            buffers[split].append({c: row[c] for c in columns})
            if len(buffers[split]) >= WRITE_BATCH:
                flush(split)
        for split in writers:
            flush(split)
            writers[split].close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for split in sorted(writers):
        finish_split(out_dir / split, writers[split].shards, features)
    write_dataset_dict_json(out_dir, sorted(writers))
    return {s: writers[s].rows for s in sorted(writers)}


def fetch_code_corpus(dp: DatasetParams, out_dir: Path, commit: str | None = None) -> dict:
    """The fetch/filter stage for causal-LM recipes. Returns the stats it also describes.

    `commit`: the Hub commit hub.lock.yaml holds for dataset.path (None for local data)."""
    revision = commit or dp.revision
    stats: dict = {"source": dp.source, "path": dp.path, "name": dp.name, **_revision_stats(dp, commit),
                   "filter_keywords": dp.filter_keywords,
                   "seed": dp.seed, "max_document_bytes": dp.max_document_bytes,
                   "seen": 0, "kept": 0, "duplicates": 0, "truncated": 0, "too_large": 0, "bytes": 0,
                   "split_documents": Counter(), "sources": Counter()}
    seed = dp.seed
    docs = (iter_installed_package_documents(seed) if dp.source == "installed-packages"
            else iter_load_dataset_documents(dp, revision))
    rows = filter_documents(docs, dp.filter_keywords, seed, dp.validation_fraction, dp.max_documents,
                            dp.max_bytes, stats, dp.max_document_bytes)
    counts = write_document_splits(rows, out_dir, ["content", "source"], dp.max_shard_size)
    if stats["kept"] == 0:
        raise PipelineError(f"dataset.filter_keywords = {dp.filter_keywords!r}: kept 0 of {stats['seen']} documents; "
                            f"use keywords that occur in the corpus (e.g. pandas, sklearn)")
    for split in ("train", "validation"):
        if not counts.get(split):
            raise PipelineError(f"the {split} split is empty ({stats['kept']} documents kept); raise "
                                f"dataset.max_documents / dataset.max_bytes or adjust dataset.validation_fraction")
    sources = stats.pop("sources")
    stats["split_documents"] = dict(sorted(stats["split_documents"].items()))
    stats["fraction_kept"] = round(stats["kept"] / max(stats["seen"], 1), 6)
    # Which package releases the corpus came from: the data's provenance, pinned by requirements.txt.
    stats["documents_by_source"] = dict(sorted(sources.items()))
    return stats


# ---------------------------------------------------------------------------------------------
# Classification: text (+ text pair) and label columns -> train / validation (/ test) with a
# ClassLabel "label" column. Later stages read only the standard columns text, text_pair, label.

SPLIT_ORDER = ("train", "validation", "test")
UNLABELLED = (None, -1, "", "-1")  # GLUE's test splits carry label -1 (or no label column at all)


def _label_set(values: list, feature, label_names: list[str] | None) -> list[str]:
    """The label names, in id order: the ClassLabel's, the params', or the sorted train values."""
    from datasets import ClassLabel

    if label_names:
        if isinstance(feature, ClassLabel) and len(label_names) != feature.num_classes:
            raise PipelineError(f"dataset.label_names = {label_names!r}: {len(label_names)} names for a label "
                                f"column with {feature.num_classes} classes {feature.names}")
        return list(label_names)
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    present = sorted({v for v in values if v not in UNLABELLED}, key=lambda v: (isinstance(v, str), v))
    if present and all(isinstance(v, int) for v in present) and present == list(range(len(present))):
        return [str(v) for v in present]  # 0..K-1: the ids are the values
    return [str(v) for v in present]


MAX_LABELS = 1000  # more distinct values than this: a text or id column taken for the labels
MAX_LABEL_CHARS = 100
UNSAFE_LABEL = re.compile(r"[<>\x00-\x1f\x7f]")


def check_label_names(names: list[str], where: str) -> None:
    """Label names go into the model's config, the plots page (inside a <script>) and the model card:
    each must be a short printable name, unique, without < or > (which could end the page's script)."""
    if len(names) > MAX_LABELS:
        raise PipelineError(f"{where}: {len(names)} distinct labels (at most {MAX_LABELS}); is it the label column? "
                            "Set dataset.label_column to the column of class labels")
    seen: set[str] = set()
    for name in names:
        if (not name.strip() or name != name.strip() or len(name) > MAX_LABEL_CHARS or UNSAFE_LABEL.search(name)
                or name in seen):
            problem = ("is a duplicate" if name in seen
                       else "is empty or padded with spaces" if name != name.strip() or not name
                       else f"is over {MAX_LABEL_CHARS} characters" if len(name) > MAX_LABEL_CHARS
                       else "holds <, > or a control character")
            raise PipelineError(f"{where}: label name {name[:40]!r} {problem}; label names go into the model, the "
                                "plots page and the model card: rename the labels (or set dataset.label_names)")
        seen.add(name)


def encode_labels(values: list, feature, names: list[str], split: str, column: str,
                  allow_unlabelled: bool) -> list[int]:
    """Label values -> ids in `names`; a value outside the set is a one-line error naming it."""
    from datasets import ClassLabel

    index = {name: i for i, name in enumerate(names)}
    ids, bad = [], []
    for row, v in enumerate(values):
        if v in UNLABELLED:
            if not allow_unlabelled:
                bad.append((row, v))
            ids.append(-1)
        elif isinstance(feature, ClassLabel) and isinstance(v, int):
            ids.append(v) if 0 <= v < len(names) else bad.append((row, v))
        elif isinstance(v, int) and not isinstance(v, bool) and str(v) not in index and 0 <= v < len(names):
            ids.append(v)  # integer ids with names given in dataset.label_names
        elif str(v) in index:
            ids.append(index[str(v)])
        else:
            bad.append((row, v))
    if bad:
        shown = sorted({repr(v) for _, v in bad})[:5]
        raise PipelineError(f"dataset.label_column = {column!r}: split {split!r} has {len(bad)} label(s) outside "
                            f"the label set {names} ({', '.join(shown)}; first at row {bad[0][0]}); fix the data "
                            f"or set dataset.label_names")
    if allow_unlabelled and ids and any(i == -1 for i in ids) and not all(i == -1 for i in ids):
        raise PipelineError(f"dataset.label_column = {column!r}: split {split!r} mixes labelled and unlabelled rows")
    return ids


def _require_columns(ds, split: str, columns: dict[str, str | None]) -> None:
    for key, column in columns.items():
        if column and column not in ds.column_names:
            raise PipelineError(f"dataset.{key} = {column!r}: no such column in split {split!r}; "
                                f"columns are {ds.column_names}")


# Label columns hold class names or integer ids (floats only as integers with empty cells: pandas
# reads an int column with an empty cell as float, and the empty cell is what gets named).
LABEL_DTYPES = {"string", "large_string", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float32", "float64"}


def check_text_and_labels(ds, split: str, dp: DatasetParams) -> None:
    """Text columns must hold text in every row, and a labelled split a label in every row: an empty
    cell would otherwise train as "" or turn the whole label column into floats."""
    from datasets import ClassLabel, Value

    for key, column in (("text_column", dp.text_column), ("text_pair_column", dp.text_pair_column)):
        if not column:
            continue
        feature = ds.features[column]
        if not isinstance(feature, Value) or feature.dtype not in ("string", "large_string"):
            kind = feature.dtype if isinstance(feature, Value) else f"{type(feature).__name__.lower()} (nested)"
            raise PipelineError(f"dataset.{key} = {column!r}: split {split!r} holds {kind} values, not text; "
                                f"name the column that holds the text")
        empty = [i for i, t in enumerate(ds[column]) if t is None or not str(t).strip()]
        if empty:
            raise PipelineError(f"dataset.{key} = {column!r}: split {split!r} has {len(empty)} empty text cell(s) "
                                f"(first at row {empty[0]}); fill them in or drop those rows")
    if dp.label_column in ds.column_names:
        feature = ds.features[dp.label_column]
        if not isinstance(feature, ClassLabel) and not (isinstance(feature, Value) and feature.dtype in LABEL_DTYPES):
            kind = feature.dtype if isinstance(feature, Value) else f"{type(feature).__name__.lower()} (nested)"
            raise PipelineError(f"dataset.label_column = {dp.label_column!r}: split {split!r} holds {kind} values; "
                                "labels are class names (text) or integer ids: name the column that holds them")
        values = ds[dp.label_column]
        missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and v != v)]
        if missing and (split != "test" or len(missing) < len(values)):  # a test split may be unlabelled
            raise PipelineError(f"dataset.label_column = {dp.label_column!r}: split {split!r} has {len(missing)} "
                                f"empty label cell(s) (first at row {missing[0]}); fill them in or drop those rows")


def classification_splits(dp: DatasetParams, revision: str | None = None):
    """Load, check and normalise a classification dataset -> (DatasetDict, label names, notes).

    Columns become `text` (+ `text_pair`) and a ClassLabel `label` (-1 for an unlabelled test split).
    """
    import datasets
    from datasets import ClassLabel, Dataset, DatasetDict

    source = load_source(dp, streaming=False, revision=revision)
    if isinstance(source, Dataset):
        source = DatasetDict({"train": source})
    known = {s: SPLIT_NAMES.get(s.lower(), s) for s in source}
    if "train" not in known.values():
        raise PipelineError(f"dataset.path = {dp.path!r}: no train split; splits are {sorted(source)}")
    by_split = {canon: name for name, canon in known.items()}
    raw = {split: source[by_split[split]] for split in SPLIT_ORDER if split in by_split}
    for split, ds in raw.items():
        if len(ds) == 0:
            raise PipelineError(f"dataset.path = {dp.path!r}: split {split!r} is empty (0 rows)")
    text_cols = {"text_column": dp.text_column, "text_pair_column": dp.text_pair_column}
    for split, ds in raw.items():
        _require_columns(ds, split, text_cols)
        if split != "test":
            _require_columns(ds, split, {"label_column": dp.label_column})
    for split, ds in raw.items():
        check_text_and_labels(ds, split, dp)
    label_feature = raw["train"].features[dp.label_column]
    names = _label_set(raw["train"][dp.label_column], label_feature, dp.label_names)
    if len(names) < 2:
        raise PipelineError(f"dataset.label_column = {dp.label_column!r}: the train split has {len(names)} "
                            f"label value(s) {names}; a classifier needs at least 2")
    check_label_names(names, "dataset.label_names" if dp.label_names else f"dataset.label_column = {dp.label_column!r}")
    assert dp.label_column is not None  # params: the classification tasks need dataset.label_column
    features = {"text": datasets.Value("string")}
    if dp.text_pair_column:
        features["text_pair"] = datasets.Value("string")
    features["label"] = ClassLabel(names=names)
    out = {}
    for split, ds in raw.items():  # labels checked on the source rows (row numbers as in the file)
        has_labels = dp.label_column in ds.column_names
        values = ds[dp.label_column] if has_labels else [None] * len(ds)
        feature = ds.features[dp.label_column] if has_labels else None
        columns: dict[str, list] = {"text": [t or "" for t in ds[dp.text_column]]}
        if dp.text_pair_column:
            columns["text_pair"] = [t or "" for t in ds[dp.text_pair_column]]
        columns["label"] = encode_labels(values, feature, names, split, dp.label_column,
                                         allow_unlabelled=split == "test")
        out[split] = Dataset.from_dict(columns, features=datasets.Features(features))
    notes = {}
    if "validation" not in out:
        parts = out["train"].train_test_split(test_size=dp.validation_split_fraction, seed=dp.seed)
        out = {"train": parts["train"], "validation": parts["test"], **{k: v for k, v in out.items() if k == "test"}}
        notes["validation_from"] = (f"train_test_split(test_size={dp.validation_split_fraction}, "
                                    f"seed={dp.seed}) of the train split")
    caps = {"train": dp.max_train_samples, "validation": dp.max_eval_samples, "test": dp.max_eval_samples}
    for split, cap in caps.items():
        if cap and split in out and len(out[split]) > cap:
            out[split] = out[split].select(range(cap)).flatten_indices()
    return DatasetDict(out), names, notes


def fetch_classification(dp: DatasetParams, out_dir: Path, commit: str | None = None) -> dict:
    """The fetch stage for classification tasks: normalised splits saved to `out_dir`; returns stats.

    `commit`: the Hub commit hub.lock.yaml holds for dataset.path (None for local data)."""
    splits, names, notes = classification_splits(dp, commit or dp.revision)
    save_dataset_dict(splits, out_dir, dp.max_shard_size)
    stats: dict = {"source": dp.source, "path": dp.path, "name": dp.name, **_revision_stats(dp, commit),
                   "text_column": dp.text_column,
                   "text_pair_column": dp.text_pair_column, "label_column": dp.label_column, "label_names": names,
                   "seed": dp.seed, **notes, "split_rows": {s: len(ds) for s, ds in splits.items()}, "label_counts": {}}
    for split, ds in splits.items():
        counts = Counter(ds["label"])
        stats["label_counts"][split] = ({"unlabelled": counts[-1]} if -1 in counts
                                        else {names[i]: counts.get(i, 0) for i in range(len(names))})
    return stats


def code_corpus_summary(stats: dict) -> str:
    cut = (f"; {stats['truncated']} train documents cut to their first {stats['max_document_bytes']} bytes"
           if stats.get("truncated") else "")
    if stats.get("too_large"):
        cut += f"; {stats['too_large']} documents over {MAX_DOCUMENT_CHARS:,} characters skipped"
    return (f"kept {stats['kept']} of {stats['seen']} documents ({stats['bytes'] / 1e6:.1f} MB{cut}): "
            f"{stats['split_documents']}")


def classification_summary(stats: dict) -> str:
    return f"rows {stats['split_rows']}; labels {stats['label_names']}"


def run_fetch(params: Params, task: Task, out_dir: Path, stats_file: Path) -> list[str]:
    """The fetch stage: the task's data (a code corpus, or labelled text (pairs)) -> Arrow splits in
    `out_dir`, the stats in `stats_file`; returns the summary line."""
    from hfpipe.hub import locked_commit
    from hfpipe.io import atomic_dir, write_json_atomic

    # A Hub dataset: the commit hub.lock.yaml holds for it (resolved and locked on first use).
    commit = locked_commit(params, "dataset")
    with atomic_dir(out_dir) as out:
        stats = task.fetch(params.dataset, out, commit)
    write_json_atomic(stats_file, stats)
    return [task.fetch_summary(stats)]
