"""Training with the Hugging Face Trainer, logged through dvclive."""

from __future__ import annotations

from pathlib import Path

from hfpipe.io import atomic_dir
from hfpipe.params import Params

DVCLIVE_DIR = "dvclive"


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def training_arguments(params: Params, output_dir: str | Path, **overrides):
    from transformers import TrainingArguments

    tp = params.train
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=tp.batch_size,
        per_device_eval_batch_size=tp.eval_batch_size,
        gradient_accumulation_steps=tp.gradient_accumulation_steps,
        num_train_epochs=tp.epochs,
        max_steps=tp.max_steps,
        learning_rate=params.lr,
        weight_decay=tp.weight_decay,
        warmup_steps=tp.warmup_ratio,  # a float below 1 is a fraction of the total steps
        lr_scheduler_type=tp.lr_scheduler,
        max_grad_norm=tp.max_grad_norm,
        eval_strategy="steps",
        eval_steps=tp.eval_steps,
        logging_steps=tp.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        report_to="none",  # dvclive is attached explicitly, with our own step numbering
        seed=params.seed,
        data_seed=params.seed,
        use_cpu=not _has_gpu(),
        dataloader_num_workers=0,
        bf16=tp.mixed_precision == "bf16",
        fp16=tp.mixed_precision == "fp16",
        logging_nan_inf_filter=False,  # a NaN/inf loss must reach the logs (NaNGuardCallback stops on it)
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def dvclive_callback(live_dir: str | Path = DVCLIVE_DIR, resume: bool = False):
    """transformers' DVCLiveCallback, logging at the Trainer's global step.

    The stock callback advances dvclive's step once per log call, so a train log and an eval log
    at the same optimiser step land on different x values; plots need the real step.
    """
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    class GlobalStepDVCLiveCallback(DVCLiveCallback):
        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            if state.is_world_process_zero and self.live is not None:
                self.live.step = state.global_step
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)

    # dvcyaml=False: dvc.yaml is written by hand and declares the plots itself. resume: keep the
    # curves restored from a checkpoint and append to them.
    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None, resume=resume)
    return GlobalStepDVCLiveCallback(live=live)


def checkpoint_callbacks(marker_for_step, live_dir: str | Path, checkpoint_dir: Path):
    """[marker callback, NaN guard] for a Trainer that saves checkpoints into checkpoint_dir.

    The Trainer writes checkpoint-<step>/ in place; the marker (written last, on the main process,
    after every process has saved its RNG state) is what makes it complete for hfpipe.checkpoint.
    """
    import math

    from transformers import TrainerCallback

    from hfpipe.checkpoint import PREFIX, last_good_checkpoint, prune_checkpoints, snapshot_dvclive, write_marker
    from hfpipe.io import PipelineError

    class CheckpointMarkerCallback(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            if state.is_world_process_zero and marker_for_step is not None:
                path = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
                snapshot_dvclive(Path(live_dir), path)
                write_marker(path, marker_for_step(state.global_step))
                prune_checkpoints(Path(args.output_dir))
                print(f"saved checkpoint {path}", flush=True)

    class NaNGuardCallback(TrainerCallback):
        """Stop on a NaN/inf training loss or gradient norm (seen at the next logging step)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "grad_norm"):
                value = (logs or {}).get(key)
                if isinstance(value, float) and not math.isfinite(value):
                    raise PipelineError(f"training {key} is {value} at step {state.global_step} (logged every "
                                        f"{args.logging_steps} steps); last good checkpoint: "
                                        f"{last_good_checkpoint(checkpoint_dir)}; lower lr or check the data")

    return [CheckpointMarkerCallback(), NaNGuardCallback()]


def train_causal_lm(params: Params, model, tokenizer, train_blocks, eval_blocks, work_dir: Path,
                    live_dir: str | Path = DVCLIVE_DIR, marker_for_step=None, resume_from: Path | None = None):
    """Trainer + DataCollatorForLanguageModeling(mlm=False) on packed blocks; returns the trainer.

    With marker_for_step (step -> marker dict, see hfpipe.checkpoint), checkpoints go to work_dir
    every train.save_steps and are deleted once training finishes; resume_from continues one
    (model, optimizer, scheduler, RNG and data position: Trainer's resume_from_checkpoint).
    """
    from transformers import DataCollatorForLanguageModeling, Trainer

    set_threads(params.train.threads)
    saving = marker_for_step is not None
    overrides = dict(save_strategy="steps", save_steps=params.train.save_steps) if saving else {}
    if resume_from is not None:
        from hfpipe.checkpoint import restore_dvclive

        restore_dvclive(Path(resume_from), Path(live_dir))
    trainer = Trainer(
        model=model,
        args=training_arguments(params, work_dir, **overrides),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        train_dataset=train_blocks,
        eval_dataset=eval_blocks,
        processing_class=tokenizer,
        callbacks=[dvclive_callback(live_dir, resume=resume_from is not None),
                   *checkpoint_callbacks(marker_for_step, live_dir, Path(work_dir))],
    )
    if resume_from is not None and trainer.is_world_process_zero():
        print(f"resumed from {resume_from} at step {int(Path(resume_from).name.split('-')[-1])}", flush=True)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    if saving and trainer.is_world_process_zero():
        from hfpipe.checkpoint import remove_checkpoints

        remove_checkpoints(Path(work_dir))  # finished: nothing left that another run could resume
    return trainer


def check_training_inputs(params: Params, tokenizer, n_train: int, log=print) -> list[int]:
    """Checks that need the data or tokenizer, run before any model is built; returns the
    keytoken ids of the keytoken-weighted loss ([] when it is off)."""
    from hfpipe.io import PipelineError

    tp = params.train
    per_process = -(-n_train // (tp.batch_size * tp.num_processes))
    if tp.gradient_accumulation_steps > per_process:
        raise PipelineError(f"train.gradient_accumulation_steps = {tp.gradient_accumulation_steps}: exceeds the "
                            f"{per_process} batches per epoch ({n_train} training examples / train.batch_size "
                            f"{tp.batch_size} / {tp.num_processes} process(es)), so no optimizer step would "
                            f"complete; use at most {per_process}")
    if tp.keytoken_alpha <= 0:
        return []
    from hfpipe.evaluate import keytoken_ids

    words, key = tp.keytokens, "train.keytokens"
    ids, not_single = keytoken_ids(tokenizer, words)
    for form in not_single:  # as seed 04 prints them
        log(f"Keyword has not single token: {form!r}")
    if not ids:
        raise PipelineError(f"{key} = {words!r}: none is a single token of the tokenizer (Keyword has not single "
                            f"token: {', '.join(repr(w) for w in words)}); the keytoken-weighted loss "
                            "(train.keytoken_alpha > 0) needs words the tokenizer keeps whole")
    return ids


# ---------------------------------------------------------------------------------------------
# Classification (seeds 01/02/03) and GPT-2 as a classifier (seed 05).

def classification_overrides(params: Params) -> dict:
    """TrainingArguments for classification: eval every epoch or every eval_steps; with
    load_best_model_at_end, checkpoints at each evaluation so the best can be reloaded."""
    tp = params.train
    overrides: dict = dict(eval_strategy=tp.eval_strategy)
    if tp.load_best_model_at_end:
        overrides.update(save_strategy=tp.eval_strategy, save_steps=tp.eval_steps, save_total_limit=2,
                         load_best_model_at_end=True, metric_for_best_model=tp.metric_for_best_model,
                         greater_is_better=tp.metric_for_best_model != "loss")
    return overrides


def classifier_compute_metrics(num_labels: int, label_tokens: list[int] | None = None):
    """Trainer compute_metrics: accuracy/F1/precision/recall of the argmax over the class logits.

    With `label_tokens` (gpt2-classifier) the predictions are the label tokens' logits (see
    hfpipe.evaluate.gpt2_label_logits) and the classes are read from the seed-05 labels.
    """
    import numpy as np

    from hfpipe.evaluate import classification_metrics, gpt2_label_classes

    def compute(eval_pred) -> dict:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        labels = eval_pred.label_ids
        if label_tokens is not None:
            labels = gpt2_label_classes(labels, label_tokens)
        return classification_metrics(np.argmax(logits, -1), labels, num_labels)

    return compute


def classification_collator(tokenizer, task: str):
    """Dynamic padding: DataCollatorWithPadding (seeds 01-03); for gpt2-classifier the labels are
    padded too, with -100."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if task == "gpt2-classifier":
        tokenizer.padding_side = "right"  # label_position counts from the left
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
    return DataCollatorWithPadding(tokenizer)


def model_columns(dataset, task: str) -> list[str]:
    """The columns the model takes (texts, label_position and the like stay out of the batches)."""
    wanted = (["input_ids", "attention_mask", "labels"] if task == "gpt2-classifier"
              else ["input_ids", "attention_mask", "token_type_ids", "label"])
    return [c for c in wanted if c in dataset.column_names]


def train_classifier(params: Params, model, tokenizer, train_set, eval_set, work_dir: Path,
                     label_tokens: list[int] | None = None, live_dir: str | Path = DVCLIVE_DIR):
    """Trainer for `classification` and `gpt2-classifier`; returns the trainer (best model loaded
    when train.load_best_model_at_end)."""
    from functools import partial

    from transformers import Trainer

    from hfpipe.evaluate import gpt2_label_logits

    set_threads(params.train.threads)
    names = train_set.features["label"].names
    gpt2 = params.task == "gpt2-classifier"
    trainer = Trainer(
        model=model,
        args=training_arguments(params, work_dir, **classification_overrides(params)),
        data_collator=classification_collator(tokenizer, params.task),
        train_dataset=train_set.select_columns(model_columns(train_set, params.task)),
        eval_dataset=eval_set.select_columns(model_columns(eval_set, params.task)),
        processing_class=tokenizer,
        compute_metrics=classifier_compute_metrics(len(names), label_tokens if gpt2 else None),
        preprocess_logits_for_metrics=partial(gpt2_label_logits, label_tokens=label_tokens) if gpt2 else None,
        callbacks=[dvclive_callback(live_dir)],
    )
    trainer.train()
    return trainer


def build_classification_model(params: Params, tokenizer, label_names: list[str]):
    """The model a classification task trains: a sequence classifier, or (gpt2-classifier) a causal
    LM whose embeddings cover the tokenizer (its added pad token), n_positions >= max_length."""
    from hfpipe.modeling import (build_causal_lm, build_sequence_classifier, check_context_length,
                                 enable_gradient_checkpointing)

    mp = params.model
    check_context_length(mp, params.tokenize.max_length, key="tokenize.max_length")
    if params.task == "gpt2-classifier":
        model = build_causal_lm(mp, tokenizer, params.tokenize.max_length, params.seed)
        enable_gradient_checkpointing(model, mp.gradient_checkpointing)
        return model
    return build_sequence_classifier(mp, label_names, params.seed, pad_token_id=tokenizer.pad_token_id)


def run_train_stage(params: Params) -> None:
    """The train stage: data/tokenized + models/tokenizer -> models/trained (dvclive/ curves,
    resumable checkpoints in models/checkpoints for the causal LM)."""
    if params.task != "causal-lm":  # classification, gpt2-classifier
        return train_classification_stage(params)
    from hfpipe.modeling import check_context_length

    check_context_length(params.model, params.tokenize.context_length)
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe import launch
    from hfpipe.checkpoint import CHECKPOINT_DIR, data_fingerprint, find_resume_checkpoint, marker_data
    from hfpipe.modeling import build_causal_lm, count_parameters

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


def train_classification_stage(params: Params) -> None:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.modeling import count_parameters
    from hfpipe.tokenize import label_token_ids

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
