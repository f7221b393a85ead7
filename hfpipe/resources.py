"""What this machine can take, checked when a stage starts and before anything is spent: processes
against its cores (or GPUs), a training run's memory against its RAM (or one GPU's memory). Each
refusal is one line naming the param and the machine's figure. The estimate is deliberately rough
(weights, gradients, AdamW state, activations, logits): it refuses what cannot fit, not what is tight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hfpipe.io import PipelineError


def cpu_cores() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# CPU processes per core: a few more than the cores only wait for one (a recipe written for a bigger
# machine still runs, slower); far more only cost memory and start-up.
PROCESSES_PER_CORE = 4


def check_processes(key: str, n: int, gpus: int | None = None) -> None:
    """`n` worker processes: at most PROCESSES_PER_CORE per CPU core, or one per GPU on a GPU machine."""
    gpus = gpu_count() if gpus is None else gpus
    cores = cpu_cores()
    if gpus:
        limit, what = gpus, f"{gpus} GPU(s)"
    else:
        limit, what = PROCESSES_PER_CORE * cores, f"{cores} CPU core(s) and no GPU"
    if n > limit:
        per = "" if gpus else f" ({PROCESSES_PER_CORE} per core)"
        raise PipelineError(f"{key} = {n}: this machine has {what}; use at most {limit}{per}")


def machine_memory_bytes(gpus: int | None = None) -> tuple[int, str]:
    """(bytes one training process may use, what they are): one GPU's memory, else the RAM."""
    gpus = gpu_count() if gpus is None else gpus
    if gpus:
        import torch

        return torch.cuda.get_device_properties(0).total_memory, "GPU memory"
    import psutil

    return psutil.virtual_memory().total, "RAM"


def parameter_count(config) -> int:
    """Parameters of the model a config describes, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class ModelShape:
    """What a model's training memory depends on (model_shape reads it from a config)."""
    parameters: int
    hidden: int
    layers: int
    heads: int
    vocab: int


def model_shape(config) -> ModelShape:
    """A transformers config's shape, under either naming (hidden_size or GPT-2's n_embd, ...)."""
    return ModelShape(parameters=parameter_count(config),
                      hidden=getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 768),
                      layers=getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 12),
                      heads=getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 12),
                      vocab=getattr(config, "vocab_size", 0) or 0)


def training_memory_bytes(shape: ModelShape, trainable: int, batch_size: int, sequence_length: int,
                          gradient_checkpointing: bool = False) -> int:
    """A training process's memory in fp32: weights (4 bytes each), gradients and AdamW's two moments
    of the trainable ones (12), activations kept for the backward pass (per layer ~68 bytes per
    token and hidden unit plus the attention maps, Korthikanti et al. 2022 at 4 bytes; with gradient
    checkpointing only each layer's input, and one layer's full set), and the logits with their gradient."""
    tokens = batch_size * sequence_length
    per_layer = tokens * (68 * shape.hidden + 10 * shape.heads * sequence_length)
    activations = (shape.layers * tokens * shape.hidden * 4 + per_layer) if gradient_checkpointing \
        else shape.layers * per_layer
    return 4 * shape.parameters + 12 * trainable + activations + 12 * tokens * shape.vocab


def check_training_fits(config, batch_size: int, sequence_length: int, gradient_checkpointing: bool,
                        trainable_fraction: float = 1.0, processes: int = 1, gpus: int | None = None) -> int:
    """Refuse a model and batch that cannot fit; returns the estimate (bytes, all processes on this
    machine: on CPU they share the RAM, on GPUs each has its own)."""
    shape = model_shape(config)
    parameters = shape.parameters
    need = training_memory_bytes(shape, int(parameters * trainable_fraction), batch_size, sequence_length,
                                 gradient_checkpointing)
    have, what = machine_memory_bytes(gpus)
    gpus = gpu_count() if gpus is None else gpus
    total = need if gpus else need * processes
    if total > have:
        each = f" x {processes} processes" if processes > 1 and not gpus else ""
        raise PipelineError(
            f"model and batch need about {total / 1e9:.1f} GB to train ({parameters / 1e6:,.1f}M parameters, "
            f"train.batch_size {batch_size} x {sequence_length} tokens{each}) and this machine has "
            f"{have / 1e9:.1f} GB of {what}; use a smaller model (model.n_embd, model.n_layer), a smaller "
            "train.batch_size (with gradient_accumulation_steps), or model.gradient_checkpointing: true")
    return total
