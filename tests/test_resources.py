"""hfpipe.resources: what this machine can take, refused in one line before anything is spent."""

from __future__ import annotations

import pytest

from hfpipe.io import PipelineError
from hfpipe.resources import (
    ModelShape,
    check_processes,
    check_training_fits,
    cpu_cores,
    parameter_count,
    training_memory_bytes,
)


def test_processes_beyond_the_cores_or_gpus_are_refused_in_one_line():
    cores = cpu_cores()
    check_processes("tokenize.num_proc", 4 * cores, gpus=0)  # a recipe for a bigger machine: slower, not refused
    with pytest.raises(PipelineError, match=rf"^tokenize.num_proc = {4 * cores + 1}: this machine has {cores} CPU "
                                            rf"core\(s\) and no GPU; use at most {4 * cores} \(4 per core\)$"):
        check_processes("tokenize.num_proc", 4 * cores + 1, gpus=0)
    with pytest.raises(PipelineError, match=r"^tokenize.num_proc = 1000000: "):
        check_processes("tokenize.num_proc", 1_000_000, gpus=0)
    check_processes("train.num_processes", 8, gpus=8)
    with pytest.raises(PipelineError, match=r"^train.num_processes = 9: this machine has 8 GPU\(s\); use at most 8$"):
        check_processes("train.num_processes", 9, gpus=8)


def test_parameter_count_on_the_meta_device_matches_the_built_model():
    from transformers import AutoModel, GPT2Config

    config = GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=500, n_positions=32)
    assert parameter_count(config) == sum(p.numel() for p in AutoModel.from_config(config).parameters())
    huge = GPT2Config(n_layer=1000, n_head=16, n_embd=65536, vocab_size=50257, n_positions=1024)
    assert parameter_count(huge) > 5e13  # counted without allocating 200 TB


def test_training_memory_grows_with_what_it_should():
    shape = ModelShape(parameters=10**8, hidden=768, layers=12, heads=12, vocab=50257)
    base = dict(shape=shape, trainable=10**8, batch_size=8, sequence_length=128)
    m = training_memory_bytes(**base)
    assert m > 16 * 10**8  # weights, gradients, two AdamW moments
    assert training_memory_bytes(**{**base, "batch_size": 16}) > m
    assert training_memory_bytes(**{**base, "trainable": 10**6}) < m  # LoRA
    assert training_memory_bytes(**base, gradient_checkpointing=True) < m


def test_a_model_and_batch_that_cannot_fit_are_refused_and_a_tiny_one_passes():
    from transformers import GPT2Config

    tiny = GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=400, n_positions=32)
    assert check_training_fits(tiny, 8, 32, False, gpus=0) < 10**8
    huge = GPT2Config(n_layer=1000, n_head=16, n_embd=65536, vocab_size=400, n_positions=32)
    with pytest.raises(PipelineError) as err:
        check_training_fits(huge, 8, 32, False, gpus=0)
    message = str(err.value)
    assert "\n" not in message and message.startswith("model and batch need about ")
    assert "GB of RAM; use a smaller model (model.n_embd, model.n_layer)" in message
    # a batch of 10^6 long sequences on a tiny model: the activations
    with pytest.raises(PipelineError, match=r"train.batch_size 1000000 x 1024 tokens"):
        check_training_fits(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=400, n_positions=1024),
                            1_000_000, 1024, False, gpus=0)
