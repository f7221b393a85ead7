"""The task interface (`Task`, which every task module implements and mypy checks through
hfpipe.tasks.TASKS), and what the classification tasks share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hfpipe import paths
from hfpipe.metrics import classification_metrics

if TYPE_CHECKING:
    from hfpipe.evaluate import EvaluateRun
    from hfpipe.export import ExportInputs
    from hfpipe.export_onnx import CheckBatch
    from hfpipe.params import DatasetParams, ModelParams, Params, TokenizeParams

# Where the evaluate stage's dvclive writes a classifier's plots (confusion matrices, precision-recall
# curves: <kind>_<split>.json), and the validation split's, by the ids `dvc plots show` gives them.
SKLEARN_DIR = f"{paths.REPORT}/confusion/plots/sklearn"
CONFUSION = f"{SKLEARN_DIR}/confusion_matrix_validation.json"
PRECISION_RECALL = f"{SKLEARN_DIR}/precision_recall_validation.json"

# The plots (ids as `dvc plots show` names them) a run must have data for (test-split plots are
# optional: GLUE-style test splits are unlabelled). The root dvc.yaml draws the language model's.
LANGUAGE_MODEL_PLOTS: tuple[str, ...] = ("Loss", "Learning rate")
CLASSIFIER_PLOTS: tuple[str, ...] = ("Loss", "Learning rate", "Accuracy", CONFUSION, PRECISION_RECALL)


class Task(Protocol):
    """What a task module (hfpipe/tasks/<task>.py, listed in hfpipe.tasks.TASKS) provides, per stage.
    The stages and backends know the task only through these members."""

    NAME: str  # the params.yaml `task` value
    PARAM_KEYS: tuple[str, ...]  # the keys only some tasks read that this one reads (hfpipe.params.TASK_KEYS)
    TOKENIZER_TEXT_COLUMN: str  # tokenizer: what a new BPE learns from
    SEQUENCE_LENGTH_KEY: str  # train: the param that sets the length the model must hold
    PEFT_TASK_TYPE: str  # train: peft's task type (model.peft)
    HAS_CLASSIFICATION_HEAD: bool  # export: a fresh head LoRA trains fully (and num_labels to rebuild it)
    PIPELINE_TASK: str  # export: the transformers pipeline the exported folder loads into
    PLOTS: tuple[str, ...]  # plots: the plot ids a run must have data for

    def fetch(self, dp: DatasetParams, out_dir: Path, commit: str | None = None) -> dict:
        """fetch: the dataset -> Arrow splits in out_dir; returns the stats."""
        ...

    def fetch_summary(self, stats: dict) -> str: ...

    def prepare_tokenizer(self, tokenizer: Any) -> None: ...

    def tokenize(self, splits: Any, tokenizer: Any, tp: TokenizeParams, out_dir: Path) -> dict:
        """tokenize: examples or packed blocks in out_dir; returns the stats."""
        ...

    def tokenize_summary(self, stats: dict) -> list[str]: ...

    def sequence_length(self, tokenize_stats: dict) -> int: ...

    def training_setup(self, params: Params, tokenizer: Any, train_set: Any, eval_set: Any,
                       log: Callable = print) -> TrainingSetup:
        """train: what both backends run (columns, collator, loss and eval numbers)."""
        ...

    def build_model(self, mp: ModelParams, tokenizer: Any, train_set: Any, sequence_length: int, seed: int) -> Any: ...

    def auto_model_class(self) -> Any:
        """evaluate, export: the transformers Auto class a saved model of this task loads with."""
        ...

    def collator(self, tokenizer: Any) -> Any: ...

    def evaluate(self, params: Params, run: EvaluateRun) -> list[str]:
        """evaluate: the trained model's metrics and report; returns the summary lines."""
        ...

    def export(self, params: Params, model_dir: Path, out_dir: Path, inputs: ExportInputs) -> None:
        """export: the trained model re-saved in out_dir with a model card, checked with pipeline()."""
        ...

    def check_batch(self, rows: Any, inputs: dict, data: Any, tokenizer: Any) -> CheckBatch:
        """export: validation rows (padded `inputs`) as the ONNX and adapter checks compare them."""
        ...

    def onnx_card_usage(self, figures: dict, feed: str) -> tuple[str, str]:
        """export: (the int8 change in words, a Python snippet running the ONNX model) for the card."""
        ...


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


def classifier_training_setup(task: ClassifierTask, params: Params, tokenizer, train_set, eval_set) -> TrainingSetup:
    """A classification task's (`task`) columns, collator, loss and eval numbers."""
    names = train_set.features["label"].names
    label_tokens = task.label_tokens_of(tokenizer, train_set)
    return TrainingSetup(train_set.select_columns(task.model_columns(train_set)),
                         eval_set.select_columns(task.model_columns(eval_set)), task.collator(tokenizer),
                         task.loop_fns(len(names), label_tokens), task.compute_metrics(len(names), label_tokens),
                         task.preprocess_logits(label_tokens),
                         description=f"{len(train_set)} training examples; labels {names}")


def classifier_fetch(dp: DatasetParams, out_dir: Path, commit: str | None = None) -> dict:
    """Labelled text (pairs) -> train/validation(/test) splits."""
    from hfpipe.data import fetch_classification

    return fetch_classification(dp, out_dir, commit)


def classifier_fetch_summary(stats: dict) -> str:
    from hfpipe.data import classification_summary

    return classification_summary(stats)


def classifier_evaluate(task: ClassifierTask, params: Params, run: EvaluateRun) -> list[str]:
    from hfpipe.evaluate import evaluate_classifier

    return evaluate_classifier(params, task, run)


def classifier_export(task: ClassifierTask, params: Params, model_dir: Path, out_dir: Path,
                      inputs: ExportInputs) -> None:
    from hfpipe.export import export_classifier

    export_classifier(model_dir, out_dir, params, task, inputs)


def classifier_check_batch(rows, inputs: dict, data, tokenizer) -> CheckBatch:
    """The rows' class ids with the padded inputs (the head's logits are the class scores)."""
    import numpy as np

    from hfpipe.export_onnx import CheckBatch

    return CheckBatch(inputs, np.asarray(rows["label"], dtype=np.int64))


def classifier_onnx_card_usage(m: dict, feed: str) -> tuple[str, str]:
    change = (f"accuracy {m['pytorch_accuracy']} -> {m['int8_accuracy']}, the int8 model agrees with PyTorch "
              f"on {m['int8_prediction_agreement']:.1%} of the predictions" if "int8_accuracy" in m else "")
    use = 'enc = tok(["a gripping, funny film"], return_tensors="np")\nlogits = session.run(["logits"], {' + \
          feed + '})[0]'
    return change, use


class ClassifierTask(Task, Protocol):
    """What the classification tasks add (their shared code above reads it)."""

    def model_columns(self, dataset: Any) -> list[str]: ...

    def label_tokens_of(self, tokenizer: Any, train_set: Any) -> Any: ...

    def class_scores(self, logits: Any, rows: Any, label_tokens: Any) -> Any: ...

    def loop_fns(self, num_labels: int, label_tokens: Any) -> LoopFns: ...

    def compute_metrics(self, num_labels: int, label_tokens: Any) -> Callable: ...

    def preprocess_logits(self, label_tokens: Any) -> Callable | None: ...

    def card_usage(self, params: Params, label_names: list[str]) -> tuple[str, str]: ...

    def pipeline_works(self, pipe: Any, label_names: list[str]) -> tuple[bool, Any]: ...
