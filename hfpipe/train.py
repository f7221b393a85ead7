"""Training with the Hugging Face Trainer, logged through dvclive."""

from __future__ import annotations

from pathlib import Path

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
        use_cpu=True,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def dvclive_callback(live_dir: str | Path = DVCLIVE_DIR):
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

    # dvcyaml=False: dvc.yaml is written by hand and declares the plots itself.
    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    return GlobalStepDVCLiveCallback(live=live)


def train_causal_lm(params: Params, model, tokenizer, train_blocks, eval_blocks, work_dir: Path,
                    live_dir: str | Path = DVCLIVE_DIR):
    """Trainer + DataCollatorForLanguageModeling(mlm=False) on packed blocks; returns the trainer."""
    from transformers import DataCollatorForLanguageModeling, Trainer

    set_threads(params.train.threads)
    trainer = Trainer(
        model=model,
        args=training_arguments(params, work_dir),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        train_dataset=train_blocks,
        eval_dataset=eval_blocks,
        processing_class=tokenizer,
        callbacks=[dvclive_callback(live_dir)],
    )
    trainer.train()
    return trainer
