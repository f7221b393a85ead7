"""Classification training: TrainingArguments from params, and a tiny GPT-2 classifier (tutorial 05) that learns."""

from __future__ import annotations

import random

import pytest

from hfpipe.params import parse_params
from hfpipe.train.common import RunFiles
from tests.train import run_killed_at_step

GOOD, BAD = ["great", "fine", "superb", "lovely"], ["awful", "dull", "poor", "bad"]


def _params(**train):
    return parse_params({"task": "gpt2-classifier", "lr": 0.01, "seed": 1,
                         "dataset": {"source": "load_dataset", "path": "x", "text_column": "text", "label_column": "label"},
                         "model": {"n_layer": 1, "n_head": 2, "n_embd": 32},
                         "tokenize": {"max_length": 16},
                         "train": {"max_steps": 60, "batch_size": 16, "eval_steps": 30, "logging_steps": 10,
                                   "warmup_ratio": 0.0, "lr_scheduler": "linear", "mixed_precision": "no",
                                   "torch_compile": False, **train}})


def test_training_overrides_keep_best_checkpoints(tmp_path):
    from hfpipe.train.trainer import training_arguments, training_overrides

    p = _params(load_best_model_at_end=True, metric_for_best_model="f1", eval_steps=20)
    args = training_arguments(p, tmp_path, **training_overrides(p))
    assert (args.eval_strategy, args.save_strategy, args.save_steps) == ("steps", "steps", 20)
    assert args.load_best_model_at_end and args.metric_for_best_model == "f1" and args.greater_is_better
    p = _params(eval_strategy="epoch")
    args = training_arguments(p, tmp_path, **training_overrides(p))
    assert args.eval_strategy == "epoch" and args.save_strategy == "no" and not args.load_best_model_at_end
    p = _params(load_best_model_at_end=True, metric_for_best_model="loss")
    assert training_overrides(p)["greater_is_better"] is False


def test_training_overrides_when_checkpointing_and_grouping_by_length(tmp_path):
    from hfpipe.train.trainer import training_arguments, training_overrides

    p = _params(save_steps=7, group_by_length=True)
    args = training_arguments(p, tmp_path, **training_overrides(p, checkpointing=True))
    assert (args.save_strategy, args.save_steps, args.save_total_limit) == ("steps", 7, None)
    assert args.train_sampling_strategy == "group_by_length"
    assert "train_sampling_strategy" not in training_overrides(_params())
    # keeping the best: a checkpoint at each evaluation; our pruning (not save_total_limit) keeps the best
    p = _params(save_steps=7, load_best_model_at_end=True, metric_for_best_model="accuracy", eval_steps=20)
    args = training_arguments(p, tmp_path, **training_overrides(p, checkpointing=True))
    assert (args.save_strategy, args.save_steps, args.save_total_limit) == ("steps", 20, None)
    args = training_arguments(p, tmp_path, **training_overrides(p))
    assert args.save_total_limit == 2  # a direct call: the Trainer bounds its own checkpoints
    p = _params(eval_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="f1")
    args = training_arguments(p, tmp_path, **training_overrides(p, checkpointing=True))
    assert (args.eval_strategy, args.save_strategy) == ("epoch", "epoch")


def test_length_grouped_sampler_is_seeded_per_epoch_and_groups_lengths():
    from hfpipe.train.common import example_lengths, length_grouped_sampler

    rng = random.Random(0)
    lengths = [rng.randrange(2, 200) for _ in range(400)]
    sampler = length_grouped_sampler(lengths, batch_size=8, seed=3)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(400)) and len(sampler) == 400
    assert list(length_grouped_sampler(lengths, 8, 3)) == epoch0  # another process, or a resumed run
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(epoch1) == list(range(400))
    sampler.set_epoch(0)
    assert list(sampler) == epoch0  # no hidden state: the epoch alone decides
    assert list(length_grouped_sampler(lengths, 8, 4)) != epoch0

    def padding(order):  # padded slots per batch of 8, as dynamic padding pads
        batches = [order[i: i + 8] for i in range(0, len(order), 8)]
        return sum(8 * max(lengths[j] for j in b) - sum(lengths[j] for j in b) for b in batches)

    shuffled = list(range(400))
    random.Random(1).shuffle(shuffled)
    assert padding(epoch0) < padding(shuffled) / 4

    from datasets import Dataset

    data = Dataset.from_dict({"input_ids": [[1] * n for n in (3, 1, 4, 1, 5)]}).select([4, 0, 2])
    assert example_lengths(data) == [5, 3, 4]


def test_trainer_classifier_killed_then_resumed_gives_identical_weights_and_keeps_the_best(
        tiny_tokenizer, tmp_path, one_torch_thread, monkeypatch):
    """gpt2-classifier on the Trainer backend with length-grouped batches, dropout and the best model
    kept: stopped in its third epoch, resumed from the newest complete checkpoint, it ends with the
    uninterrupted run's weights, bit for bit; our pruning never deleted the Trainer's best checkpoint."""
    import torch

    from hfpipe.checkpoint import complete_checkpoints
    from hfpipe.tasks import TASKS
    from hfpipe.train.trainer import train_with_trainer

    tokenizer, data = _gpt2_data(tiny_tokenizer, 96)
    params = _params(max_steps=-1, epochs=3, eval_steps=5, save_steps=5, logging_steps=5, group_by_length=True,
                     load_best_model_at_end=True, metric_for_best_model="accuracy")
    params = params.model_copy(update={"model": params.model.model_copy(update={"dropout": 0.1})})

    def marker(step):
        return {"step": step, "backend": "trainer", "fingerprint": "t"}

    def run(root, resume_from=None):
        model = TASKS[params.task].build_model(params.model, tokenizer, data["train"], params.tokenize.max_length, params.seed)
        return train_with_trainer(params, model, tokenizer, TASKS[params.task].training_setup(params, tokenizer, data["train"], data["validation"]),
                                  RunFiles(root, tmp_path / f"live-{root.name}", marker, resume_from))

    full = run(tmp_path / "full")
    # finished: the checkpoints stay until the train stage has saved the model (it then removes them)
    assert complete_checkpoints(tmp_path / "full")
    best_step = int(full.state.best_model_checkpoint.rsplit("-", 1)[1])
    def eval_numbers(trainer):  # without the wall-clock entries
        return [{k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}
                for h in trainer.state.log_history if "eval_accuracy" in h]

    evals = eval_numbers(full)
    # 96 examples / 16: 6 steps an epoch, 18 in all; the Trainer also evaluates (and saves) at the end
    assert [e["step"] for e in evals] == [5, 10, 15, 18] and best_step < 10, evals

    run_killed_at_step(monkeypatch, 17, lambda: run(tmp_path / "ckpt"))
    kept = [p.name for p in complete_checkpoints(tmp_path / "ckpt")]
    # the newest two, and the best one (older: pruning would have deleted it, and the resumed run's
    # load_best_model_at_end would then keep another model)
    assert kept[-2:] == ["checkpoint-10", "checkpoint-15"] and best_step < 10 and f"checkpoint-{best_step}" in kept
    # step 15 is mid-epoch 2 (of 0..2): the resumed run must draw that epoch's order as the full run did
    resumed = run(tmp_path / "ckpt", resume_from=tmp_path / "ckpt" / "checkpoint-15")
    assert resumed.state.best_model_checkpoint == full.state.best_model_checkpoint.replace("full", "ckpt")
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert eval_numbers(resumed) == evals
    # the checkpoints stay: the train stage removes them once it has saved the model
    assert complete_checkpoints(tmp_path / "ckpt")


def _gpt2_data(tiny_tokenizer, n: int):
    import copy

    from datasets import ClassLabel, Dataset, Features, Value

    from hfpipe.tasks.gpt2_classifier import encode_gpt2_classifier, label_token_ids
    from hfpipe.tokenize import add_pad_token

    rng = random.Random(0)
    rows = [(" ".join(["the", rng.choice(["film", "plot", "cast"]), "was"] + ["very"] * rng.randrange(4)
                      + [rng.choice(GOOD if y else BAD)]), y) for y in [rng.randrange(2) for _ in range(n + 48)]]
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    tokenizer = copy.deepcopy(tiny_tokenizer)
    add_pad_token(tokenizer)
    tokens = label_token_ids(tokenizer, ["neg", "pos"])
    data = {"tokens": tokens}
    for split, part in (("train", rows[:n]), ("validation", rows[n:])):
        ds = Dataset.from_dict({"text": [t for t, _ in part], "label": [y for _, y in part]}, features=feats)
        data[split], _ = encode_gpt2_classifier(ds, tokenizer, tokens, 16, 100)
    return tokenizer, data


def test_tiny_gpt2_classifier_learns_and_both_evaluations_agree(tiny_tokenizer, tmp_path, one_torch_thread):
    import copy

    from datasets import ClassLabel, Dataset, Features, Value

    from hfpipe.evaluate import evaluate_classification
    from hfpipe.tasks import TASKS
    from hfpipe.tasks.gpt2_classifier import encode_gpt2_classifier, label_token_ids
    from hfpipe.tokenize import add_pad_token
    from hfpipe.train.trainer import train_with_trainer

    rng = random.Random(0)
    rows = [(f"the {rng.choice(['film', 'plot', 'cast'])} was {rng.choice(GOOD if y else BAD)}", y)
            for y in [rng.randrange(2) for _ in range(240)]]
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    tokenizer = copy.deepcopy(tiny_tokenizer)
    add_pad_token(tokenizer)
    tokens = label_token_ids(tokenizer, ["neg", "pos"])
    data = {}
    for split, part in (("train", rows[:180]), ("validation", rows[180:])):
        ds = Dataset.from_dict({"text": [t for t, _ in part], "label": [y for _, y in part]}, features=feats)
        data[split], _ = encode_gpt2_classifier(ds, tokenizer, tokens, 16, 100)
    params = _params()
    model = TASKS[params.task].build_model(params.model, tokenizer, data["train"], params.tokenize.max_length, params.seed)
    assert model.config.n_positions == 16 and model.get_input_embeddings().num_embeddings == len(tokenizer)
    trainer = train_with_trainer(params, model, tokenizer, TASKS[params.task].training_setup(params, tokenizer, data["train"], data["validation"]),
                                 RunFiles(tmp_path / "work", tmp_path / "live"))
    train_eval = [h for h in trainer.state.log_history if "eval_accuracy" in h][-1]
    (tmp_path / "report").mkdir()
    metrics = evaluate_classification(trainer.model, tokenizer, data, TASKS["gpt2-classifier"], 7, tmp_path / "report", tokens)
    assert metrics["validation"]["accuracy"] >= 0.9
    assert train_eval["eval_accuracy"] == pytest.approx(metrics["validation"]["accuracy"], abs=1e-6)
    assert train_eval["eval_f1"] == pytest.approx(metrics["validation"]["f1"], abs=1e-6)


def test_dvc_yaml_classification_plots_read_files_that_training_and_evaluation_write(tiny_tokenizer, tmp_path,
                                                                                    one_torch_thread):
    """The Accuracy plot reads dvclive files a classifier's training writes; the confusion plots
    read the files evaluate_classification writes under metrics/report/."""
    import copy

    import yaml
    from datasets import ClassLabel, Dataset, Features, Value

    from hfpipe.evaluate import evaluate_classification
    from hfpipe.tasks import TASKS
    from hfpipe.tasks.gpt2_classifier import encode_gpt2_classifier, label_token_ids
    from hfpipe.tokenize import add_pad_token
    from hfpipe.train.trainer import train_with_trainer

    tokenizer = copy.deepcopy(tiny_tokenizer)
    add_pad_token(tokenizer)
    tokens = label_token_ids(tokenizer, ["neg", "pos"])
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    data = {}
    for split, n in (("train", 32), ("validation", 8), ("test", 8)):
        ds = Dataset.from_dict({"text": [f"x = {i}" for i in range(n)], "label": [i % 2 for i in range(n)]},
                               features=feats)
        data[split], _ = encode_gpt2_classifier(ds, tokenizer, tokens, 16, 100)
    params = _params(max_steps=6, eval_steps=2, logging_steps=2)
    model = TASKS[params.task].build_model(params.model, tokenizer, data["train"], params.tokenize.max_length, params.seed)
    train_with_trainer(params, model, tokenizer, TASKS[params.task].training_setup(params, tokenizer, data["train"], data["validation"]),
                       RunFiles(tmp_path / "work", tmp_path / "dvclive"))
    report = tmp_path / "metrics/report"
    report.mkdir(parents=True)
    evaluate_classification(model, tokenizer, data, TASKS["gpt2-classifier"], 8, report, tokens)
    from hfpipe.plots import write_task_plots

    # the plots the plots stage declares for this run, in metrics/dvc.yaml (paths relative to metrics/)
    declared = write_task_plots(TASKS["gpt2-classifier"], tmp_path)
    plots = {name: spec for plot in yaml.safe_load((tmp_path / "metrics/dvc.yaml").read_text())["plots"]
             for name, spec in plot.items()}
    assert len(declared) == len(plots) == 5  # accuracy; confusion and precision-recall per labelled split
    for path, column in plots["Accuracy"]["y"].items():
        rows = (tmp_path / "metrics" / path).read_text().splitlines()
        assert rows[0].split("\t") == ["step", column] and [r.split("\t")[0] for r in rows[1:]] == ["2", "4", "6"]
    confusion = [name for name in plots if name.startswith("report/") and "confusion_matrix" in name]
    assert len(confusion) == 2
    for name in confusion:
        assert plots[name]["template"] == "confusion"
        rows = __import__("json").loads((tmp_path / "metrics" / name).read_text())
        assert len(rows) == 8 and set(rows[0]) == {plots[name]["x"], plots[name]["y"]}
    curves = [name for name in plots if name.startswith("report/") and "precision_recall" in name]
    assert len(curves) == 2  # binary task: a precision-recall curve per labelled split
    for name in curves:
        points = __import__("json").loads((tmp_path / "metrics" / name).read_text())["precision_recall"]
        assert points and set(points[0]) >= {plots[name]["x"], plots[name]["y"]}
