"""Export: a self-contained model folder (safetensors + tokenizer + model card) that
`transformers.pipeline(...)` loads."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hfpipe import paths
from hfpipe.hub import PROVENANCE_FILE
from hfpipe.io import PipelineError, read_json, require_complete
from hfpipe.params import Params, read_params

if TYPE_CHECKING:
    from hfpipe.tasks.common import ClassifierTask, Task


@dataclass(frozen=True)
class ExportInputs:
    """What the export stage puts in the model card: the fetch and tokenize stats, the eval metrics."""
    data_stats: dict
    tokenize_stats: dict
    metrics: dict


def json_block(data) -> str:
    return f"```json\n{json.dumps(data, indent=2)}\n```"


def sources_of(model_dir: Path, data_stats: dict) -> dict:
    """What the model was made from on the Hub: the dataset's revision and commit (fetch stats),
    the tokenizer's and the starting model's (the train stage's provenance file)."""
    out = {}
    if "revision" in data_stats:
        out["dataset"] = {"name_or_path": data_stats.get("path"), "revision": data_stats["revision"],
                          "commit": data_stats.get("commit")}
    file = Path(model_dir) / PROVENANCE_FILE
    if file.is_file():
        out.update(json.loads(file.read_text()))
    return out


@dataclass(frozen=True)
class ModelCard:
    """What a task writes into the model card's sections."""
    pipeline_task: str
    summary: str
    usage: str
    data: str
    metrics: dict
    metrics_title: str
    limits: str


def render_model_card(params: Params, card: ModelCard, sources: dict | None = None) -> str:
    """The model card layout every task shares: front matter, summary, usage, data,
    (Hub sources: revision asked for and commit read), params, metrics, limits."""
    data = card.data
    if sources:
        data += ("\n\n### Hub sources (revision asked for, commit read; commit null: offline or not "
                 f"resolved)\n\n{json_block(sources)}")
    tags = f"dvc, {params.task}" + (", lora, peft" if params.model.peft else "")
    # quoted as JSON strings (valid YAML scalars): a name cannot add keys to the front matter
    base = f"\nbase_model: {json.dumps(params.model.name_or_path)}" if params.model.peft else ""
    return f"""---
library_name: transformers
pipeline_tag: {card.pipeline_task}
tags: [{tags}]{base}
---

# {params.task} model trained by the hfpipe DVC pipeline

{card.summary}

## How to load it

{card.usage}

## Data

{data}

## Params

{json_block(read_params(params))}

## {card.metrics_title}

{json_block(card.metrics)}

## Limits

{card.limits}
"""


def classifier_model_card(params: Params, task: ClassifierTask, inputs: ExportInputs, n_params: int,
                          label_names: list[str], sources: dict | None = None) -> str:
    """README.md for an exported classifier: labels, data, params, metrics, usage (the task
    module's), limits."""
    what, usage = task.card_usage(params, label_names)
    data = f"""{json_block(inputs.data_stats)}

Tokenization (`max_length` {inputs.tokenize_stats.get("max_length", params.tokenize.max_length)}):

{json_block(inputs.tokenize_stats)}"""
    return render_model_card(params, ModelCard(
        task.PIPELINE_TASK,
        summary=f"A {n_params / 1e6:.2f}M-parameter {what}, produced by `dvc repro` from this repository's\n"
                f"`params.yaml`. Labels: {', '.join(f'{i} = {name}' for i, name in enumerate(label_names))}.",
        usage=usage, data=data, metrics=inputs.metrics, metrics_title="Metrics",
        limits="Fine-tuned briefly on the data above; check the metrics and the predictions tables\n"
               f"(`{paths.REPORT}/`) before relying on it, and expect it to do worse on text unlike its training "
               "data."),
        sources=sources)


def export_classifier(model_dir: Path, out_dir: Path, params: Params, task: ClassifierTask,
                      inputs: ExportInputs) -> None:
    """Re-save the trained classifier (safetensors) + tokenizer + model card, then check that the
    task's pipeline loads the folder (text-classification answering with the label names, or
    gpt2-classifier's text-generation)."""
    from transformers import AutoTokenizer, pipeline

    from hfpipe.modeling import count_parameters

    if not (model_dir / "config.json").is_file():
        raise PipelineError(f"{model_dir}: no trained model (config.json missing); run the train stage first")
    model = task.auto_model_class().from_pretrained(model_dir)
    # local_files_only: saved into tokenizer_config.json, so fixed here, not taken from HF_HUB_OFFLINE
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    label_names = list(inputs.tokenize_stats.get("label_names") or inputs.data_stats.get("label_names") or [])
    if model.can_generate():  # generation pads with the tokenizer's pad token
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    card = classifier_model_card(params, task, inputs, count_parameters(model), label_names,
                                 sources_of(model_dir, inputs.data_stats))
    (out_dir / "README.md").write_text(card)
    # transformers types pipeline() by literal task names only: the task's name is a str here
    ok, out = task.pipeline_works(pipeline(task.PIPELINE_TASK, model=str(out_dir)),  # type: ignore[call-overload]
                                  label_names)
    if not ok:
        raise PipelineError(f"{out_dir}: the exported model did not load into a {task.PIPELINE_TASK} pipeline "
                            f"(got {out!r})")


@dataclass(frozen=True)
class ExportRun:
    """The export stage's inputs and outputs."""
    model_dir: Path
    data_dir: Path
    fetch_stats: Path
    tokenize_stats: Path
    eval_metrics: Path
    out_dir: Path
    metrics_file: Path


def export_onnx_into(out: Path, params: Params, task: Task, run: ExportRun) -> dict:
    """ONNX (+ int8) next to the saved model in `out`, checked on validation examples; the figures
    also go into the model card. Returns the contents of metrics/export.json."""
    if not params.export.onnx:
        return {"onnx": False}
    from hfpipe.export_onnx import card_section, export_and_check, insert_card_section

    figures = export_and_check(out, run.data_dir, task, params.export, str(run.out_dir))
    card = out / "README.md"
    card.write_text(insert_card_section(card.read_text(), card_section(figures, task)))
    return figures


# Base + adapter against the merged model: the merge changes the weights by float rounding only.
ADAPTER_TOLERANCE = 1e-4


def lora_card_section(params: Params, task: Task, figures: dict, vocab_grown: bool, export_dir: Path) -> str:
    """The model card's LoRA section: what was adapted, how much was trained, how to load the adapter."""
    from hfpipe.modeling import ADAPTER_DIR, PKG_PREFIX

    pp, name = params.model.peft, params.model.name_or_path
    assert pp is not None and name is not None  # export writes this section only for model.peft (a pretrained start)
    load_base = f'"{name}"'
    imports = ""
    if name.startswith(PKG_PREFIX):  # a pip package's model folder, found as hfpipe finds it (no import)
        from hfpipe.modeling import pkg_model_folder

        dist, folder = pkg_model_folder(name)
        imports = "from importlib.metadata import distribution\n"
        load_base = f'distribution("{dist}").locate_file("{folder}")'

    auto = task.auto_model_class().__name__
    labels = f", num_labels={figures['num_labels']}" if figures.get("num_labels") else ""
    resize = (f'\nbase.resize_token_embeddings(len(AutoTokenizer.from_pretrained("{export_dir}")))'
              '  # its added pad token' if vocab_grown else "")
    head = f"; head trained fully: {', '.join(figures['head'])}" if figures["head"] else ""
    return f"""## LoRA adapter

A LoRA fine-tune of `{name}`: rank {pp.r}, alpha {pp.alpha:g}, dropout {pp.dropout:g}, adapted modules
{', '.join(figures['target_modules'])}{head}. {figures['trainable_parameters']:,} of the model's
{figures['model_parameters']:,} parameters were trained ({figures['trainable_percent']}%).

- This folder holds the merged model: the adapter folded into the base's weights, a plain transformers
  model (it is what `pipeline(...)` and the ONNX files use).
- `adapter/` holds the adapter alone ({figures['adapter_bytes'] / 1e6:.2f} MB, peft's `save_pretrained` layout). On the
  first {figures['examples']} validation examples, the base with this adapter gives the merged model's logits
  to within {figures['adapter_max_abs_logit_diff']} (the export fails above {ADAPTER_TOLERANCE}).

```python
{imports}from peft import PeftModel
from transformers import {auto}, AutoTokenizer
base = {auto}.from_pretrained({load_base}{labels}){resize}
model = PeftModel.from_pretrained(base, "{export_dir}/{ADAPTER_DIR}")
```

"""


def export_adapter_into(out: Path, params: Params, task: Task, run: ExportRun, tokenize_stats: dict) -> dict:
    """model.peft: models/trained/adapter -> out/adapter, checked: the base model with the adapter
    loaded by PeftModel.from_pretrained must give the merged model's logits on the first
    export.check_examples validation examples. Returns the figures for metrics/export.json."""
    import shutil

    from datasets import load_from_disk
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from hfpipe.export_onnx import check_examples, insert_card_section, max_logit_difference, torch_logits
    from hfpipe.modeling import ADAPTER_DIR, classifier_head, count_parameters, load_config, lora_targets

    trained = run.model_dir / ADAPTER_DIR
    if not (trained / "adapter_config.json").is_file():
        raise PipelineError(f"{trained}: no adapter (adapter_config.json missing) though model.peft is set; "
                            f"rerun the train stage (dvc repro -f train)")
    shutil.copytree(trained, out / ADAPTER_DIR)
    tokenizer = AutoTokenizer.from_pretrained(out)
    data = load_from_disk(require_complete(run.data_dir))
    mp, peft, name = params.model, params.model.peft, params.model.name_or_path
    assert peft is not None and name is not None  # called for model.peft (a pretrained start)
    commit = sources_of(run.model_dir, {}).get("model", {}).get("commit")
    if commit:  # the Hub commit the train stage trained from
        mp = mp.model_copy(update={"revision": commit})
    base = task.build_model(mp, tokenizer, data["train"], task.sequence_length(tokenize_stats), params.seed)
    targets = lora_targets(base, peft, name)
    head = classifier_head(base) if task.HAS_CLASSIFICATION_HEAD else []
    # an added pad token (gpt2-classifier): the base must grow its embeddings before the adapter loads
    vocab_grown = len(tokenizer) > getattr(load_config(name, mp.revision), "vocab_size", len(tokenizer))
    adapted = PeftModel.from_pretrained(base, str(out / ADAPTER_DIR)).eval()
    merged = task.auto_model_class().from_pretrained(out).eval()
    batch = check_examples(run.data_dir, params.export.check_examples, tokenizer, task)
    mask = batch.inputs["attention_mask"]
    diff = max_logit_difference(torch_logits(merged, batch.inputs), torch_logits(adapted, batch.inputs), mask)
    if not diff <= ADAPTER_TOLERANCE:
        raise PipelineError(f"{run.out_dir}/{ADAPTER_DIR}: the base model {mp.name_or_path!r} with the adapter "
                            f"gives logits up to {diff:.3g} away from the merged model's "
                            f"(allowed {ADAPTER_TOLERANCE}); "
                            f"has the base model changed since training? rerun the train stage (dvc repro -f train)")
    with safe_open(str(out / ADAPTER_DIR / "adapter_model.safetensors"), "pt") as f:
        # what training changed: the adapters and the head's trained copy
        trainable = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    n_params = count_parameters(merged)
    figures = {"method": peft.method, "r": peft.r, "target_modules": targets, "head": head,
               "trainable_parameters": trainable, "model_parameters": n_params,
               "trainable_percent": round(100 * trainable / n_params, 3),
               "adapter_bytes": sum(f.stat().st_size for f in (out / ADAPTER_DIR).iterdir()),
               "adapter_max_abs_logit_diff": float(f"{diff:.3g}"), "examples": len(mask)}
    if task.HAS_CLASSIFICATION_HEAD:
        figures["num_labels"] = merged.config.num_labels
    card = out / "README.md"
    card.write_text(insert_card_section(card.read_text(), lora_card_section(params, task, figures, vocab_grown,
                                                                                 run.out_dir)))
    return figures


def run_export(params: Params, task: Task, run: ExportRun) -> list[str]:
    """The export stage: the trained model -> run.out_dir (safetensors, tokenizer, model card, checked
    with pipeline()), then ONNX (+ int8) checked against PyTorch -> run.metrics_file; returns the
    summary lines."""
    from hfpipe.io import atomic_dir, write_json_atomic

    with atomic_dir(run.out_dir) as out:
        model_dir = require_complete(run.model_dir)
        inputs = ExportInputs(read_json(run.fetch_stats), read_json(run.tokenize_stats), read_json(run.eval_metrics))
        task.export(params, model_dir, out, inputs)
        lora = export_adapter_into(out, params, task, run, inputs.tokenize_stats) if params.model.peft else None
        figures = export_onnx_into(out, params, task, run)
        if lora:
            figures["lora"] = lora
    write_json_atomic(run.metrics_file, figures)
    lines = []
    if lora:
        lines.append(f"lora: adapter ({lora['trainable_parameters']:,} trained parameters, "
                     f"{lora['trainable_percent']}%) -> {run.out_dir}/adapter; base + adapter vs merged: "
                     f"max |logit difference| {lora['adapter_max_abs_logit_diff']}")
    if figures.get("onnx"):
        lines.append(f"onnx: max |logit difference| {figures['onnx']['onnx_max_abs_logit_diff']} on "
                     f"{figures['onnx']['examples']} validation examples -> {run.out_dir}/onnx/")
    lines.append(f"exported to {run.out_dir}; load it with transformers.pipeline('{task.PIPELINE_TASK}', "
                 f"model='{run.out_dir}')")
    return lines
