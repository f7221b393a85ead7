"""Classification metrics, the one rule both training (the classifier tasks' eval numbers) and the
evaluate stage compute them by."""

from __future__ import annotations


def classification_metrics(predictions, references, num_labels: int) -> dict:
    """accuracy, and F1 / precision / recall: binary (class 1 positive) for 2 labels, else macro
    (scikit-learn, as the `evaluate` metrics compute them; zero_division 0)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    predictions = [int(p) for p in predictions]
    references = [int(r) for r in references]
    average = {"average": "binary", "pos_label": 1} if num_labels == 2 else {"average": "macro",
                                                                              "labels": list(range(num_labels))}
    out = {"accuracy": float(accuracy_score(references, predictions))}
    for name, score in (("f1", f1_score), ("precision", precision_score), ("recall", recall_score)):
        out[name] = float(score(references, predictions, zero_division=0, **average))
    return {k: round(v, 6) for k, v in out.items()}
