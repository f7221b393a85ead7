"""Stage tokenize: data/filtered -> data/tokenized (a causal LM's packed blocks, or a classifier's
examples) + data/stats/tokenize.json."""

from pathlib import Path

from hfpipe.io import atomic_dir, require_complete, run_stage, write_json_atomic
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.tasks import TASKS

    task = TASKS[params.task]
    tokenizer = AutoTokenizer.from_pretrained(require_complete("models/tokenizer"))
    splits = load_from_disk(require_complete("data/filtered"))
    with atomic_dir("data/tokenized") as out:
        stats = task.tokenize(splits, tokenizer, params.tokenize, out)
    write_json_atomic(Path("data/stats/tokenize.json"), stats)
    for line in task.tokenize_summary(stats):
        print(line)


if __name__ == "__main__":
    run_stage(main, "tokenize")
