"""hfpipe.tasks.classification (and the setup both classification tasks share): what the backends
get, the model-card usage and the pipeline check."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from hfpipe.params import parse_params


def _params(**dataset):
    return parse_params({"task": "classification",
                         "dataset": {"source": "load_dataset", "path": "x", "label_column": "label", **dataset},
                         "model": {"name_or_path": "tiny"}, "tokenizer": {"name_or_path": "tiny"}})


def _encoded(tokenizer):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    texts = ["plt.plot(x)", "df.head()", "plt.show()", "df.describe()"]
    enc = tokenizer(texts)
    features = Features({"text": Value("string"), "input_ids": Sequence(Value("int32")),
                         "attention_mask": Sequence(Value("int8")), "label": ClassLabel(names=["other", "plot"])})
    return Dataset.from_dict({"text": texts, "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                              "label": [1, 0, 1, 0]}, features=features)


def test_training_setup_gives_the_backends_only_the_models_columns_and_the_metrics(tiny_tokenizer):
    from transformers import DataCollatorWithPadding

    from hfpipe.tasks import classification

    data = _encoded(tiny_tokenizer)
    setup = classification.training_setup(_params(), tiny_tokenizer, data, data)
    assert setup.train_set.column_names == setup.eval_set.column_names == ["input_ids", "attention_mask", "label"]
    assert isinstance(setup.collator, DataCollatorWithPadding)
    assert setup.description == "4 training examples; labels ['other', 'plot']"
    assert setup.preprocess_logits is None  # the head's logits are the class scores
    logits = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # predicts 1, 0, 0, 0
    metrics = setup.compute_metrics(SimpleNamespace(predictions=logits, label_ids=np.array([1, 0, 1, 0])))
    assert metrics["accuracy"] == 0.75 and metrics["precision"] == 1.0 and metrics["recall"] == 0.5


def test_card_usage_shows_a_pair_when_the_data_has_pairs():
    from hfpipe.tasks import classification

    what, usage = classification.card_usage(_params(text_pair_column="b"), ["no", "yes"])
    assert '"text_pair": "second sentence"' in usage and "fine-tuned from tiny" in what
    assert '"a sentence to classify"' in classification.card_usage(_params(), ["no", "yes"])[1]


def test_pipeline_works_only_when_it_answers_with_a_label_name():
    from hfpipe.tasks import classification

    assert classification.pipeline_works(lambda text: [{"label": "yes", "score": 0.9}], ["no", "yes"])[0]
    assert not classification.pipeline_works(lambda text: [{"label": "LABEL_1", "score": 0.9}], ["no", "yes"])[0]
