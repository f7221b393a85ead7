"""Evaluation: loss, perplexity, next-token and keytoken accuracy; greedy completions."""

from __future__ import annotations

import math

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
            logits = model(input_ids=ids).logits[:, :-1, :].float()
            targets = ids[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                                     reduction="sum")
            predicted = logits.argmax(-1)
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
            room = getattr(model.config, "n_positions", None)
            new_tokens = max_new_tokens
            if room is not None and enc["input_ids"].shape[1] + max_new_tokens > room:
                new_tokens = min(max_new_tokens, room - 1)
                keep = room - new_tokens
                enc = {k: v[:, -keep:] for k, v in enc.items()}
            ids = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            out.append(tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def completions_markdown(prompts: list[str], completions: list[str]) -> str:
    parts = ["# Greedy completions of seed 04's prompts\n"]
    for i, (prompt, completion) in enumerate(zip(prompts, completions), 1):
        parts.append(f"## Prompt {i}\n\n```python\n{prompt}\u2588{completion}\n```\n")
    parts.append("(\u2588 marks where the prompt ends and the model's completion begins.)\n")
    return "\n".join(parts)
