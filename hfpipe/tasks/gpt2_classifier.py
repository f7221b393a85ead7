"""GPT-2 as a classifier (tutorial 05): a causal LM trained on `text EOS label-token`, predicting the
label token after EOS.

What differs for this task: the labels are -100 everywhere but the label token (padded with -100),
the loss is the LM loss on that token, and the class scores are the label tokens' logits at the
position that predicts it; exported as a text-generation pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hfpipe import paths
from hfpipe.io import PipelineError
from hfpipe.tasks.common import (
    CLASSIFIER_PLOTS,
    LoopFns,
    TrainingSetup,
    classification_eval_metrics,
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
    from hfpipe.export_onnx import CheckBatch
    from hfpipe.params import ModelParams, Params, TokenizeParams

NAME = "gpt2-classifier"
PARAM_KEYS = TASK_PARAM_KEYS[NAME]
TOKENIZER_TEXT_COLUMN = "text"
SEQUENCE_LENGTH_KEY = "tokenize.max_length"
PEFT_TASK_TYPE = "CAUSAL_LM"  # model.peft: the head is the LM's own output layer (tied, kept frozen)
HAS_CLASSIFICATION_HEAD = False
PIPELINE_TASK = "text-generation"
PLOTS = CLASSIFIER_PLOTS
fetch, fetch_summary = classifier_fetch, classifier_fetch_summary
tokenize_summary, sequence_length = classifier_tokenize_summary, classifier_sequence_length
onnx_card_usage = classifier_onnx_card_usage


def prepare_tokenizer(tokenizer) -> None:
    """Tutorial 05: a pad token of its own (the model's embeddings grow to match)."""
    from hfpipe.tokenize import add_pad_token

    add_pad_token(tokenizer)


def label_tokens_of(tokenizer, train_set) -> list[int]:
    """The token id of each label name, in label order (each name must be one token)."""
    return label_token_ids(tokenizer, train_set.features["label"].names)


def label_token_ids(tokenizer, label_names: list[str]) -> list[int]:
    """Tutorial 05: each label is the first token of its name; the names must start with different tokens."""
    ids = []
    for name in label_names:
        tokens = tokenizer(name, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise PipelineError(f"dataset.label_names: label {name!r} encodes to no token")
        ids.append(tokens[0])
    if len(set(ids)) < len(ids):
        shared = [n for n, i in zip(label_names, ids, strict=False) if ids.count(i) > 1]
        raise PipelineError(f"dataset.label_names = {label_names!r}: {shared} start with the same token "
                            f"{tokenizer.convert_ids_to_tokens(ids[label_names.index(shared[0])])!r}; "
                            f"choose names whose first tokens differ")
    return ids


def encode_gpt2_classifier(dataset, tokenizer, label_tokens: list[int], max_length: int, batch_size: int):
    """Tutorial 05's format: text + EOS + label token; labels are -100 everywhere but the label token.

    The text is cut to max_length - 2 tokens so EOS and the label always fit. `label_position` is
    the EOS position, whose logits predict the label. An unlabelled row (label -1) ends at EOS.
    Returns (dataset, length stats; lengths count text + EOS + label).
    """
    from hfpipe.tokenize import length_stats

    eos = tokenizer.eos_token_id
    lengths: list[int] = []
    kept = 0

    def encode(batch):
        nonlocal kept
        texts = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "label_position": []}
        for ids, label in zip(texts, batch["label"], strict=False):
            lengths.append(len(ids) + 2)
            ids = ids[: max_length - 2] + [eos]
            targets = [-100] * len(ids)
            if label >= 0:
                ids.append(label_tokens[label])
                targets.append(label_tokens[label])
            kept += len(ids)
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(targets)
            out["label_position"].append(len(ids) - (2 if label >= 0 else 1))
        return out

    encoded = dataset.map(encode, batched=True, batch_size=batch_size, desc="tokenize",
                          load_from_cache_file=False, keep_in_memory=True)  # no cache files in data/filtered
    return encoded, length_stats(lengths, max_length, kept)


def tokenize(splits, tokenizer, tp: TokenizeParams, out_dir: Path) -> dict:
    """`text EOS label-token` examples (the label token's position recorded)."""
    from hfpipe.tokenize import tokenize_classification

    tokens = label_tokens_of(tokenizer, splits["train"])

    def encode(dataset, tokenizer, max_length, batch_size):
        return encode_gpt2_classifier(dataset, tokenizer, tokens, max_length, batch_size)

    return tokenize_classification(splits, tokenizer, NAME, tp, out_dir, encode=encode,
                                   extra_stats={"label_tokens": tokenizer.convert_ids_to_tokens(tokens)})


def training_setup(params: Params, tokenizer, train_set, eval_set, log=print) -> TrainingSetup:
    from hfpipe.tasks import gpt2_classifier

    return classifier_training_setup(gpt2_classifier, params, tokenizer, train_set, eval_set)


def evaluate(params: Params, run: EvaluateRun) -> list[str]:
    from hfpipe.tasks import gpt2_classifier

    return classifier_evaluate(gpt2_classifier, params, run)


def export(params: Params, model_dir: Path, out_dir: Path, inputs: ExportInputs) -> None:
    from hfpipe.tasks import gpt2_classifier

    classifier_export(gpt2_classifier, params, model_dir, out_dir, inputs)


def check_batch(rows, inputs: dict, data, tokenizer) -> CheckBatch:
    """The rows' class ids, label positions (the EOS before the label) and label tokens."""
    import numpy as np

    from hfpipe.export_onnx import CheckBatch

    return CheckBatch(inputs, np.asarray(rows["label"], dtype=np.int64),
                      np.asarray(rows["label_position"], dtype=np.int64),
                      label_token_ids(tokenizer, list(data["train"].features["label"].names)))


def collator(tokenizer):
    """Dynamic padding of inputs and labels (labels with -100)."""
    from transformers import DataCollatorForSeq2Seq

    tokenizer.padding_side = "right"  # label_position counts from the left
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)


def model_columns(dataset) -> list[str]:
    """The columns the model takes (texts, label_position and the like stay out of the batches)."""
    return [c for c in ["input_ids", "attention_mask", "labels"] if c in dataset.column_names]


def label_classes(labels, label_tokens: list[int]):
    """The class of each row of tutorial-05 labels (-100 everywhere but the label token; a tensor);
    -1 if none. A row without a label token reads its first entry, -100, which is no label token."""
    import torch

    has = labels != -100
    label_token = labels[torch.arange(labels.size(0)), has.int().argmax(-1)]
    classes = torch.full_like(label_token, -1)
    for i, token in enumerate(label_tokens):
        classes[label_token == token] = i
    return classes


def label_classes_of_arrays(label_ids, label_tokens: list[int]):
    """label_classes of the Trainer's numpy label ids (compute_metrics)."""
    import numpy as np
    import torch

    return label_classes(torch.as_tensor(np.asarray(label_ids)), label_tokens).numpy()


def label_logits(logits, labels, label_tokens: list[int]):
    """Logits of the label tokens at the position that predicts the label (the EOS before it).

    For Trainer's preprocess_logits_for_metrics: (batch, seq, vocab) -> (batch, n_labels).
    """
    import torch

    has = labels != -100
    position = (has.int().argmax(-1) - 1).clamp(min=0)
    rows = torch.arange(logits.size(0), device=logits.device)
    return logits[rows, position][:, label_tokens]


def class_scores(logits, rows, label_tokens: list[int]):
    """The class scores of a batch of a tokenized split's rows: the label tokens' logits at each
    row's `label_position` (the EOS before the label)."""
    import torch

    position = torch.tensor(rows["label_position"])
    return logits[torch.arange(len(position)), position][:, label_tokens]


def loop_fns(num_labels: int, label_tokens: list[int]) -> LoopFns:
    """The LM loss on the label token; the prediction is the argmax over the label tokens' logits."""
    from hfpipe.tasks.causal_lm import next_token_nll

    def train_loss(batch, outputs):
        return outputs.loss

    def eval_stats(batch, outputs):
        labels = batch["labels"]
        nll, targets = next_token_nll(outputs.logits, labels)
        loss = nll.sum(1) / (targets != -100).sum(1).clamp(min=1)
        classes = label_classes(labels, label_tokens)
        predictions = label_logits(outputs.logits, labels, label_tokens).argmax(-1)
        return {"loss": loss.double(), "predictions": predictions, "labels": classes}

    return LoopFns(train_loss, eval_stats, classification_eval_metrics(num_labels))


def compute_metrics(num_labels: int, label_tokens: list[int]):
    from functools import partial

    classes_of = partial(label_classes_of_arrays, label_tokens=label_tokens)
    return classifier_compute_metrics(num_labels, classes_of=classes_of)


def preprocess_logits(label_tokens: list[int]):
    """Trainer preprocess_logits_for_metrics: only the label tokens' logits are kept."""
    from functools import partial

    return partial(label_logits, label_tokens=label_tokens)


def build_model(mp: ModelParams, tokenizer, train_set, max_length: int, seed: int):
    """A causal LM whose embeddings cover the tokenizer (its added pad token), n_positions >= max_length."""
    from hfpipe.modeling import build_causal_lm, enable_gradient_checkpointing

    model = build_causal_lm(mp, tokenizer, max_length, seed)
    enable_gradient_checkpointing(model, mp.gradient_checkpointing)
    return model


def auto_model_class():
    """The transformers Auto class a saved model of this task loads with (a causal LM)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def card_usage(params: Params, label_names: list[str]) -> tuple[str, str]:
    """(what the model is, how to use it) for the model card."""
    usage = f"""```python
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("{paths.EXPORT}")
model = AutoModelForCausalLM.from_pretrained("{paths.EXPORT}")
labels = {label_names!r}
label_tokens = [tok(name, add_special_tokens=False)["input_ids"][0] for name in labels]
ids = tok("a gripping, funny film", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
logits = model(torch.tensor([ids])).logits[0, -1, label_tokens]
print(labels[int(logits.argmax())])
```

The label is the first token of its name after the text and EOS (tutorial 05); compare those tokens'
logits at the EOS position."""
    return f"causal LM ({params.model.name_or_path or 'GPT-2 from scratch'}) used as a classifier", usage


def pipeline_works(pipe, label_names: list[str]):
    """(whether the exported folder's text-generation pipeline continues a prompt, what it made)."""
    out = pipe("a film", max_new_tokens=1, do_sample=False)
    return bool(out) and out[0]["generated_text"].startswith("a film"), out
