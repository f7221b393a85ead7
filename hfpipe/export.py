"""Export: a self-contained model folder (safetensors + tokenizer + model card) that
`transformers.pipeline(...)` loads."""

from __future__ import annotations

import json
from pathlib import Path

from hfpipe.io import PipelineError
from hfpipe.params import Params


def model_card(params: Params, data_stats: dict, chunk_stats: dict, metrics: dict, n_params: int,
               pipeline_task: str) -> str:
    """README.md for the exported model: what it is, the data it saw, params, metrics, usage, limits."""
    kept = {k: v for k, v in data_stats.items() if k != "documents_by_source"}
    sources = data_stats.get("documents_by_source", {})
    source_lines = "\n".join(f"- {name}: {count} documents" for name, count in sources.items())
    return f"""---
library_name: transformers
pipeline_tag: {pipeline_task}
tags: [dvc, {params.task}]
---

# {params.task} model trained by the hfpipe DVC pipeline

A {n_params / 1e6:.2f}M-parameter {"GPT-2 trained from scratch" if params.model.from_scratch else params.model.name_or_path}
(task `{params.task}`), produced by `dvc repro` from this repository's `params.yaml`.

## How to load it

```python
from transformers import pipeline
pipe = pipeline("{pipeline_task}", model="models/export")
print(pipe("import pandas as", max_new_tokens=16, do_sample=False)[0]["generated_text"])
```

## Data

```json
{json.dumps(kept, indent=2)}
```

Tokenize-and-chunk (`{params.tokenize.method}`, context {params.tokenize.context_length}):

```json
{json.dumps(chunk_stats, indent=2)}
```

{"Documents by source package:" if source_lines else ""}
{source_lines}

## Params

```json
{json.dumps(params.model_dump(), indent=2)}
```

## Metrics (validation split)

```json
{json.dumps(metrics, indent=2)}
```

## Limits

Trained on a small corpus for minutes on a CPU: it completes common idioms of the data-science
stack (imports, DataFrame calls) and is not a general code model. Do not use its output unreviewed.
"""


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
    card = model_card(params, data_stats, chunk_stats, metrics, n_params, "text-generation")
    (out_dir / "README.md").write_text(card)
    generated = pipeline("text-generation", model=str(out_dir))("import pandas as", max_new_tokens=4,
                                                                 do_sample=False)
    if not generated or not generated[0]["generated_text"].startswith("import pandas as"):
        raise PipelineError(f"{out_dir}: the exported model did not load into a text-generation pipeline")
