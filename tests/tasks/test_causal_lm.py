"""hfpipe.tasks.causal_lm: keytoken ids, the keytoken-weighted loss, the train-time keytoken check."""

from __future__ import annotations

import pytest

from hfpipe.io import PipelineError
from hfpipe.params import parse_params
from hfpipe.tasks.causal_lm import keytoken_ids


def test_keytoken_weighted_loss_with_alpha_0_is_the_plain_mean_loss(tiny_model, tiny_blocks):
    import torch

    from hfpipe.tasks.causal_lm import keytoken_weighted_loss

    ids = torch.tensor(tiny_blocks["input_ids"][:4], dtype=torch.long)
    with torch.no_grad():
        out = tiny_model(input_ids=ids, labels=ids)
    keys = sorted(set(ids[0, 1:6].tolist()))  # tokens that do occur: alpha 0 must still ignore them
    plain = keytoken_weighted_loss(ids, out.logits, keys, alpha=0.0)
    assert plain.item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert keytoken_weighted_loss(ids, out.logits, [], alpha=3.0).item() == pytest.approx(out.loss.item(), rel=1e-6)


def test_keytoken_weighted_loss_weights_each_sequence_by_its_keytoken_count():
    import torch

    from hfpipe.tasks.causal_lm import keytoken_weighted_loss

    torch.manual_seed(0)
    labels = torch.tensor([[1, 2, 3, 2, 2], [1, 4, 4, 4, 4]])
    logits = torch.randn(2, 5, 6)
    token_loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 6), labels[:, 1:].reshape(-1),
                                                   reduction="none").view(2, 4)
    # keytoken 2 occurs 3 times among sequence 0's targets, never in sequence 1's: weights 1 + 0.5 * count
    expected = (token_loss[0].sum() * 2.5 + token_loss[1].sum() * 1.0) / 8
    got = keytoken_weighted_loss(labels, logits, [2], alpha=0.5)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # ignored (-100) positions count neither as loss nor in the mean
    padded = labels.clone()
    padded[1, 3:] = -100
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float)
    expected = (token_loss[0].sum() * 2.5 + (token_loss[1] * mask[1]).sum()) / 6
    assert keytoken_weighted_loss(padded, logits, [2], alpha=0.5).item() == pytest.approx(expected.item(), rel=1e-6)


def test_keytokens_none_of_which_is_a_single_token_are_named(tiny_tokenizer):
    from hfpipe.tasks.causal_lm import training_keytokens

    params = parse_params({"train": {"backend": "accelerate", "keytoken_alpha": 1.0,
                                     "keytokens": ["zqxjv", "wvkqz"]}})
    printed: list[str] = []
    with pytest.raises(PipelineError) as err:
        training_keytokens(params, tiny_tokenizer, log=printed.append)
    assert str(err.value).startswith("train.keytokens = ['zqxjv', 'wvkqz']: none is a single token of the tokenizer "
                                     "(Keyword has not single token: 'zqxjv', 'wvkqz')")
    assert "Keyword has not single token: 'zqxjv'" in printed
    # one single-token word is enough; the others are reported as the seed does
    ok = parse_params({"train": {"backend": "accelerate", "keytoken_alpha": 1.0, "keytokens": ["=", "zqxjv"]}})
    printed.clear()
    ids = training_keytokens(ok, tiny_tokenizer, log=printed.append)
    assert tiny_tokenizer.convert_tokens_to_ids("=") in ids
    assert set(ids) <= {tiny_tokenizer.convert_tokens_to_ids(t) for t in ("=", "\u0120=")}
    assert "Keyword has not single token: 'zqxjv'" in printed


def test_keytoken_ids_splits_single_and_multi_token_keywords(tiny_tokenizer):
    vocab = tiny_tokenizer.get_vocab()
    # in the tiny vocabulary (Ġ is byte-level BPE's space): ' pd' is a token but 'pd' is not, 'plt' is but
    # ' plt' is not, 'fit' and ' fit' both are, nothing of 'zzqx' is
    assert [f in vocab for f in ("pd", "Ġpd", "plt", "Ġplt", "fit", "Ġfit", "zzqx", "Ġzzqx")] == \
        [False, True, True, False, True, True, False, False]
    ids, not_single = keytoken_ids(tiny_tokenizer, ["pd", "plt", "fit", "zzqx"])
    assert ids == sorted([vocab["Ġpd"], vocab["plt"], vocab["fit"], vocab["Ġfit"]])
    assert not_single == ["pd", " plt", "zzqx", " zzqx"]
    for form in not_single:
        assert len(tiny_tokenizer(form, add_special_tokens=False)["input_ids"]) > 1


def test_keytoken_ids_nothing_single(tiny_tokenizer):
    assert keytoken_ids(tiny_tokenizer, ["zzqx"]) == ([], ["zzqx", " zzqx"])
    assert keytoken_ids(tiny_tokenizer, []) == ([], [])


def test_keytoken_ids_deduplicates(tiny_tokenizer):
    ids, _ = keytoken_ids(tiny_tokenizer, ["pd", "pd"])
    assert ids == sorted(set(ids)) and len(ids) == len(keytoken_ids(tiny_tokenizer, ["pd"])[0])


def test_training_setup_keeps_the_blocks_and_caps_the_train_time_eval_blocks(tiny_tokenizer, tiny_blocks):
    from transformers import DataCollatorForLanguageModeling

    from hfpipe.tasks import causal_lm

    params = parse_params({"train": {"eval_max_blocks": 3}})
    setup = causal_lm.training_setup(params, tiny_tokenizer, tiny_blocks, tiny_blocks)
    assert setup.train_set is tiny_blocks and len(setup.eval_set) == 3
    # spread over the split, not its first blocks (its first files)
    n = len(tiny_blocks)
    assert setup.eval_set["input_ids"] == [tiny_blocks[i]["input_ids"] for i in (0, n // 3, 2 * n // 3)]
    assert isinstance(setup.collator, DataCollatorForLanguageModeling) and not setup.collator.mlm
    assert setup.compute_metrics is None and setup.preprocess_logits is None  # the Trainer's eval loss only
    assert setup.description == f"{len(tiny_blocks)} training blocks"
    assert len(causal_lm.training_setup(parse_params({}), tiny_tokenizer, tiny_blocks, tiny_blocks).eval_set) == len(
        tiny_blocks)


def test_training_setup_resolves_the_keytokens_of_the_weighted_loss(tiny_tokenizer, tiny_blocks):
    """alpha > 0: the setup's train loss is the keytoken-weighted loss over the resolved keytokens."""
    from types import SimpleNamespace

    import torch

    from hfpipe.tasks import causal_lm

    params = parse_params({"train": {"backend": "accelerate", "keytoken_alpha": 1.0, "keytokens": ["="]}})
    setup = causal_lm.training_setup(params, tiny_tokenizer, tiny_blocks, tiny_blocks)
    labels = torch.tensor(tiny_blocks[:2]["input_ids"])
    logits = torch.randn(2, labels.size(1), len(tiny_tokenizer), generator=torch.Generator().manual_seed(0))
    keys = causal_lm.keytoken_ids(tiny_tokenizer, ["="])[0]
    expected = causal_lm.keytoken_weighted_loss(labels, logits, keys, 1.0)
    got = setup.loop_fns.train_loss({"labels": labels}, SimpleNamespace(logits=logits, loss=None))
    assert keys and torch.equal(got, expected)


def test_spread_sample_takes_blocks_from_the_whole_split():
    from datasets import Dataset

    from hfpipe.tasks.causal_lm import spread_sample

    blocks = Dataset.from_dict({"input_ids": [[i] for i in range(10)]})
    assert spread_sample(blocks, 4)["input_ids"] == [[0], [2], [5], [7]]
    assert spread_sample(blocks, 10) is blocks and spread_sample(blocks, 50) is blocks
    assert spread_sample(blocks, None) is blocks
    assert spread_sample(blocks, 1)["input_ids"] == [[0]]
