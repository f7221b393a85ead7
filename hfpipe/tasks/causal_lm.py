"""The causal LM task (seed 04): next-token prediction on packed blocks of code.

What differs for this task: its loss (the plain next-token loss, or seed 04's keytoken-weighted
one), its eval numbers, its collator and its model.
"""

from __future__ import annotations

import math

from hfpipe.tasks.common import LoopFns


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
