"""Export: a self-contained model folder (safetensors + tokenizer + model card) that
`transformers.pipeline(...)` loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hfpipe.hub import PROVENANCE_FILE
from hfpipe.io import PipelineError, read_json, require_complete
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
    tags = f"dvc, {params.task}" + (", lora, peft" if params.model.peft else "")
    # quoted as JSON strings (valid YAML scalars): a name cannot add keys to the front matter
    base = f"\nbase_model: {json.dumps(params.model.name_or_path)}" if params.model.peft else ""
    return f"""---
library_name: transformers
pipeline_tag: {pipeline_task}
tags: [{tags}]{base}
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
    method = chunk_stats.get("method", params.tokenize.method)
    context = chunk_stats.get("context_length", params.tokenize.context_length)
    data = f"""{_json_block(kept)}

Tokenize-and-chunk (`{method}`, context {context}):

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


def classifier_model_card(params: Params, task, data_stats: dict, tokenize_stats: dict, metrics: dict,
                          n_params: int, label_names: list[str], sources: dict | None = None) -> str:
    """README.md for an exported classifier: labels, data, params, metrics, usage (the task
    module's), limits."""
    what, usage = task.card_usage(params, label_names)
    data = f"""{_json_block(data_stats)}

Tokenization (`max_length` {tokenize_stats.get("max_length", params.tokenize.max_length)}):

{_json_block(tokenize_stats)}"""
    return render_model_card(
        params, task.PIPELINE_TASK,
        summary=f"A {n_params / 1e6:.2f}M-parameter {what}, produced by `dvc repro` from this repository's\n"
                f"`params.yaml`. Labels: {', '.join(f'{i} = {name}' for i, name in enumerate(label_names))}.",
        usage=usage, data=data, metrics=metrics, metrics_title="Metrics",
        limits="Fine-tuned briefly on the data above; check the metrics and the predictions tables\n"
               "(`metrics/report/`) before relying on it, and expect it to do worse on text unlike its training data.",
        sources=sources)


def export_classifier(model_dir: Path, out_dir: Path, params: Params, task, data_stats: dict, tokenize_stats: dict,
                      metrics: dict) -> None:
    """Re-save the trained classifier (safetensors) + tokenizer + model card, then check that the
    task's pipeline loads the folder (text-classification answering with the label names, or
    gpt2-classifier's text-generation)."""
    from transformers import AutoTokenizer, pipeline

    if not (model_dir / "config.json").is_file():
        raise PipelineError(f"{model_dir}: no trained model (config.json missing); run the train stage first")
    model = task.auto_model_class().from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    label_names = list(tokenize_stats.get("label_names") or data_stats.get("label_names") or [])
    if model.can_generate():  # generation pads with the tokenizer's pad token
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    (out_dir / "README.md").write_text(classifier_model_card(params, task, data_stats, tokenize_stats, metrics,
                                                             n_params, label_names, sources_of(model_dir, data_stats)))
    ok, out = task.pipeline_works(pipeline(task.PIPELINE_TASK, model=str(out_dir)), label_names)
    if not ok:
        raise PipelineError(f"{out_dir}: the exported model did not load into a {task.PIPELINE_TASK} pipeline "
                            f"(got {out!r})")


def export_onnx_into(out: Path, params: Params) -> dict:
    """ONNX (+ int8) next to the saved model in `out`, checked on validation examples; the figures
    also go into the model card. Returns the contents of metrics/export.json."""
    if not params.export.onnx:
        return {"onnx": False}
    from hfpipe.export_onnx import card_section, export_and_check, insert_card_section

    figures = export_and_check(out, Path("data/tokenized"), params.task, params.export.onnx_tolerance,
                               params.export.check_examples, params.export.quantize_int8, "models/export")
    card = out / "README.md"
    card.write_text(insert_card_section(card.read_text(), card_section(figures)))
    return figures


def _export_language_model(params: Params, task, out: Path) -> None:
    export_causal_lm(require_complete("models/trained"), out, params, read_json("data/stats/fetch.json"),
                     read_json("data/stats/tokenize.json"), read_json("metrics/eval.json"))


def _export_classifier(params: Params, task, out: Path) -> None:
    export_classifier(require_complete("models/trained"), out, params, task, read_json("data/stats/fetch.json"),
                      read_json("data/stats/tokenize.json"), read_json("metrics/eval.json"))


EXPORTS = {"language-model": _export_language_model, "classifier": _export_classifier}


# Base + adapter against the merged model: the merge changes the weights by float rounding only.
ADAPTER_TOLERANCE = 1e-4


def lora_card_section(params: Params, task, figures: dict, vocab_grown: bool) -> str:
    """The model card's LoRA section: what was adapted, how much was trained, how to load the adapter."""
    from hfpipe.modeling import PKG_PREFIX

    pp, name = params.model.peft, params.model.name_or_path
    load_base = f'"{name}"'
    imports = ""
    if name.startswith(PKG_PREFIX):  # a pip package's model folder, found as hfpipe finds it (no import)
        from hfpipe.modeling import pkg_model_folder

        dist, folder = pkg_model_folder(name)
        imports = "from importlib.metadata import distribution\n"
        load_base = f'distribution("{dist}").locate_file("{folder}")'

    auto = task.auto_model_class().__name__
    labels = f", num_labels={figures['num_labels']}" if figures.get("num_labels") else ""
    resize = ('\nbase.resize_token_embeddings(len(AutoTokenizer.from_pretrained("models/export")))'
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
model = PeftModel.from_pretrained(base, "models/export/adapter")
```

"""


def export_adapter_into(out: Path, params: Params, task) -> dict:
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

    trained = Path("models/trained") / ADAPTER_DIR
    if not (trained / "adapter_config.json").is_file():
        raise PipelineError(f"{trained}: no adapter (adapter_config.json missing) though model.peft is set; "
                            f"rerun the train stage (dvc repro -f train)")
    shutil.copytree(trained, out / ADAPTER_DIR)
    tokenizer = AutoTokenizer.from_pretrained(out)
    data = load_from_disk(require_complete("data/tokenized"))
    mp = params.model
    commit = sources_of(Path("models/trained"), {}).get("model", {}).get("commit")
    if commit:  # the Hub commit the train stage trained from
        mp = mp.model_copy(update={"revision": commit})
    base = task.build_model(mp, tokenizer, data["train"], task.sequence_length(read_json("data/stats/tokenize.json")),
                            params.seed)
    targets = lora_targets(base, mp.peft, mp.name_or_path)
    head = classifier_head(base) if task.PEFT_TASK_TYPE == "SEQ_CLS" else []
    # an added pad token (gpt2-classifier): the base must grow its embeddings before the adapter loads
    vocab_grown = len(tokenizer) > getattr(load_config(mp.name_or_path, mp.revision), "vocab_size", len(tokenizer))
    adapted = PeftModel.from_pretrained(base, str(out / ADAPTER_DIR)).eval()
    merged = task.auto_model_class().from_pretrained(out).eval()
    batch = check_examples(Path("data/tokenized"), params.export.check_examples, tokenizer)
    mask = batch.inputs["attention_mask"]
    diff = max_logit_difference(torch_logits(merged, batch.inputs), torch_logits(adapted, batch.inputs), mask)
    if not diff <= ADAPTER_TOLERANCE:
        raise PipelineError(f"models/export/{ADAPTER_DIR}: the base model {mp.name_or_path!r} with the adapter "
                            f"gives logits up to {diff:.3g} away from the merged model's "
                            f"(allowed {ADAPTER_TOLERANCE}); "
                            f"has the base model changed since training? rerun the train stage (dvc repro -f train)")
    with safe_open(str(out / ADAPTER_DIR / "adapter_model.safetensors"), "pt") as f:
        # what training changed: the adapters and the head's trained copy
        trainable = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    n_params = count_parameters(merged)
    figures = {"method": mp.peft.method, "r": mp.peft.r, "target_modules": targets, "head": head,
               "trainable_parameters": trainable, "model_parameters": n_params,
               "trainable_percent": round(100 * trainable / n_params, 3),
               "adapter_bytes": sum(f.stat().st_size for f in (out / ADAPTER_DIR).iterdir()),
               "adapter_max_abs_logit_diff": float(f"{diff:.3g}"), "examples": len(mask)}
    if task.PEFT_TASK_TYPE == "SEQ_CLS":
        figures["num_labels"] = merged.config.num_labels
    card = out / "README.md"
    card.write_text(insert_card_section(card.read_text(), lora_card_section(params, task, figures, vocab_grown)))
    return figures


def run_export_stage(params: Params) -> None:
    """models/trained -> models/export (safetensors, tokenizer, model card, checked with pipeline()),
    then ONNX (+ int8) checked against PyTorch -> metrics/export.json."""
    from hfpipe.io import atomic_dir, write_json_atomic
    from hfpipe.tasks import TASKS

    task = TASKS[params.task]
    with atomic_dir("models/export") as out:
        EXPORTS[task.KIND](params, task, out)
        lora = export_adapter_into(out, params, task) if params.model.peft else None
        figures = export_onnx_into(out, params)
        if lora:
            figures["lora"] = lora
    write_json_atomic("metrics/export.json", figures)
    if lora:
        print(f"lora: adapter ({lora['trainable_parameters']:,} trained parameters, {lora['trainable_percent']}%) "
              f"-> models/export/adapter; base + adapter vs merged: max |logit difference| "
              f"{lora['adapter_max_abs_logit_diff']}")
    if figures.get("onnx"):
        print(f"onnx: max |logit difference| {figures['onnx']['onnx_max_abs_logit_diff']} on "
              f"{figures['onnx']['examples']} validation examples -> models/export/onnx/")
    print(f"exported to models/export; load it with transformers.pipeline('{task.PIPELINE_TASK}', "
          f"model='models/export')")
