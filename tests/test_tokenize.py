"""hfpipe.tokenize: BPE training, packing with carry, overflow chunking, Arrow blocks on disk."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from hfpipe.io import PipelineError
from hfpipe.tokenize import (
    EOS_TOKEN,
    PAD_TOKEN,
    Chunking,
    ChunkStats,
    overflow_blocks,
    pack_into_blocks,
    tokenize_and_chunk,
    write_blocks,
)

CONTEXT = 32


def doc_ids(tokenizer, texts):
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


# --- the tiny tokenizer -------------------------------------------------------------------------

def test_train_bpe_tokenizer_special_tokens_and_round_trip(fresh_tokenizer, tiny_tokenizer, synthetic_docs):
    for tok in (fresh_tokenizer, tiny_tokenizer):
        assert len(tok) == 350
        assert tok.convert_ids_to_tokens([0, 1]) == [EOS_TOKEN, PAD_TOKEN]
        assert (tok.eos_token, tok.bos_token, tok.pad_token) == (EOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
        assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (0, 0, 1)
        assert tok.pad_token_id != tok.eos_token_id
    for text in synthetic_docs[:50] + ["x = 'é✓'\n\tdef  weird(): pass"]:
        ids = fresh_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert 0 not in ids and 1 not in ids
        assert fresh_tokenizer.decode(ids) == text  # byte-level: lossless
        assert tiny_tokenizer(text)["input_ids"] == ids  # the saved tokenizer is the same tokenizer
    # the BPE learned merges: common code is much shorter in tokens than in bytes
    text = "\n".join(synthetic_docs[:20])
    assert len(tiny_tokenizer(text)["input_ids"]) < len(text.encode()) / 2


def test_fresh_bpe_tokenizer_supports_truncation_and_overflow(fresh_tokenizer, synthetic_docs):
    enc = fresh_tokenizer("import pandas as pd\nx = pd.value(3)", truncation=True, max_length=3)
    assert len(enc["input_ids"]) == 3
    stats = ChunkStats()
    blocks = list(overflow_blocks(fresh_tokenizer, [synthetic_docs[:20]], CONTEXT, stats))
    assert stats.blocks == sum(len(b) for b in blocks) > 0


# --- pack_into_blocks ---------------------------------------------------------------------------------

def test_pack_into_blocks_exact_contents_and_carry():
    stats = ChunkStats()
    batches = [[[1, 2, 3], [4, 5]], [[6], [7, 8, 9, 10]]]
    out = list(pack_into_blocks(iter(batches), eos_id=0, block_size=4, stats=stats))
    # stream: 1 2 3 E 4 5 E | 6 E 7 8 9 10 E -> [1 2 3 E] [4 5 E 6] [E 7 8 9], tail [10 E] dropped
    assert [a.tolist() for a in out] == [[[1, 2, 3, 0]], [[4, 5, 0, 6], [0, 7, 8, 9]]]
    assert all(a.dtype == np.int32 for a in out)
    assert stats == ChunkStats(documents=4, tokens=10, tokens_chunked=14, blocks=3, tokens_in_blocks=12)
    assert stats.as_dict() == {"documents": 4, "tokens": 10, "tokens_chunked": 14, "blocks": 3,
                               "tokens_in_blocks": 12, "tokens_kept_pct": 85.7143}


def test_pack_into_blocks_batch_with_no_full_block_carries_everything():
    consumed = []

    def batches():
        for batch in [[[1]], [[2]], [[3, 4]]]:
            consumed.append(batch)
            yield batch

    stats = ChunkStats()
    gen = pack_into_blocks(batches(), eos_id=9, block_size=4, stats=stats)
    # 1 9 | 2 9 -> the first block appears only once the second batch has been read (streamed, not collected)
    assert next(gen).tolist() == [[1, 9, 2, 9]]
    assert len(consumed) == 2
    assert list(gen) == []  # the tail 3 4 9 is shorter than a block: dropped
    assert stats == ChunkStats(documents=3, tokens=4, tokens_chunked=7, blocks=1, tokens_in_blocks=4)


def test_pack_into_blocks_exact_fit_drops_nothing():
    stats = ChunkStats()
    out = list(pack_into_blocks(iter([[[1, 2, 3], [4, 5, 6]]]), eos_id=0, block_size=4, stats=stats))
    assert np.concatenate(out).tolist() == [[1, 2, 3, 0], [4, 5, 6, 0]]
    assert stats.tokens_kept_pct == 100.0


def test_pack_into_blocks_empty_documents_still_get_eos():
    stats = ChunkStats()
    out = list(pack_into_blocks(iter([[[], [5], []]]), eos_id=0, block_size=2, stats=stats))
    assert np.concatenate(out).tolist() == [[0, 5], [0, 0]]
    assert stats == ChunkStats(documents=3, tokens=1, tokens_chunked=4, blocks=2, tokens_in_blocks=4)


def test_pack_into_blocks_matches_a_flat_stream_and_drops_under_one_block():
    rng = random.Random(3)
    batches = [[[rng.randrange(2, 50) for _ in range(rng.randrange(0, 30))] for _ in range(rng.randrange(1, 6))]
               for _ in range(12)]
    stream = [t for batch in batches for d in batch for t in d + [1]]
    for block_size in (1, 7, 16, 64):
        stats = ChunkStats()
        out = list(pack_into_blocks(iter(batches), eos_id=1, block_size=block_size, stats=stats))
        flat = np.concatenate(out).reshape(-1).tolist() if out else []
        n_full = len(stream) // block_size
        assert flat == stream[: n_full * block_size]
        assert stats.blocks == n_full
        assert stats.tokens_chunked == len(stream)
        assert 0 <= stats.tokens_chunked - stats.tokens_in_blocks < block_size  # at most one partial block


# --- overflow_blocks ---------------------------------------------------------------------------------

def test_overflow_blocks_keeps_only_full_chunks(tiny_tokenizer, synthetic_docs):
    texts = ["\n".join(synthetic_docs[i: i + 3]) for i in range(0, 60, 3)]
    ids = doc_ids(tiny_tokenizer, texts)
    expected = [d[i: i + CONTEXT] for d in ids for i in range(0, len(d) - CONTEXT + 1, CONTEXT)]
    stats = ChunkStats()
    out = list(overflow_blocks(tiny_tokenizer, [texts[:7], texts[7:]], CONTEXT, stats))
    assert np.concatenate(out).tolist() == expected
    assert all(a.dtype == np.int32 and a.shape[1] == CONTEXT for a in out)
    assert stats.documents == 20
    assert stats.tokens == stats.tokens_chunked == sum(len(d) for d in ids)
    assert stats.blocks == len(expected) == sum(len(d) // CONTEXT for d in ids)
    assert stats.tokens_in_blocks == len(expected) * CONTEXT
    # every document's tail is dropped: at most CONTEXT - 1 tokens per document
    assert stats.tokens - stats.tokens_in_blocks == sum(len(d) % CONTEXT for d in ids)

    packed = ChunkStats()
    list(pack_into_blocks(iter([ids]), tiny_tokenizer.eos_token_id, CONTEXT, packed))
    assert packed.tokens_in_blocks >= stats.tokens_in_blocks


def test_overflow_blocks_short_documents_give_no_block(tiny_tokenizer):
    stats = ChunkStats()
    assert list(overflow_blocks(tiny_tokenizer, [["x = 1", "y = 2"]], CONTEXT, stats)) == []
    assert stats.blocks == 0 and stats.documents == 2 and stats.tokens > 0


# --- write_blocks / tokenize_and_chunk -----------------------------------------------------------------

def test_write_blocks_fixed_size_int32(tmp_path):
    import pyarrow as pa
    from datasets import Dataset

    arrays = [np.arange(8, dtype=np.int32).reshape(2, 4), np.arange(100, 104, dtype=np.int32).reshape(1, 4)]
    path = tmp_path / "blocks.arrow"
    write_blocks(iter(arrays), path, 4)
    ds = Dataset.from_file(str(path))
    assert ds["input_ids"][:] == [[0, 1, 2, 3], [4, 5, 6, 7], [100, 101, 102, 103]]
    assert ds.data.schema.field("input_ids").type == pa.list_(pa.int32(), 4)


@pytest.fixture
def splits(synthetic_docs):
    from datasets import Dataset, DatasetDict

    return DatasetDict({"train": Dataset.from_dict({"content": synthetic_docs[:200]}),
                        "validation": Dataset.from_dict({"content": synthetic_docs[200:260]})})


def test_tokenize_and_chunk_packing_on_disk(tiny_tokenizer, splits, synthetic_docs, tmp_path):
    import pyarrow as pa
    from datasets import load_from_disk

    out = tmp_path / "blocks"
    stats = tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks"]  # scratch removed
    blocks = load_from_disk(str(out))
    assert sorted(blocks) == ["train", "validation"]
    for split, texts in (("train", synthetic_docs[:200]), ("validation", synthetic_docs[200:260])):
        ds = blocks[split]
        assert ds.column_names == ["input_ids"]
        assert ds.data.schema.field("input_ids").type == pa.list_(pa.int32(), CONTEXT)
        rows = ds["input_ids"][:]
        assert all(len(r) == CONTEXT for r in rows)
        ids = doc_ids(tiny_tokenizer, texts)
        n_stream = sum(len(d) + 1 for d in ids)
        assert stats[split] == {"documents": len(texts), "tokens": n_stream - len(texts), "tokens_chunked": n_stream,
                                "blocks": n_stream // CONTEXT, "tokens_in_blocks": n_stream // CONTEXT * CONTEXT,
                                "tokens_kept_pct": round(100 * (n_stream // CONTEXT * CONTEXT) / n_stream, 4)}
        assert len(rows) == n_stream // CONTEXT
        # decoded, the blocks are the documents joined by EOS, cut at the last full block
        flat = list(itertools.chain.from_iterable(rows))
        stream = [t for d in ids for t in d + [tiny_tokenizer.eos_token_id]]
        assert flat == stream[: len(flat)]
        decoded = tiny_tokenizer.decode(flat)
        joined = "".join(t + EOS_TOKEN for t in texts)
        assert joined.startswith(decoded)
        assert decoded + tiny_tokenizer.decode(stream[len(flat):]) == joined
        assert len(stream) - len(flat) < CONTEXT


def test_tokenize_and_chunk_packing_keeps_more_than_overflow(tiny_tokenizer, splits, tmp_path):
    from datasets import load_from_disk

    packed = tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 50), tmp_path / "p")
    overflow = tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "overflow", 50), tmp_path / "o")
    for split in ("train", "validation"):
        assert packed[split]["tokens_in_blocks"] >= overflow[split]["tokens_in_blocks"]
        assert packed[split]["tokens"] == overflow[split]["tokens"]  # same documents, same tokens
        assert packed[split]["tokens_chunked"] == overflow[split]["tokens_chunked"] + packed[split]["documents"]
        assert len(load_from_disk(str(tmp_path / "o"))[split]) == overflow[split]["blocks"]
    assert packed["train"]["tokens_kept_pct"] > 99.0
    assert overflow["train"]["tokens_kept_pct"] < 90.0


def test_tokenize_and_chunk_batch_size_does_not_change_packing(tiny_tokenizer, splits, tmp_path):
    from datasets import load_from_disk

    a = tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 7), tmp_path / "a")
    b = tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 1000), tmp_path / "b")
    assert a == b
    assert load_from_disk(str(tmp_path / "a"))["train"]["input_ids"][:] == \
        load_from_disk(str(tmp_path / "b"))["train"]["input_ids"][:]


def test_tokenize_and_chunk_no_full_block_is_a_pipeline_error(tiny_tokenizer, synthetic_docs, tmp_path):
    from datasets import Dataset, DatasetDict

    splits = DatasetDict({"train": Dataset.from_dict({"content": synthetic_docs[:50]}),
                          "validation": Dataset.from_dict({"content": ["x = 1"]})})
    out = tmp_path / "blocks"
    with pytest.raises(PipelineError) as info:
        tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 100), out)
    n = len(tiny_tokenizer("x = 1")["input_ids"])
    assert str(info.value) == (f"tokenize.context_length = {CONTEXT}: the validation split ({n} tokens) gives no "
                               f"full block; lower tokenize.context_length or fetch more data")
    assert list(tmp_path.iterdir()) == []  # no output, no scratch


# --- num_proc and sharded output -------------------------------------------------------------------------

def packed_stream(tokenizer, texts) -> list[int]:
    return [t for ids in doc_ids(tokenizer, texts) for t in ids + [tokenizer.eos_token_id]]


def cut(stream: list[int]) -> tuple[list[list[int]], list[int]]:
    n = len(stream) // CONTEXT
    return [stream[i * CONTEXT: (i + 1) * CONTEXT] for i in range(n)], stream[n * CONTEXT:]


def folder_bytes(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tokenize_and_chunk_num_proc_2_keeps_every_block_and_the_counts(tiny_tokenizer, splits, tmp_path):
    """Two processes pack two contiguous ranges of each split; their remainders are packed together
    last. Same documents, tokens, blocks and tokens kept as one process; the blocks are the ranges'
    own blocks in order, then the remainders' blocks."""
    from datasets import load_from_disk

    one = tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 16), tmp_path / "one")
    two = tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 16), tmp_path / "two", num_proc=2)
    assert two == one  # stats: sums over the processes + the remainders' blocks
    blocks_one = load_from_disk(str(tmp_path / "one"))
    blocks_two = load_from_disk(str(tmp_path / "two"))
    remainder_blocks = 0
    for split in splits:
        texts = splits[split]["content"]
        half = (len(texts) + 1) // 2  # Dataset.shard(2, contiguous=True): the first range gets the odd one
        full0, tail0 = cut(packed_stream(tiny_tokenizer, texts[:half]))
        full1, tail1 = cut(packed_stream(tiny_tokenizer, texts[half:]))
        tails, _ = cut(tail0 + tail1)
        got = blocks_two[split]["input_ids"][:]
        assert got == full0 + full1 + tails
        assert blocks_one[split]["input_ids"][:len(full0)] == full0  # the first range's blocks are one process's
        assert len(got) == len(blocks_one[split]) == one[split]["blocks"]
        assert one[split]["tokens_chunked"] - one[split]["tokens_in_blocks"] < CONTEXT  # one partial block at most
        shards = sorted(p.name for p in (tmp_path / "two" / split).glob("*.arrow"))
        n = 3 if tails else 2  # range 0, range 1, the remainders' blocks (if they make one)
        assert shards == [f"data-{i:05d}-of-{n:05d}.arrow" for i in range(n)]
        remainder_blocks += len(tails)
    assert remainder_blocks  # the remainders made a block somewhere: that path is exercised
    # deterministic: a second run writes the same bytes
    tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 50), tmp_path / "again", num_proc=2)
    assert folder_bytes(tmp_path / "again") == folder_bytes(tmp_path / "two")


def test_tokenize_and_chunk_num_proc_overflow_gives_the_same_blocks(tiny_tokenizer, splits, tmp_path):
    from datasets import load_from_disk

    texts = ["\n".join(splits["train"]["content"][i: i + 4]) for i in range(0, 200, 4)]
    from datasets import Dataset, DatasetDict

    long_docs = DatasetDict({"train": Dataset.from_dict({"content": texts}),
                             "validation": Dataset.from_dict({"content": texts[:9]})})
    one = tokenize_and_chunk(long_docs, tiny_tokenizer, Chunking("content", CONTEXT, "overflow", 8), tmp_path / "one")
    three = tokenize_and_chunk(long_docs, tiny_tokenizer, Chunking("content", CONTEXT, "overflow", 8), tmp_path / "three", num_proc=3)
    assert three == one
    for split in long_docs:
        assert load_from_disk(str(tmp_path / "three"))[split]["input_ids"][:] == \
            load_from_disk(str(tmp_path / "one"))[split]["input_ids"][:]


def test_tokenize_and_chunk_tiny_shards_read_back_in_order(tiny_tokenizer, splits, tmp_path):
    from datasets import load_from_disk

    tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), tmp_path / "big")
    stats = tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), tmp_path / "small",
                               max_shard_size=20 * CONTEXT * 4)  # 20 blocks of int32
    big, small = load_from_disk(str(tmp_path / "big")), load_from_disk(str(tmp_path / "small"))
    for split in splits:
        shards = sorted((tmp_path / "small" / split).glob("*.arrow"))
        assert len(shards) == -(-stats[split]["blocks"] // 20) > 1
        assert small[split]["input_ids"][:] == big[split]["input_ids"][:]
    assert len(list((tmp_path / "big" / "train").glob("*.arrow"))) == 1


def test_tokenize_and_chunk_more_processes_than_documents(tiny_tokenizer, splits, synthetic_docs, tmp_path):
    from datasets import Dataset, DatasetDict

    few = DatasetDict({"train": splits["train"], "validation": Dataset.from_dict({"content": synthetic_docs[:3]})})
    one = tokenize_and_chunk(few, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), tmp_path / "one")
    many = tokenize_and_chunk(few, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), tmp_path / "many", num_proc=5)
    assert many == one


def test_num_proc_workers_run_single_threaded_and_the_setting_is_restored(tiny_tokenizer, splits, tmp_path,
                                                                          monkeypatch):
    import os

    import hfpipe.tokenize as tokenize_module

    seen = tmp_path / "seen"
    seen.mkdir()
    init = tokenize_module._init_worker

    def recording_init(*args):  # runs in each worker (fork): write down what the worker sees
        (seen / str(os.getpid())).write_text(os.environ.get("TOKENIZERS_PARALLELISM", "<unset>"))
        init(*args)

    monkeypatch.setattr(tokenize_module, "_init_worker", recording_init)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), tmp_path / "a", num_proc=2)
    assert sorted(f.read_text() for f in seen.iterdir()) == ["false", "false"]  # both workers single-threaded
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    monkeypatch.delenv("TOKENIZERS_PARALLELISM")
    tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), tmp_path / "b", num_proc=2)
    assert "TOKENIZERS_PARALLELISM" not in os.environ


def test_tokenize_params_num_proc_and_max_shard_size():
    from hfpipe.params import TokenizeParams, parse_params

    assert (TokenizeParams().num_proc, TokenizeParams().max_shard_size) == (1, "500MB")
    assert parse_params({"tokenize": {"num_proc": 8, "max_shard_size": "1GB"}}).tokenize.num_proc == 8
    for raw, message in [({"num_proc": 0},
                          "params.yaml: tokenize.num_proc = 0: Input should be greater than or equal to 1"),
                         ({"max_shard_size": "0MB"}, "params.yaml: tokenize.max_shard_size = '0MB': must be a positive "
                                                     "number of bytes or a size such as 500MB, 1GB or 64MiB")]:
        with pytest.raises(PipelineError) as info:
            parse_params({"tokenize": raw})
        assert str(info.value) == message


def test_num_proc_with_spawn_where_there_is_no_fork(tiny_tokenizer, splits, tmp_path, monkeypatch):
    """Where fork is missing (Windows) the workers are spawned: the tokenizer and each range are
    pickled to them. Same files as with fork."""
    import multiprocessing

    tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), tmp_path / "fork", num_proc=2)
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), tmp_path / "spawn", num_proc=2)
    assert folder_bytes(tmp_path / "spawn") == folder_bytes(tmp_path / "fork")


def test_num_proc_a_worker_that_dies_is_a_one_line_error_not_a_hang(tiny_tokenizer, splits, tmp_path, monkeypatch):
    import os

    import hfpipe.tokenize as tokenize_module

    parent = os.getpid()
    real = tokenize_module.chunk_range

    def dies_in_a_worker(**kwargs):
        if os.getpid() != parent and kwargs["prefix"] == "part-00001":
            os._exit(9)  # as the kernel's OOM killer would end it
        return real(**kwargs)

    monkeypatch.setattr(tokenize_module, "chunk_range", dies_in_a_worker)  # forked workers inherit it
    with pytest.raises(PipelineError) as info:
        tokenize_and_chunk(splits, tiny_tokenizer, Chunking("content", CONTEXT, "packing", 64), tmp_path / "out", num_proc=2)
    assert str(info.value).startswith("tokenize.num_proc = 2: a worker process died (")
    assert str(info.value).endswith("lower tokenize.num_proc or tokenize.batch_size")
    assert list(tmp_path.iterdir()) == []  # no half-written output


def test_a_pretrained_tokenizer_saves_the_same_bytes_online_and_offline(tiny_tokenizer_dir, tmp_path):
    """models/tokenizer must not depend on the shell it was made in: transformers records how a
    tokenizer was loaded (local_files_only, from HF_HUB_OFFLINE) in the tokenizer_config.json it
    saves. (A subprocess each: huggingface_hub reads HF_HUB_OFFLINE once, at import.)"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    saved = {}
    for offline in ("0", "1"):
        out = tmp_path / f"offline-{offline}"
        code = ("import sys; from hfpipe.tokenize import load_pretrained_tokenizer; "
                "load_pretrained_tokenizer(sys.argv[1]).save_pretrained(sys.argv[2])")
        env = {**os.environ, "HF_HUB_OFFLINE": offline, "TRANSFORMERS_OFFLINE": offline}
        subprocess.run([sys.executable, "-c", code, str(tiny_tokenizer_dir), str(out)], cwd=root, env=env, check=True)
        saved[offline] = (out / "tokenizer_config.json").read_text()
    assert saved["0"] == saved["1"]
    assert "local_files_only" not in saved["1"]
