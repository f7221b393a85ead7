"""Tokenizers and tokenize-and-chunk: text splits -> fixed-size blocks of token ids in Arrow.

Packing concatenates every document of a split, each followed by EOS, and cuts the stream into
`context_length` blocks, carrying the remainder from one batch to the next: at most one partial
block per split is dropped. Tutorial 04's overflow method (`return_overflowing_tokens`, keep only
full chunks) drops every document's tail; it is kept as `tokenize.method: overflow` to compare.

With `num_proc` N > 1 each split is cut into N contiguous ranges of documents, tokenized and packed
by N processes that each write their own Arrow shards; each range's leftover tail (less than one
block) comes back to the parent, and the tails are packed together into a last shard. So the
number of blocks and tokens kept are exactly those of one process (still at most one partial block
dropped per split); only the blocks that straddle a range boundary are arranged differently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hfpipe.io import PipelineError, first_line, save_dataset_dict

if TYPE_CHECKING:
    from hfpipe.params import Params, TokenizeParams
    from hfpipe.tasks.common import Task

EOS_TOKEN = "<|endoftext|>"
# A pad token distinct from EOS: DataCollatorForLanguageModeling masks pad positions out of the
# labels, and with pad == eos the model would never be taught to predict the end of a document.
PAD_TOKEN = "<|pad|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2):
    """A byte-level BPE tokenizer (GPT-2 style) trained on `texts`, as a transformers fast tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency,
                            special_tokens=[EOS_TOKEN, PAD_TOKEN], show_progress=True)
    # The inner `tokenizers.Tokenizer`, not the wrapper: the wrapper lacks the truncation options
    # transformers passes (return_overflowing_tokens would fail).
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                   unk_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def load_pretrained_tokenizer(name_or_path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    from hfpipe.modeling import resolve_name_or_path

    path = resolve_name_or_path(name_or_path, "tokenizer.name_or_path")  # refuses a missing folder itself
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except Exception as err:
        from hfpipe.hub import load_failure

        if (hub := load_failure(err, "tokenizer", name_or_path, revision)) is not None:
            raise hub from None
        first = first_line(err)
        raise PipelineError(f"tokenizer.name_or_path = {name_or_path!r}: could not load "
                            f"({type(err).__name__}: {first})") from None
    if tokenizer.pad_token is None:  # GPT-2 has none; the seeds use EOS
        tokenizer.pad_token = tokenizer.eos_token
    # how it was loaded (HF_HUB_OFFLINE), not what it is: save_pretrained would write it into models/tokenizer
    tokenizer.init_kwargs.pop("local_files_only", None)
    return tokenizer


# A tokenizer batch's memory grows with its tokens (the fast tokenizer keeps offsets and strings per
# token), not its documents: batches are capped in characters too, so memory stays flat with data size.
MAX_BATCH_CHARS = 2_000_000


def iter_text_batches(dataset, column: str, batch_size: int, max_chars: int = MAX_BATCH_CHARS) -> Iterator[list[str]]:
    """Lists of at most `batch_size` texts and (unless one text is longer) `max_chars` characters."""
    for batch in dataset.iter(batch_size=batch_size):
        texts: list[str] = []
        chars = 0
        for text in batch[column]:
            if texts and chars + len(text) > max_chars:
                yield texts
                texts, chars = [], 0
            texts.append(text)
            chars += len(text)
        if texts:
            yield texts


@dataclass
class ChunkStats:
    documents: int = 0
    tokens: int = 0            # document tokens, before chunking (EOS separators not counted)
    tokens_chunked: int = 0    # what went into chunking: document tokens (+ one EOS each when packing)
    blocks: int = 0
    tokens_in_blocks: int = 0

    @property
    def tokens_kept_pct(self) -> float:
        return 100.0 * self.tokens_in_blocks / max(self.tokens_chunked, 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_kept_pct": round(self.tokens_kept_pct, 4)}

    def add(self, other: ChunkStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def pack_into_blocks(id_batches: Iterable[list[list[int]]], eos_id: int, block_size: int,
                     stats: ChunkStats, carry_out: list | None = None) -> Iterator[np.ndarray]:
    """Concatenate documents (each + EOS) across batches and yield (n, block_size) int32 arrays.

    The final remainder (less than one block) is dropped, or appended to `carry_out` if given.
    """
    carry = np.empty(0, dtype=np.int32)
    for ids in id_batches:
        n_tokens = sum(len(x) for x in ids)
        flat = np.empty(len(carry) + n_tokens + len(ids), dtype=np.int32)
        flat[: len(carry)] = carry
        pos = len(carry)
        for x in ids:
            flat[pos: pos + len(x)] = x
            pos += len(x)
            flat[pos] = eos_id
            pos += 1
        stats.documents += len(ids)
        stats.tokens += n_tokens
        stats.tokens_chunked += n_tokens + len(ids)
        n_blocks = len(flat) // block_size
        if n_blocks:
            stats.blocks += n_blocks
            stats.tokens_in_blocks += n_blocks * block_size
            yield flat[: n_blocks * block_size].reshape(n_blocks, block_size)
        carry = flat[n_blocks * block_size:].copy()
    if carry_out is not None:
        carry_out.append(carry)


def overflow_blocks(tokenizer, text_batches: Iterable[list[str]], block_size: int,
                    stats: ChunkStats) -> Iterator[np.ndarray]:
    """Tutorial 04's chunking: split each document into block_size chunks, keep only full ones."""
    for texts in text_batches:
        out = tokenizer(texts, truncation=True, max_length=block_size, return_overflowing_tokens=True,
                        return_length=True, return_attention_mask=False)
        full = [ids for ids, length in zip(out["input_ids"], out["length"], strict=False) if length == block_size]
        stats.documents += len(texts)
        stats.tokens += sum(out["length"])
        stats.tokens_chunked += sum(out["length"])
        stats.blocks += len(full)
        stats.tokens_in_blocks += len(full) * block_size
        if full:
            yield np.asarray(full, dtype=np.int32)


def token_id_batches(tokenizer, text_batches: Iterable[list[str]]) -> Iterator[list[list[int]]]:
    """Batched fast tokenization: the Rust tokenizer encodes a whole batch in parallel."""
    for texts in text_batches:
        yield tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def block_features(block_size: int):
    from datasets import Features, List, Value

    return Features({"input_ids": List(Value("int32"), length=block_size)})


def blocks_table(arr: np.ndarray, block_size: int):
    """(n, block_size) int32 array -> an Arrow table of fixed-size int32 lists."""
    import pyarrow as pa

    column = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), type=pa.int32()), block_size)
    return pa.table({"input_ids": column}, schema=block_features(block_size).arrow_schema)


def write_blocks(blocks: Iterable[np.ndarray], path: Path, block_size: int) -> None:
    """Stream block arrays into one Arrow file (fixed-size int32 lists), never the whole split in memory."""
    from datasets.arrow_writer import ArrowWriter

    writer = ArrowWriter(features=block_features(block_size), path=str(path))
    try:
        for arr in blocks:
            writer.write_table(blocks_table(arr, block_size))
        writer.finalize()
    finally:
        writer.close()


@dataclass(frozen=True)
class Chunking:
    """How a split's documents become blocks: the text column, the block size
    (tokenize.context_length), the method (packing or overflow) and the documents per tokenizer call."""
    column: str
    block_size: int
    method: str
    batch_size: int


def _counted(batches: Iterable[list[str]], progress: Callable[[int], object]) -> Iterator[list[str]]:
    for texts in batches:
        yield texts
        progress(len(texts))


def block_stream(dataset, tokenizer, chunking: Chunking, stats: ChunkStats, carry_out: list | None = None,
                 progress: Callable[[int], object] | None = None) -> Iterator[np.ndarray]:
    """The blocks of a dataset's documents, batch by batch (see pack_into_blocks / overflow_blocks)."""
    texts = iter_text_batches(dataset, chunking.column, chunking.batch_size)
    if progress is not None:
        texts = _counted(texts, progress)
    if chunking.method == "packing":
        return pack_into_blocks(token_id_batches(tokenizer, texts), tokenizer.eos_token_id, chunking.block_size,
                                stats, carry_out)
    return overflow_blocks(tokenizer, texts, chunking.block_size, stats)


def chunk_split(dataset, tokenizer, chunking: Chunking, path: Path) -> ChunkStats:
    """One dataset's blocks into one Arrow file (the benchmark's unit of work)."""
    stats = ChunkStats()
    write_blocks(block_stream(dataset, tokenizer, chunking, stats), path, chunking.block_size)
    return stats


def chunk_range(dataset, tokenizer, chunking: Chunking, folder: Path, prefix: str, max_shard_size: int | str,
                progress: Callable[[int], object] | None = None) -> tuple[ChunkStats, np.ndarray, list[Path]]:
    """Chunk one contiguous range of a split into Arrow shards `folder/<prefix>-*.arrow`.

    Returns the stats, the packing remainder (less than one block; empty for overflow), which the
    caller packs with the other ranges' remainders, and the shard files in order.
    """
    from hfpipe.io import ShardedArrowWriter

    stats = ChunkStats()
    carry: list[np.ndarray] = []
    with ShardedArrowWriter(folder, block_features(chunking.block_size), max_shard_size, prefix) as writer:
        for arr in block_stream(dataset, tokenizer, chunking, stats, carry, progress):
            writer.write_table(blocks_table(arr, chunking.block_size))
    tail = carry[0] if carry else np.empty(0, dtype=np.int32)
    return stats, tail, writer.shards


# Worker processes (tokenize.num_proc > 1): the tokenizer and the progress queue, set once per process.
_WORKER: dict = {}


def _init_worker(tokenizer, progress_queue) -> None:
    _WORKER["tokenizer"], _WORKER["queue"] = tokenizer, progress_queue


def _chunk_range_in_worker(job: dict) -> tuple[ChunkStats, np.ndarray, list[Path]]:
    return chunk_range(tokenizer=_WORKER["tokenizer"], progress=_WORKER["queue"].put, **job)


@contextmanager
def _single_threaded_tokenizers() -> Iterator[None]:
    """TOKENIZERS_PARALLELISM=false for the worker processes started inside the block.

    N processes each running the Rust tokenizer's thread pool would oversubscribe the cores, and a
    process forked after the parent used that pool deadlocks in it (tokenizers only warns and turns
    it off when the variable is unset): workers encode on one thread each, whatever the variable
    says; the parent's own value (for num_proc 1) is restored afterwards.
    """
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def _run_ranges(jobs: list[dict], tokenizer, num_proc: int, total: int) -> list[tuple]:
    """chunk_range for every job (its keyword arguments), in this process (num_proc 1) or in a pool of
    num_proc processes; results in job order, with one progress bar of documents tokenized."""
    from queue import Empty

    from tqdm.auto import tqdm

    if num_proc > 1:
        from hfpipe.resources import check_processes

        check_processes("tokenize.num_proc", num_proc, gpus=0)  # CPU workers, whatever GPUs there are
    if num_proc == 1:
        with tqdm(total=total, desc="tokenize", unit=" docs", mininterval=1.0) as bar:
            return [chunk_range(tokenizer=tokenizer, progress=bar.update, **job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # fork: workers start at once and inherit the tokenizer; spawn where there is no fork (the
    # tokenizer and each job's dataset range are pickled: a memory-mapped range pickles as its path).
    # A process pool that notices a dead worker (killed for memory, say) instead of waiting forever.
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    queue = ctx.Queue()
    pool = ProcessPoolExecutor(num_proc, mp_context=ctx, initializer=_init_worker, initargs=(tokenizer, queue))
    try:
        with _single_threaded_tokenizers():  # the workers start at the first submit
            futures = [pool.submit(_chunk_range_in_worker, job) for job in jobs]
        with tqdm(total=total, desc=f"tokenize ({num_proc} processes)", unit=" docs", mininterval=1.0) as bar:
            while not all(f.done() for f in futures):
                try:
                    bar.update(queue.get(timeout=0.2))
                except Empty:
                    pass
            try:
                results = [f.result() for f in futures]  # re-raises a worker's exception
            except BrokenProcessPool as err:
                raise PipelineError(f"tokenize.num_proc = {num_proc}: a worker process died ({err}); if it ran "
                                    f"out of memory, lower tokenize.num_proc or tokenize.batch_size") from None
            bar.update(total - bar.n)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def tokenize_and_chunk(splits, tokenizer, chunking: Chunking, out_dir: Path, num_proc: int = 1,
                       max_shard_size: int | str = "500MB") -> dict[str, dict]:
    """Chunk every split of a DatasetDict into `out_dir` (a folder `datasets.load_from_disk` reads);
    returns per-split stats.

    Blocks are streamed into Arrow shards of at most `max_shard_size` each. With `num_proc` N > 1,
    N processes each chunk a contiguous range of every split into shards of their own; the ranges'
    packing remainders are then packed together into one more shard (see the module docstring).
    Deterministic for a given N; N = 1 runs in this process.
    """
    import shutil

    from hfpipe.io import ShardedArrowWriter, finish_split, write_dataset_dict_json

    out_dir = Path(out_dir)
    created = not out_dir.exists()
    block_size = chunking.block_size
    features = block_features(block_size)
    jobs: list[dict] = []
    for split in splits:
        dataset = splits[split]
        n = max(1, min(num_proc, len(dataset)))
        for i in range(n):
            jobs.append({"dataset": dataset.shard(num_shards=n, index=i, contiguous=True) if n > 1 else dataset,
                         "chunking": chunking, "folder": out_dir / split, "prefix": f"part-{i:05d}",
                         "max_shard_size": max_shard_size})
    try:
        results = _run_ranges(jobs, tokenizer, num_proc, sum(len(splits[s]) for s in splits))
        stats: dict[str, ChunkStats] = {}
        split_shards: dict[str, list[Path]] = {}
        for split in splits:
            mine = [r for job, r in zip(jobs, results, strict=False) if job["folder"] == out_dir / split]
            stats[split] = ChunkStats()
            shards: list[Path] = []
            for part_stats, _, part_shards in mine:
                stats[split].add(part_stats)
                shards += part_shards
            tail = np.concatenate([t for _, t, _ in mine])  # in range order; one range: less than a block
            n_blocks = len(tail) // block_size
            if n_blocks:
                with ShardedArrowWriter(out_dir / split, features, max_shard_size, "tail") as writer:
                    writer.write_table(blocks_table(tail[: n_blocks * block_size].reshape(n_blocks, block_size),
                                                    block_size))
                shards += writer.shards
                stats[split].blocks += n_blocks
                stats[split].tokens_in_blocks += n_blocks * block_size
            if stats[split].blocks == 0:
                raise PipelineError(f"tokenize.context_length = {block_size}: the {split} split "
                                    f"({stats[split].tokens} tokens) gives no full block; lower "
                                    f"tokenize.context_length or fetch more data")
            split_shards[split] = shards
        for split in splits:
            finish_split(out_dir / split, split_shards[split], features)
        write_dataset_dict_json(out_dir, list(splits))
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            for split in splits:
                shutil.rmtree(out_dir / split, ignore_errors=True)
        raise
    return {s: st.as_dict() for s, st in stats.items()}


# ---------------------------------------------------------------------------------------------
# Classification: sentences (or sentence pairs) -> token ids truncated to max_length, unpadded
# (DataCollatorWithPadding pads each batch to its longest), with length statistics.

GPT2_PAD_TOKEN = "[PAD]"  # tutorial 05's added pad token


def add_pad_token(tokenizer) -> bool:
    """Give a causal-LM tokenizer its own pad token (tutorial 05); True if one was added.

    A pad equal to EOS would make the EOS that separates text from label look like padding.
    """
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return False
    tokenizer.add_special_tokens({"pad_token": GPT2_PAD_TOKEN})
    return True


def length_stats(lengths: list[int], max_length: int, kept_tokens: int) -> dict:
    """Token counts per example before truncation, and how many examples truncation cut."""
    arr = np.asarray(lengths, dtype=np.int64)
    truncated = int((arr > max_length).sum())
    return {"examples": int(arr.size), "tokens": int(arr.sum()), "tokens_kept": int(kept_tokens),
            "length_mean": round(float(arr.mean()), 3), "length_median": float(np.median(arr)),
            "length_p95": round(float(np.percentile(arr, 95)), 3), "length_max": int(arr.max()),
            "truncated": truncated, "truncation_rate": round(truncated / arr.size, 6)}


def encode_classification(dataset, tokenizer, max_length: int, batch_size: int):
    """input_ids / attention_mask (/ token_type_ids) for `text` (+ `text_pair`), truncated to
    max_length; returns (dataset with the new columns, length stats of the split)."""
    pair = "text_pair" in dataset.column_names
    lengths: list[int] = []
    kept = 0

    def encode(batch):
        nonlocal kept
        args = (batch["text"], batch["text_pair"]) if pair else (batch["text"],)
        full = tokenizer(*args, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        lengths.extend(len(ids) for ids in full)
        out = tokenizer(*args, truncation=True, max_length=max_length)
        kept += sum(len(ids) for ids in out["input_ids"])
        return out

    encoded = dataset.map(encode, batched=True, batch_size=batch_size, desc="tokenize",
                          load_from_cache_file=False, keep_in_memory=True)  # no cache files in data/filtered
    return encoded, length_stats(lengths, max_length, kept)


def tokenize_classification(splits, tokenizer, task_name: str, tp: TokenizeParams, out_dir: Path,
                            encode: Callable | None = None, extra_stats: dict | None = None) -> dict:
    """Encode every split of data/filtered with `encode(dataset, tokenizer, tp.max_length,
    tp.batch_size) -> (encoded, stats)` (default encode_classification; the task module passes its
    own) and save_to_disk in shards of tp.max_shard_size; returns the stats (`extra_stats` after the
    label names)."""
    from datasets import DatasetDict

    encode = encode or encode_classification
    names = splits["train"].features["label"].names
    stats: dict = {"task": task_name, "max_length": tp.max_length, "label_names": names, **(extra_stats or {})}
    out = {}
    for split in splits:
        out[split], stats[split] = encode(splits[split], tokenizer, tp.max_length, tp.batch_size)
    save_dataset_dict(DatasetDict(out), out_dir, tp.max_shard_size)
    return stats


# ---------------------------------------------------------------------------------------------
# The stages: tokenizer (a BPE trained on the train split, or a pretrained one) and tokenize.


def run_train_tokenizer(params: Params, task: Task, filtered_dir: Path, out_dir: Path) -> list[str]:
    """The tokenizer stage: a byte-level BPE trained on the train split of `filtered_dir` (or the
    pretrained tokenizer.name_or_path at its locked commit), prepared for the task -> `out_dir`."""
    from datasets import load_from_disk

    from hfpipe.io import atomic_dir, require_complete, write_json_atomic
    tp = params.tokenizer
    source = None
    if tp.name_or_path:
        from hfpipe.hub import PROVENANCE_FILE, locked_commit, provenance

        commit = locked_commit(params, "tokenizer")  # a Hub tokenizer's locked commit (None: local)
        tokenizer = load_pretrained_tokenizer(tp.name_or_path, commit or tp.revision)
        source = provenance(tp.name_or_path, tp.revision, commit)
    else:
        train = load_from_disk(require_complete(filtered_dir))["train"]
        batches = iter_text_batches(train, task.TOKENIZER_TEXT_COLUMN, 1000)
        tokenizer = train_bpe_tokenizer((text for batch in batches for text in batch), tp.vocab_size,
                                        tp.min_frequency)
    task.prepare_tokenizer(tokenizer)
    with atomic_dir(out_dir) as out:
        tokenizer.save_pretrained(out)
        if source:  # the train stage copies it next to the model; export puts it in the model card
            write_json_atomic(out / PROVENANCE_FILE, source)
    return [f"tokenizer: {len(tokenizer)} tokens"]


def run_tokenize(params: Params, task: Task, tokenizer_dir: Path, filtered_dir: Path, out_dir: Path,
                 stats_file: Path) -> list[str]:
    """The tokenize stage: the splits of `filtered_dir` -> the task's examples or packed blocks in
    `out_dir`, their stats in `stats_file`; returns the summary lines."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.io import atomic_dir, require_complete, write_json_atomic
    tokenizer = AutoTokenizer.from_pretrained(require_complete(tokenizer_dir))
    splits = load_from_disk(require_complete(filtered_dir))
    with atomic_dir(out_dir) as out:
        stats = task.tokenize(splits, tokenizer, params.tokenize, out)
    write_json_atomic(stats_file, stats)
    return task.tokenize_summary(stats)
