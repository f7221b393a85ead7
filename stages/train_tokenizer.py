"""Stage tokenizer: a byte-level BPE trained on the train split (or a pretrained one) -> models/tokenizer."""

from hfpipe.io import atomic_dir, require_complete, run_stage, write_json_atomic
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from datasets import load_from_disk

    from hfpipe.tasks import TASKS
    from hfpipe.tokenize import iter_text_batches, load_pretrained_tokenizer, train_bpe_tokenizer

    task = TASKS[params.task]
    tp = params.tokenizer
    source = None
    if tp.name_or_path:
        from hfpipe.hub import PROVENANCE_FILE, locked_commit, provenance

        commit = locked_commit(params, "tokenizer")  # a Hub tokenizer's locked commit (None: local)
        tokenizer = load_pretrained_tokenizer(tp.name_or_path, commit or tp.revision)
        source = provenance(tp.name_or_path, tp.revision, commit)
    else:
        train = load_from_disk(require_complete("data/filtered"))["train"]
        batches = iter_text_batches(train, task.TOKENIZER_TEXT_COLUMN, 1000)
        tokenizer = train_bpe_tokenizer((text for batch in batches for text in batch), tp.vocab_size,
                                        tp.min_frequency)
    task.prepare_tokenizer(tokenizer)
    with atomic_dir("models/tokenizer") as out:
        tokenizer.save_pretrained(out)
        if source:  # the train stage copies it next to the model; export puts it in the model card
            write_json_atomic(out / PROVENANCE_FILE, source)
    print(f"tokenizer: {len(tokenizer)} tokens")


if __name__ == "__main__":
    run_stage(main, "tokenizer")
