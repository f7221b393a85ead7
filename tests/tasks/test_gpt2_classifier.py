"""hfpipe.tasks.gpt2_classifier: label-token logits at the label position, the classes of
tutorial-05 labels, the Accelerate loop's eval numbers."""

from __future__ import annotations

import numpy as np
import pytest

from hfpipe.tasks.gpt2_classifier import label_classes_of_arrays as gpt2_label_classes
from hfpipe.tasks.gpt2_classifier import label_logits as gpt2_label_logits


def test_gpt2_classifier_eval_reads_the_label_token():
    from types import SimpleNamespace

    import torch

    from hfpipe.tasks import gpt2_classifier

    label_tokens = [7, 9]  # class 0 -> token 7, class 1 -> token 9
    labels = torch.tensor([[-100, -100, 9, -100], [-100, 7, -100, -100]])
    logits = torch.zeros(2, 4, 12)
    logits[0, 1, 9] = 5.0  # row 0: position 1 predicts the label at 2; says token 9 (class 1): right
    logits[1, 0, 9] = 5.0  # row 1: position 0 predicts the label at 1; says token 9 (class 1): wrong
    stats = gpt2_classifier.loop_fns(2, label_tokens).eval_stats({"labels": labels}, SimpleNamespace(logits=logits))
    assert stats["labels"].tolist() == [1, 0] and stats["predictions"].tolist() == [1, 1]
    expected_row0 = torch.nn.functional.cross_entropy(logits[0, 1:2], torch.tensor([9])).item()
    assert stats["loss"][0].item() == pytest.approx(expected_row0)


def test_gpt2_label_logits_and_classes():
    import torch

    logits = torch.arange(2 * 5 * 7, dtype=torch.float).reshape(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, -100, -100], [-100, -100, -100, -100, 6]])
    out = gpt2_label_logits(logits, labels, label_tokens=[3, 6])
    assert out.tolist() == [logits[0, 1, [3, 6]].tolist(), logits[1, 3, [3, 6]].tolist()]
    assert gpt2_label_classes(labels.numpy(), [3, 6]).tolist() == [0, 1]
    assert gpt2_label_classes(np.full((1, 4), -100), [3, 6]).tolist() == [-1]


def test_training_setup_reads_the_label_tokens_from_the_label_names(tiny_tokenizer):
    """The setup's Trainer numbers look at the label tokens' logits at the label position: the
    label names' own tokens, found from the training set's features."""
    import copy

    import torch
    from datasets import ClassLabel, Dataset, Features, Value

    from hfpipe.params import parse_params
    from hfpipe.tasks import gpt2_classifier
    from hfpipe.tasks.gpt2_classifier import encode_gpt2_classifier, label_token_ids
    from hfpipe.tokenize import add_pad_token

    tokenizer = copy.deepcopy(tiny_tokenizer)
    add_pad_token(tokenizer)
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    raw = Dataset.from_dict({"text": ["a dull film", "a lovely film"], "label": [0, 1]}, features=feats)
    tokens = label_token_ids(tokenizer, ["neg", "pos"])
    data, _ = encode_gpt2_classifier(raw, tokenizer, tokens, 16, 100)
    params = parse_params({"task": "gpt2-classifier", "dataset": {"source": "load_dataset", "path": "x",
                                                                  "label_column": "label"},
                           "model": {"n_layer": 1, "n_head": 2, "n_embd": 16}})
    setup = gpt2_classifier.training_setup(params, tokenizer, data, data)
    assert setup.train_set.column_names == ["input_ids", "attention_mask", "labels"]
    batch = setup.collator([setup.train_set[i] for i in range(2)])
    logits = torch.randn(2, batch["labels"].size(1), len(tokenizer), generator=torch.Generator().manual_seed(0))
    kept = setup.preprocess_logits(logits, batch["labels"])
    assert torch.equal(kept, gpt2_label_logits(logits, batch["labels"], tokens))
    assert setup.description == "2 training examples; labels ['neg', 'pos']"
