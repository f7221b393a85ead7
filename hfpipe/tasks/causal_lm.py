"""The causal LM task (tutorial 04): next-token prediction on packed blocks of code.

What differs for this task: a code corpus, packed blocks of tokens, its loss (the plain next-token
loss, or tutorial 04's keytoken-weighted one), its eval numbers, its collator and its model; its
evaluation (perplexity, keytoken accuracy, greedy completions of prompts and idioms) and its export
(a text-generation pipeline).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from hfpipe import paths
from hfpipe.io import PipelineError
from hfpipe.tasks.common import LANGUAGE_MODEL_PLOTS, LoopFns, TrainingSetup
from hfpipe.tasks.names import TASK_PARAM_KEYS

if TYPE_CHECKING:
    from hfpipe.evaluate import EvaluateRun
    from hfpipe.export import ExportInputs
    from hfpipe.export_onnx import CheckBatch
    from hfpipe.params import DatasetParams, ModelParams, Params, TokenizeParams

NAME = "causal-lm"
PARAM_KEYS = TASK_PARAM_KEYS[NAME]
TOKENIZER_TEXT_COLUMN = "content"  # what a new BPE tokenizer is trained on
SEQUENCE_LENGTH_KEY = "tokenize.context_length"
PEFT_TASK_TYPE = "CAUSAL_LM"  # model.peft: peft's task type (LoRA on a pretrained start)
HAS_CLASSIFICATION_HEAD = False
PIPELINE_TASK = "text-generation"
PLOTS = LANGUAGE_MODEL_PLOTS

# Tutorial 04's four prompts, plus the one-line check that shows what a data-science code model learned.
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


def fetch(dp: DatasetParams, out_dir: Path, commit: str | None = None) -> dict:
    """A code corpus (the installed packages' files, or a Hub / local dataset) -> train/validation."""
    from hfpipe.data import fetch_code_corpus

    return fetch_code_corpus(dp, out_dir, commit)


def fetch_summary(stats: dict) -> str:
    from hfpipe.data import code_corpus_summary

    return code_corpus_summary(stats)


def prepare_tokenizer(tokenizer) -> None:
    """Nothing to add: packed blocks need no pad token."""


def tokenize(splits, tokenizer, tp: TokenizeParams, out_dir: Path) -> dict:
    """Packed blocks of tp.context_length tokens; the stats (data/stats/tokenize.json)."""
    from hfpipe.tokenize import Chunking, tokenize_and_chunk

    chunking = Chunking(TOKENIZER_TEXT_COLUMN, tp.context_length, tp.method, tp.batch_size)
    stats = tokenize_and_chunk(splits, tokenizer, chunking, out_dir, num_proc=tp.num_proc,
                               max_shard_size=tp.max_shard_size)
    # num_proc is not recorded: it changes how blocks straddling range boundaries are arranged, never
    # the counts below (the stats are sums over the processes plus the packed remainders).
    return {"method": tp.method, "context_length": tp.context_length, **stats}


def tokenize_summary(stats: dict) -> list[str]:
    return [f"{split}: {s['documents']} documents, {s['tokens']} tokens, {s['blocks']} blocks, "
            f"{s['tokens_kept_pct']:.2f}% of tokens kept"
            for split, s in stats.items() if isinstance(s, dict)]


def sequence_length(tokenize_stats: dict) -> int:
    return tokenize_stats["context_length"]


def training_keytokens(params: Params, tokenizer, log=print) -> list[int]:
    """The keytoken ids of the keytoken-weighted loss ([] when train.keytoken_alpha is 0)."""
    tp = params.train
    if tp.keytoken_alpha <= 0:
        return []
    ids, not_single = keytoken_ids(tokenizer, tp.keytokens)
    for form in not_single:  # as tutorial 04 prints them
        log(f"Keyword has not single token: {form!r}")
    if not ids:
        raise PipelineError(f"train.keytokens = {tp.keytokens!r}: none is a single token of the tokenizer "
                            f"(Keyword has not single token: {', '.join(repr(w) for w in tp.keytokens)}); the "
                            "keytoken-weighted loss (train.keytoken_alpha > 0) needs words the tokenizer keeps whole")
    return ids


def spread_sample(blocks, max_blocks: int | None):
    """`max_blocks` validation blocks spread evenly over the split (all of them if None or fewer).
    The split's first blocks would be its first two or three files: spread, they cover every file."""
    if not max_blocks or max_blocks >= len(blocks):
        return blocks
    return blocks.select([i * len(blocks) // max_blocks for i in range(max_blocks)])


def training_setup(params: Params, tokenizer, train_set, eval_set, log=print) -> TrainingSetup:
    """Packed blocks as they are (train.eval_max_blocks of them, spread, for train-time evaluation)."""
    eval_set = spread_sample(eval_set, params.train.eval_max_blocks)
    keytokens = training_keytokens(params, tokenizer, log)
    return TrainingSetup(train_set, eval_set, collator(tokenizer), loop_fns(keytokens, params.train.keytoken_alpha),
                         compute_metrics=None, preprocess_logits=None,
                         description=f"{len(train_set)} training blocks")


def build_model(mp: ModelParams, tokenizer, train_set, sequence_length: int, seed: int):
    from hfpipe.modeling import build_causal_lm

    return build_causal_lm(mp, tokenizer, sequence_length, seed)


def next_token_nll(logits, labels, reduction: str = "none"):
    """(next-token cross-entropy in float32, the targets): position i predicts token i + 1; targets
    of -100 (padding) count 0. Per position (reduction "none", shaped like the targets) or summed
    ("sum": one reduction in the kernel, as the evaluate stage adds up its blocks). The one
    definition of the loss every causal-LM number is computed from (training, train-time and stage
    evaluation, gpt2-classifier's label loss)."""
    import torch

    targets = labels[..., 1:]
    shifted = logits[..., :-1, :].float()
    nll = torch.nn.functional.cross_entropy(shifted.reshape(-1, shifted.size(-1)), targets.reshape(-1),
                                            ignore_index=-100, reduction=reduction)
    return (nll.view(targets.shape) if reduction == "none" else nll), targets


def keytoken_ids(tokenizer, keywords: list[str]) -> tuple[list[int], list[str]]:
    """Ids of the keywords (and their space-prefixed forms) that are single tokens, and the rest.

    As in tutorial 04: a keyword that is not a single token cannot be counted in an input sequence.
    """
    ids, not_single = [], []
    for word in keywords:
        for form in (word, " " + word):
            tokens = tokenizer(form, add_special_tokens=False)["input_ids"]
            if len(tokens) == 1:
                ids.append(tokens[0])
            else:
                not_single.append(form)
    return sorted(set(ids)), not_single


def keytoken_weighted_loss(labels, logits, keytoken_ids: list[int], alpha: float = 1.0):
    """Tutorial 04's keytoken-weighted causal-LM loss, with weights that leave alpha 0 = the plain loss.

    Each sequence's tokens are weighted by 1 + alpha * (number of keytokens among its labels), and
    the weighted token losses are averaged over the (non-ignored) tokens. The tutorial used
    alpha * (1 + count), which makes alpha a second learning rate and alpha 0 a zero loss.
    `labels` are the input ids with ignored positions (padding) set to -100, as collators make them.
    """
    import torch

    token_loss, shift_labels = next_token_nll(logits, labels)
    valid = (shift_labels != -100).float()
    if keytoken_ids:
        keys = torch.tensor(keytoken_ids, device=labels.device)
        counts = torch.isin(shift_labels, keys).float().sum(dim=1)
    else:
        counts = torch.zeros(labels.size(0), device=labels.device)
    weights = (1.0 + alpha * counts).unsqueeze(1)
    return (token_loss * valid * weights).sum() / valid.sum().clamp(min=1.0)


def loop_fns(keytoken_ids: list[int] | None = None, alpha: float = 0.0) -> LoopFns:
    def train_loss(batch, outputs):
        if alpha > 0:
            return keytoken_weighted_loss(batch["labels"], outputs.logits, keytoken_ids or [], alpha)
        return outputs.loss

    def eval_stats(batch, outputs):
        nll, labels = next_token_nll(outputs.logits, batch["labels"])
        return {"nll_sum": nll.sum(dim=1).double(), "tokens": (labels != -100).sum(dim=1)}

    def eval_metrics(stats):
        loss = (stats["nll_sum"].sum() / stats["tokens"].sum().clamp(min=1)).item()
        return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else float("inf")}

    return LoopFns(train_loss, eval_stats, eval_metrics)


def collator(tokenizer):
    """Packed blocks, labels = input ids (the model shifts them)."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


def auto_model_class():
    """The transformers Auto class a saved model of this task loads with."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


def causal_lm_metrics(model, blocks, keytokens: list[int], batch_size: int) -> dict:
    """Token-level metrics over every predicted position of every block (no padding in blocks)."""
    import torch
    from tqdm.auto import tqdm

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
            n_correct += int((predicted == targets).sum().item())
            is_key = torch.isin(targets, keyset)
            n_key += int(is_key.sum().item())
            n_key_correct += int(((predicted == targets) & is_key).sum().item())
    loss = total_loss / max(n_tokens, 1)
    return {
        "loss": round(loss, 6),
        "perplexity": round(math.exp(loss), 4) if loss < 700 else float("inf"),
        "accuracy": round(n_correct / max(n_tokens, 1), 6),
        "keytoken_accuracy": round(n_key_correct / n_key, 6) if n_key else None,
        "tokens": n_tokens,
        "keytoken_positions": n_key,
    }


def evaluate(params: Params, run: EvaluateRun) -> list[str]:
    """Validation metrics against the same architecture untrained; completions of SEED_PROMPTS and
    the IDIOMS -> run.metrics_file and run.report_dir/completions.md; returns the summary line."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.evaluate import completions_markdown, greedy_completions, idiom_metrics, idiom_results
    from hfpipe.io import require_complete, write_json_atomic, write_text_atomic

    tokenizer = AutoTokenizer.from_pretrained(require_complete(run.model_dir))
    model = auto_model_class().from_pretrained(run.model_dir)
    blocks = spread_sample(load_from_disk(require_complete(run.data_dir))["validation"], params.evaluate.max_blocks)
    keys, not_single = keytoken_ids(tokenizer, params.evaluate.keytokens)
    if not keys:
        raise PipelineError(f"evaluate.keytokens = {params.evaluate.keytokens!r}: none is a single token "
                            f"({', '.join(repr(k) for k in not_single)}); use words the tokenizer keeps whole")
    metrics = causal_lm_metrics(model, blocks, keys, params.evaluate.batch_size)
    # The same architecture, untrained (seeded): the reference the trained perplexity is judged against.
    torch.manual_seed(params.seed)
    untrained = causal_lm_metrics(auto_model_class().from_config(model.config), blocks, keys,
                                  params.evaluate.batch_size)
    metrics["untrained_perplexity"] = untrained["perplexity"]
    metrics["perplexity_reduction"] = round(untrained["perplexity"] / metrics["perplexity"], 4)
    completions = greedy_completions(model, tokenizer, SEED_PROMPTS, params.evaluate.max_new_tokens)
    idioms = idiom_results(model, tokenizer, IDIOMS)
    metrics.update(idiom_metrics(idioms))
    write_json_atomic(run.metrics_file, metrics)
    write_text_atomic(run.report_dir / "completions.md", completions_markdown(SEED_PROMPTS, completions, idioms))
    return [f"validation perplexity {metrics['perplexity']} (untrained {untrained['perplexity']}); idioms "
            f"{metrics['idioms_right']}/{metrics['idioms']} right; 'import pandas as' -> {completions[-1]!r}"]


def model_card(params: Params, inputs: ExportInputs, n_params: int, sources: dict | None = None) -> str:
    """README.md for the exported causal LM: what it is, the data it saw, params, metrics, usage, limits."""
    from hfpipe.export import ModelCard, json_block, render_model_card

    data_stats, chunk_stats = inputs.data_stats, inputs.tokenize_stats
    kept = {k: v for k, v in data_stats.items() if k != "documents_by_source"}
    by_source = data_stats.get("documents_by_source", {})
    source_lines = "\n".join(f"- {name}: {count} documents" for name, count in by_source.items())
    what = "GPT-2 trained from scratch" if params.model.from_scratch else params.model.name_or_path
    usage = f"""```python
from transformers import pipeline
pipe = pipeline("{PIPELINE_TASK}", model="{paths.EXPORT}")
print(pipe("import pandas as", max_new_tokens=16, do_sample=False)[0]["generated_text"])
```"""
    method = chunk_stats.get("method", params.tokenize.method)
    context = chunk_stats.get("context_length", params.tokenize.context_length)
    data = f"""{json_block(kept)}

Tokenize-and-chunk (`{method}`, context {context}):

{json_block(chunk_stats)}"""
    if source_lines:
        data += f"\n\nDocuments by source package:\n{source_lines}"
    return render_model_card(params, ModelCard(
        PIPELINE_TASK,
        summary=f"A {n_params / 1e6:.2f}M-parameter {what}\n(task `{params.task}`), produced by `dvc repro` "
                "from this repository's `params.yaml`.",
        usage=usage, data=data, metrics=inputs.metrics, metrics_title="Metrics (validation split)",
        limits="Trained on a small corpus for minutes on a CPU: it completes common idioms of the data-science\n"
               "stack (imports, DataFrame calls) and is not a general code model. Do not use its output unreviewed."),
        sources=sources)


def export(params: Params, model_dir: Path, out_dir: Path, inputs: ExportInputs) -> None:
    """Re-save the trained model and tokenizer as safetensors with a model card, then check that a
    text-generation pipeline loads the folder and generates."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from hfpipe.export import sources_of
    from hfpipe.modeling import count_parameters

    if not (model_dir / "config.json").is_file():
        raise PipelineError(f"{model_dir}: no trained model (config.json missing); run the train stage first")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    # local_files_only: saved into tokenizer_config.json, so fixed here, not taken from HF_HUB_OFFLINE
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    tokenizer.model_max_length = model.config.n_positions
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)  # safetensors is the only format in transformers v5
    tokenizer.save_pretrained(out_dir)
    card = model_card(params, inputs, count_parameters(model), sources_of(model_dir, inputs.data_stats))
    (out_dir / "README.md").write_text(card)
    generated = pipeline("text-generation", model=str(out_dir))("import pandas as", max_new_tokens=4, do_sample=False)
    if not generated or not generated[0]["generated_text"].startswith("import pandas as"):
        raise PipelineError(f"{out_dir}: the exported model did not load into a text-generation pipeline")


def check_batch(rows, inputs: dict, data, tokenizer) -> CheckBatch:
    """Blocks: no labels (the checks compare the next-token loss)."""
    from hfpipe.export_onnx import CheckBatch

    return CheckBatch(inputs)


def onnx_card_usage(m: dict, feed: str) -> tuple[str, str]:
    change = (f"loss {m['pytorch_loss']} -> {m['int8_loss']} (perplexity {m['pytorch_perplexity']} -> "
              f"{m['int8_perplexity']}, {m['int8_perplexity_change_pct']:+}%)" if "int8_loss" in m else "")
    use = 'enc = tok(["import pandas as"], return_tensors="np")\nlogits = session.run(["logits"], {' + feed + \
          '})[0]\nprint(tok.decode(int(logits[0, -1].argmax())))'
    return change, use
