"""Stage tokenizer: a byte-level BPE trained on the train split (or a pretrained one) -> models/tokenizer."""

from hfpipe.io import atomic_dir, run_stage, write_json_atomic
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from datasets import load_from_disk

    from hfpipe.tokenize import iter_text_batches, load_pretrained_tokenizer, train_bpe_tokenizer

    tp = params.tokenizer
    source = None
    if tp.name_or_path:
        from hfpipe.hub import PROVENANCE_FILE, hub_commit, provenance

        commit = hub_commit(tp.name_or_path, tp.revision)  # None offline or for a local folder
        tokenizer = load_pretrained_tokenizer(tp.name_or_path, commit or tp.revision)
        source = provenance(tp.name_or_path, tp.revision, commit)
    else:
        column = "content" if params.task == "causal-lm" else "text"
        train = load_from_disk("data/filtered")["train"]
        texts = (text for batch in iter_text_batches(train, column, 1000) for text in batch)
        tokenizer = train_bpe_tokenizer(texts, tp.vocab_size, tp.min_frequency)
    if params.task == "gpt2-classifier":
        from hfpipe.tokenize import add_pad_token

        add_pad_token(tokenizer)  # seed 05: a pad token of its own (the model's embeddings grow to match)
    with atomic_dir("models/tokenizer") as out:
        tokenizer.save_pretrained(out)
        if source:  # the train stage copies it next to the model; export puts it in the model card
            write_json_atomic(out / PROVENANCE_FILE, source)
    print(f"tokenizer: {len(tokenizer)} tokens")


if __name__ == "__main__":
    run_stage(main, "tokenizer")
