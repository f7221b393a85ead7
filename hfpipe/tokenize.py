"""Tokenizers and tokenize-and-chunk: text splits -> fixed-size blocks of token ids in Arrow.

Packing concatenates every document of a split, each followed by EOS, and cuts the stream into
`context_length` blocks, carrying the remainder from one batch to the next: at most one partial
block per split is dropped. The seed's overflow method (`return_overflowing_tokens`, keep only
full chunks) drops every document's tail; it is kept as `tokenize.method: overflow` to compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hfpipe.io import PipelineError, save_dataset_dict

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


def load_pretrained_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    from hfpipe.modeling import resolve_name_or_path

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_name_or_path(name_or_path, "tokenizer.name_or_path"))
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise PipelineError(f"tokenizer.name_or_path = {name_or_path!r}: could not load ({type(err).__name__}: {first})") from None
    if tokenizer.pad_token is None:  # GPT-2 has none; the seeds use EOS
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# A tokenizer batch's memory grows with its tokens (the fast tokenizer keeps offsets and strings per
# token), not its documents: batches are capped in characters too, so memory stays flat with data size.
MAX_BATCH_CHARS = 2_000_000


def iter_text_batches(dataset, column: str, batch_size: int, max_chars: int = MAX_BATCH_CHARS) -> Iterator[list[str]]:
    """Lists of at most `batch_size` texts and (unless one text is longer) `max_chars` characters."""
    for batch in dataset.iter(batch_size=batch_size):
        texts, chars = [], 0
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


def pack_into_blocks(id_batches: Iterable[list[list[int]]], eos_id: int, block_size: int,
                     stats: ChunkStats) -> Iterator[np.ndarray]:
    """Concatenate documents (each + EOS) across batches and yield (n, block_size) int32 arrays."""
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


def overflow_blocks(tokenizer, text_batches: Iterable[list[str]], block_size: int,
                    stats: ChunkStats) -> Iterator[np.ndarray]:
    """Seed 04's chunking: split each document into block_size chunks, keep only full ones."""
    for texts in text_batches:
        out = tokenizer(texts, truncation=True, max_length=block_size, return_overflowing_tokens=True,
                        return_length=True, return_attention_mask=False)
        full = [ids for ids, length in zip(out["input_ids"], out["length"]) if length == block_size]
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


def write_blocks(blocks: Iterable[np.ndarray], path: Path, block_size: int) -> None:
    """Stream block arrays into one Arrow file (fixed-size int32 lists), never the whole split in memory."""
    import pyarrow as pa
    from datasets import Features, List, Value
    from datasets.arrow_writer import ArrowWriter

    features = Features({"input_ids": List(Value("int32"), length=block_size)})
    writer = ArrowWriter(features=features, path=str(path))
    try:
        for arr in blocks:
            column = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), type=pa.int32()), block_size)
            writer.write_table(pa.table({"input_ids": column}, schema=features.arrow_schema))
        writer.finalize()
    finally:
        writer.close()


def chunk_split(dataset, tokenizer, column: str, block_size: int, method: str, batch_size: int,
                path: Path) -> ChunkStats:
    stats = ChunkStats()
    texts = iter_text_batches(dataset, column, batch_size)
    if method == "packing":
        blocks = pack_into_blocks(token_id_batches(tokenizer, texts), tokenizer.eos_token_id, block_size, stats)
    else:
        blocks = overflow_blocks(tokenizer, texts, block_size, stats)
    write_blocks(blocks, path, block_size)
    return stats


def tokenize_and_chunk(splits, tokenizer, block_size: int, method: str, batch_size: int, out_dir: Path,
                       column: str = "content") -> dict[str, dict]:
    """Chunk every split of a DatasetDict and save_to_disk the blocks; returns per-split stats."""
    import shutil

    from datasets import Dataset, DatasetDict

    scratch = out_dir.parent / f".{out_dir.name}.arrow-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        stats = {}
        for split in splits:
            stats[split] = chunk_split(splits[split], tokenizer, column, block_size, method, batch_size,
                                       scratch / f"{split}.arrow")
            if stats[split].blocks == 0:
                raise PipelineError(f"tokenize.context_length = {block_size}: the {split} split "
                                    f"({stats[split].tokens} tokens) gives no full block; lower "
                                    f"tokenize.context_length or fetch more data")
        save_dataset_dict(DatasetDict({s: Dataset.from_file(str(scratch / f"{s}.arrow")) for s in splits}), out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {s: st.as_dict() for s, st in stats.items()}


# ---------------------------------------------------------------------------------------------
# Classification: sentences (or sentence pairs) -> token ids truncated to max_length, unpadded
# (DataCollatorWithPadding pads each batch to its longest), with length statistics.

GPT2_PAD_TOKEN = "[PAD]"  # seed 05's added pad token


def add_pad_token(tokenizer) -> bool:
    """Give a causal-LM tokenizer its own pad token (seed 05); True if one was added.

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


def label_token_ids(tokenizer, label_names: list[str]) -> list[int]:
    """Seed 05: each label is the first token of its name; the names must start with different tokens."""
    ids = []
    for name in label_names:
        tokens = tokenizer(name, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise PipelineError(f"dataset.label_names: label {name!r} encodes to no token")
        ids.append(tokens[0])
    if len(set(ids)) < len(ids):
        shared = [n for n, i in zip(label_names, ids) if ids.count(i) > 1]
        raise PipelineError(f"dataset.label_names = {label_names!r}: {shared} start with the same token "
                            f"{tokenizer.convert_ids_to_tokens(ids[label_names.index(shared[0])])!r}; "
                            f"choose names whose first tokens differ")
    return ids


def encode_gpt2_classifier(dataset, tokenizer, label_tokens: list[int], max_length: int, batch_size: int):
    """Seed 05's format: text + EOS + label token; labels are -100 everywhere but the label token.

    The text is cut to max_length - 2 tokens so EOS and the label always fit. `label_position` is
    the EOS position, whose logits predict the label. An unlabelled row (label -1) ends at EOS.
    Returns (dataset, length stats; lengths count text + EOS + label).
    """
    eos = tokenizer.eos_token_id
    lengths: list[int] = []
    kept = 0

    def encode(batch):
        nonlocal kept
        texts = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        out = {"input_ids": [], "attention_mask": [], "labels": [], "label_position": []}
        for ids, label in zip(texts, batch["label"]):
            lengths.append(len(ids) + 2)
            ids = ids[: max_length - 2] + [eos]
            targets = [-100] * len(ids)
            if label >= 0:
                ids.append(label_tokens[label])
                targets.append(label_tokens[label])
            kept += len(ids)
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(targets)
            out["label_position"].append(len(ids) - (2 if label >= 0 else 1))
        return out

    encoded = dataset.map(encode, batched=True, batch_size=batch_size, desc="tokenize",
                          load_from_cache_file=False, keep_in_memory=True)  # no cache files in data/filtered
    return encoded, length_stats(lengths, max_length, kept)


def tokenize_classification(splits, tokenizer, task: str, max_length: int, batch_size: int, out_dir: Path) -> dict:
    """Encode every split of data/filtered for `task` and save_to_disk; returns the stats."""
    from datasets import DatasetDict

    names = splits["train"].features["label"].names
    stats: dict = {"task": task, "max_length": max_length, "label_names": names}
    if task == "gpt2-classifier":
        tokens = label_token_ids(tokenizer, names)
        stats["label_tokens"] = tokenizer.convert_ids_to_tokens(tokens)
    out = {}
    for split in splits:
        if task == "gpt2-classifier":
            out[split], stats[split] = encode_gpt2_classifier(splits[split], tokenizer, tokens, max_length, batch_size)
        else:
            out[split], stats[split] = encode_classification(splits[split], tokenizer, max_length, batch_size)
    save_dataset_dict(DatasetDict(out), out_dir)
    return stats
