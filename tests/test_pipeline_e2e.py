"""End-to-end: real `dvc` in a temporary copy of the repo, on a tiny config of the default recipe.

conftest's `tiny_default_repo` is one finished run (dvc repro, committed). The first test reads it;
every other test changes things on its own copy of it (tests.e2e.copy_run), so each starts from
the finished state and the tests pass alone and in any order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.e2e import copy_run, dvc, git, stages_run

pytestmark = pytest.mark.e2e

@pytest.fixture
def repo(tiny_default_repo, tmp_path) -> Path:
    """This test's own copy of the finished tiny run."""
    return copy_run(tiny_default_repo, tmp_path / "repo")


def test_repro_runs_every_stage_and_exports_a_loadable_model(tiny_default_repo):
    repo = tiny_default_repo  # conftest checked that its `dvc repro` ran every stage
    for path in ["data/filtered/dataset_dict.json", "models/tokenizer/tokenizer.json", "data/tokenized/dataset_dict.json",
                 "models/trained/model.safetensors", "models/export/model.safetensors", "models/export/README.md",
                 "dvclive/plots/metrics/loss.tsv", "dvclive/plots/metrics/eval/loss.tsv",
                 "metrics/report/completions.md", "models/export/onnx/model.onnx", "models/export/onnx/model.int8.onnx"]:
        assert (repo / path).exists(), path
    assert not (repo / "metrics/dvc.yaml").exists()  # the causal LM draws only dvc.yaml's plots
    onnx = json.loads((repo / "metrics/export.json").read_text())["onnx"]
    assert onnx["onnx_max_abs_logit_diff"] < 1e-3 and 0 < onnx["examples"] <= 32  # export.check_examples
    assert "int8_perplexity_change_pct" in onnx and "## ONNX (onnxruntime)" in (repo / "models/export/README.md").read_text()
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert metrics["perplexity"] < metrics["untrained_perplexity"]
    fetch = json.loads((repo / "data/stats/fetch.json").read_text())
    assert fetch["kept"] == 40 and sum(fetch["documents_by_source"].values()) == 40
    chunk = json.loads((repo / "data/stats/tokenize.json").read_text())
    assert chunk["train"]["tokens_chunked"] - chunk["train"]["tokens_in_blocks"] < 32  # <= one partial block
    from transformers import pipeline

    out = pipeline("text-generation", model=str(repo / "models/export"))("import pandas as", max_new_tokens=3)
    assert out[0]["generated_text"].startswith("import pandas as")


def test_second_repro_runs_nothing(repo):
    result = dvc(repo, "repro")
    assert "Running stage" not in result.stdout  # no stage runs on every repro
    assert dvc(repo, "status").stdout.strip() == "Data and pipelines are up to date."
    assert git(repo, "status", "--porcelain").stdout == ""


def test_onnx_export_beyond_tolerance_fails_the_stage_with_the_measured_difference(repo):
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["export"]["onnx_tolerance"] = 1e-9  # below float32 rounding: the check must refuse the export
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        _refused_export(repo)
    finally:
        (repo / "params.yaml").write_text(original)


def _refused_export(repo):
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0 and "export" in stages_run(result.stdout)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert re.fullmatch(r"error: models/export/onnx/model.onnx: ONNX logits differ from PyTorch by up to "
                        r"(\d[\d.e+-]*) on \d+ validation examples \(export.onnx_tolerance 1e-09\); .*", errors[0])
    assert not (repo / "models/export").exists()
    assert not [p for p in (repo / "models").iterdir() if ".tmp-" in p.name]


def test_bad_param_fails_with_one_line_and_leaves_no_half_written_output(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["lr"] = -1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: params.yaml")]
    assert errors == ["error: params.yaml: lr = -1: Input should be greater than 0"]
    assert "Traceback" not in result.stderr
    # refused by train, the one stage that reads lr, before it wrote anything; DVC took the last good
    # run's outputs out of the workspace before the stage ran: the model is whole in the DVC cache,
    # dvclive/ (cache: false) in git
    assert stages_run(result.stdout) == {"train"}
    assert not [p for p in (repo / "models").iterdir() if ".tmp-" in p.name]
    git(repo, "checkout", "--", ".")
    dvc(repo, "checkout")
    assert (repo / "models/trained/model.safetensors").is_file()
    assert dvc(repo, "status").stdout.strip() == "Data and pipelines are up to date."


def test_filter_that_keeps_nothing_names_the_key(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["lr"] = 0.002
    params["dataset"]["filter_keywords"] = ["zzz-no-such-keyword-zzz"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0
    assert re.search(r"^error: dataset.filter_keywords = \['zzz-no-such-keyword-zzz'\]: kept 0 of \d+ documents",
                     result.stderr, re.M)
    assert not (repo / "data/filtered").exists()
    assert not [p for p in (repo / "data").iterdir() if ".tmp-" in p.name or "scratch" in p.name]
