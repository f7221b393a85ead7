"""Stage train: a GPT-2 trained on data/tokenized -> models/trained; curves in dvclive/."""

from hfpipe.io import atomic_dir, run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    from hfpipe.modeling import check_context_length

    check_context_length(params.model, params.tokenize.context_length)
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.modeling import build_causal_lm, count_parameters
    from hfpipe.train import train_causal_lm

    tokenizer = AutoTokenizer.from_pretrained("models/tokenizer")
    blocks = load_from_disk("data/tokenized")
    eval_blocks = blocks["validation"]
    if params.evaluate.max_blocks:
        eval_blocks = eval_blocks.select(range(min(params.evaluate.max_blocks, len(eval_blocks))))
    model = build_causal_lm(params.model, tokenizer, params.tokenize.context_length, params.seed)
    print(f"model: {count_parameters(model) / 1e6:.2f}M parameters; {len(blocks['train'])} training blocks")
    with atomic_dir("models/trained") as out:
        trainer = train_causal_lm(params, model, tokenizer, blocks["train"], eval_blocks, out / "work")
        trainer.save_model(str(out))
        tokenizer.save_pretrained(out)
        import shutil

        shutil.rmtree(out / "work", ignore_errors=True)


if __name__ == "__main__":
    run_stage(main, "train")
