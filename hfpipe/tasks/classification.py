"""Sequence classification (seeds 01-03): a model with a classification head over the text (pair).

What differs for this task: dynamic-padding batches of the tokenized examples with their label,
the head's loss and logits as the class scores.
"""

from __future__ import annotations

from hfpipe.params import ModelParams
from hfpipe.tasks.common import LoopFns, classification_eval_metrics, classifier_compute_metrics


def collator(tokenizer):
    """Dynamic padding (DataCollatorWithPadding, as seeds 01-03)."""
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


def build_model(mp: ModelParams, tokenizer, label_names: list[str], max_length: int, seed: int):
    from hfpipe.modeling import build_sequence_classifier

    return build_sequence_classifier(mp, label_names, seed, pad_token_id=tokenizer.pad_token_id)


def auto_model_class():
    """The transformers Auto class a saved model of this task loads with."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification
