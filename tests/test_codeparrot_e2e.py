"""End-to-end: the codeparrot recipe (seed 04 at Hub scale) as written, under real dvc, offline.

Only its Hub inputs are swapped for local stand-ins of the same kind: the streamed
transformersbook/codeparrot-train becomes a local JSONL with the same `content` column (streamed
too), the course's code-search-net tokenizer a byte-level BPE trained here, and gpt2's config a
local GPT-2 config folder (the model is built from scratch from it, as the recipe does). Sizes are
shrunk to seconds: steps, batch, context, validation share, processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import synthetic_documents
from tests.e2e import dvc, make_repo_copy, stages_run

pytestmark = pytest.mark.e2e


def write_codeparrot_jsonl(path: Path, n: int) -> Path:
    """Rows shaped like transformersbook/codeparrot-train's: repo_name, path, content (synthetic code)."""
    with path.open("w") as f:
        for i, doc in enumerate(synthetic_documents(n, seed=11)):
            f.write(json.dumps({"repo_name": f"user{i % 17}/project{i % 5}", "path": f"src/module_{i}.py",
                                "content": doc}) + "\n")
    return path


def test_codeparrot_recipe_runs_end_to_end(tmp_path, standins):
    (tmp_path / "mydata").mkdir()
    write_codeparrot_jsonl(tmp_path / "mydata/codeparrot-train.jsonl", 600)
    overrides = {
        "dataset": {"path": "data/raw/mydata/codeparrot-train.jsonl", "validation_fraction": 0.1},
        "tokenizer": {"name_or_path": "models/pretrained/code-tokenizer"},
        "model": {"name_or_path": "models/pretrained/gpt2"},  # its config; weights from scratch
        "tokenize": {"context_length": 32, "num_proc": 2},
        "train": {"max_steps": 8, "batch_size": 8, "eval_batch_size": 16, "gradient_accumulation_steps": 2,
                  "warmup_ratio": 0.1, "eval_steps": 4, "logging_steps": 2, "save_steps": 4, "eval_max_blocks": 16},
        "evaluate": {"max_blocks": 16, "batch_size": 16, "max_new_tokens": 4},
        "export": {"check_examples": 8},
    }
    repo = make_repo_copy(tmp_path / "repo", "recipes/codeparrot.yaml", overrides, {
        "data/raw/mydata": tmp_path / "mydata", "models/pretrained/code-tokenizer": standins["code_tokenizer"],
        "models/pretrained/gpt2": standins["gpt2"]})
    result = dvc(repo, "repro")
    assert stages_run(result.stdout) == {"fetch", "tokenizer", "tokenize", "train", "evaluate", "export"}

    fetch = json.loads((repo / "data/stats/fetch.json").read_text())
    # streamed and keyword-filtered like the Hub dataset: only documents naming the stack are kept
    assert fetch["seen"] == 600 and 0 < fetch["kept"] < 600 and fetch["split_documents"]["validation"] > 0
    assert "revision" not in fetch  # a local file: no Hub revision to record
    tokenized = json.loads((repo / "data/stats/tokenize.json").read_text())
    assert tokenized["context_length"] == 32 and tokenized["train"]["blocks"] > 0
    from transformers import AutoTokenizer, pipeline

    trained = json.loads((repo / "models/trained/config.json").read_text())
    vocab = len(AutoTokenizer.from_pretrained(standins["code_tokenizer"]))
    # the stand-in gpt2 config's layers, the recipe's context and the loaded tokenizer's vocabulary
    assert (trained["n_positions"], trained["vocab_size"], trained["n_layer"]) == (32, vocab, 1)
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert metrics["perplexity"] < metrics["untrained_perplexity"]
    onnx = json.loads((repo / "metrics/export.json").read_text())["onnx"]
    assert onnx["onnx_max_abs_logit_diff"] < 1e-3 and onnx["examples"] == 8
    assert (repo / "models/export/onnx/model.int8.onnx").is_file()

    out = pipeline("text-generation", model=str(repo / "models/export"))("import pandas as", max_new_tokens=3,
                                                                        do_sample=False)
    assert out[0]["generated_text"].startswith("import pandas as")
