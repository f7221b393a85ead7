"""The evaluate stage: models/trained on data/tokenized -> metrics/eval.json and metrics/report/.

The task's `evaluate` runs it (hfpipe.tasks), from the pieces here: a language model's loss,
perplexity, next-token and keytoken accuracy and greedy completions; a classifier's accuracy / F1 /
precision / recall per labelled split, predictions tables and confusion matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hfpipe.io import atomic_dir, require_complete, write_json_atomic
from hfpipe.params import Params

if TYPE_CHECKING:
    from hfpipe.tasks.common import ClassifierTask, Task


@dataclass(frozen=True)
class EvaluateRun:
    """The evaluate stage's inputs and outputs."""
    model_dir: Path
    data_dir: Path
    metrics_file: Path
    report_dir: Path

def idiom_is_right(completion: str, expected: str) -> bool:
    """The completion starts with the expected word, and the word ends there (" pd", not " pdf")."""
    after = completion[len(expected):len(expected) + 1]
    return completion.startswith(expected) and not (after.isalnum() or after == "_")


def idiom_results(model, tokenizer, idioms: list[tuple[str, str]]) -> list[dict]:
    """Each idiom's prompt, expected word, greedy completion and whether it is right."""
    # room for the longest expected word in this tokenizer's pieces, and one token more to see it end
    new_tokens = 1 + max(len(tokenizer(expected, add_special_tokens=False)["input_ids"]) for _, expected in idioms)
    completions = greedy_completions(model, tokenizer, [prompt for prompt, _ in idioms], new_tokens)
    return [{"prompt": prompt, "expected": expected, "completion": completion,
             "right": idiom_is_right(completion, expected)}
            for (prompt, expected), completion in zip(idioms, completions, strict=False)]


def idiom_metrics(results: list[dict]) -> dict:
    right = sum(r["right"] for r in results)
    return {"idiom_accuracy": round(right / len(results), 6), "idioms_right": right, "idioms": len(results)}


def greedy_completions(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            enc = tokenizer(prompt, return_tensors="pt")
            # Keep the prompt's end when prompt + completion would exceed the model's positions.
            # (n_positions: GPT-2's name for it; other causal LMs call it max_position_embeddings)
            room = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
            new_tokens = max_new_tokens
            if room is not None and enc["input_ids"].shape[1] + max_new_tokens > room:
                new_tokens = min(max_new_tokens, room - 1)
                keep = room - new_tokens
                enc = {k: v[:, -keep:] for k, v in enc.items()}
            ids = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            out.append(tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def completions_markdown(prompts: list[str], completions: list[str], idioms: list[dict] | None = None) -> str:
    parts = ["# Greedy completions of tutorial 04's prompts\n"]
    for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=False), 1):
        parts.append(f"## Prompt {i}\n\n```python\n{prompt}\u2588{completion}\n```\n")
    parts.append("(\u2588 marks where the prompt ends and the model's completion begins.)\n")
    if idioms:
        right = sum(r["right"] for r in idioms)
        parts.append(f"# Idioms: {right} of {len(idioms)} right\n")
        parts.append("| prompt | expected | greedy completion | right |\n|---|---|---|---|")
        for r in idioms:
            cell = r["completion"].replace("\n", "\\n").replace("|", "\\|")
            parts.append(f"| `{r['prompt']}` | `{r['expected']}` | `{cell}` | {'yes' if r['right'] else 'no'} |")
        parts.append("")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Classification: accuracy / F1 / precision / recall, predictions tables and a confusion matrix for
# `dvc plots`.


def predict_classifier(model, dataset, collator, batch_size: int, task: ClassifierTask,
                       label_tokens: list[int] | None = None):
    """(predicted class ids, probability of the predicted class, class probabilities) for each row:
    the softmax over the task's class scores (classification: the head's logits; gpt2-classifier:
    the label tokens' logits at `label_position`, tutorial 05's evaluation).
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    model.eval()
    scores = task.class_scores
    columns = [c for c in task.model_columns(dataset) if c not in ("label", "labels")]
    batch_probs = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(dataset), batch_size), desc="predict", unit=" batch", mininterval=1.0):
            rows = dataset[start: start + batch_size]
            batch = collator([{c: rows[c][i] for c in columns} for i in range(len(rows["input_ids"]))])
            logits = scores(model(**{c: batch[c] for c in columns}).logits.float(), rows, label_tokens)
            batch_probs.append(torch.softmax(logits, -1).numpy())
    probs = np.concatenate(batch_probs) if batch_probs else np.zeros((0, 0))
    predictions = probs.argmax(-1)
    return predictions, probs[np.arange(len(predictions)), predictions], probs


def predictions_table(dataset, predictions, probability, label_names: list[str]):
    """A pandas DataFrame: text (, text_pair), label, prediction, probability (of the prediction)."""
    import pandas as pd

    table = {"text": dataset["text"]}
    if "text_pair" in dataset.column_names:
        table["text_pair"] = dataset["text_pair"]
    table["label"] = [label_names[i] if i >= 0 else None for i in dataset["label"]]
    table["prediction"] = [label_names[int(i)] for i in predictions]
    table["probability"] = [round(float(p), 6) for p in probability]
    return pd.DataFrame(table)


def log_confusion_matrices(live_dir, splits: dict[str, tuple[list[int], list[int]]], label_names: list[str],
                           scores: dict[str, tuple[list[int], list[float]]] | None = None) -> None:
    """dvclive confusion matrices, one per split (`{live_dir}/plots/sklearn/confusion_matrix_{split}.json`,
    with label names), for `dvc plots`. One Live session: a new one would clear the folder.

    `scores` (binary tasks): per split, the labels and the probability of label 1; each becomes a
    precision-recall curve (`precision_recall_{split}.json`, label 1 as the positive class)."""
    from dvclive import Live

    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        for split, (labels, predictions) in splits.items():
            live.log_sklearn_plot("confusion_matrix", [label_names[int(i)] for i in labels],
                                  [label_names[int(i)] for i in predictions], name=f"confusion_matrix_{split}",
                                  title=f"Confusion matrix ({split})", x_label="label", y_label="prediction")
        for split, (labels, positive) in (scores or {}).items():
            live.log_sklearn_plot("precision_recall", [int(i) for i in labels], [float(p) for p in positive],
                                  name=f"precision_recall_{split}",
                                  title=f"Precision-recall ({split}, positive: {label_names[1]})")
    empty_summary = Path(live_dir) / "metrics.json"  # dvclive's summary, empty here: not a metrics file
    if empty_summary.is_file() and empty_summary.read_text().strip() == "{}":
        empty_summary.unlink()


def evaluate_classification(model, tokenizer, data, task: ClassifierTask, batch_size: int, report_dir,
                            label_tokens: list[int] | None = None) -> dict:
    """Metrics of the validation and (labelled) test splits; writes predictions_<split>.csv for
    every evaluated split and the confusion matrices (dvclive) into `report_dir`."""
    from hfpipe.metrics import classification_metrics

    report_dir = Path(report_dir)
    names = data["train"].features["label"].names
    collator = task.collator(tokenizer)
    metrics: dict = {}
    confusion = {}
    scores: dict = {}
    for split in ("validation", "test"):
        if split not in data:
            continue
        ds = data[split]
        predictions, probability, probs = predict_classifier(model, ds, collator, batch_size, task, label_tokens)
        predictions_table(ds, predictions, probability, names).to_csv(report_dir / f"predictions_{split}.csv",
                                                                     index=False)
        labels = ds["label"]
        if min(labels) >= 0:  # GLUE-style test splits are unlabelled (-1): predictions only
            metrics[split] = {**classification_metrics(predictions, labels, len(names)), "examples": len(ds)}
            confusion[split] = (labels, predictions.tolist())
            if len(names) == 2:  # a precision-recall curve needs a positive class
                scores[split] = (labels, probs[:, 1].tolist())
    log_confusion_matrices(report_dir / "confusion", confusion, names, scores)
    return metrics


def evaluate_classifier(params: Params, task: ClassifierTask, run: EvaluateRun) -> list[str]:
    """evaluate_classification of the trained classifier, with its task's class scores; returns the
    summary lines."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(require_complete(run.model_dir))
    data = load_from_disk(require_complete(run.data_dir))
    model = task.auto_model_class().from_pretrained(run.model_dir)
    tokens = task.label_tokens_of(tokenizer, data["train"])
    with atomic_dir(run.report_dir) as report:
        metrics = evaluate_classification(model, tokenizer, data, task, params.evaluate.batch_size, report, tokens)
    write_json_atomic(run.metrics_file, metrics)
    return [f"{split}: accuracy {m['accuracy']}, F1 {m['f1']} ({m['examples']} examples)"
            for split, m in metrics.items()]


def run_evaluate(params: Params, task: Task, model_dir: Path, data_dir: Path, metrics_file: Path,
                 report_dir: Path) -> list[str]:
    """The evaluate stage: the task's evaluation of the trained model; returns the summary lines."""
    return task.evaluate(params, EvaluateRun(model_dir, data_dir, metrics_file, report_dir))
