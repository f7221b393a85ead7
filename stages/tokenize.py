"""Stage tokenize: documents -> blocks of context_length token ids (data/tokenized) + data/stats/tokenize.json."""

from pathlib import Path

from hfpipe.io import atomic_dir, run_stage, write_json_atomic
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.tokenize import tokenize_and_chunk

    tp = params.tokenize
    tokenizer = AutoTokenizer.from_pretrained("models/tokenizer")
    splits = load_from_disk("data/filtered")
    if params.task != "causal-lm":  # classification, gpt2-classifier
        from hfpipe.tokenize import tokenize_classification

        with atomic_dir("data/tokenized") as out:
            stats = tokenize_classification(splits, tokenizer, params.task, tp.max_length, tp.batch_size, out,
                                            tp.max_shard_size)
        write_json_atomic(Path("data/stats/tokenize.json"), stats)
        for split in splits:
            s = stats[split]
            print(f"{split}: {s['examples']} examples, mean length {s['length_mean']}, "
                  f"{100 * s['truncation_rate']:.1f}% truncated at {tp.max_length}")
        return
    with atomic_dir("data/tokenized") as out:
        stats = tokenize_and_chunk(splits, tokenizer, tp.context_length, tp.method, tp.batch_size, out,
                                   num_proc=tp.num_proc, max_shard_size=tp.max_shard_size)
    # num_proc is not recorded: it changes how blocks straddling range boundaries are arranged, never
    # the counts below (the stats are sums over the processes plus the packed remainders).
    write_json_atomic(Path("data/stats/tokenize.json"),
                      {"method": tp.method, "context_length": tp.context_length, **stats})
    for split, s in stats.items():
        print(f"{split}: {s['documents']} documents, {s['tokens']} tokens, {s['blocks']} blocks, "
              f"{s['tokens_kept_pct']:.2f}% of tokens kept")


if __name__ == "__main__":
    run_stage(main, "tokenize")
