"""train.distributed: fsdp, the parts that need no process group: its params' refusals and the
block list it shards. (2-process training, sharded checkpoints, kill and resume: tests/test_fsdp_e2e.py.)"""

from __future__ import annotations

import pytest

from hfpipe.io import PipelineError
from hfpipe.params import parse_params

FSDP = {"backend": "accelerate", "distributed": "fsdp", "num_processes": 2, "torch_compile": False}


def error_of(raw: dict) -> str:
    with pytest.raises(PipelineError) as info:
        parse_params(raw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_fsdp_params_parse_and_ddp_is_the_default():
    assert parse_params({}).train.distributed == "ddp"
    assert parse_params({"train": FSDP}).train.distributed == "fsdp"


def test_fsdp_with_the_trainer_backend_is_refused_in_one_line_saying_accelerate_would_run_ddp():
    message = error_of({"train": {**FSDP, "backend": "trainer"}})
    assert "train.distributed = fsdp needs train.backend: accelerate" in message
    assert "on a CPU-only machine silently runs DDP" in message


def test_fsdp_with_lora_parses():
    lora = {"model": {"from_scratch": False, "name_or_path": "gpt2", "peft": {"r": 4}}, "train": FSDP}
    assert parse_params(lora).model.peft is not None  # (trained: tests/test_fsdp_e2e.py)


def test_the_blocks_sharded_are_gpt2s_transformer_h_and_a_model_without_blocks_is_refused(tiny_model):
    import torch

    from hfpipe.train.fsdp import transformer_blocks

    assert transformer_blocks(tiny_model) == list(tiny_model.transformer.h)
    with pytest.raises(PipelineError, match=r"^train.distributed = fsdp: found no list of transformer blocks in "
                                            r"Linear to shard; use train.distributed: ddp$"):
        transformer_blocks(torch.nn.Linear(2, 2))


def test_fsdp_in_one_process_is_refused_in_one_line(tiny_model):
    from hfpipe.train.fsdp import shard_model

    with pytest.raises(PipelineError, match=r"^train.distributed = fsdp shards across processes and this run has 1; "
                                            r"set train.num_processes to 2 or more, or train.distributed: ddp$"):
        shard_model(tiny_model, "cpu", "no")


def test_the_blocks_sharded_in_the_classification_recipes_models():
    """mrpc and sentiment fine-tune DistilBERT/BERT-style encoders, gpt2-classifier GPT-2 with a
    classification head: each model's repeated layers, not its embeddings or head."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
    )

    from hfpipe.train.fsdp import transformer_blocks

    distilbert = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=64, dim=16, hidden_dim=32,
                                                                      n_layers=3, n_heads=2))
    assert transformer_blocks(distilbert) == list(distilbert.distilbert.transformer.layer)
    bert = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                    num_hidden_layers=2, num_attention_heads=2))
    assert transformer_blocks(bert) == list(bert.bert.encoder.layer)
    gpt2 = GPT2ForSequenceClassification(GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=16))
    assert transformer_blocks(gpt2) == list(gpt2.transformer.h)
