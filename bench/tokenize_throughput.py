"""Benchmark: tokenize-and-chunk throughput against the raw fast tokenizer, and packing vs overflow.

Run after `dvc repro` (it reads data/filtered and models/tokenizer):
    python bench/tokenize_throughput.py
Prints ratios measured side by side in one run; each timing is the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/filtered")
    parser.add_argument("--tokenizer", default="models/tokenizer")
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/tokenize_results.json")
    args = parser.parse_args()

    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.tokenize import chunk_split, iter_text_batches

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
    pack, over = results["packing"], results["overflow"]
    figures = {
        "corpus_documents": pack.documents,
        "corpus_mb": round(n_bytes / 1e6, 2),
        "tokens": pack.tokens,
        "raw_tokenizer_tokens_per_s": round(pack.tokens / t_raw),
        "stage_packing_tokens_per_s": round(pack.tokens / t_pack),
        "stage_overflow_tokens_per_s": round(over.tokens / t_over),
        "packing_vs_raw_tokenizer": round(t_raw / t_pack, 3),
        "packing_vs_overflow_speed": round(t_over / t_pack, 3),
        "packing_tokens_kept_pct": round(pack.tokens_kept_pct, 2),
        "overflow_tokens_kept_pct": round(over.tokens_kept_pct, 2),
        "packing_blocks": pack.blocks,
        "overflow_blocks": over.blocks,
        "packing_vs_overflow_blocks": round(pack.blocks / max(over.blocks, 1), 3),
        "context_length": args.context_length,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
