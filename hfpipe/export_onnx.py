"""ONNX export of the exported model, an optional dynamically int8-quantized copy (onnxruntime),
and the checks that they compute what the PyTorch model computes.

`export_onnx` writes `model.onnx` (inputs: input_ids, attention_mask (, token_type_ids); output:
logits; batch and sequence length dynamic). `check_onnx_export` runs PyTorch, the fp32 ONNX model
and the int8 one on the first `check_examples` validation examples and returns the figures that
go to metrics/export.json: the largest absolute logit difference (fp32 must stay below
`export.onnx_tolerance`, else a PipelineError names the measured value) and the change of the
task's metric under int8 (loss/perplexity for a causal LM, accuracy for a classifier).

Every number is deterministic for the same inputs on one machine: onnxruntime runs the checks on
one intra-op thread and the values are rounded, so `dvc repro --force` reproduces metrics/export.json byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hfpipe import paths
from hfpipe.io import PipelineError, first_line

if TYPE_CHECKING:
    from hfpipe.params import ExportParams
    from hfpipe.tasks.common import Task

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
OPSET = 18
CHECK_BATCH = 8  # examples per forward pass during the checks (bounds the memory of vocab-sized logits)


@dataclass
class CheckBatch:
    """Validation examples as the ONNX model takes them, right-padded to one length.

    `label_position`/`label_tokens` (gpt2-classifier): where the label is predicted and which
    vocabulary entries are the labels; `labels`: class ids (classifiers) or None (causal LM)."""
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    label_position: np.ndarray | None = None
    label_tokens: list[int] | None = None

    def __len__(self) -> int:
        return len(self.inputs["input_ids"])

    def slice(self, start: int, stop: int) -> CheckBatch:
        return CheckBatch({k: v[start:stop] for k, v in self.inputs.items()},
                          None if self.labels is None else self.labels[start:stop],
                          None if self.label_position is None else self.label_position[start:stop],
                          self.label_tokens)


def load_model(model_dir: Path, task: Task):
    model = task.auto_model_class().from_pretrained(model_dir)
    model.eval()
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model


def input_names(model) -> list[str]:
    """input_ids, attention_mask, and token_type_ids when the model takes it (BERT-style)."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in accepted
                                              and bool(getattr(model.config, "type_vocab_size", 0)) else [])


def logits_module(model):
    """A torch module over a transformers model: plain tensors in, logits out (no cache, no dict)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            if hasattr(self.model.config, "use_cache"):
                kwargs["use_cache"] = False
            return self.model(**kwargs).logits

    return LogitsOnly().eval()


def export_onnx(model_dir: Path, out_path: Path, task: Task) -> list[str]:
    """Export the saved model in `model_dir` to one ONNX file (weights inside it, opset 18, the
    torch.export-based exporter); returns the graph's input names."""
    import torch

    model = load_model(model_dir, task)
    names = input_names(model)
    config = model.config
    positions = getattr(config, "n_positions", 0) or getattr(config, "max_position_embeddings", 16)
    seq = min(16, int(positions))
    ones = torch.ones(2, seq, dtype=torch.long)
    example = {"input_ids": ones, "attention_mask": ones.clone()}
    if "token_type_ids" in names:
        example["token_type_ids"] = torch.zeros(2, seq, dtype=torch.long)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    import logging
    import warnings

    # The exporter logs "torchvision is not installed" per vision op and warns about its own
    # internals; none of it is about this model. Real failures still raise.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=UserWarning)
            torch.onnx.export(logits_module(model), tuple(example[n] for n in names), str(out_path),
                              input_names=names, output_names=["logits"], opset_version=OPSET, dynamo=True,
                              external_data=False, verbose=False,
                              dynamic_shapes={n: {0: batch, 1: length} for n in names})
    except Exception as err:  # the exporter's errors are pages long: keep the first line
        first = first_line(err)
        raise PipelineError(f"{model_dir}: ONNX export failed ({type(err).__name__}: {first}); "
                            f"set export.onnx: false to export without ONNX") from None
    drop_stack_traces(out_path)
    return names


def drop_stack_traces(onnx_path: Path) -> None:
    """Remove the exporter's per-node Python stack traces: they hold the absolute paths of this
    checkout and of the venv, so the same model exported from another folder (a CI clone, a
    colleague's machine) would give other bytes and another DVC hash. Nothing reads them."""
    import onnx

    model = onnx.load(str(onnx_path))
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(model, str(onnx_path))


def quantize_int8(onnx_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantization (weights int8, activations quantized at run time) with onnxruntime."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing": a hint for static quantization
    # The quantizer re-runs ONNX shape inference, which refuses some intermediate shapes the torch
    # exporter records (seen on BERT's classifier head: "(32) vs (2)"); they are only annotations,
    # so quantize a copy without them.
    model = onnx.load(str(onnx_path))
    del model.graph.value_info[:]
    plain = out_path.with_name(out_path.name + ".plain.onnx")
    try:
        onnx.save(model, str(plain))
        quantize_dynamic(str(plain), str(out_path), weight_type=QuantType.QInt8)
    finally:
        plain.unlink(missing_ok=True)


def onnx_session(onnx_path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session, inputs: dict[str, np.ndarray]) -> np.ndarray:
    wanted = [i.name for i in session.get_inputs()]
    return session.run(["logits"], {n: inputs[n] for n in wanted})[0]


def torch_logits(model, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    kwargs: dict[str, Any] = {n: torch.from_numpy(v) for n, v in inputs.items()}
    if hasattr(model.config, "use_cache"):
        kwargs["use_cache"] = False
    with torch.inference_mode():
        return model(**kwargs).logits.float().numpy()


def max_logit_difference(reference: np.ndarray, other: np.ndarray, attention_mask: np.ndarray | None = None) -> float:
    """Largest absolute difference between two logits arrays; for per-token logits (batch, seq,
    vocab) only at positions the attention mask keeps (padding positions are never read)."""
    if reference.shape != other.shape:
        raise PipelineError(f"ONNX logits have shape {other.shape}, PyTorch's {reference.shape}")
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    if diff.ndim == 3 and attention_mask is not None:
        diff = diff[attention_mask.astype(bool)]
    return float(diff.max()) if diff.size else 0.0


def check_examples(data_dir: Path, n: int, tokenizer, task: Task) -> CheckBatch:
    """The first `n` examples of the validation split of data/tokenized (a causal LM's blocks, or a
    classifier's tokenized examples, right-padded with the tokenizer's pad token), with what the
    task compares (task.check_batch: labels, label positions)."""
    from datasets import load_from_disk

    data = load_from_disk(str(data_dir))
    if "validation" not in data or len(data["validation"]) == 0:
        raise PipelineError(f"{data_dir}: no validation examples to check the ONNX export against")
    rows = data["validation"].select(range(min(n, len(data["validation"]))))
    ids = rows["input_ids"]
    width = max(len(r) for r in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = np.full((len(ids), width), pad, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, r in enumerate(ids):
        input_ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    inputs = {"input_ids": input_ids, "attention_mask": mask}
    # The model's inputs follow the tokenizer's output: token types for BERT-style pairs.
    if "token_type_ids" in rows.column_names:
        types = np.zeros_like(input_ids)
        for i, r in enumerate(rows["token_type_ids"]):
            types[i, :len(r)] = r
        inputs["token_type_ids"] = types
    return task.check_batch(rows, inputs, data, tokenizer)


def _task_scores(logits: np.ndarray, batch: CheckBatch) -> np.ndarray:
    """Classifiers: the class scores (gpt2-classifier: label tokens' logits at the label position)."""
    if batch.label_position is not None:
        return logits[np.arange(len(logits)), batch.label_position][:, batch.label_tokens]
    return logits


def _lm_loss_terms(logits: np.ndarray, input_ids: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """Summed next-token cross-entropy (float64) and the number of predicted tokens."""
    shifted = logits[:, :-1].astype(np.float64)
    target = input_ids[:, 1:]
    keep = (mask[:, 1:] * mask[:, :-1]).astype(bool)
    top = shifted.max(-1, keepdims=True)
    log_norm = np.log(np.exp(shifted - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(shifted, target[..., None], -1)[..., 0]
    nll = (log_norm - picked)[keep]
    return float(nll.sum()), int(keep.sum())


def _rounded(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


def check_onnx_export(model, fp32_path: Path, int8_path: Path | None, batch: CheckBatch, tolerance: float,
                      label: str | None = None) -> dict:
    """Compare PyTorch with the fp32 ONNX model (and the int8 one) on `batch`.

    Raises PipelineError when the fp32 ONNX logits differ by `tolerance` or more (the message
    names the file as `label`, default its path)."""
    sessions = {"onnx": onnx_session(fp32_path)}
    if int8_path is not None:
        sessions["int8"] = onnx_session(int8_path)
    max_diff = {name: 0.0 for name in sessions}
    loss = {name: [0.0, 0] for name in ["pytorch", *sessions]}
    correct = {name: 0 for name in ["pytorch", *sessions]}
    agree = {name: 0 for name in sessions}
    for start in range(0, len(batch), CHECK_BATCH):
        part = batch.slice(start, start + CHECK_BATCH)
        mask = part.inputs["attention_mask"]
        ref = torch_logits(model, part.inputs)
        outputs = {"pytorch": ref}
        for name, session in sessions.items():
            outputs[name] = onnx_logits(session, part.inputs)
            max_diff[name] = max(max_diff[name], max_logit_difference(ref, outputs[name], mask))
        for name, logits in outputs.items():
            if part.labels is None:
                total, count = _lm_loss_terms(logits, part.inputs["input_ids"], mask)
                loss[name][0] += total
                loss[name][1] += count
            else:
                predicted = _task_scores(logits, part).argmax(-1)
                correct[name] += int((predicted == part.labels).sum())
                if name != "pytorch":
                    agree[name] += int((predicted == _task_scores(ref, part).argmax(-1)).sum())
    if not max_diff["onnx"] < tolerance:
        raise PipelineError(f"{label or fp32_path}: ONNX logits differ from PyTorch by up to {max_diff['onnx']:.3g} on "
                            f"{len(batch)} validation examples (export.onnx_tolerance {tolerance:g}); "
                            f"the exported graph does not compute what the model computes")
    result: dict = {"examples": len(batch), "onnx_max_abs_logit_diff": _rounded(max_diff["onnx"], 3),
                    "onnx_tolerance": tolerance}
    if batch.labels is None:
        for name in loss:
            mean = loss[name][0] / max(loss[name][1], 1)
            if name == "onnx":
                continue
            result[f"{name}_loss"] = _rounded(mean)
            result[f"{name}_perplexity"] = _rounded(math.exp(mean))
        result["tokens"] = loss["pytorch"][1]
        if "int8" in sessions:
            result["int8_loss_change"] = _rounded(result["int8_loss"] - result["pytorch_loss"], 4)
            result["int8_perplexity_change_pct"] = _rounded(
                100 * (result["int8_perplexity"] / result["pytorch_perplexity"] - 1), 4)
    else:
        result["pytorch_accuracy"] = _rounded(correct["pytorch"] / len(batch))
        if "int8" in sessions:
            result["int8_accuracy"] = _rounded(correct["int8"] / len(batch))
            result["int8_accuracy_change"] = _rounded(result["int8_accuracy"] - result["pytorch_accuracy"], 4)
            result["int8_prediction_agreement"] = _rounded(agree["int8"] / len(batch))
    if "int8" in sessions:
        result["int8_max_abs_logit_diff"] = _rounded(max_diff["int8"], 3)
    return result


def export_and_check(export_dir: Path, data_dir: Path, task: Task, ep: ExportParams,
                     final_dir: str | None = None) -> dict:
    """ONNX (+ int8) files in `export_dir/onnx/` for the saved model in `export_dir`, checked on
    validation examples; returns the figures for metrics/export.json."""
    from transformers import AutoTokenizer

    fp32_path = export_dir / ONNX_DIR / FP32_FILE
    int8_path = export_dir / ONNX_DIR / INT8_FILE if ep.quantize_int8 else None
    names = export_onnx(export_dir, fp32_path, task)
    if int8_path is not None:
        quantize_int8(fp32_path, int8_path)
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    batch = check_examples(data_dir, ep.check_examples, tokenizer, task)
    model = load_model(export_dir, task)
    label = f"{final_dir}/{ONNX_DIR}/{FP32_FILE}" if final_dir else None  # export_dir may be a scratch folder
    result = check_onnx_export(model, fp32_path, int8_path, batch, ep.onnx_tolerance, label)
    return {"onnx": {"inputs": names, "opset": OPSET, **result}}


def card_section(metrics: dict, task: Task) -> str:
    """The model card's ONNX section: files, onnxruntime usage (the task's), the checks' figures, limits."""
    m = metrics["onnx"]
    feed = ", ".join(f'"{n}": enc["{n}"]' for n in m["inputs"])
    int8_file = f"`onnx/{INT8_FILE}` (dynamic int8 quantization: int8 weights, activations quantized at run time)"
    change, use = task.onnx_card_usage(m, feed)
    int8_lines = (f"- {int8_file}: on the same examples, {change}; largest logit difference "
                  f"{m['int8_max_abs_logit_diff']}.\n" if "int8_max_abs_logit_diff" in m else "")
    return f"""## ONNX (onnxruntime)

- `onnx/{FP32_FILE}`: fp32, opset {m['opset']}, inputs {", ".join(m['inputs'])} (batch and sequence
  length dynamic), output `logits`. On the first {m['examples']} validation examples its logits differ
  from PyTorch's by at most {m['onnx_max_abs_logit_diff']} (the export fails above {m['onnx_tolerance']}).
{int8_lines}
```python
import onnxruntime as ort
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained("{paths.EXPORT}")
session = ort.InferenceSession("{paths.EXPORT}/{ONNX_DIR}/{FP32_FILE}", providers=["CPUExecutionProvider"])
{use}
```

ONNX limits: the graph computes the logits of one forward pass, without a KV cache, so generating
text with it recomputes the whole prefix at every step (fine for scoring and short completions; use
the PyTorch model or a cached export for long generation). Tokenization stays in Python
(`tokenizers`). The int8 model trades a little accuracy for speed and size on CPUs; check the
figures above for your data before deploying it.

"""


def insert_card_section(card: str, section: str) -> str:
    """Put `section` before the card's `## Limits` (at the end when it has none)."""
    marker = "## Limits"
    return card.replace(marker, section + marker, 1) if marker in card else card.rstrip() + "\n\n" + section
