"""Export: a self-contained model folder (safetensors + tokenizer + model card) that
`transformers.pipeline(...)` loads."""

from __future__ import annotations

import json
from pathlib import Path

from hfpipe.hub import PROVENANCE_FILE
from hfpipe.io import PipelineError
from hfpipe.params import Params


def _json_block(data) -> str:
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


def render_model_card(params: Params, pipeline_task: str, summary: str, usage: str, data: str, metrics: dict,
                      metrics_title: str, limits: str, sources: dict | None = None) -> str:
    """The model card layout both kinds of model share: front matter, summary, usage, data,
    (Hub sources: revision asked for and commit read), params, metrics, limits."""
    if sources:
        data += ("\n\n### Hub sources (revision asked for, commit read; commit null: offline or not "
                 f"resolved)\n\n{_json_block(sources)}")
    return f"""---
library_name: transformers
pipeline_tag: {pipeline_task}
tags: [dvc, {params.task}]
---

# {params.task} model trained by the hfpipe DVC pipeline

{summary}

## How to load it

{usage}

## Data

{data}

## Params

{_json_block(params.model_dump())}

## {metrics_title}

{_json_block(metrics)}

## Limits

{limits}
"""


def model_card(params: Params, data_stats: dict, chunk_stats: dict, metrics: dict, n_params: int,
               pipeline_task: str, sources: dict | None = None) -> str:
    """README.md for the exported causal LM: what it is, the data it saw, params, metrics, usage, limits."""
    kept = {k: v for k, v in data_stats.items() if k != "documents_by_source"}
    sources = data_stats.get("documents_by_source", {})
    source_lines = "\n".join(f"- {name}: {count} documents" for name, count in sources.items())
    what = "GPT-2 trained from scratch" if params.model.from_scratch else params.model.name_or_path
    usage = f"""```python
from transformers import pipeline
pipe = pipeline("{pipeline_task}", model="models/export")
print(pipe("import pandas as", max_new_tokens=16, do_sample=False)[0]["generated_text"])
```"""
    data = f"""{_json_block(kept)}

Tokenize-and-chunk (`{chunk_stats.get("method", params.tokenize.method)}`, context {chunk_stats.get("context_length", params.tokenize.context_length)}):

{_json_block(chunk_stats)}"""
    if source_lines:
        data += f"\n\nDocuments by source package:\n{source_lines}"
    return render_model_card(
        params, pipeline_task,
        summary=f"A {n_params / 1e6:.2f}M-parameter {what}\n(task `{params.task}`), produced by `dvc repro` "
                "from this repository's `params.yaml`.",
        usage=usage, data=data, metrics=metrics, metrics_title="Metrics (validation split)",
        limits="Trained on a small corpus for minutes on a CPU: it completes common idioms of the data-science\n"
               "stack (imports, DataFrame calls) and is not a general code model. Do not use its output unreviewed.",
        sources=sources)


def export_causal_lm(model_dir: Path, out_dir: Path, params: Params, data_stats: dict, chunk_stats: dict,
                     metrics: dict) -> None:
    """Re-save the trained model and tokenizer as safetensors with a model card, then check that a
    text-generation pipeline loads the folder and generates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    if not (model_dir / "config.json").is_file():
        raise PipelineError(f"{model_dir}: no trained model (config.json missing); run the train stage first")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.model_max_length = model.config.n_positions
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)  # safetensors is the only format in transformers v5
    tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    card = model_card(params, data_stats, chunk_stats, metrics, n_params, "text-generation",
                      sources_of(model_dir, data_stats))
    (out_dir / "README.md").write_text(card)
    generated = pipeline("text-generation", model=str(out_dir))("import pandas as", max_new_tokens=4,
                                                                 do_sample=False)
    if not generated or not generated[0]["generated_text"].startswith("import pandas as"):
        raise PipelineError(f"{out_dir}: the exported model did not load into a text-generation pipeline")


def classifier_model_card(params: Params, data_stats: dict, tokenize_stats: dict, metrics: dict, n_params: int,
                          label_names: list[str], pipeline_task: str, sources: dict | None = None) -> str:
    """README.md for an exported classifier: labels, data, params, metrics, usage, limits."""
    if params.task == "gpt2-classifier":
        usage = f"""```python
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("models/export")
model = AutoModelForCausalLM.from_pretrained("models/export")
labels = {label_names!r}
label_tokens = [tok(name, add_special_tokens=False)["input_ids"][0] for name in labels]
ids = tok("a gripping, funny film", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
logits = model(torch.tensor([ids])).logits[0, -1, label_tokens]
print(labels[int(logits.argmax())])
```

The label is the first token of its name after the text and EOS (seed 05); compare those tokens'
logits at the EOS position."""
        what = f"causal LM ({params.model.name_or_path or 'GPT-2 from scratch'}) used as a classifier"
    else:
        example = ('{"text": "first sentence", "text_pair": "second sentence"}' if params.dataset.text_pair_column
                   else '"a sentence to classify"')
        usage = f"""```python
from transformers import pipeline
clf = pipeline("text-classification", model="models/export")
print(clf({example}))
```"""
        what = f"sequence classifier fine-tuned from {params.model.name_or_path}"
    data = f"""{_json_block(data_stats)}

Tokenization (`max_length` {tokenize_stats.get("max_length", params.tokenize.max_length)}):

{_json_block(tokenize_stats)}"""
    return render_model_card(
        params, pipeline_task,
        summary=f"A {n_params / 1e6:.2f}M-parameter {what}, produced by `dvc repro` from this repository's\n"
                f"`params.yaml`. Labels: {', '.join(f'{i} = {name}' for i, name in enumerate(label_names))}.",
        usage=usage, data=data, metrics=metrics, metrics_title="Metrics",
        limits="Fine-tuned briefly on the data above; check the metrics and the predictions tables\n"
               "(`metrics/report/`) before relying on it, and expect it to do worse on text unlike its training data.",
        sources=sources)


def export_classifier(model_dir: Path, out_dir: Path, params: Params, data_stats: dict, tokenize_stats: dict,
                      metrics: dict) -> None:
    """Re-save the trained classifier (safetensors) + tokenizer + model card, then check that a
    pipeline loads the folder: text-classification answering with the label names, or (gpt2-classifier)
    text-generation."""
    from transformers import AutoTokenizer, pipeline

    from hfpipe.export_onnx import model_class

    if not (model_dir / "config.json").is_file():
        raise PipelineError(f"{model_dir}: no trained model (config.json missing); run the train stage first")
    gpt2 = params.task == "gpt2-classifier"
    model = model_class(params.task).from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    label_names = list(tokenize_stats.get("label_names") or data_stats.get("label_names") or [])
    if gpt2:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    task = "text-generation" if gpt2 else "text-classification"
    n_params = sum(p.numel() for p in model.parameters())
    (out_dir / "README.md").write_text(classifier_model_card(params, data_stats, tokenize_stats, metrics, n_params,
                                                             label_names, task, sources_of(model_dir, data_stats)))
    pipe = pipeline(task, model=str(out_dir))
    if gpt2:
        out = pipe("a film", max_new_tokens=1, do_sample=False)
        ok = bool(out) and out[0]["generated_text"].startswith("a film")
    else:
        out = pipe("a film")
        ok = bool(out) and out[0]["label"] in label_names
    if not ok:
        raise PipelineError(f"{out_dir}: the exported model did not load into a {task} pipeline (got {out!r})")
