"""hfpipe.evaluate: token-level metrics against the model's own loss, greedy completions, the idiom metric."""

from __future__ import annotations

import math

import pytest
import torch

from hfpipe.evaluate import (
    completions_markdown,
    greedy_completions,
    idiom_is_right,
    idiom_metrics,
    idiom_results,
)
from hfpipe.tasks.causal_lm import SEED_PROMPTS, causal_lm_metrics, keytoken_ids

CONTEXT = 32


# --- causal_lm_metrics -------------------------------------------------------------------------------

def test_causal_lm_metrics_against_the_models_own_loss(tiny_model, tiny_tokenizer, tiny_blocks):
    keys, _ = keytoken_ids(tiny_tokenizer, ["pd", "plt", "fit", "import"])
    metrics = causal_lm_metrics(tiny_model, tiny_blocks, keys, batch_size=3)  # 3 + 3 + 2 blocks
    assert list(metrics) == ["loss", "perplexity", "accuracy", "keytoken_accuracy", "tokens", "keytoken_positions"]

    ids = torch.tensor(tiny_blocks["input_ids"][:], dtype=torch.long)
    with torch.no_grad():
        reference = tiny_model(input_ids=ids, labels=ids)
    assert metrics["loss"] == pytest.approx(reference.loss.item(), abs=1e-4)
    assert metrics["loss"] == round(metrics["loss"], 6)
    # an untrained model is close to uniform over the 350 tokens
    assert abs(metrics["loss"] - math.log(350)) < 0.5
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), abs=2e-3)
    assert metrics["perplexity"] == round(metrics["perplexity"], 4)

    targets = ids[:, 1:]
    predicted = reference.logits[:, :-1].argmax(-1)
    assert metrics["tokens"] == 8 * (CONTEXT - 1)
    assert metrics["accuracy"] == round((predicted == targets).float().mean().item(), 6)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    is_key = torch.isin(targets, torch.tensor(keys))
    assert metrics["keytoken_positions"] == int(is_key.sum()) > 0
    assert metrics["keytoken_accuracy"] == round(((predicted == targets) & is_key).sum().item() / int(is_key.sum()), 6)
    assert 0.0 <= metrics["keytoken_accuracy"] <= 1.0


def test_causal_lm_metrics_do_not_depend_on_batch_size(tiny_model, tiny_blocks):
    a = causal_lm_metrics(tiny_model, tiny_blocks, [2, 3], batch_size=1)
    b = causal_lm_metrics(tiny_model, tiny_blocks, [2, 3], batch_size=64)
    assert a["loss"] == pytest.approx(b["loss"], abs=2e-6)
    assert (a["accuracy"], a["tokens"], a["keytoken_positions"]) == (b["accuracy"], b["tokens"], b["keytoken_positions"])


def test_causal_lm_metrics_without_keytoken_positions(tiny_model, tiny_blocks):
    metrics = causal_lm_metrics(tiny_model, tiny_blocks.select(range(2)), [], batch_size=4)
    assert metrics["keytoken_accuracy"] is None and metrics["keytoken_positions"] == 0
    assert metrics["tokens"] == 2 * (CONTEXT - 1)


def test_causal_lm_metrics_perfect_model_scores_one():
    """A model that always predicts the next token of a known cycle: accuracy 1, loss ~0, perplexity ~1."""
    from datasets import Dataset

    class Cycle(torch.nn.Module):
        def forward(self, input_ids):
            logits = torch.full((*input_ids.shape, 5), -50.0)
            logits.scatter_(-1, ((input_ids + 1) % 5).unsqueeze(-1), 50.0)
            return type("Out", (), {"logits": logits})()

    blocks = Dataset.from_dict({"input_ids": [[i % 5 for i in range(s, s + 8)] for s in range(4)]})
    metrics = causal_lm_metrics(Cycle(), blocks, [3], batch_size=3)
    assert metrics["accuracy"] == 1.0 and metrics["keytoken_accuracy"] == 1.0
    assert metrics["loss"] == 0.0 and metrics["perplexity"] == 1.0
    assert metrics["tokens"] == 28
    assert metrics["keytoken_positions"] == sum(t == 3 for b in blocks["input_ids"][:] for t in b[1:])


# --- greedy_completions ---------------------------------------------------------------------------

def reference_completion(model, tokenizer, ids, max_new_tokens):
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def test_greedy_completions_deterministic_and_equal_to_greedy_generate(tiny_model, tiny_tokenizer):
    prompts = ["import pandas as", "def fit_model(data, n=3):\n"]
    first = greedy_completions(tiny_model, tiny_tokenizer, prompts, 6)
    second = greedy_completions(tiny_model, tiny_tokenizer, prompts, 6)
    assert first == second
    assert len(first) == 2 and all(isinstance(c, str) for c in first)
    for prompt, completion in zip(prompts, first, strict=True):
        ids = tiny_tokenizer(prompt)["input_ids"]
        assert completion == reference_completion(tiny_model, tiny_tokenizer, ids, 6)


def test_greedy_completions_long_prompt_keeps_the_prompts_end(tiny_model, tiny_tokenizer, synthetic_docs):
    long_prompt = "\n".join(synthetic_docs[:10])
    ids = tiny_tokenizer(long_prompt)["input_ids"]
    assert len(ids) > 4 * CONTEXT
    for max_new in (8, CONTEXT - 1, CONTEXT):
        [completion] = greedy_completions(tiny_model, tiny_tokenizer, [long_prompt], max_new)
        new = min(max_new, CONTEXT - 1)  # prompt + completion must fit the position table
        keep = CONTEXT - new
        assert completion == reference_completion(tiny_model, tiny_tokenizer, ids[-keep:], new)
    # every seed prompt works on a model with 32 positions
    assert len(greedy_completions(tiny_model, tiny_tokenizer, SEED_PROMPTS, 8)) == len(SEED_PROMPTS)


def test_greedy_completions_more_new_tokens_than_positions(tiny_model, tiny_tokenizer):
    # more new tokens than the model has positions: it generates as many as fit (CONTEXT - 1) after
    # the prompt's last token, rather than failing or overrunning the position table
    ids = tiny_tokenizer("import pandas as")["input_ids"]
    [completion] = greedy_completions(tiny_model, tiny_tokenizer, ["import pandas as"], CONTEXT + 8)
    assert completion == reference_completion(tiny_model, tiny_tokenizer, ids[-1:], CONTEXT - 1)


def test_completions_markdown():
    md = completions_markdown(["import pandas as", "x ="], [" pd", " 1"])
    assert md.startswith("# Greedy completions of tutorial 04's prompts\n")
    assert "## Prompt 1\n\n```python\nimport pandas as\u2588 pd\n```\n" in md
    assert "## Prompt 2\n\n```python\nx =\u2588 1\n```\n" in md
    assert md.rstrip().endswith("(\u2588 marks where the prompt ends and the model's completion begins.)")


# --- the idiom metric ----------------------------------------------------------------------------


def test_an_idiom_is_right_only_when_the_expected_word_comes_whole():
    assert idiom_is_right(" pd\n", " pd") and idiom_is_right(" pd", " pd") and idiom_is_right(" pd.read_csv", " pd")
    assert not idiom_is_right(" pdf", " pd") and not idiom_is_right(" pd_x", " pd")
    assert not idiom_is_right(" p", " pd") and not idiom_is_right("", " pd") and not idiom_is_right("pd", " pd")


def test_idioms_a_model_learned_are_right_and_the_others_are_not(tiny_model_params, tiny_tokenizer, one_torch_thread):
    """A tiny GPT-2 trained on two import lines (each one first in a sequence) completes them
    greedily; an idiom it never saw is wrong."""
    from hfpipe.modeling import build_causal_lm

    model = build_causal_lm(tiny_model_params, tiny_tokenizer, CONTEXT, seed=0)
    pandas, numpy = "import pandas as pd\n", "import numpy as np\n"
    ids = tiny_tokenizer([(pandas + numpy) * 4, (numpy + pandas) * 4], return_tensors="pt")["input_ids"][:, :CONTEXT]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(100):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    idioms = [("import pandas as", " pd"), ("import numpy as", " np"), ("import seaborn as", " sns")]
    results = idiom_results(model, tiny_tokenizer, idioms)
    assert [r["right"] for r in results] == [True, True, False], results
    # the completions are as long as the longest expected word's pieces, plus one to see it end
    longest = max(len(tiny_tokenizer(e, add_special_tokens=False)["input_ids"]) for _, e in idioms)
    assert [r["completion"] for r in results] == greedy_completions(model, tiny_tokenizer, [p for p, _ in idioms],
                                                                    longest + 1)
    assert idiom_metrics(results) == {"idiom_accuracy": 0.666667, "idioms_right": 2, "idioms": 3}


def test_completions_markdown_lists_the_idioms():
    idioms = [{"prompt": "import numpy as", "expected": " np", "completion": " np\nx|y", "right": True},
              {"prompt": "import seaborn as", "expected": " sns", "completion": " pd", "right": False}]
    md = completions_markdown(["x ="], [" 1"], idioms)
    assert "# Idioms: 1 of 2 right\n" in md
    assert "| `import numpy as` | ` np` | ` np\\nx\\|y` | yes |" in md
    assert "| `import seaborn as` | ` sns` | ` pd` | no |" in md
