"""The evaluate stage: models/trained on data/tokenized -> metrics/eval.json and metrics/report/.

Two procedures, one per kind of model a task trains (hfpipe.tasks: each module's KIND): a language
model's loss, perplexity, next-token and keytoken accuracy and greedy completions; a classifier's
accuracy / F1 / precision / recall per labelled split, predictions tables and confusion matrices.
What differs between the tasks of one kind comes from the task module.
"""

from __future__ import annotations

import math

from hfpipe.io import PipelineError, atomic_dir, require_complete, write_json_atomic, write_text_atomic
from hfpipe.params import Params

# Seed 04's four prompts, plus the one-line check that shows what a data-science code model learned.
SEED_PROMPTS = [
    "# create some data\nx = np.random.randn(100)\ny = np.random.randn(100)\n\n# create scatter plot with x, y\n",
    "# create some data\nx = np.random.randn(100)\ny = np.random.randn(100)\n\n# create dataframe from x and y\n",
    "# dataframe with profession, income and name\ndf = pd.DataFrame({'profession': x, 'income':y, 'name': z})\n\n"
    "# calculate the mean income per profession\n",
    "\n# import random forest regressor from scikit-learn\nfrom sklearn.ensemble import RandomForestRegressor\n\n"
    "# fit random forest model with 300 estimators on X, y:\n",
    "import pandas as",
]

# Idioms of the data-science stack and the word every codebase writes next, scored by greedy
# decoding: what a newcomer checks first. Chosen by a rule, before any model was scored on them:
# the import alias each library's own documentation uses, then the first calls of a data-science
# script. 27 of them, so that one idiom moves the score by 4 points (with 9, one corpus file moved
# it by 22). No installed file writes `import seaborn as sns` (seaborn's examples are notebooks
# outside its wheel), so the default corpus cannot teach ` sns`: a model gets it from other data.
IDIOMS = [
    ("import pandas as", " pd"),
    ("import numpy as", " np"),
    ("import matplotlib.pyplot as", " plt"),
    ("import seaborn as", " sns"),
    ("import matplotlib as", " mpl"),
    ("import pyarrow as", " pa"),
    ("import pyarrow.compute as", " pc"),
    ("import pyarrow.parquet as", " pq"),
    ("import scipy.sparse as", " sp"),
    ("import polars as", " pl"),
    ("import networkx as", " nx"),
    ("import torch.nn as", " nn"),
    ("import torch.nn.functional as", " F"),
    ("import statsmodels.api as", " sm"),
    ("import dask.dataframe as", " dd"),
    ("import dask.array as", " da"),
    ("import pandas._testing as", " tm"),
    ("import datetime as", " dt"),
    ("df = pd.", "DataFrame"),
    ("s = pd.", "Series"),
    ("from sklearn.model_selection import", " train_test_split"),
    ("X_train, X_test, y_train, y_test =", " train_test_split"),
    ("model.fit(X_train,", " y_train"),
    ("from sklearn.base import", " BaseEstimator"),
    ("fig, ax = plt.", "subplots"),
    ("df = pd.read_", "csv"),
    ("rng = np.random.", "default_rng"),
]


def idiom_is_right(completion: str, expected: str) -> bool:
    """The completion starts with the expected word, and the word ends there (" pd", not " pdf")."""
    after = completion[len(expected):len(expected) + 1]
    return completion.startswith(expected) and not (after.isalnum() or after == "_")


def idiom_results(model, tokenizer, idioms: list[tuple[str, str]] = IDIOMS) -> list[dict]:
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


def causal_lm_metrics(model, blocks, keytokens: list[int], batch_size: int) -> dict:
    """Token-level metrics over every predicted position of every block (no padding in blocks)."""
    import torch
    from tqdm.auto import tqdm

    from hfpipe.tasks.causal_lm import next_token_nll

    model.eval()
    keyset = torch.tensor(keytokens, dtype=torch.long)
    total_loss, n_tokens, n_correct, n_key, n_key_correct = 0.0, 0, 0, 0, 0
    data = blocks.with_format("torch", columns=["input_ids"])
    with torch.inference_mode():
        for start in tqdm(range(0, len(data), batch_size), desc="evaluate", unit=" batch", mininterval=1.0):
            ids = data[start: start + batch_size]["input_ids"].long()
            logits = model(input_ids=ids).logits
            loss, targets = next_token_nll(logits, ids, reduction="sum")
            predicted = logits[:, :-1, :].float().argmax(-1)
            total_loss += loss.item()
            n_tokens += targets.numel()
            n_correct += (predicted == targets).sum().item()
            is_key = torch.isin(targets, keyset)
            n_key += is_key.sum().item()
            n_key_correct += ((predicted == targets) & is_key).sum().item()
    loss = total_loss / max(n_tokens, 1)
    return {
        "loss": round(loss, 6),
        "perplexity": round(math.exp(loss), 4) if loss < 700 else float("inf"),
        "accuracy": round(n_correct / max(n_tokens, 1), 6),
        "keytoken_accuracy": round(n_key_correct / n_key, 6) if n_key else None,
        "tokens": n_tokens,
        "keytoken_positions": n_key,
    }


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
    parts = ["# Greedy completions of seed 04's prompts\n"]
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
# Classification: accuracy / F1 / precision / recall (hfpipe.tasks.common), predictions tables and
# a confusion matrix for `dvc plots`.


def predict_classifier(model, dataset, collator, batch_size: int, task: str, label_tokens: list[int] | None = None):
    """(predicted class ids, probability of the predicted class, class probabilities) for each row.

    classification: softmax over the head's logits. gpt2-classifier: softmax over the label
    tokens' logits at `label_position` (seed 05's evaluation).
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from hfpipe.tasks import TASKS

    model.eval()
    scores = TASKS[task].class_scores
    columns = [c for c in TASKS[task].model_columns(dataset) if c not in ("label", "labels")]
    probs = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(dataset), batch_size), desc="predict", unit=" batch", mininterval=1.0):
            rows = dataset[start: start + batch_size]
            batch = collator([{c: rows[c][i] for c in columns} for i in range(len(rows["input_ids"]))])
            logits = scores(model(**{c: batch[c] for c in columns}).logits.float(), rows, label_tokens)
            probs.append(torch.softmax(logits, -1).numpy())
    probs = np.concatenate(probs) if probs else np.zeros((0, 0))
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
    from pathlib import Path

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


def evaluate_classification(model, tokenizer, data, task: str, batch_size: int, report_dir,
                            label_tokens: list[int] | None = None) -> dict:
    """Metrics of the validation and (labelled) test splits; writes predictions_<split>.csv for
    every evaluated split and the confusion matrices (dvclive) into `report_dir`."""
    from pathlib import Path

    from hfpipe.tasks import TASKS
    from hfpipe.tasks.common import classification_metrics

    report_dir = Path(report_dir)
    names = data["train"].features["label"].names
    collator = TASKS[task].collator(tokenizer)
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


def evaluate_language_model(params: Params, task) -> None:
    """Validation metrics against the same architecture untrained; completions of SEED_PROMPTS."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.tasks.causal_lm import keytoken_ids, spread_sample

    tokenizer = AutoTokenizer.from_pretrained(require_complete("models/trained"))
    model = task.auto_model_class().from_pretrained("models/trained")
    blocks = spread_sample(load_from_disk(require_complete("data/tokenized"))["validation"], params.evaluate.max_blocks)
    keys, not_single = keytoken_ids(tokenizer, params.evaluate.keytokens)
    if not keys:
        raise PipelineError(f"evaluate.keytokens = {params.evaluate.keytokens!r}: none is a single token "
                            f"({', '.join(repr(k) for k in not_single)}); use words the tokenizer keeps whole")
    metrics = causal_lm_metrics(model, blocks, keys, params.evaluate.batch_size)
    # The same architecture, untrained (seeded): the reference the trained perplexity is judged against.
    torch.manual_seed(params.seed)
    untrained = causal_lm_metrics(task.auto_model_class().from_config(model.config), blocks, keys,
                                  params.evaluate.batch_size)
    metrics["untrained_perplexity"] = untrained["perplexity"]
    metrics["perplexity_reduction"] = round(untrained["perplexity"] / metrics["perplexity"], 4)
    completions = greedy_completions(model, tokenizer, SEED_PROMPTS, params.evaluate.max_new_tokens)
    idioms = idiom_results(model, tokenizer)
    metrics.update(idiom_metrics(idioms))
    write_json_atomic("metrics/eval.json", metrics)
    write_text_atomic("metrics/report/completions.md", completions_markdown(SEED_PROMPTS, completions, idioms))
    print(f"validation perplexity {metrics['perplexity']} (untrained {untrained['perplexity']}); idioms "
          f"{metrics['idioms_right']}/{metrics['idioms']} right; 'import pandas as' -> {completions[-1]!r}")


def evaluate_classifier(params: Params, task) -> None:
    """evaluate_classification of the trained classifier, with its task's class scores."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(require_complete("models/trained"))
    data = load_from_disk(require_complete("data/tokenized"))
    model = task.auto_model_class().from_pretrained("models/trained")
    tokens = task.label_tokens_of(tokenizer, data["train"])
    with atomic_dir("metrics/report") as report:
        metrics = evaluate_classification(model, tokenizer, data, params.task, params.evaluate.batch_size, report,
                                          tokens)
    write_json_atomic("metrics/eval.json", metrics)
    for split, m in metrics.items():
        print(f"{split}: accuracy {m['accuracy']}, F1 {m['f1']} ({m['examples']} examples)")


EVALUATIONS = {"language-model": evaluate_language_model, "classifier": evaluate_classifier}


def run_evaluate_stage(params: Params) -> None:
    from hfpipe.tasks import TASKS

    task = TASKS[params.task]
    EVALUATIONS[task.KIND](params, task)
