"""Stage train: a GPT-2 trained on data/tokenized -> models/trained; curves in dvclive/."""

from pathlib import Path

from hfpipe.io import atomic_dir, run_stage
from hfpipe.params import load_params


def main() -> None:
    params = load_params()
    if params.task != "causal-lm":  # classification, gpt2-classifier
        return train_classification_stage(params)
    from hfpipe.modeling import check_context_length

    check_context_length(params.model, params.tokenize.context_length)
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe import launch
    from hfpipe.checkpoint import CHECKPOINT_DIR, data_fingerprint, find_resume_checkpoint, marker_data
    from hfpipe.modeling import build_causal_lm, count_parameters
    from hfpipe.train import check_training_inputs, train_causal_lm

    if launch.in_distributed_run() and params.train.num_processes != launch.world_size():
        # started by an outside launcher (torchrun / accelerate launch): the real process count counts
        params = params.model_copy(update={"train": params.train.model_copy(
            update={"num_processes": launch.world_size()})})
    main_process = launch.rank() == 0
    tokenizer = AutoTokenizer.from_pretrained("models/tokenizer")
    blocks = load_from_disk("data/tokenized")
    eval_blocks = blocks["validation"]
    if params.evaluate.max_blocks:
        eval_blocks = eval_blocks.select(range(min(params.evaluate.max_blocks, len(eval_blocks))))
    keytokens = check_training_inputs(params, tokenizer, len(blocks["train"]), log=print if main_process else _quiet)
    backend = params.train.backend
    data_hash = data_fingerprint(["data/tokenized", "models/tokenizer"])
    resume = find_resume_checkpoint(params, data_hash, backend, cleanup=main_process,
                                    log=print if main_process else _quiet)
    CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)  # a DVC output: must exist even when empty
    if params.train.num_processes > 1 and not launch.in_distributed_run():
        launch.exec_torchrun(params.train.num_processes, "stages.train")  # does not return

    def marker_for_step(step: int) -> dict:
        return marker_data(params, data_hash, step, backend)

    model = build_causal_lm(params.model, tokenizer, params.tokenize.context_length, params.seed)
    if main_process:
        print(f"model: {count_parameters(model) / 1e6:.2f}M parameters; {len(blocks['train'])} training blocks; "
              f"backend {backend}, {params.train.num_processes} process(es)")
    resume_path = resume.path if resume else None
    if backend == "accelerate":
        from transformers import DataCollatorForLanguageModeling

        from hfpipe.train_accelerate import causal_lm_task, train_accelerate

        result = train_accelerate(params, model, blocks["train"], eval_blocks,
                                  DataCollatorForLanguageModeling(tokenizer, mlm=False),
                                  causal_lm_task(keytokens, params.train.keytoken_alpha),
                                  marker_for_step=marker_for_step, resume_from=resume_path)
        if result.is_main_process:
            with atomic_dir("models/trained") as out:
                result.model.save_pretrained(out)
                tokenizer.save_pretrained(out)
        return
    trainer = train_causal_lm(params, model, tokenizer, blocks["train"], eval_blocks, CHECKPOINT_DIR,
                              marker_for_step=marker_for_step, resume_from=resume_path)
    if trainer.is_world_process_zero():
        with atomic_dir("models/trained") as out:
            trainer.save_model(str(out))
            tokenizer.save_pretrained(out)


def _quiet(*args, **kwargs) -> None:
    """Other processes of a multi-process run: the main one reports."""


def train_classification_stage(params) -> None:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.modeling import count_parameters
    from hfpipe.tokenize import label_token_ids
    from hfpipe.train import build_classification_model, train_classifier

    tokenizer = AutoTokenizer.from_pretrained("models/tokenizer")
    data = load_from_disk("data/tokenized")
    names = data["train"].features["label"].names
    tokens = label_token_ids(tokenizer, names) if params.task == "gpt2-classifier" else None
    model = build_classification_model(params, tokenizer, names)
    print(f"model: {count_parameters(model) / 1e6:.2f}M parameters; {len(data['train'])} training examples; "
          f"labels {names}")
    if params.train.backend == "accelerate":
        from hfpipe.train_accelerate import train_classifier_accelerate

        result = train_classifier_accelerate(params, model, tokenizer, data["train"], data["validation"], tokens)
        if result.is_main_process:
            with atomic_dir("models/trained") as out:
                result.model.save_pretrained(out)
                tokenizer.save_pretrained(out)
        Path("models/checkpoints").mkdir(parents=True, exist_ok=True)
        return
    with atomic_dir("models/trained") as out:
        trainer = train_classifier(params, model, tokenizer, data["train"], data["validation"], out / "work", tokens)
        trainer.save_model(str(out))
        tokenizer.save_pretrained(out)
        import shutil

        shutil.rmtree(out / "work", ignore_errors=True)
    # dvc.yaml declares models/checkpoints (the resumable LM runs' persist output); classification
    # runs are short and keep their evaluation checkpoints in the scratch folder above.
    Path("models/checkpoints").mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    run_stage(main, "train")
