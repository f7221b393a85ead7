"""The causal LM task (seed 04): next-token prediction on packed blocks of code.

What differs for this task: packed blocks of tokens, its
loss (the plain next-token loss, or seed 04's keytoken-weighted one), its eval numbers, its
collator and its model; evaluate and export run their language-model procedures.
"""

from __future__ import annotations

import math
from pathlib import Path

from hfpipe.params import ModelParams, Params, TokenizeParams
from hfpipe.tasks.common import LoopFns, TrainingSetup

KIND = "language-model"
TOKENIZER_TEXT_COLUMN = "content"  # what a new BPE tokenizer is trained on
SEQUENCE_LENGTH_KEY = "tokenize.context_length"
PEFT_TASK_TYPE = "CAUSAL_LM"  # model.peft: peft's task type (LoRA on a pretrained start)
PIPELINE_TASK = "text-generation"


def prepare_tokenizer(tokenizer) -> None:
    """Nothing to add: packed blocks need no pad token."""


def tokenize(splits, tokenizer, tp: TokenizeParams, out_dir: Path) -> dict:
    """Packed blocks of tp.context_length tokens; the stats (data/stats/tokenize.json)."""
    from hfpipe.tokenize import tokenize_and_chunk

    stats = tokenize_and_chunk(splits, tokenizer, tp.context_length, tp.method, tp.batch_size, out_dir,
                               num_proc=tp.num_proc, max_shard_size=tp.max_shard_size)
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
    from hfpipe.io import PipelineError

    tp = params.train
    if tp.keytoken_alpha <= 0:
        return []
    ids, not_single = keytoken_ids(tokenizer, tp.keytokens)
    for form in not_single:  # as seed 04 prints them
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

    As in seed 04: a keyword that is not a single token cannot be counted in an input sequence.
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
    """Seed 04's keytoken-weighted causal-LM loss, with weights that leave alpha 0 = the plain loss.

    Each sequence's tokens are weighted by 1 + alpha * (number of keytokens among its labels), and
    the weighted token losses are averaged over the (non-ignored) tokens. The seed used
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
