"""What both training backends share: where a run writes (RunFiles), threads and kernels, the
slow-bf16 warning, which way a metric improves, and the length-grouped sampler (the backends never
import each other)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hfpipe import paths
from hfpipe.device import has_accelerator


@dataclass
class RunFiles:
    """Where a training run writes and what it resumes, for either backend.

    checkpoint_dir: its checkpoints (the train stage: models/checkpoints/run-<fingerprint>; the
    Trainer's output_dir too). live_dir: the dvclive curves. marker_for_step(step) -> the marker of
    the checkpoint at `step` (hfpipe.checkpoint); None: no resumable checkpoints. resume_from: a
    complete checkpoint of this run to continue.
    """
    checkpoint_dir: Path = paths.CHECKPOINTS
    live_dir: Path = paths.DVCLIVE
    marker_for_step: Callable[[int], dict] | None = None
    resume_from: Path | None = None


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


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

    if mixed_precision != "bf16" or has_accelerator() or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    return ("warning: train.mixed_precision is bf16 but this CPU has no native bf16 (AVX512-BF16/AMX), so "
            "training will be slower than fp32; set train.mixed_precision: \"no\" (dvc exp run -S "
            "'train.mixed_precision=\"no\"')")


def greater_is_better(metric: str) -> bool:
    """train.metric_for_best_model: every metric improves upwards but the loss."""
    return metric != "loss"


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
