"""What every task module provides, and what the classification tasks share.

A task module (hfpipe/tasks/<task>.py, listed in hfpipe.tasks.TASKS) has:
  collator(tokenizer)            batches of its tokenized examples
  model_columns(dataset)         the columns the model takes (classification tasks)
  loop_fns(...) -> LoopFns       the Accelerate loop's loss and eval numbers
  compute_metrics(...)           the Trainer's eval numbers (classification tasks)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class LoopFns:
    """What the Accelerate loop needs to know about a task.

    train_loss(batch, outputs) -> scalar loss tensor to minimise.
    eval_stats(batch, outputs) -> dict of per-example tensors (gathered across processes).
    eval_metrics(stats) -> dict of numbers (logged as eval/<name>), computed from all gathered stats.
    """
    train_loss: Callable
    eval_stats: Callable
    eval_metrics: Callable


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


def classification_eval_metrics(num_labels: int) -> Callable:
    """LoopFns.eval_metrics of the classification tasks: mean loss and classification_metrics."""

    def eval_metrics(stats):
        metrics = classification_metrics(stats["predictions"].tolist(), stats["labels"].tolist(), num_labels)
        return {"loss": stats["loss"].mean().item(), **metrics}

    return eval_metrics


def classifier_compute_metrics(num_labels: int, classes_of=None):
    """Trainer compute_metrics: accuracy/F1/precision/recall of the argmax over the class scores;
    `classes_of(label_ids)` reads the classes from the labels when they are not the classes."""
    import numpy as np

    def compute(eval_pred) -> dict:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        labels = eval_pred.label_ids if classes_of is None else classes_of(eval_pred.label_ids)
        return classification_metrics(np.argmax(logits, -1), labels, num_labels)

    return compute
