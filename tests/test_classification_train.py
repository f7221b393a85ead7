"""Classification training: TrainingArguments from params, and a tiny GPT-2 classifier (seed 05) that learns."""

from __future__ import annotations

import random

import pytest

from hfpipe.params import parse_params

GOOD, BAD = ["great", "fine", "superb", "lovely"], ["awful", "dull", "poor", "bad"]


def _params(**train):
    return parse_params({"task": "gpt2-classifier", "lr": 0.01, "seed": 1,
                         "dataset": {"source": "load_dataset", "path": "x", "text_column": "text", "label_column": "label"},
                         "model": {"n_layer": 1, "n_head": 2, "n_embd": 32},
                         "tokenize": {"max_length": 16},
                         "train": {"max_steps": 60, "batch_size": 16, "eval_steps": 30, "logging_steps": 10,
                                   "warmup_ratio": 0.0, "lr_scheduler": "linear", **train}})


def test_classification_overrides_keep_best_checkpoints(tmp_path):
    from hfpipe.train import classification_overrides, training_arguments

    p = _params(load_best_model_at_end=True, metric_for_best_model="f1", eval_steps=20)
    args = training_arguments(p, tmp_path, **classification_overrides(p))
    assert (args.eval_strategy, args.save_strategy, args.save_steps) == ("steps", "steps", 20)
    assert args.load_best_model_at_end and args.metric_for_best_model == "f1" and args.greater_is_better
    p = _params(eval_strategy="epoch")
    args = training_arguments(p, tmp_path, **classification_overrides(p))
    assert args.eval_strategy == "epoch" and args.save_strategy == "no" and not args.load_best_model_at_end
    p = _params(load_best_model_at_end=True, metric_for_best_model="loss")
    assert classification_overrides(p)["greater_is_better"] is False


def test_tiny_gpt2_classifier_learns_and_both_evaluations_agree(tiny_tokenizer, tmp_path, one_torch_thread):
    import copy

    from datasets import ClassLabel, Dataset, Features, Value

    from hfpipe.evaluate import evaluate_classification
    from hfpipe.tokenize import add_pad_token, encode_gpt2_classifier, label_token_ids
    from hfpipe.train import build_classification_model, train_classifier

    rng = random.Random(0)
    rows = [(f"the {rng.choice(['film', 'plot', 'cast'])} was {rng.choice(GOOD if y else BAD)}", y)
            for y in [rng.randrange(2) for _ in range(240)]]
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    tokenizer = copy.deepcopy(tiny_tokenizer)
    add_pad_token(tokenizer)
    tokens = label_token_ids(tokenizer, ["neg", "pos"])
    data = {}
    for split, part in (("train", rows[:180]), ("validation", rows[180:])):
        ds = Dataset.from_dict({"text": [t for t, _ in part], "label": [y for _, y in part]}, features=feats)
        data[split], _ = encode_gpt2_classifier(ds, tokenizer, tokens, 16, 100)
    params = _params()
    model = build_classification_model(params, tokenizer, ["neg", "pos"])
    assert model.config.n_positions == 16 and model.get_input_embeddings().num_embeddings == len(tokenizer)
    trainer = train_classifier(params, model, tokenizer, data["train"], data["validation"], tmp_path / "work",
                               tokens, live_dir=tmp_path / "live")
    train_eval = [h for h in trainer.state.log_history if "eval_accuracy" in h][-1]
    (tmp_path / "report").mkdir()
    metrics = evaluate_classification(trainer.model, tokenizer, data, "gpt2-classifier", 7, tmp_path / "report", tokens)
    assert metrics["validation"]["accuracy"] >= 0.9
    assert train_eval["eval_accuracy"] == pytest.approx(metrics["validation"]["accuracy"], abs=1e-6)
    assert train_eval["eval_f1"] == pytest.approx(metrics["validation"]["f1"], abs=1e-6)


def test_dvc_yaml_classification_plots_read_files_that_training_and_evaluation_write(tiny_tokenizer, tmp_path,
                                                                                    one_torch_thread):
    """The Accuracy plot reads dvclive files a classifier's training writes; the confusion plots
    read the files evaluate_classification writes under metrics/report/."""
    import copy
    from pathlib import Path

    import yaml
    from datasets import ClassLabel, Dataset, Features, Value

    from hfpipe.evaluate import evaluate_classification
    from hfpipe.tokenize import add_pad_token, encode_gpt2_classifier, label_token_ids
    from hfpipe.train import build_classification_model, train_classifier

    tokenizer = copy.deepcopy(tiny_tokenizer)
    add_pad_token(tokenizer)
    tokens = label_token_ids(tokenizer, ["neg", "pos"])
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    data = {}
    for split, n in (("train", 32), ("validation", 8), ("test", 8)):
        ds = Dataset.from_dict({"text": [f"x = {i}" for i in range(n)], "label": [i % 2 for i in range(n)]},
                               features=feats)
        data[split], _ = encode_gpt2_classifier(ds, tokenizer, tokens, 16, 100)
    params = _params(max_steps=6, eval_steps=2, logging_steps=2)
    model = build_classification_model(params, tokenizer, ["neg", "pos"])
    train_classifier(params, model, tokenizer, data["train"], data["validation"], tmp_path / "work", tokens,
                     live_dir=tmp_path / "dvclive")
    report = tmp_path / "metrics/report"
    report.mkdir(parents=True)
    evaluate_classification(model, tokenizer, data, "gpt2-classifier", 8, report, tokens)
    plots = {name: spec for plot in yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["plots"]
             for name, spec in plot.items()}
    for path, column in plots["Accuracy"]["y"].items():
        rows = (tmp_path / path).read_text().splitlines()
        assert rows[0].split("\t") == ["step", column] and [r.split("\t")[0] for r in rows[1:]] == ["2", "4", "6"]
    confusion = [name for name in plots if name.startswith("metrics/report/") and "confusion_matrix" in name]
    assert len(confusion) == 2
    for name in confusion:
        assert plots[name]["template"] == "confusion"
        rows = __import__("json").loads((tmp_path / name).read_text())
        assert len(rows) == 8 and set(rows[0]) == {plots[name]["x"], plots[name]["y"]}
    curves = [name for name in plots if name.startswith("metrics/report/") and "precision_recall" in name]
    assert len(curves) == 2  # binary task: a precision-recall curve per labelled split
    for name in curves:
        points = __import__("json").loads((tmp_path / name).read_text())["precision_recall"]
        assert points and set(points[0]) >= {plots[name]["x"], plots[name]["y"]}
