"""Training with the Hugging Face Trainer, logged through dvclive."""

from __future__ import annotations

from pathlib import Path

from hfpipe.checkpoint import CHECKPOINT_DIR, data_fingerprint, find_resume_checkpoint, marker_data
from hfpipe.io import atomic_dir, read_json, write_json_atomic
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
        torch_compile=tp.torch_compile,
        logging_nan_inf_filter=False,  # a NaN/inf loss must reach the logs (NaNGuardCallback stops on it)
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def use_deterministic_algorithms(enabled: bool) -> None:
    """train.deterministic: deterministic kernels, eager and compiled (warn_only: an op without a
    deterministic version warns instead of failing). On CUDA, cuBLAS needs its workspace pinned too."""
    import os

    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def slow_bf16_warning(mixed_precision: str) -> str | None:
    """A warning when bf16 autocast would run emulated, i.e. slower than fp32: on a CPU without
    native bf16 instructions (AVX512-BF16 or AMX) and no GPU."""
    import torch

    if mixed_precision != "bf16" or _has_gpu() or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    return ("warning: train.mixed_precision is bf16 but this CPU has no native bf16 (AVX512-BF16/AMX), so "
            "training will be slower than fp32; set train.mixed_precision: \"no\" (dvc exp run -S "
            "'train.mixed_precision=\"no\"')")


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

    from hfpipe import launch

    # dvcyaml=False: dvc.yaml is written by hand and declares the plots itself. resume: keep the
    # curves restored from a checkpoint and append to them. Only the main process of a
    # multi-process run writes dvclive/ (the others get a callback without a Live, which logs nothing).
    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None, resume=resume) \
        if launch.rank() == 0 else None
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
                # never the best checkpoint (load_best_model_at_end reloads it at the end, also
                # after a resume); the Trainer's own rotation (save_total_limit) is off when we mark
                prune_checkpoints(Path(args.output_dir), protect=state.best_model_checkpoint)
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
    (train.group_by_length does not apply: packed blocks all have the same length.)
    """
    from transformers import DataCollatorForLanguageModeling

    overrides = evaluation_overrides(params, checkpointing=marker_for_step is not None)
    return run_trainer(params, work_dir, overrides, live_dir=live_dir, marker_for_step=marker_for_step,
                       resume_from=resume_from, model=model,
                       data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                       train_dataset=train_blocks, eval_dataset=eval_blocks, processing_class=tokenizer)


def run_trainer(params: Params, work_dir: Path, overrides: dict, live_dir: str | Path = DVCLIVE_DIR,
                marker_for_step=None, resume_from: Path | None = None, trainer_class=None,
                extra_callbacks: tuple = (), **trainer_kwargs):
    """Build a Trainer (dvclive + checkpoint callbacks), train it, resuming from `resume_from`, and
    delete the checkpoints once it has finished (marker-driven runs); returns the trainer.

    Shared by the causal LM and the classification tasks. Only the main process restores and
    writes dvclive/ and deletes checkpoints; every process has finished (and, with
    load_best_model_at_end, reloaded the best checkpoint) before they are deleted.
    """
    from transformers import Trainer

    from hfpipe import launch
    from hfpipe.checkpoint import checkpoint_step, remove_checkpoints, restore_dvclive

    set_threads(params.train.threads)
    saving = marker_for_step is not None
    main = launch.rank() == 0
    if resume_from is not None and main:
        restore_dvclive(Path(resume_from), Path(live_dir))
    trainer = (trainer_class or Trainer)(
        args=training_arguments(params, work_dir, **overrides),
        callbacks=[dvclive_callback(live_dir, resume=resume_from is not None),
                   *checkpoint_callbacks(marker_for_step, live_dir, Path(work_dir)), *extra_callbacks],
        **trainer_kwargs,
    )
    if resume_from is not None and trainer.is_world_process_zero():
        print(f"resumed from {resume_from} at step {checkpoint_step(Path(resume_from))}", flush=True)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    if saving:
        trainer.accelerator.wait_for_everyone()  # the others may still be reading the best checkpoint
        if trainer.is_world_process_zero():
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

def evaluation_overrides(params: Params, checkpointing: bool = False) -> dict:
    """TrainingArguments for evaluating and saving (every task): eval every epoch or every eval_steps.

    checkpointing (the train stage: resumable checkpoints in models/checkpoints): save every
    train.save_steps. With load_best_model_at_end the Trainer must checkpoint at each evaluation
    instead (it reloads the best one at the end), so train.save_steps is then not used; the best
    checkpoint is kept by our pruning (hfpipe.checkpoint.prune_checkpoints(protect=...)), not by
    save_total_limit, whose rotation runs before our marker is written and could leave no complete
    checkpoint but the best. Without checkpointing (a direct call), save_total_limit=2 (best +
    newest) bounds the Trainer's own checkpoints.
    """
    tp = params.train
    overrides: dict = dict(eval_strategy=tp.eval_strategy)
    if checkpointing:
        overrides.update(save_strategy="steps", save_steps=tp.save_steps)
    if tp.load_best_model_at_end:
        overrides.update(save_strategy=tp.eval_strategy, save_steps=tp.eval_steps,
                         load_best_model_at_end=True, metric_for_best_model=tp.metric_for_best_model,
                         greater_is_better=tp.metric_for_best_model != "loss")
        if not checkpointing:
            overrides["save_total_limit"] = 2
    return overrides


def classification_overrides(params: Params, checkpointing: bool = False) -> dict:
    """evaluation_overrides, and group_by_length: batches of similar lengths (length_grouped_trainer)."""
    overrides = evaluation_overrides(params, checkpointing)
    if params.train.group_by_length:
        overrides["train_sampling_strategy"] = "group_by_length"
    return overrides


def example_lengths(dataset, column: str = "input_ids") -> list[int]:
    """Token count of each example, read from the Arrow column (no Python pass over the token ids)."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.select_columns([column]).with_format("arrow")[:][column]).to_pylist()


def length_grouped_sampler(lengths: list[int], batch_size: int, seed: int):
    """transformers' LengthGroupedSampler (shuffle, then sort by length within mega-batches of 50
    batches, so each batch holds examples of similar length and pads little), drawing each epoch's
    shuffle from its own generator seeded with seed + epoch (set_epoch).

    The stock sampler draws from the global torch RNG when an epoch starts, so the order of an
    epoch after the first depends on every random number drawn before it; a run resumed in that
    epoch would see other batches. Seeded by epoch, every process of a multi-process run draws the
    same order (so accelerate's shards are disjoint) and a resumed run the same as an uninterrupted one.
    """
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self):
            super().__init__(batch_size, lengths=list(lengths))
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))

    return EpochSeededLengthGroupedSampler()


def length_grouped_trainer(params: Params):
    """(Trainer subclass, [callback]) for train.group_by_length: the Trainer's group_by_length
    sampler replaced by length_grouped_sampler, and a callback that sets its epoch.

    The Trainer calls set_epoch on its dataloader, which does not reach a sampler wrapped twice
    (a resumed multi-process run: accelerate's SkipBatchSampler around its BatchSamplerShard), so
    the callback sets it from the state at each epoch start (a resumed run: the checkpoint's epoch).
    """
    from transformers import Trainer, TrainerCallback

    holder: dict = {}
    batch = params.train.batch_size * params.train.gradient_accumulation_steps  # as the Trainer's own

    class LengthGroupedTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            holder["sampler"] = length_grouped_sampler(example_lengths(dataset), batch, params.seed)
            return holder["sampler"]

    class SamplerEpochCallback(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            if "sampler" in holder:
                holder["sampler"].set_epoch(int(round(state.epoch or 0.0, 6)))

    return LengthGroupedTrainer, [SamplerEpochCallback()]


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
                     label_tokens: list[int] | None = None, live_dir: str | Path = DVCLIVE_DIR,
                     marker_for_step=None, resume_from: Path | None = None):
    """Trainer for `classification` and `gpt2-classifier`; returns the trainer (best model loaded
    when train.load_best_model_at_end). marker_for_step / resume_from: as train_causal_lm."""
    from functools import partial

    from hfpipe.evaluate import gpt2_label_logits

    names = train_set.features["label"].names
    gpt2 = params.task == "gpt2-classifier"
    trainer_class, extra_callbacks = length_grouped_trainer(params) if params.train.group_by_length else (None, [])
    return run_trainer(
        params, work_dir, classification_overrides(params, checkpointing=marker_for_step is not None),
        live_dir=live_dir, marker_for_step=marker_for_step, resume_from=resume_from,
        trainer_class=trainer_class, extra_callbacks=tuple(extra_callbacks),
        model=model,
        data_collator=classification_collator(tokenizer, params.task),
        train_dataset=train_set.select_columns(model_columns(train_set, params.task)),
        eval_dataset=eval_set.select_columns(model_columns(eval_set, params.task)),
        processing_class=tokenizer,
        compute_metrics=classifier_compute_metrics(len(names), label_tokens if gpt2 else None),
        preprocess_logits_for_metrics=partial(gpt2_label_logits, label_tokens=label_tokens) if gpt2 else None,
    )


def build_classification_model(params: Params, tokenizer, label_names: list[str], max_length: int):
    """The model a classification task trains: a sequence classifier, or (gpt2-classifier) a causal
    LM whose embeddings cover the tokenizer (its added pad token), n_positions >= max_length."""
    from hfpipe.modeling import build_causal_lm, build_sequence_classifier, enable_gradient_checkpointing

    mp = params.model
    if params.task == "gpt2-classifier":
        model = build_causal_lm(mp, tokenizer, max_length, params.seed)
        enable_gradient_checkpointing(model, mp.gradient_checkpointing)
        return model
    return build_sequence_classifier(mp, label_names, params.seed, pad_token_id=tokenizer.pad_token_id)


def run_train_stage(params: Params) -> None:
    """The train stage: data/tokenized + models/tokenizer -> models/trained, for every task and
    both backends (dvclive/ curves, resumable checkpoints in models/checkpoints)."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe import launch
    from hfpipe.modeling import check_context_length, count_parameters

    if launch.in_distributed_run() and params.train.num_processes != launch.world_size():
        # started by an outside launcher (torchrun / accelerate launch): the real process count counts
        params = params.model_copy(update={"train": params.train.model_copy(
            update={"num_processes": launch.world_size()})})
    log = print if launch.rank() == 0 else _quiet
    if warning := slow_bf16_warning(params.train.mixed_precision):
        log(warning)
    use_deterministic_algorithms(params.train.deterministic)
    params, sources = pin_hub_model(params)
    tokenizer = AutoTokenizer.from_pretrained("models/tokenizer")
    data = load_from_disk("data/tokenized")
    # The sequence length comes from the tokenize stage's stats (a dep), not from its params: this
    # stage reads no tokenize.* key, so a recipe of any task carries only its own.
    tokenize_stats = read_json("data/stats/tokenize.json")
    backend = params.train.backend

    if params.task == "causal-lm":
        context_length = tokenize_stats["context_length"]
        check_context_length(params.model, context_length)
        train_set, eval_set = data["train"], data["validation"]
        if params.train.eval_max_blocks:
            eval_set = eval_set.select(range(min(params.train.eval_max_blocks, len(eval_set))))
        keytokens = check_training_inputs(params, tokenizer, len(train_set), log=log)

        def build_model():
            from hfpipe.modeling import build_causal_lm

            model = build_causal_lm(params.model, tokenizer, context_length, params.seed)
            log(f"model: {count_parameters(model) / 1e6:.2f}M parameters; {len(train_set)} training blocks; "
                f"backend {backend}, {params.train.num_processes} process(es)")
            return model

        def train(model, resume_from, marker_for_step):
            if backend == "accelerate":
                from transformers import DataCollatorForLanguageModeling

                from hfpipe.train_accelerate import causal_lm_task, train_accelerate

                result = train_accelerate(params, model, train_set, eval_set,
                                          DataCollatorForLanguageModeling(tokenizer, mlm=False),
                                          causal_lm_task(keytokens, params.train.keytoken_alpha),
                                          marker_for_step=marker_for_step, resume_from=resume_from)
                return result.model.save_pretrained
            trainer = train_causal_lm(params, model, tokenizer, train_set, eval_set, CHECKPOINT_DIR,
                                      marker_for_step=marker_for_step, resume_from=resume_from)
            return lambda out: trainer.save_model(str(out))
    else:  # classification, gpt2-classifier
        from hfpipe.tokenize import label_token_ids

        max_length = tokenize_stats["max_length"]
        check_context_length(params.model, max_length, key="tokenize.max_length")
        train_set, eval_set = data["train"], data["validation"]
        names = train_set.features["label"].names
        tokens = label_token_ids(tokenizer, names) if params.task == "gpt2-classifier" else None
        check_training_inputs(params, tokenizer, len(train_set), log=log)

        def build_model():
            model = build_classification_model(params, tokenizer, names, max_length)
            log(f"model: {count_parameters(model) / 1e6:.2f}M parameters; {len(train_set)} training examples; "
                f"labels {names}; backend {backend}, {params.train.num_processes} process(es)")
            return model

        def train(model, resume_from, marker_for_step):
            if backend == "accelerate":
                from hfpipe.train_accelerate import train_classifier_accelerate

                result = train_classifier_accelerate(params, model, tokenizer, train_set, eval_set, tokens,
                                                     marker_for_step=marker_for_step, resume_from=resume_from)
                return result.model.save_pretrained
            trainer = train_classifier(params, model, tokenizer, train_set, eval_set, CHECKPOINT_DIR, tokens,
                                       marker_for_step=marker_for_step, resume_from=resume_from)
            return lambda out: trainer.save_model(str(out))

    train_resumable(params, tokenizer, build_model, train, log=log, sources=sources)


def pin_hub_model(params: Params) -> tuple[Params, dict]:
    """Resolve model.revision to the commit the Hub serves now and train from exactly that commit;
    returns (params with that commit, the sources record: the tokenizer's and the model's name,
    revision asked for and commit read) for models/trained/hub_provenance.json and the model card."""
    from hfpipe.hub import PROVENANCE_FILE, hub_commit, provenance

    sources = {}
    tokenizer_record = Path("models/tokenizer") / PROVENANCE_FILE
    if tokenizer_record.is_file():
        sources["tokenizer"] = read_json(tokenizer_record)
    mp = params.model
    if mp.name_or_path:
        commit = hub_commit(mp.name_or_path, mp.revision)  # None offline or for a local folder
        sources["model"] = provenance(mp.name_or_path, mp.revision, commit)
        if commit:
            params = params.model_copy(update={"model": mp.model_copy(update={"revision": commit})})
    return params, sources


def train_resumable(params: Params, tokenizer, build_model, train, log=print, sources: dict | None = None) -> None:
    """What every task and backend shares: find the checkpoint to resume (hfpipe.checkpoint: same
    params and data, complete), relaunch under torchrun for train.num_processes > 1, build the model,
    train it (`train(model, resume_from, marker_for_step) -> save(folder)`, checkpointing into
    models/checkpoints and emptying it when done) and save the model with the tokenizer to
    models/trained on the main process only.

    Everything that can refuse the run (params, data, a checkpoint of another model config) runs
    before the relaunch, in one process, so it fails with one line.
    """
    from hfpipe import launch

    backend = params.train.backend
    main = launch.rank() == 0
    data_hash = data_fingerprint(["data/tokenized", "models/tokenizer"])
    resume = find_resume_checkpoint(params, data_hash, backend, cleanup=main, log=log)
    CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)  # a DVC output: must exist even when empty
    if params.train.num_processes > 1 and not launch.in_distributed_run():
        launch.exec_torchrun(params.train.num_processes, "stages.train")  # does not return

    def marker_for_step(step: int) -> dict:
        return marker_data(params, data_hash, step, backend)

    save = train(build_model(), resume.path if resume else None, marker_for_step)
    if main:
        with atomic_dir("models/trained") as out:
            save(out)
            tokenizer.save_pretrained(out)
            if sources:
                from hfpipe.hub import PROVENANCE_FILE

                write_json_atomic(out / PROVENANCE_FILE, sources)


def _quiet(*args, **kwargs) -> None:
    """Other processes of a multi-process run: the main one reports."""
