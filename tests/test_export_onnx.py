"""ONNX export and its checks, on the tiny GPT-2 of conftest and a tiny BERT classifier built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hfpipe.export_onnx import (
    CheckBatch,
    card_section,
    check_onnx_export,
    export_and_check,
    export_onnx,
    insert_card_section,
    load_model,
    max_logit_difference,
    quantize_int8,
)
from hfpipe.io import PipelineError
from hfpipe.params import ExportParams
from hfpipe.tasks import TASKS


@pytest.fixture(scope="module")
def lm_dir(tiny_model, tiny_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("lm-export")
    tiny_model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm_onnx(lm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm-onnx")
    names = export_onnx(lm_dir, out / "model.onnx", TASKS["causal-lm"])
    quantize_int8(out / "model.onnx", out / "model.int8.onnx")
    return out, names


@pytest.fixture(scope="module")
def lm_batch(tiny_blocks):
    ids = np.asarray(tiny_blocks["input_ids"], dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 20:] = 0  # one padded row: padding positions are not compared
    return CheckBatch({"input_ids": ids, "attention_mask": mask})


INTEGER_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "DynamicQuantizeMatMul"}


def quantized_ops(path) -> set[str]:
    """The integer-arithmetic op types in an ONNX file (none in a float model)."""
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node} & INTEGER_OPS


def test_the_int8_file_is_quantized_and_the_fp32_file_is_not(lm_onnx):
    out, _ = lm_onnx
    assert quantized_ops(out / "model.onnx") == set()
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= quantized_ops(out / "model.int8.onnx")
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size


def test_the_onnx_file_holds_no_paths_of_this_checkout_or_venv(lm_onnx):
    """The exporter records a Python stack trace per node, with absolute paths: the same model
    exported from another folder would get other bytes (and another DVC hash) without the cleanup."""
    import sys

    import onnx

    out, _ = lm_onnx
    fp32 = out / "model.onnx"
    model = onnx.load(str(fp32))
    keys = {p.key for node in model.graph.node for p in node.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in keys and "pkg.torch.onnx.fx_node" in keys  # the rest is kept
    raw = fp32.read_bytes()
    for folder in (Path(__file__).resolve().parents[1], Path(sys.prefix)):
        assert str(folder).encode() not in raw, folder


def test_export_writes_one_self_contained_file_with_dynamic_batch_and_length(lm_onnx, lm_batch):
    import onnx

    from hfpipe.export_onnx import onnx_logits, onnx_session

    out, names = lm_onnx
    assert names == ["input_ids", "attention_mask"]
    assert sorted(p.name for p in out.iterdir()) == ["model.int8.onnx", "model.onnx"]  # no external .data file
    onnx.checker.check_model(str(out / "model.onnx"))
    session = onnx_session(out / "model.onnx")
    for rows, length in [(1, 5), (3, 32)]:
        inputs = {k: v[:rows, :length] for k, v in lm_batch.inputs.items()}
        assert onnx_logits(session, inputs).shape[:2] == (rows, length)


def test_check_measures_a_tiny_fp32_difference_and_the_int8_loss_change(lm_dir, lm_onnx, lm_batch):
    out, _ = lm_onnx
    model = load_model(lm_dir, TASKS["causal-lm"])
    result = check_onnx_export(model, out / "model.onnx", out / "model.int8.onnx", lm_batch, 1e-3)
    assert 0 < result["onnx_max_abs_logit_diff"] < 1e-4
    assert result["examples"] == 8 and result["tokens"] == 8 * 31 - 12
    assert result["int8_max_abs_logit_diff"] > result["onnx_max_abs_logit_diff"]
    assert result["int8_loss_change"] == pytest.approx(result["int8_loss"] - result["pytorch_loss"], abs=1e-4)
    # the PyTorch loss computed here is the model's own loss on unpadded rows
    import torch

    with torch.no_grad():
        ids = torch.from_numpy(lm_batch.inputs["input_ids"][[0, 2, 3, 4, 5, 6, 7]])
        own = float(model(input_ids=ids, labels=ids).loss)
    assert result["pytorch_loss"] == pytest.approx(own, rel=0.05)
    again = check_onnx_export(model, out / "model.onnx", out / "model.int8.onnx", lm_batch, 1e-3)
    assert json.dumps(again) == json.dumps(result)  # deterministic: metrics/export.json is byte-identical


def test_an_onnx_graph_that_disagrees_fails_with_the_measured_difference(lm_dir, lm_onnx, lm_batch, tmp_path):
    import onnx
    from onnx import numpy_helper

    out, _ = lm_onnx
    graph = onnx.load(str(out / "model.onnx"))
    biggest = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    tampered = numpy_helper.to_array(biggest).copy()
    tampered *= 1.01  # a 1% error in the largest weight (the embedding): what a broken export looks like
    biggest.CopyFrom(numpy_helper.from_array(tampered, biggest.name))
    onnx.save(graph, str(tmp_path / "bad.onnx"))
    model = load_model(lm_dir, TASKS["causal-lm"])
    with pytest.raises(PipelineError, match=r"bad.onnx: ONNX logits differ from PyTorch by up to [\d.e-]+ on 8 "
                                            r"validation examples \(export.onnx_tolerance 0.001\)") as err:
        check_onnx_export(model, tmp_path / "bad.onnx", None, lm_batch, 1e-3)
    measured = float(str(err.value).split("by up to ")[1].split()[0])
    assert measured > 1e-3 and "\n" not in str(err.value)


def test_max_logit_difference_ignores_padding_and_refuses_other_shapes():
    a = np.zeros((1, 3, 4), dtype=np.float32)
    b = a.copy()
    b[0, 2] = 5.0  # a padded position
    assert max_logit_difference(a, b, np.array([[1, 1, 0]])) == 0.0
    assert max_logit_difference(a, b) == 5.0
    with pytest.raises(PipelineError, match="shape"):
        max_logit_difference(a, np.zeros((1, 3, 5), dtype=np.float32))


def test_card_section_goes_before_limits_and_names_the_figures():
    metrics = {"onnx": {"inputs": ["input_ids", "attention_mask"], "opset": 18, "examples": 32,
                        "onnx_max_abs_logit_diff": 1.2e-05, "onnx_tolerance": 0.001, "pytorch_loss": 4.0,
                        "pytorch_perplexity": 54.6, "int8_loss": 4.01, "int8_perplexity": 55.1,
                        "int8_perplexity_change_pct": 0.9, "int8_max_abs_logit_diff": 0.4}}
    card = insert_card_section("# m\n\n## Metrics\n\n## Limits\n\nsmall\n", card_section(metrics, TASKS["causal-lm"]))
    assert card.index("## ONNX (onnxruntime)") < card.index("## Limits")
    assert "1.2e-05" in card and "perplexity 54.6 -> 55.1" in card and "ort.InferenceSession" in card


def test_sequence_classifier_exports_with_token_type_ids_and_reports_accuracy(tmp_path, one_torch_thread):
    """A BERT-style classifier (task classification): token_type_ids is an input; int8 changes accuracy."""
    import torch
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(60)])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=2))
    model.save_pretrained(tmp_path / "export")
    tok.save_pretrained(tmp_path / "export")
    rng = np.random.default_rng(0)
    rows = {"input_ids": [], "token_type_ids": [], "attention_mask": [], "label": []}
    for i in range(12):
        n = int(rng.integers(4, 12))
        rows["input_ids"].append([2] + rng.integers(4, 64, n).tolist() + [3])
        rows["token_type_ids"].append([0] * (n // 2 + 1) + [1] * (n - n // 2 + 1))
        rows["attention_mask"].append([1] * (n + 2))
        rows["label"].append(i % 2)
    features = Features({"input_ids": Sequence(Value("int64")), "token_type_ids": Sequence(Value("int64")),
                         "attention_mask": Sequence(Value("int64")), "label": ClassLabel(names=["neg", "pos"])})
    split = Dataset.from_dict(rows, features=features)
    DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "tokenized"))
    export = ExportParams(onnx_tolerance=1e-3, check_examples=10, quantize_int8=True)
    figures = export_and_check(tmp_path / "export", tmp_path / "tokenized", TASKS["classification"], export)["onnx"]
    assert figures["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert figures["examples"] == 10 and figures["onnx_max_abs_logit_diff"] < 1e-4
    # the agreement is the share of the 10 examples whose int8 prediction equals PyTorch's
    assert figures["int8_prediction_agreement"] >= 0.8 and (figures["int8_prediction_agreement"] * 10) % 1 == 0
    assert figures["int8_accuracy_change"] == pytest.approx(figures["int8_accuracy"] - figures["pytorch_accuracy"])
    assert (figures["pytorch_accuracy"] * 10) % 1 == pytest.approx(0, abs=1e-6)  # a count out of 10
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= quantized_ops(tmp_path / "export/onnx/model.int8.onnx")
