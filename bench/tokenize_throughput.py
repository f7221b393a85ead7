"""Benchmark: tokenize-and-chunk throughput against the raw fast tokenizer and seed 04's
`Dataset.map` overflow method, and tokens kept by packing against overflow, on the code corpus and
on a short-document corpus (SST-2 sentences from ../shared/data when present, else the code
corpus's lines). Also the whole tokenize step (`tokenize_and_chunk`: sharded output, stats) with
`tokenize.num_proc` 2 against 1 on the code corpus (worker start-up included).

Run after `dvc repro` (it reads data/filtered and models/tokenizer):
    python bench/tokenize_throughput.py
Prints ratios measured side by side in one run; each timing is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def seed04_map_overflow(dataset, tokenizer, context_length: int, cache_file: str):
    """Seed 04's code, verbatim in spirit: Dataset.map with return_overflowing_tokens, keep full chunks."""
    def tokenize(element):
        outputs = tokenizer(element["content"], truncation=True, max_length=context_length,
                            return_overflowing_tokens=True, return_length=True)
        input_batch = [ids for length, ids in zip(outputs["length"], outputs["input_ids"], strict=True) if length == context_length]
        return {"input_ids": input_batch}

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, load_from_cache_file=False,
                       cache_file_name=cache_file)


def short_documents(train, sst2_dir: Path):
    """SST-2 sentences (one short document each) when the shared data is here, else code lines."""
    from datasets import Dataset

    tsv = sst2_dir / "train.tsv"
    if tsv.is_file():
        import csv

        with tsv.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        return "sst2-train-sentences", Dataset.from_dict({"content": [r["sentence"] for r in rows]})
    lines = [line for text in train["content"][:200] for line in text.splitlines() if line.strip()]
    return "code-lines", Dataset.from_dict({"content": lines})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/filtered")
    parser.add_argument("--tokenizer", default="models/tokenizer")
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sst2", default="../shared/data/glue-sst2")
    parser.add_argument("--out", default="bench/tokenize_results.json")
    args = parser.parse_args()

    from datasets import DatasetDict, load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.tokenize import chunk_split, iter_text_batches, tokenize_and_chunk

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    train = load_from_disk(args.data)["train"]
    batches = list(iter_text_batches(train, "content", args.batch_size))
    n_bytes = sum(len(t.encode()) for b in batches for t in b)

    def raw() -> None:  # the limit: the fast tokenizer on the same batches, nothing else
        for batch in batches:
            tokenizer(batch)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        def stage(method: str):
            def run() -> None:
                results[method] = chunk_split(train, tokenizer, "content", args.context_length, method,
                                              args.batch_size, Path(tmp) / f"{method}.arrow")
            return run

        stage("packing")()  # warm-up: page cache, tokenizer thread pool
        t_raw = best_of(args.repeats, raw)
        t_pack = best_of(args.repeats, stage("packing"))
        t_over = best_of(args.repeats, stage("overflow"))
        t_seed = best_of(args.repeats, lambda: seed04_map_overflow(train, tokenizer, args.context_length,
                                                                  str(Path(tmp) / "seed04.arrow")))
        seed_blocks = len(seed04_map_overflow(train, tokenizer, args.context_length, str(Path(tmp) / "seed04b.arrow")))

        def with_processes(n: int):
            def run() -> None:
                out = Path(tmp) / f"num_proc_{n}"
                results[f"num_proc_{n}"] = tokenize_and_chunk(DatasetDict({"train": train}), tokenizer,
                                                              args.context_length, "packing", args.batch_size, out,
                                                              num_proc=n)["train"]
                shutil.rmtree(out)
            return run

        t_proc = {n: best_of(args.repeats, with_processes(n)) for n in (1, 2)}
        assert results["num_proc_2"]["blocks"] == results["num_proc_1"]["blocks"] == results["packing"].blocks

        short_name, short = short_documents(train, Path(args.sst2))
        short_stats = {}
        for method in ("packing", "overflow"):
            short_stats[method] = chunk_split(short, tokenizer, "content", args.context_length, method,
                                              args.batch_size, Path(tmp) / f"short-{method}.arrow")
    pack, over = results["packing"], results["overflow"]
    s_pack, s_over = short_stats["packing"], short_stats["overflow"]
    figures = {
        "corpus_documents": pack.documents,
        "corpus_mb": round(n_bytes / 1e6, 2),
        "tokens": pack.tokens,
        "raw_tokenizer_tokens_per_s": round(pack.tokens / t_raw),
        "stage_packing_tokens_per_s": round(pack.tokens / t_pack),
        "stage_overflow_tokens_per_s": round(over.tokens / t_over),
        "packing_vs_raw_tokenizer": round(t_raw / t_pack, 3),
        "packing_vs_overflow_speed": round(t_over / t_pack, 3),
        "seed04_map_overflow_tokens_per_s": round(pack.tokens / t_seed),
        "packing_vs_seed04_map_speed": round(t_seed / t_pack, 3),
        "seed04_map_blocks": seed_blocks,
        "num_proc_1_tokens_per_s": round(pack.tokens / t_proc[1]),
        "num_proc_2_tokens_per_s": round(pack.tokens / t_proc[2]),
        "num_proc_2_vs_1_speed": round(t_proc[1] / t_proc[2], 3),
        "cpu_count": os.cpu_count(),
        "packing_tokens_kept_pct": round(pack.tokens_kept_pct, 2),
        "overflow_tokens_kept_pct": round(over.tokens_kept_pct, 2),
        "packing_blocks": pack.blocks,
        "overflow_blocks": over.blocks,
        "packing_vs_overflow_blocks": round(pack.blocks / max(over.blocks, 1), 3),
        "short_corpus": short_name,
        "short_documents": s_pack.documents,
        "short_packing_tokens_kept_pct": round(s_pack.tokens_kept_pct, 2),
        "short_overflow_tokens_kept_pct": round(s_over.tokens_kept_pct, 2),
        "short_packing_vs_overflow_blocks": round(s_pack.blocks / s_over.blocks, 1) if s_over.blocks else None,
        "context_length": args.context_length,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
