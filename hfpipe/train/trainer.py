"""The Hugging Face Trainer backend (`train.backend: trainer`), logged through dvclive: whatever the
task module sets up (hfpipe.tasks.common.TrainingSetup), resumable checkpoints, the length-grouped
sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hfpipe import paths
from hfpipe.device import has_accelerator
from hfpipe.params import Params
from hfpipe.tasks.common import TrainingSetup
from hfpipe.train.common import RunFiles, example_lengths, greater_is_better, length_grouped_sampler, set_threads


def training_arguments(params: Params, output_dir: str | Path, **overrides):
    from transformers import TrainingArguments

    tp = params.train
    kwargs: dict[str, Any] = dict(
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
        use_cpu=not has_accelerator(),
        dataloader_num_workers=0,
        bf16=tp.mixed_precision == "bf16",
        fp16=tp.mixed_precision == "fp16",
        torch_compile=tp.torch_compile,
        logging_nan_inf_filter=False,  # a NaN/inf loss must reach the logs (NaNGuardCallback stops on it)
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def dvclive_callback(live_dir: str | Path = paths.DVCLIVE, resume: bool = False):
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


def checkpoint_callbacks(files: RunFiles):
    """[marker callback, NaN guard] for a Trainer that saves checkpoints into files.checkpoint_dir.

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
            if state.is_world_process_zero and files.marker_for_step is not None:
                path = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
                snapshot_dvclive(Path(files.live_dir), path)
                write_marker(path, files.marker_for_step(state.global_step))
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
                                        f"{last_good_checkpoint(Path(files.checkpoint_dir))}; "
                                        f"lower lr or check the data")

    return [CheckpointMarkerCallback(), NaNGuardCallback()]


# The Trainer's running train-loss state (transformers 5.23: attributes of the Trainer, reset by
# train()): what a checkpoint needs so that a resumed run logs the same losses as an uninterrupted one.
RUNNING_LOSS_STATE = ("_total_loss_scalar", "_globalstep_last_logged", "_initial_global_step")


def running_loss_callback(resume_from: Path | None):
    """Saves each process's running train-loss sum since the last log into every checkpoint
    (running_loss_<rank>.json, before the marker that hashes it), and puts it back when train()
    starts from `resume_from`: the first loss logged after a resume then averages the same steps as
    an uninterrupted run's, and the final train loss covers every step. The Trainer does not
    checkpoint these; without them both differ after a resume. Set `.trainer` once it exists."""
    import json

    import torch
    from transformers import TrainerCallback

    from hfpipe.checkpoint import PREFIX

    def state_file(folder: Path, args) -> Path:
        return Path(folder) / f"running_loss_{args.process_index}.json"

    class RunningLossCallback(TrainerCallback):
        trainer = None

        def on_save(self, args, state, control, **kwargs):
            t = self.trainer
            if t is None or not hasattr(t, "_tr_loss"):
                return
            saved = {"tr_loss": float(t._tr_loss.item()), **{k: getattr(t, k) for k in RUNNING_LOSS_STATE}}
            state_file(Path(args.output_dir) / f"{PREFIX}{state.global_step}", args).write_text(json.dumps(saved))

        def on_train_begin(self, args, state, control, **kwargs):
            t = self.trainer
            if resume_from is None or t is None or not state_file(resume_from, args).is_file():
                return
            saved = json.loads(state_file(resume_from, args).read_text())
            t._tr_loss = torch.tensor(saved.pop("tr_loss"), dtype=t._tr_loss.dtype, device=t._tr_loss.device)
            for key, value in saved.items():
                setattr(t, key, value)

    return RunningLossCallback()


def run_trainer(params: Params, files: RunFiles, overrides: dict, trainer_class=None, extra_callbacks: tuple = (),
                **trainer_kwargs):
    """Build a Trainer (dvclive + checkpoint callbacks; output_dir files.checkpoint_dir), train it,
    resuming from files.resume_from; returns the trainer. Only the main process restores and writes
    dvclive/; the checkpoints stay for the stage to delete once the model is saved.
    """
    from transformers import Trainer

    from hfpipe import launch
    from hfpipe.checkpoint import checkpoint_step, restore_dvclive

    set_threads(params.train.threads)
    resume_from = files.resume_from
    saving = files.marker_for_step is not None
    main = launch.rank() == 0
    if resume_from is not None and main:
        restore_dvclive(Path(resume_from), Path(files.live_dir))
    running = running_loss_callback(resume_from) if saving else None
    trainer = (trainer_class or Trainer)(
        args=training_arguments(params, files.checkpoint_dir, **overrides),
        callbacks=[dvclive_callback(files.live_dir, resume=resume_from is not None), *([running] if running else []),
                   *checkpoint_callbacks(files), *extra_callbacks],
        **trainer_kwargs,
    )
    if running is not None:
        running.trainer = trainer
    if resume_from is not None and trainer.is_world_process_zero():
        print(f"resumed from {resume_from} at step {checkpoint_step(Path(resume_from))}", flush=True)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    # (the checkpoints stay until the stage has saved the model: hfpipe.train.train_resumable)
    return trainer


def training_overrides(params: Params, checkpointing: bool = False) -> dict:
    """TrainingArguments for evaluating and saving: eval every epoch or every eval_steps;
    train.group_by_length: the Trainer's length grouping (replaced by length_grouped_trainer).

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
        # Params' validator refuses load_best_model_at_end without metric_for_best_model
        assert tp.metric_for_best_model is not None
        overrides.update(save_strategy=tp.eval_strategy, save_steps=tp.eval_steps,
                         load_best_model_at_end=True, metric_for_best_model=tp.metric_for_best_model,
                         greater_is_better=greater_is_better(tp.metric_for_best_model))
        if not checkpointing:
            overrides["save_total_limit"] = 2
    if tp.group_by_length:
        overrides["train_sampling_strategy"] = "group_by_length"
    return overrides


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


def train_with_trainer(params: Params, model, tokenizer, setup: TrainingSetup, files: RunFiles,
                       callbacks: tuple = ()):
    """Train `model` on what the task gives (`setup`: data, collator, eval numbers); returns the
    trainer (best model loaded when train.load_best_model_at_end). `callbacks`: more
    TrainerCallbacks (bench/default_sweep.py times steps with one).

    With files.marker_for_step (step -> marker dict, see hfpipe.checkpoint), checkpoints go to
    files.checkpoint_dir every train.save_steps; files.resume_from continues one (model, optimizer,
    scheduler, RNG and data position: Trainer's resume_from_checkpoint).
    train.group_by_length: batches of similar lengths (length_grouped_trainer).
    """
    trainer_class, extra_callbacks = length_grouped_trainer(params) if params.train.group_by_length else (None, [])
    return run_trainer(
        params, files, training_overrides(params, checkpointing=files.marker_for_step is not None),
        trainer_class=trainer_class, extra_callbacks=(*extra_callbacks, *callbacks),
        model=model, data_collator=setup.collator, train_dataset=setup.train_set, eval_dataset=setup.eval_set,
        processing_class=tokenizer, compute_metrics=setup.compute_metrics,
        preprocess_logits_for_metrics=setup.preprocess_logits,
    )
