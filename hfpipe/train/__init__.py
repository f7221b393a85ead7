"""The train stage: data/tokenized + models/tokenizer -> models/trained, for every task and both
backends (hfpipe.train.trainer: the HF Trainer; hfpipe.train.accelerate_loop: the Accelerate loop;
what they share: hfpipe.train.common; what differs by task: hfpipe.tasks)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hfpipe import paths
from hfpipe.checkpoint import (
    data_fingerprint,
    find_resume_checkpoint,
    marker_data,
    remove_checkpoints,
    run_dir,
    verify_checkpoint,
)
from hfpipe.io import atomic_dir, read_json, require_complete, write_json_atomic
from hfpipe.params import Params
from hfpipe.train.common import RunFiles, slow_bf16_warning, use_deterministic_algorithms


def check_training_inputs(params: Params, n_train: int) -> None:
    """Checks that need the data, run before any model is built."""
    from hfpipe.io import PipelineError

    tp = params.train
    processes = tp.num_processes * tp.nnodes  # every machine's
    per_process = -(-n_train // (tp.batch_size * processes))
    if tp.gradient_accumulation_steps > per_process:
        raise PipelineError(f"train.gradient_accumulation_steps = {tp.gradient_accumulation_steps}: exceeds the "
                            f"{per_process} batches per epoch ({n_train} training examples / train.batch_size "
                            f"{tp.batch_size} / {processes} process(es)), so no optimizer step would "
                            f"complete; use at most {per_process}")


def check_memory(params: Params, tokenizer, length: int) -> None:
    """Refuse, before building anything, a model and batch this machine cannot hold (hfpipe.resources)."""
    from hfpipe.modeling import causal_lm_config, load_config
    from hfpipe.resources import check_training_fits

    mp, tp = params.model, params.train
    config = load_config(mp.name_or_path, mp.revision) if mp.name_or_path else causal_lm_config(mp, tokenizer, length)
    check_training_fits(config, tp.batch_size, length, mp.gradient_checkpointing,
                        trainable_fraction=0.05 if mp.peft is not None else 1.0, processes=tp.num_processes)


@dataclass(frozen=True)
class TrainPaths:
    """What the train stage reads and writes; the defaults are the pipeline's (hfpipe.paths, dvc.yaml)."""
    tokenized: Path = paths.TOKENIZED
    tokenizer: Path = paths.TOKENIZER
    tokenize_stats: Path = paths.TOKENIZE_STATS  # the block / truncation length the data was made with
    trained: Path = paths.TRAINED
    live_dir: Path = paths.DVCLIVE
    checkpoints: Path = paths.CHECKPOINTS  # each run's checkpoints in a run-<fingerprint> folder under it


def run_train_stage(params: Params, stage_paths: TrainPaths | None = None) -> None:
    """The train stage: tokenized data + tokenizer -> the trained model, for every task and both
    backends (dvclive curves, resumable checkpoints); `stage_paths` (default: the pipeline's) says
    where. The task module gives what to train (hfpipe.tasks.common.TrainingSetup) and the model;
    the backend trains it.

    train.num_processes > 1 (or train.nnodes > 1) relaunches `python -m stages.train` under torchrun,
    whose workers use the default paths. Such a worker (or one an outside launcher started) exits with its launcher."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe import launch
    from hfpipe.modeling import check_context_length, check_lora_targets, save_trained_model
    from hfpipe.tasks import TASKS

    stage_paths = stage_paths or TrainPaths()
    if launch.in_distributed_run():  # a worker of torchrun / accelerate launch: never outlive the launcher
        launch.exit_with_parent()
        launch.check_restartable_launch()
    nodes, per_node = launch.nodes_and_processes()
    if launch.in_distributed_run() and (params.train.nnodes, params.train.num_processes) != (nodes, per_node):
        # started by an outside launcher (torchrun / accelerate launch): the real process counts count
        params = params.model_copy(update={"train": params.train.model_copy(
            update={"nnodes": nodes, "num_processes": per_node})})
    log = print if launch.rank() == 0 else _quiet
    if warning := slow_bf16_warning(params.train.mixed_precision):
        log(warning)
    use_deterministic_algorithms(params.train.deterministic)
    params, sources = pin_hub_model(params, stage_paths.tokenizer)
    task = TASKS[params.task]
    # local_files_only: saved into models/trained's tokenizer_config.json, so fixed here, not taken from
    # HF_HUB_OFFLINE (the outputs would differ between a shell with it and one without)
    tokenizer = AutoTokenizer.from_pretrained(require_complete(stage_paths.tokenizer), local_files_only=True)
    data = load_from_disk(require_complete(stage_paths.tokenized))
    # The sequence length comes from the tokenize stage's stats (a dep), not from its params: this
    # stage reads no tokenize.* key, so a recipe of any task carries only its own.
    length = task.sequence_length(read_json(stage_paths.tokenize_stats))
    check_context_length(params.model, length, key=task.SEQUENCE_LENGTH_KEY)
    check_training_inputs(params, len(data["train"]))
    check_memory(params, tokenizer, length)
    check_lora_targets(params.model, task.auto_model_class())
    setup = task.training_setup(params, tokenizer, data["train"], data["validation"], log=log)
    backend = params.train.backend

    def build_model():
        model = build_model_to_train(params, task, tokenizer, data["train"], length)
        log(f"model: {describe_model(model, params)}; {setup.description}; "
            f"backend {backend}, {params.train.num_processes * params.train.nnodes} process(es)")
        return model

    def train(model, files: RunFiles):
        if backend == "accelerate":
            from hfpipe.train.accelerate_loop import train_with_accelerate

            result = train_with_accelerate(params, model, setup, files)
            return lambda folder: save_trained_model(result.model, folder)
        from hfpipe.train.trainer import train_with_trainer

        trainer = train_with_trainer(params, model, tokenizer, setup, files)
        if params.model.peft is not None:
            return lambda folder: save_trained_model(trainer.accelerator.unwrap_model(trainer.model), folder)
        return lambda folder: save_trainer_model(trainer, folder)

    train_resumable(params, tokenizer, build_model, train, stage_paths, log=log, sources=sources)


def save_trainer_model(trainer, out: Path) -> None:
    """trainer.save_model without its training_args.bin: a pickle of the TrainingArguments (paths,
    logging cadence) that nothing loads, which would make the model folder differ between runs of
    the same weights and put a file into it that only unpickling can read."""
    trainer.save_model(str(out))
    (Path(out) / "training_args.bin").unlink(missing_ok=True)


def build_model_to_train(params: Params, task, tokenizer, train_set, length: int):
    """The task's model, wrapped in LoRA adapters when model.peft is set."""
    from hfpipe.modeling import add_lora

    mp = params.model
    model = task.build_model(mp, tokenizer, train_set, length, params.seed)
    if mp.peft is None:
        return model
    # Params' validators: model.peft needs model.from_scratch false, which needs model.name_or_path
    assert mp.name_or_path is not None
    return add_lora(model, mp.peft, task.PEFT_TASK_TYPE, mp.name_or_path, task.HAS_CLASSIFICATION_HEAD)


def describe_model(model, params: Params) -> str:
    """'2.12M parameters', and with LoRA how many of them train."""
    from hfpipe.modeling import count_parameters, trainable_parameters

    text = f"{count_parameters(model) / 1e6:.2f}M parameters"
    if params.model.peft is not None:
        trainable = trainable_parameters(model)
        text += (f" (LoRA r={params.model.peft.r}: {trainable / 1e6:.3f}M trainable, "
                 f"{100 * trainable / count_parameters(model):.2f}%)")
    return text


def pin_hub_model(params: Params, tokenizer_dir: Path = paths.TOKENIZER) -> tuple[Params, dict]:
    """Train from exactly the commit hub.lock.yaml holds for model.name_or_path (its `model` entry
    is a param of this stage: a moved lock reruns train). Returns the params with that commit, and
    the sources record (the tokenizer's and the model's name, revision asked for and commit read)
    for models/trained/hub_provenance.json and the model card."""
    from hfpipe.hub import PROVENANCE_FILE, locked_commit, provenance

    sources = {}
    tokenizer_record = Path(tokenizer_dir) / PROVENANCE_FILE
    if tokenizer_record.is_file():
        sources["tokenizer"] = read_json(tokenizer_record)
    mp = params.model
    if mp.name_or_path:
        commit = locked_commit(params, "model")  # None for a local folder or a pip package's model
        sources["model"] = provenance(mp.name_or_path, mp.revision, commit)
        if commit:
            params = params.model_copy(update={"model": mp.model_copy(update={"revision": commit})})
    return params, sources


def train_resumable(params: Params, tokenizer, build_model, train, stage_paths: TrainPaths, log=print,
                    sources: dict | None = None) -> None:
    """What every task and backend shares: find the checkpoint to resume (hfpipe.checkpoint: same
    params and data, complete), relaunch under torchrun for several processes or machines, build the model,
    train it (`train(model, RunFiles) -> save(folder)`, checkpointing into this run's folder
    <checkpoints>/run-<fingerprint>, deleted when done) and save the model with the tokenizer to
    stage_paths.trained on the main process only.

    Everything that can refuse the run (params, data, a checkpoint changed since it was written) runs
    before the relaunch, in one process, so it fails with one line; after torchrun restarted the
    group, each worker checks the checkpoint the killed group wrote before loading it.
    """
    from hfpipe import launch

    backend = params.train.backend
    main = launch.rank() == 0
    relaunched = launch.relaunched()
    if relaunched and not params.train.resume:
        # the launcher applied train.resume: false (it deleted this run's checkpoints): any found now
        # were written by this stage's own workers before torchrun restarted the group
        params = params.model_copy(update={"train": params.train.model_copy(update={"resume": True})})
    data_hash = data_fingerprint([stage_paths.tokenized, stage_paths.tokenizer])
    # One process checks, cleans up and reports (hashing a big checkpoint once): the main process,
    # or before our own torchrun relaunch the launcher (on each machine), whose workers then only
    # read: they never delete, so nothing a worker of the same run is writing can go.
    resume = find_resume_checkpoint(params, data_hash, backend, stage_paths.checkpoints,
                                    cleanup=main and not relaunched, log=log)
    checked = os.environ.get(launch.CHECKED_CHECKPOINT_ENV, "")
    if relaunched and resume is not None and str(resume.path) != checked:
        # Newer than what the launcher checked: written by this run's workers since, and torchrun
        # restarted the group after a worker died (which restart this is, torchrun counts per machine:
        # one whose agent only followed the others counts 0). Every process checks it before loading.
        verify_checkpoint(resume.path, resume.marker)
    if relaunched and (launch.restart_count() or (resume is not None and str(resume.path) != checked)):
        log("torchrun restarted the group (a worker died): "
            + (f"resuming from {resume.path}" if resume else "no complete checkpoint yet, starting over"))
    checkpoint_dir = run_dir(params, data_hash, stage_paths.checkpoints)
    tp = params.train
    if (tp.num_processes > 1 or tp.nnodes > 1) and not launch.in_distributed_run():
        from hfpipe.resources import check_processes

        check_processes("train.num_processes", tp.num_processes)  # this machine's
        # rendezvous id: the run's fingerprint, alike on every machine of this run (same params and
        # data) and different for any other run that shares the endpoint
        launch.exec_torchrun(tp.num_processes, "stages.train", nnodes=tp.nnodes, rdzv_endpoint=tp.rdzv_endpoint,
                             rdzv_id=checkpoint_dir.name, max_restarts=tp.max_restarts,
                             checked_checkpoint=resume.path if resume else None)  # does not return

    def marker_for_step(step: int) -> dict:
        return marker_data(params, data_hash, step, backend)

    files = RunFiles(checkpoint_dir, stage_paths.live_dir, marker_for_step, resume.path if resume else None)
    save = train(build_model(), files)
    if main:
        with atomic_dir(stage_paths.trained) as out:
            save(out)
            tokenizer.save_pretrained(out)
            if sources:
                from hfpipe.hub import PROVENANCE_FILE

                write_json_atomic(out / PROVENANCE_FILE, sources)
        # only now, with the model safely in place: nothing left that another run could resume
        remove_checkpoints(checkpoint_dir)


def _quiet(*args, **kwargs) -> None:
    """Other processes of a multi-process run: the main one reports."""
