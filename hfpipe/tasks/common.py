"""What every task module provides, and what the classification tasks share.

A task module (hfpipe/tasks/<task>.py, listed in hfpipe.tasks.TASKS) has, per stage:
  TOKENIZER_TEXT_COLUMN, prepare_tokenizer(tokenizer)             tokenizer: what a new BPE learns from
  tokenize(splits, tokenizer, tp, out) -> stats, tokenize_summary   tokenize: examples or packed blocks
  SEQUENCE_LENGTH_KEY, sequence_length(tokenize_stats)            train: the length the model must hold
  training_setup(params, tokenizer, train, eval) -> TrainingSetup  train: what both backends run
  build_model(mp, tokenizer, train_set, length, seed)             train: the model
  PEFT_TASK_TYPE                                                  train: peft's task type (model.peft)
  auto_model_class()                                              evaluate, export: how to load it
  label_tokens_of(tokenizer, train_set), class_scores(logits, rows, label_tokens)
                                                                  evaluate: classifiers' class scores
  PIPELINE_TASK, card_usage(params, label_names), pipeline_works(pipe, label_names)   export
  KIND: "language-model" | "classifier"                           fetch, evaluate, export: which of their two
                                                                  procedures the task's model gets
and the pieces training_setup is made of: collator(tokenizer), model_columns(dataset), loop_fns(...)
(the Accelerate loop's loss and eval numbers), compute_metrics(...) and preprocess_logits(...) (the
Trainer's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TrainingSetup:
    """What a task gives either backend (hfpipe.train.trainer, hfpipe.train.accelerate_loop), so
    neither needs to know the task.

    train_set / eval_set: only the columns the model takes. compute_metrics / preprocess_logits:
    the Trainer's (None: its eval loss only). description: the data, for the log line.
    """
    train_set: object
    eval_set: object
    collator: object
    loop_fns: LoopFns
    compute_metrics: Callable | None
    preprocess_logits: Callable | None
    description: str


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


# ---- what the classification tasks share (their tokenization differs only in the encoding)


def classifier_tokenize_summary(stats: dict) -> list[str]:
    return [f"{split}: {s['examples']} examples, mean length {s['length_mean']}, "
            f"{100 * s['truncation_rate']:.1f}% truncated at {stats['max_length']}"
            for split, s in stats.items() if isinstance(s, dict) and "examples" in s]


def classifier_sequence_length(tokenize_stats: dict) -> int:
    return tokenize_stats["max_length"]


def classifier_training_setup(task, params, tokenizer, train_set, eval_set) -> TrainingSetup:
    """A classification task module's (`task`) columns, collator, loss and eval numbers."""
    names = train_set.features["label"].names
    label_tokens = task.label_tokens_of(tokenizer, train_set)
    return TrainingSetup(train_set.select_columns(task.model_columns(train_set)),
                         eval_set.select_columns(task.model_columns(eval_set)), task.collator(tokenizer),
                         task.loop_fns(len(names), label_tokens), task.compute_metrics(len(names), label_tokens),
                         task.preprocess_logits(label_tokens),
                         description=f"{len(train_set)} training examples; labels {names}")
