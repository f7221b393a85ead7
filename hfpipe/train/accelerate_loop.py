"""Training with a custom 🤗 Accelerate loop (tutorial 04's second half), logged through dvclive.

The same code runs on one CPU, under `torchrun --nproc_per_node N` (gloo, MULTI_CPU) and on GPUs
(DDP, or FSDP/DeepSpeed through `accelerate launch --config_file ...`): Accelerator() reads the
environment. train.distributed: fsdp shards the model with PyTorch's FSDP2 instead
(hfpipe.train.fsdp), on CPU and GPU alike. What is task-specific (the loss, the eval numbers)
comes in as the task module's `LoopFns` (hfpipe.tasks), so every task shares the loop.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfpipe.checkpoint import (
    PREFIX,
    complete_checkpoints,
    last_good_checkpoint,
    prune_checkpoints,
    restore_dvclive,
    snapshot_dvclive,
    write_marker,
)
from hfpipe.device import has_accelerator
from hfpipe.io import PipelineError, write_json_atomic
from hfpipe.params import Params
from hfpipe.tasks.common import LoopFns, TrainingSetup
from hfpipe.train.common import RunFiles, example_lengths, greater_is_better, set_threads

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

STATE_FILE = "loop_state.json"


BEST_FILE = "best_model.safetensors"  # load_best_model_at_end: the best weights so far, in each checkpoint


def get_grouped_params(model, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay on weights, none on biases and normalisation layers.

    Chosen by module type, not name: GPT-2's LayerNorms are called ln_1/ln_2/ln_f, which tutorial 04's
    `"LayerNorm.weight" in name` test misses. (The Trainer groups the same way.)
    """
    import torch

    no_decay: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm)) \
            or "norm" in type(module).__name__.lower()
        for name, p in module.named_parameters(recurse=False):
            if is_norm or name == "bias":
                no_decay.add(id(p))
    decay = [p for p in model.parameters() if p.requires_grad and id(p) not in no_decay]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) in no_decay]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


# ---------------------------------------------------------------- the loop


@dataclass
class LoopState:
    """Where the loop is, saved with each checkpoint (the rest: save_training_state)."""
    step: int = 0               # optimizer steps done
    epoch: int = 0
    batches_in_epoch: int = 0   # micro-batches of `epoch` already consumed (per process)
    best_step: int | None = None     # load_best_model_at_end: the evaluation with the best metric so far
    best_metric: float | None = None
    micro_steps: int = 0        # accelerator.step: where gradient accumulation is in its cycle


def _running_loss_file(checkpoint: Path, process_index: int) -> Path:
    # Each process's loss sum since the last log: the first logged loss after a resume then
    # averages the same micro-batches as an uninterrupted run's.
    return checkpoint / f"running_loss_{process_index}.json"


@dataclass
class AccelerateResult:
    model: object               # unwrapped, trained in place (main process: the best one with load_best_model_at_end)
    is_main_process: bool
    num_processes: int
    step: int
    eval_history: list[dict]
    resumed_from: int | None


def training_steps(batches_per_epoch: int, gradient_accumulation_steps: int, epochs: float, max_steps: int) -> int:
    """Optimizer steps, as the Trainer counts them (a short last accumulation still steps)."""
    if max_steps > 0:
        return max_steps
    return max(1, math.ceil(epochs * math.ceil(batches_per_epoch / gradient_accumulation_steps)))


def _rng_states() -> tuple:
    import random

    import numpy as np
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_rng_states(states: tuple) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])
    if states[3] is not None:
        torch.cuda.set_rng_state_all(states[3])


# ---------------------------------------------------------------- checkpoint files
# What a resume needs, as safetensors and JSON only: loading a checkpoint never unpickles anything
# (accelerator.save_state's optimizer.bin, random_states_N.pkl and custom_checkpoint_N.pkl are
# pickles, and accelerate loads some of them with weights_only=False).
MODEL_FILE, OPTIMIZER_TENSORS, OPTIMIZER_JSON = "model.safetensors", "optimizer.safetensors", "optimizer.json"
SCHEDULER_JSON, SCALER_JSON = "scheduler.json", "scaler.json"


def _rng_files(folder: Path, process_index: int) -> tuple[Path, Path]:
    return folder / f"rng_{process_index}.json", folder / f"rng_{process_index}.safetensors"


def save_rng_states(folder: Path, process_index: int) -> None:
    from safetensors.torch import save_file

    py, np_state, torch_state, cuda = _rng_states()
    as_json = {"python": [py[0], list(py[1]), py[2]],
               "numpy": [np_state[0], np_state[1].tolist(),
                         *[v.item() if hasattr(v, "item") else v for v in np_state[2:]]]}
    tensors = {"torch": torch_state, **{f"cuda.{i}": t for i, t in enumerate(cuda or [])}}
    json_file, tensor_file = _rng_files(folder, process_index)
    json_file.write_text(json.dumps(as_json))
    save_file(tensors, str(tensor_file))


def load_rng_states(folder: Path, process_index: int) -> tuple:
    import numpy as np
    from safetensors.torch import load_file

    json_file, tensor_file = _rng_files(folder, process_index)
    saved, tensors = json.loads(json_file.read_text()), load_file(str(tensor_file))
    py, np_state = saved["python"], saved["numpy"]
    cuda = [tensors[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in tensors))] or None
    return ((py[0], tuple(py[1]), py[2]), (np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]),
            tensors["torch"], cuda)


def save_optimizer(optimizer, folder: Path) -> None:
    """The optimizer's state dict: its tensors to safetensors, the rest (param groups) to JSON."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if hasattr(value, "detach"):
                tensors[f"{index}.{name}"] = value.detach().contiguous()
            else:
                other.setdefault(str(index), {})[name] = value
    save_file(tensors, str(folder / OPTIMIZER_TENSORS))
    (folder / OPTIMIZER_JSON).write_text(json.dumps({"param_groups": state["param_groups"], "state": other}))


def load_optimizer(optimizer, folder: Path) -> None:
    from safetensors.torch import load_file

    saved = json.loads((folder / OPTIMIZER_JSON).read_text())
    state: dict[int, dict] = {int(i): dict(v) for i, v in saved["state"].items()}
    for key, tensor in load_file(str(folder / OPTIMIZER_TENSORS)).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    for group in saved["param_groups"]:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def save_training_state(run: _Run, folder: Path) -> None:
    """Weights, optimizer, schedule and loss scaler from the main process (DDP keeps them equal on
    every process), each process's RNG streams from each. FSDP: each process its shard of the
    weights and optimizer (hfpipe.train.fsdp.save_sharded), the main process the rest."""
    from safetensors.torch import save_model

    accelerator = run.accelerator
    if run.fsdp:
        from hfpipe.train.fsdp import save_sharded

        save_sharded(run.model, run.optimizer, folder, run.main)
        if run.main:
            (folder / SCHEDULER_JSON).write_text(json.dumps(run.scheduler.state_dict()))
    elif run.main:
        # save_model: GPT-2's tied embedding and output weights are one tensor, stored once
        save_model(accelerator.unwrap_model(run.model, keep_torch_compile=False), str(folder / MODEL_FILE))
        save_optimizer(run.optimizer, folder)
        (folder / SCHEDULER_JSON).write_text(json.dumps(run.scheduler.state_dict()))
        if accelerator.scaler is not None:
            (folder / SCALER_JSON).write_text(json.dumps(accelerator.scaler.state_dict()))
    save_rng_states(folder, accelerator.process_index)


def load_training_state(run: _Run, folder: Path) -> tuple:
    """Put back what save_training_state wrote; returns this process's RNG states (also set now)."""
    from safetensors.torch import load_model

    accelerator = run.accelerator
    if run.fsdp:
        from hfpipe.train.fsdp import load_sharded

        load_sharded(run.model, run.optimizer, folder)
    else:
        load_model(accelerator.unwrap_model(run.model, keep_torch_compile=False), str(folder / MODEL_FILE))
        load_optimizer(run.optimizer, folder)
    run.scheduler.load_state_dict(json.loads((folder / SCHEDULER_JSON).read_text()))
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(json.loads((folder / SCALER_JSON).read_text()))
    states = load_rng_states(folder, accelerator.process_index)
    _set_rng_states(states)
    return states


def evaluate_loop(accelerator, model, eval_dl, loop_fns: LoopFns) -> dict:
    """Eval numbers over the whole eval set, gathered across processes (duplicates from padding
    the last batch to equal sizes are dropped by gather_for_metrics)."""
    import torch

    model.eval()
    collected: dict[str, list] = {}
    with torch.no_grad():
        for batch in eval_dl:
            stats = accelerator.gather_for_metrics(loop_fns.eval_stats(batch, model(**batch)))
            for key, value in stats.items():
                collected.setdefault(key, []).append(value.cpu())
    model.train()
    return loop_fns.eval_metrics({k: torch.cat(v) for k, v in collected.items()})


def _save_best(best_state: dict, state: LoopState, root: Path, folder: Path) -> None:
    """The best weights into a checkpoint being written: a hard link to the previous checkpoint's
    file when the best has not changed since (no second copy on disk), else written out."""
    import os

    from safetensors.torch import save_file

    previous = complete_checkpoints(root)[-1:]
    if previous and (previous[0] / BEST_FILE).is_file():
        try:
            if json.loads((previous[0] / STATE_FILE).read_text()).get("best_step") == state.best_step:
                os.link(previous[0] / BEST_FILE, folder / BEST_FILE)
                return
        except (OSError, ValueError):
            pass
    save_file(best_state, str(folder / BEST_FILE))


def _save_checkpoint(run: _Run, files: RunFiles, state: LoopState, marker: dict, running: tuple[float, int],
                     best_state: dict | None = None) -> Path:
    """save_training_state into a scratch folder under files.checkpoint_dir, then the marker, then a
    rename: a kill at any point leaves either the previous checkpoints or a complete new one. With
    load_best_model_at_end the best weights so far go in too, so a resumed run reloads the same best
    model at the end."""
    import shutil

    accelerator, root = run.accelerator, Path(files.checkpoint_dir)
    final = root / f"{PREFIX}{state.step}"
    tmp = root / f".tmp-{PREFIX}{state.step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_training_state(run, tmp)
    _running_loss_file(tmp, accelerator.process_index).write_text(json.dumps(list(running)))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if best_state is not None:
            _save_best(best_state, state, root, tmp)
        write_json_atomic(tmp / STATE_FILE, {**state.__dict__, "micro_steps": accelerator.step})
        snapshot_dvclive(Path(files.live_dir), tmp)
        if run.fsdp:  # verify_checkpoint then also requires every process's shard to be listed
            marker = {**marker, "shards": accelerator.num_processes}
        write_marker(tmp, marker)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        prune_checkpoints(root)
    accelerator.wait_for_everyone()
    return final


@dataclass
class _Run:
    """What the loop works with, made once by _prepare."""
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_dl: Any                # accelerate's prepared loaders (DataLoaderShard or DataLoaderDispatcher)
    eval_dl: Any
    sampler: Any | None          # the length-grouped sampler, whose epoch the loop sets
    batches_per_epoch: int       # per process, after sharding
    total: int                   # optimizer steps
    loop_fns: LoopFns            # the task's loss and eval numbers
    fsdp: bool = False           # train.distributed: fsdp (the model is FSDP2-sharded, not prepared by accelerate)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def _prepare(params: Params, model, setup: TrainingSetup, lengths: list[int] | None) -> _Run:
    """The Accelerator, the data loaders of `setup`'s data, AdamW and the schedule, the model prepared for them."""
    import torch
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    train_dataset: Any = setup.train_set  # (TrainingSetup types its data and collator as object)
    eval_dataset: Any = setup.eval_set
    collate_fn: Any = setup.collator

    tp = params.train
    set_threads(tp.threads)
    # The seedable sampler draws epoch e's order from seed + e on every process: the same shuffle
    # everywhere (so the shards are disjoint) and after a resume.
    # cpu=True on a machine without a GPU: without it Accelerator() ignores torchrun's environment
    # (accelerate only picks MULTI_CPU/gloo when told it is on CPU) and every process trains alone.
    fsdp = tp.distributed == "fsdp"
    # FSDP: bf16 is FSDP2's MixedPrecisionPolicy, not Accelerate's autocast (which wraps the forward
    # of a model passed to prepare(), and this one is not)
    accelerator = Accelerator(cpu=not has_accelerator(), mixed_precision="no" if fsdp else tp.mixed_precision,
                              dynamo_backend="inductor" if tp.torch_compile and not fsdp else "no",
                              gradient_accumulation_steps=tp.gradient_accumulation_steps,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True,
                                                                        data_seed=params.seed))
    set_seed(params.seed)

    sampler = None
    if lengths is not None:  # the seeded, per-epoch length-grouped order (not a RandomSampler: accelerate keeps it)
        from hfpipe.train.common import length_grouped_sampler

        sampler = length_grouped_sampler(lengths, tp.batch_size * tp.gradient_accumulation_steps, params.seed)
        train_dl = DataLoader(train_dataset, batch_size=tp.batch_size, sampler=sampler, collate_fn=collate_fn)
    else:
        train_dl = DataLoader(train_dataset, batch_size=tp.batch_size, shuffle=True, collate_fn=collate_fn)
    eval_dl = DataLoader(eval_dataset, batch_size=tp.eval_batch_size, collate_fn=collate_fn)
    if fsdp:
        from hfpipe.train.fsdp import shard_model

        # before AdamW, which steps the shards
        model = shard_model(model, accelerator.device, tp.mixed_precision, compile_blocks=tp.torch_compile)
        optimizer = torch.optim.AdamW(get_grouped_params(model, tp.weight_decay), lr=params.lr)
        optimizer, train_dl, eval_dl = accelerator.prepare(optimizer, train_dl, eval_dl)
    else:
        optimizer = torch.optim.AdamW(get_grouped_params(model, tp.weight_decay), lr=params.lr)
        model, optimizer, train_dl, eval_dl = accelerator.prepare(model, optimizer, train_dl, eval_dl)
    batches_per_epoch = len(train_dl)
    if batches_per_epoch < tp.gradient_accumulation_steps:
        raise PipelineError(f"train.gradient_accumulation_steps = {tp.gradient_accumulation_steps}: exceeds the "
                            f"{batches_per_epoch} batches per epoch of each process; use at most {batches_per_epoch}")
    total = training_steps(batches_per_epoch, tp.gradient_accumulation_steps, tp.epochs, tp.max_steps)
    # Not passed to prepare(): an AcceleratedScheduler steps once per process per optimizer step,
    # which would make the schedule depend on the number of processes.
    scheduler = get_scheduler(tp.lr_scheduler, optimizer, num_warmup_steps=math.ceil(tp.warmup_ratio * total),
                              num_training_steps=total)
    return _Run(accelerator, model, optimizer, scheduler, train_dl, eval_dl, sampler, batches_per_epoch, total,
                setup.loop_fns, fsdp)


def _resume(run: _Run, checkpoint: Path, live_dir: Path, keep_best: bool):
    """Load a checkpoint: (loop state, running loss sum and count, best weights or None, the RNG
    states to put back after the data iterator's first draw)."""
    restored_rng = load_training_state(run, checkpoint)
    state = LoopState(**json.loads((checkpoint / STATE_FILE).read_text()))
    run.accelerator.step = state.micro_steps
    loss_sum, running_n = json.loads(_running_loss_file(checkpoint, run.accelerator.process_index).read_text())
    best_state = None
    if run.main and keep_best and state.best_step is not None:
        from safetensors.torch import load_file

        best_state = load_file(str(checkpoint / BEST_FILE))
    if run.main:
        restore_dvclive(checkpoint, live_dir)
        print(f"resumed from {checkpoint} at step {state.step} of {run.total} (epoch {state.epoch}, "
              f"batch {state.batches_in_epoch})", flush=True)
    return state, loss_sum, running_n, best_state, restored_rng


def _dvclive_logger(run: _Run, params: Params, live_dir: Path, resume: bool):
    """(log(step, metrics), the Live or None): only the main process writes dvclive/."""
    live = None
    if run.main:
        from dvclive import Live

        # dvcyaml=False: dvc.yaml declares the plots; resume keeps the restored curves.
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None, resume=resume)
        live.log_params({"backend": "accelerate", "num_processes": run.accelerator.num_processes,
                         "distributed_type": str(run.accelerator.distributed_type), **params.model_dump(mode="json")})

    def log(step: int, metrics: dict) -> None:
        if live is not None:
            live.step = step  # the optimizer step, the x of every curve (as with the Trainer backend)
            for key, value in metrics.items():
                live.log_metric(key, value)
            live.next_step()

    return log, live


def _evaluate_and_keep_best(run: _Run, state: LoopState, metric: str | None, best_state, log,
                            eval_history: list[dict]):
    """Evaluate, log, and (metric: train.metric_for_best_model with load_best_model_at_end) keep a
    CPU copy of the weights when they are the best so far; returns the best weights."""
    metrics = evaluate_loop(run.accelerator, run.model, run.eval_dl, run.loop_fns)
    if run.fsdp:
        from hfpipe.train.fsdp import reshard

        reshard(run.model)
    eval_history.append({"step": state.step, **metrics})
    log(state.step, {f"eval/{k}": v for k, v in metrics.items()})
    if run.main:
        print(f"step {state.step}/{run.total}: " + ", ".join(f"eval {k} {v:.4f}" for k, v in metrics.items()),
              flush=True)
    if metric is None:
        return best_state
    if metric not in metrics:
        raise PipelineError(f"train.metric_for_best_model = {metric!r}: not among the evaluation metrics "
                            f"{sorted(metrics)}")
    value = float(metrics[metric])
    greater = greater_is_better(metric)
    if state.best_metric is None or (value > state.best_metric if greater else value < state.best_metric):
        state.best_step, state.best_metric = state.step, value
        weights = _full_weights(run)  # every process takes part (FSDP/DeepSpeed gather)
        if run.main:
            best_state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in weights.items()}
    return best_state


def _full_weights(run: _Run) -> dict:
    """The whole model's weights (on the main process; a collective under FSDP)."""
    if run.fsdp:
        from hfpipe.train.fsdp import full_state_dict

        return full_state_dict(run.model)
    return run.accelerator.get_state_dict(run.model)


def _stop_on_nonfinite(run: _Run, loss, grad_norm, step: int, checkpoint_root: Path) -> float:
    """The NaN guard; returns the gradient norm as a float. A NaN/inf loss on any process must stop
    all of them at the same step (one stopping alone would leave the others waiting in the next
    collective): the flag is summed over processes. An inf gradient norm on a step fp16's loss
    scaler skipped is its normal overflow probe."""
    import torch

    accelerator = run.accelerator
    norm = float(grad_norm) if grad_norm is not None else 0.0
    loss_bad = torch.tensor(0.0 if math.isfinite(loss.item()) else 1.0, device=accelerator.device)
    if accelerator.num_processes > 1:
        loss_bad = accelerator.reduce(loss_bad, reduction="sum")
    scaler_skip = accelerator.scaler is not None and accelerator.optimizer_step_was_skipped
    if loss_bad.item() > 0 or (not math.isfinite(norm) and not scaler_skip):
        raise PipelineError(f"training loss is {loss.item()} (gradient norm {norm}) at step {step}; last good "
                            f"checkpoint: {last_good_checkpoint(checkpoint_root)}; lower lr or check the data")
    return norm


def _epoch_batches(run: _Run, state: LoopState, restored_rng):
    """This epoch's remaining micro-batches (a resumed run skips those it had consumed)."""
    run.train_dl.set_epoch(state.epoch)
    if run.sampler is not None:
        run.sampler.set_epoch(state.epoch)  # also when accelerate's wrappers would not pass it on
    loader = (run.accelerator.skip_first_batches(run.train_dl, state.batches_in_epoch) if state.batches_in_epoch
              else run.train_dl)
    batches = iter(loader)
    if restored_rng is not None:
        # Starting a DataLoader iterator (at its first batch) draws from the global torch RNG;
        # the uninterrupted run drew that at the epoch's start, before the checkpoint. Put the
        # checkpoint's RNG state back after the draw, so dropout continues bit for bit.
        first = next(batches, None)
        _set_rng_states(restored_rng)
        batches = itertools.chain([first], batches) if first is not None else iter(())
    return batches


def train_with_accelerate(params: Params, model, setup: TrainingSetup, files: RunFiles) -> AccelerateResult:
    """Train `model` in place on what the task gives (`setup`: data, collator, loss and eval numbers),
    as the Trainer backend does. Checkpoints into files.checkpoint_dir every train.save_steps when
    files.marker_for_step is given; files.resume_from is a complete checkpoint of this run.

    Evaluates every train.eval_steps, or (train.eval_strategy: epoch) at the end of each epoch and
    of training. train.load_best_model_at_end: after each evaluation the weights with the best
    train.metric_for_best_model so far are kept (a CPU copy on the main process, written into each
    checkpoint) and loaded into the returned model at the end, as the Trainer does.
    train.group_by_length: batches of similar lengths (hfpipe.train.common.length_grouped_sampler).
    """
    import torch

    tp = params.train
    resume_from, marker_for_step = files.resume_from, files.marker_for_step
    live_dir, checkpoint_root = Path(files.live_dir), Path(files.checkpoint_dir)
    lengths = example_lengths(setup.train_set) if tp.group_by_length else None
    run = _prepare(params, model, setup, lengths)
    accelerator, total = run.accelerator, run.total
    best_metric = tp.metric_for_best_model if tp.load_best_model_at_end and tp.metric_for_best_model else None
    state, best_state, restored_rng = LoopState(), None, None
    running, running_n = torch.zeros((), dtype=torch.float64, device=accelerator.device), 0
    if resume_from is not None:
        state, loss_sum, running_n, best_state, restored_rng = _resume(run, Path(resume_from), live_dir,
                                                                         best_metric is not None)
        running += loss_sum
    resumed_step = state.step if resume_from is not None else None
    log, live = _dvclive_logger(run, params, live_dir, resume_from is not None)

    def clip(model, max_norm: float):
        if run.fsdp:
            from hfpipe.train.fsdp import clip_grad_norm

            return clip_grad_norm(model, max_norm)
        return accelerator.clip_grad_norm_(model.parameters(), max_norm)

    run.model.train()
    eval_history: list[dict] = []
    seen, n_seen = hashlib.sha256(), 0  # a digest of the blocks this process trained on: shows the sharding
    grad_norm, start = None, time.time()
    while state.step < total:
        for batch in _epoch_batches(run, state, restored_rng):
            restored_rng = None
            seen.update(batch["input_ids"].cpu().numpy().tobytes())
            n_seen += 1
            with accelerator.accumulate(run.model):
                loss = run.loop_fns.train_loss(batch, run.model(**batch))
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = clip(run.model, tp.max_grad_norm)
                run.optimizer.step()
                run.optimizer.zero_grad()
            state.batches_in_epoch += 1
            running += loss.detach().double()
            running_n += 1
            if not accelerator.sync_gradients:
                continue
            lr = run.scheduler.get_last_lr()[0]  # the rate this step used
            run.scheduler.step()
            state.step += 1
            norm = _stop_on_nonfinite(run, loss, grad_norm, state.step, checkpoint_root)
            if state.step % tp.logging_steps == 0 or state.step == 1:
                mean_loss = accelerator.reduce(running / running_n, reduction="mean").item()
                running.zero_()
                running_n = 0
                log(state.step, {"loss": mean_loss, "learning_rate": lr, "grad_norm": norm,
                                 "epoch": state.epoch + state.batches_in_epoch / run.batches_per_epoch})
            if tp.eval_strategy == "steps" and state.step % tp.eval_steps == 0:
                best_state = _evaluate_and_keep_best(run, state, best_metric, best_state, log, eval_history)
            if marker_for_step is not None and state.step % tp.save_steps == 0 and state.step < total:
                path = _save_checkpoint(run, files, state, marker_for_step(state.step), (running.item(), running_n),
                                        best_state)
                if run.main:
                    print(f"saved checkpoint {path}", flush=True)
            if state.step >= total:
                break
        restored_rng = None
        # The epoch is over, or training is (max_steps can end it mid-epoch). A checkpoint saved at the
        # epoch's last step comes before this evaluation: a run resumed from it redoes it here.
        epoch_done = state.batches_in_epoch >= run.batches_per_epoch
        if tp.eval_strategy == "epoch" and (epoch_done or state.step >= total):
            best_state = _evaluate_and_keep_best(run, state, best_metric, best_state, log, eval_history)
        if epoch_done:
            state.epoch += 1
            state.batches_in_epoch = 0
    accelerator.wait_for_everyone()
    print(f"process {accelerator.process_index}/{accelerator.num_processes}: trained on {n_seen} batches "
          f"(blocks digest {seen.hexdigest()[:16]}) in {time.time() - start:.1f}s, peak RSS {_peak_rss_mb():.0f} MB",
          flush=True)
    if run.fsdp:
        from hfpipe.train.fsdp import shard_sizes

        held = shard_sizes(run.model, run.optimizer)
        print(f"process {accelerator.process_index}/{accelerator.num_processes} holds {held['params']} of "
              f"{held['params_full']} parameter elements and {held['optimizer']} of {held['optimizer_full']} "
              "optimizer-state elements (FSDP shards)", flush=True)
    return _finish(run, live, state, best_state, tp.metric_for_best_model, eval_history, resumed_step)


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _finish(run: _Run, live, state: LoopState, best_state, metric: str | None, eval_history: list[dict],
            resumed_step: int | None) -> AccelerateResult:
    """End dvclive, load the best weights (load_best_model_at_end); the plain module, not
    torch.compile's wrapper (whose state_dict names carry an `_orig_mod.` prefix)."""
    accelerator = run.accelerator
    if live is not None:
        live.end()
    if run.fsdp:
        return _finish_sharded(run, state, best_state, metric, eval_history, resumed_step)
    unwrapped = accelerator.unwrap_model(run.model, keep_torch_compile=False)
    if run.main and best_state is not None:
        unwrapped.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in best_state.items()})
        print(f"loaded the best model: step {state.best_step} ({metric} {state.best_metric:.4f})", flush=True)
    # (the checkpoints stay until the stage has saved the model: hfpipe.train.train_resumable)
    accelerator.wait_for_everyone()
    return AccelerateResult(unwrapped, run.main, accelerator.num_processes, state.step, eval_history, resumed_step)


def _finish_sharded(run: _Run, state: LoopState, best_state, metric: str | None, eval_history: list[dict],
                    resumed_step: int | None) -> AccelerateResult:
    """FSDP: the whole model, gathered to the main process's CPU (or the best weights kept there),
    as a plain model of its own class (save_pretrained, pipeline); the other processes return
    their sharded module."""
    from hfpipe.train.fsdp import full_state_dict, plain_model

    accelerator = run.accelerator
    # state.best_step (load_best_model_at_end) is the same on every process (the metrics are
    # gathered), so all gather or none: the main process then has the best weights already
    weights = best_state if state.best_step is not None else full_state_dict(run.model)
    model = run.model
    if run.main:
        model = plain_model(run.model, weights)
        if state.best_step is not None:
            print(f"loaded the best model: step {state.best_step} ({metric} {state.best_metric:.4f})", flush=True)
    accelerator.wait_for_everyone()
    return AccelerateResult(model, run.main, accelerator.num_processes, state.step, eval_history, resumed_step)
