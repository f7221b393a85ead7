"""hfpipe.tasks.common: the classification metrics (scikit-learn), from predictions and from the
Accelerate loop's gathered stats."""

from __future__ import annotations

import numpy as np
import pytest

from hfpipe.metrics import classification_metrics


def test_classification_metrics_from_gathered_stats():
    import torch

    from hfpipe.tasks import classification

    task = classification.loop_fns(num_labels=2)
    stats = {"loss": torch.tensor([0.5, 1.5, 1.0, 1.0], dtype=torch.float64),
             "predictions": torch.tensor([1, 1, 0, 0]), "labels": torch.tensor([1, 0, 0, 1])}
    m = task.eval_metrics(stats)
    assert m["accuracy"] == 0.5 and m["loss"] == 1.0
    assert m["f1"] == pytest.approx(0.5) and m["precision"] == pytest.approx(0.5)  # class 1: tp 1, fp 1, fn 1


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
