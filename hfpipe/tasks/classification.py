"""Sequence classification (tutorials 01-03): a model with a classification head over the text (pair).

What differs for this task: dynamic-padding batches of the tokenized examples with their label,
the head's loss and logits as the class scores, a text-classification pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hfpipe import paths
from hfpipe.tasks.common import (
    CLASSIFIER_PLOTS,
    LoopFns,
    TrainingSetup,
    classification_eval_metrics,
    classifier_check_batch,
    classifier_compute_metrics,
    classifier_evaluate,
    classifier_export,
    classifier_fetch,
    classifier_fetch_summary,
    classifier_onnx_card_usage,
    classifier_sequence_length,
    classifier_tokenize_summary,
    classifier_training_setup,
)
from hfpipe.tasks.names import TASK_PARAM_KEYS

if TYPE_CHECKING:
    from hfpipe.evaluate import EvaluateRun
    from hfpipe.export import ExportInputs
    from hfpipe.params import ModelParams, Params, TokenizeParams

NAME = "classification"
PARAM_KEYS = TASK_PARAM_KEYS[NAME]
TOKENIZER_TEXT_COLUMN = "text"
SEQUENCE_LENGTH_KEY = "tokenize.max_length"
PEFT_TASK_TYPE = "SEQ_CLS"  # model.peft: peft's task type; the fresh head is trained fully
HAS_CLASSIFICATION_HEAD = True
PIPELINE_TASK = "text-classification"
PLOTS = CLASSIFIER_PLOTS
fetch, fetch_summary = classifier_fetch, classifier_fetch_summary
tokenize_summary, sequence_length = classifier_tokenize_summary, classifier_sequence_length
check_batch, onnx_card_usage = classifier_check_batch, classifier_onnx_card_usage


def prepare_tokenizer(tokenizer) -> None:
    """Nothing to add: the pretrained tokenizer has its pad token."""


def tokenize(splits, tokenizer, tp: TokenizeParams, out_dir: Path) -> dict:
    from hfpipe.tokenize import tokenize_classification

    return tokenize_classification(splits, tokenizer, NAME, tp, out_dir)


def label_tokens_of(tokenizer, train_set) -> None:
    """No label tokens: the class scores are the head's logits."""
    return None


def training_setup(params: Params, tokenizer, train_set, eval_set, log=print) -> TrainingSetup:
    from hfpipe.tasks import classification

    return classifier_training_setup(classification, params, tokenizer, train_set, eval_set)


def evaluate(params: Params, run: EvaluateRun) -> list[str]:
    from hfpipe.tasks import classification

    return classifier_evaluate(classification, params, run)


def export(params: Params, model_dir: Path, out_dir: Path, inputs: ExportInputs) -> None:
    from hfpipe.tasks import classification

    classifier_export(classification, params, model_dir, out_dir, inputs)


def collator(tokenizer):
    """Dynamic padding (DataCollatorWithPadding, as tutorials 01-03)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def model_columns(dataset) -> list[str]:
    """The columns the model takes (texts and the like stay out of the batches)."""
    return [c for c in ["input_ids", "attention_mask", "token_type_ids", "label"] if c in dataset.column_names]


def loop_fns(num_labels: int, label_tokens=None) -> LoopFns:
    """The model's own loss; loss, accuracy, F1, precision, recall (as the Trainer backend reports them)."""

    def train_loss(batch, outputs):
        return outputs.loss

    def eval_stats(batch, outputs):
        import torch

        labels = batch["labels"]
        logits = outputs.logits.float()
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return {"loss": loss.double(), "predictions": logits.argmax(-1), "labels": labels}

    return LoopFns(train_loss, eval_stats, classification_eval_metrics(num_labels))


def compute_metrics(num_labels: int, label_tokens=None):
    return classifier_compute_metrics(num_labels)


def preprocess_logits(label_tokens=None):
    return None  # the head's logits are the class scores


def class_scores(logits, rows, label_tokens=None):
    """The class scores of a batch's logits (the head's logits)."""
    return logits


def build_model(mp: ModelParams, tokenizer, train_set, max_length: int, seed: int):
    from hfpipe.modeling import build_sequence_classifier

    return build_sequence_classifier(mp, train_set.features["label"].names, seed, pad_token_id=tokenizer.pad_token_id)


def auto_model_class():
    """The transformers Auto class a saved model of this task loads with."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


def card_usage(params: Params, label_names: list[str]) -> tuple[str, str]:
    """(what the model is, how to use it) for the model card."""
    example = ('{"text": "first sentence", "text_pair": "second sentence"}' if params.dataset.text_pair_column
               else '"a sentence to classify"')
    usage = f"""```python
from transformers import pipeline
clf = pipeline("{PIPELINE_TASK}", model="{paths.EXPORT}")
print(clf({example}))
```"""
    return f"sequence classifier fine-tuned from {params.model.name_or_path}", usage


def pipeline_works(pipe, label_names: list[str]):
    """(whether the exported folder's pipeline answers with a label name, what it answered)."""
    out = pipe("a film")
    return bool(out) and out[0]["label"] in label_names, out
