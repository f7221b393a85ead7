"""hfpipe.train: TrainingArguments from params, and a short real Trainer run logged through dvclive."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from hfpipe.modeling import build_causal_lm
from hfpipe.params import parse_params
from hfpipe.tasks import causal_lm
from hfpipe.tasks.causal_lm import causal_lm_metrics
from hfpipe.train.common import RunFiles
from hfpipe.train.trainer import train_with_trainer, training_arguments
from tests.train import run_killed_at_step

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTEXT = 32
MAX_STEPS, LOGGING_STEPS, EVAL_STEPS = 30, 5, 10

TRAIN_PARAMS = {"seed": 0, "lr": 0.01,
                "model": {"n_layer": 1, "n_head": 2, "n_embd": 16},
                "tokenize": {"context_length": CONTEXT},
                "train": {"max_steps": MAX_STEPS, "batch_size": 8, "eval_batch_size": 8, "eval_steps": EVAL_STEPS,
                          "logging_steps": LOGGING_STEPS, "warmup_ratio": 0.1, "threads": 1,
                          "mixed_precision": "no", "torch_compile": False}}


def read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fd:
        return list(csv.DictReader(fd, delimiter="\t"))


def test_training_arguments_from_params(tmp_path):
    params = parse_params(TRAIN_PARAMS)
    args = training_arguments(params, tmp_path / "work")
    assert args.output_dir == str(tmp_path / "work")
    assert args.learning_rate == 0.01
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (8, 8)
    assert args.max_steps == MAX_STEPS
    assert (args.eval_steps, args.logging_steps) == (EVAL_STEPS, LOGGING_STEPS)
    assert args.eval_strategy == "steps" and args.save_strategy == "no"
    assert args.report_to == []  # "none": dvclive is attached as a callback instead
    assert (args.seed, args.data_seed) == (0, 0)
    assert args.lr_scheduler_type == "cosine"
    assert (args.weight_decay, args.max_grad_norm) == (0.1, 1.0)
    assert args.use_cpu
    # warmup_ratio is a fraction of the total steps
    assert args.get_warmup_steps(30) == 3
    assert training_arguments(parse_params({}), tmp_path).get_warmup_steps(100) == 5
    # overrides win
    assert training_arguments(params, tmp_path, max_steps=3).max_steps == 3


def test_causal_lm_evaluation_and_saving_follow_the_params(tmp_path):
    from hfpipe.train.trainer import training_overrides

    p = parse_params({**TRAIN_PARAMS, "train": {**TRAIN_PARAMS["train"], "save_steps": 7}})
    assert training_overrides(p) == {"eval_strategy": "steps"}  # no checkpoints: save_strategy stays "no"
    args = training_arguments(p, tmp_path, **training_overrides(p, checkpointing=True))
    assert (args.eval_strategy, args.save_strategy, args.save_steps, args.load_best_model_at_end) == \
        ("steps", "steps", 7, False)
    p = parse_params({**TRAIN_PARAMS, "train": {**TRAIN_PARAMS["train"], "eval_strategy": "epoch",
                                                "load_best_model_at_end": True, "metric_for_best_model": "loss"}})
    args = training_arguments(p, tmp_path, **training_overrides(p, checkpointing=True))
    assert (args.eval_strategy, args.save_strategy, args.load_best_model_at_end, args.greater_is_better) == \
        ("epoch", "epoch", True, False)
    assert args.metric_for_best_model == "loss" and args.save_total_limit is None


@pytest.fixture(scope="module")
def trained(tiny_tokenizer, tmp_path_factory):
    """Train a fresh tiny GPT-2 for 30 steps on a repetitive synthetic corpus; keep what the tests check."""
    from datasets import Dataset

    params = parse_params(TRAIN_PARAMS)
    text = "import pandas as pd\ndf = pd.frame(data)\nplt.plot(df, value)\n" * 60
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    blocks = [ids[i: i + CONTEXT] for i in range(0, len(ids) - CONTEXT + 1, CONTEXT)]
    assert len(blocks) >= 30
    train_blocks = Dataset.from_dict({"input_ids": blocks[:24]})
    eval_blocks = Dataset.from_dict({"input_ids": blocks[24:30]})

    model = build_causal_lm(params.model, tiny_tokenizer, params.tokenize.context_length, params.seed)
    before = causal_lm_metrics(model, eval_blocks, [], batch_size=8)
    root = tmp_path_factory.mktemp("train")
    work_dir, live_dir = root / "work", root / "live"
    trainer = train_with_trainer(params, model, tiny_tokenizer, causal_lm.training_setup(params, tiny_tokenizer, train_blocks, eval_blocks),
                                 RunFiles(work_dir, live_dir))
    after = causal_lm_metrics(model, eval_blocks, [], batch_size=8)
    return {"trainer": trainer, "model": model, "before": before, "after": after, "work_dir": work_dir,
            "live_dir": live_dir, "eval_blocks": eval_blocks}


def test_training_lowers_eval_loss(trained):
    before, after = trained["before"], trained["after"]
    assert trained["trainer"].state.global_step == MAX_STEPS
    assert trained["trainer"].model is trained["model"]  # the caller's model is trained in place
    assert after["loss"] < before["loss"] - 1.0
    assert after["accuracy"] > before["accuracy"] + 0.3
    evals = [e["eval_loss"] for e in trained["trainer"].state.log_history if "eval_loss" in e]
    assert len(evals) == MAX_STEPS // EVAL_STEPS
    assert evals[-1] < evals[0] < before["loss"]


def test_training_follows_the_lr_schedule(trained):
    logs = [e for e in trained["trainer"].state.log_history if "learning_rate" in e]
    lrs = {e["step"]: e["learning_rate"] for e in logs}
    assert lrs[1] == 0.0  # warmup starts at 0
    assert max(lrs.values()) <= 0.01
    assert lrs[5] > lrs[10] > lrs[20] > lrs[30]  # cosine decay after 3 warmup steps


def test_dvclive_files_use_the_global_step(trained):
    live = trained["live_dir"]
    history = trained["trainer"].state.log_history
    train_rows = read_tsv(live / "plots" / "metrics" / "loss.tsv")
    assert [int(r["step"]) for r in train_rows] == [1, 5, 10, 15, 20, 25, 30]
    train_logged = [e["loss"] for e in history if "loss" in e and "eval_loss" not in e]
    assert [float(r["loss"]) for r in train_rows] == pytest.approx(train_logged, rel=1e-6)

    eval_rows = read_tsv(live / "plots" / "metrics" / "eval" / "loss.tsv")
    assert [int(r["step"]) for r in eval_rows] == [10, 20, 30]  # the same x as the train curve
    assert [float(r["loss"]) for r in eval_rows] == pytest.approx(
        [e["eval_loss"] for e in history if "eval_loss" in e], rel=1e-6)

    lr_rows = read_tsv(live / "plots" / "metrics" / "learning_rate.tsv")
    assert [int(r["step"]) for r in lr_rows] == [1, 5, 10, 15, 20, 25, 30]

    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == MAX_STEPS
    assert summary["eval"]["loss"] == pytest.approx(float(eval_rows[-1]["loss"]), rel=1e-6)
    assert (live / "params.yaml").is_file()
    assert not (live / "dvc.yaml").exists()  # dvc.yaml is written by hand
    # save_strategy no: no checkpoints in the work dir
    work = trained["work_dir"]
    assert not work.exists() or not list(work.glob("checkpoint-*"))


def test_train_time_eval_loss_equals_evaluate_stage_loss(trained):
    last_eval = [e["eval_loss"] for e in trained["trainer"].state.log_history if "eval_loss" in e][-1]
    assert last_eval == pytest.approx(trained["after"]["loss"], abs=1e-4)


def test_dvc_yaml_plots_read_files_that_training_writes(trained):
    dvc_yaml = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    live = trained["live_dir"]
    problems = []
    for plot in dvc_yaml.get("plots", []):
        for _name, spec in plot.items():
            # Classification plots (eval accuracy, confusion matrices) are checked against what
            # classification training and evaluation write, in tests/train/test_classifier_training.py.
            if _name == "Accuracy" or _name.startswith("metrics/report/"):
                continue
            for path, column in spec["y"].items():
                assert path.startswith("dvclive/")
                written = live / path.removeprefix("dvclive/")
                if not written.is_file():
                    problems.append(f"{path}: not written")
                    continue
                rows = read_tsv(written)
                if len(rows) < 3 or column not in rows[0]:
                    problems.append(f"{path}: {len(rows)} rows, columns {list(rows[0]) if rows else []}")
    assert problems == []


def test_bf16_on_a_cpu_without_native_bf16_warns_with_the_fix(monkeypatch):
    import torch

    from hfpipe.train import common as train

    monkeypatch.setattr(train, "has_accelerator", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    warning = train.slow_bf16_warning("bf16")
    assert "no native bf16" in warning and 'train.mixed_precision: "no"' in warning
    assert train.slow_bf16_warning("no") is None
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert train.slow_bf16_warning("bf16") is None


def test_deterministic_param_switches_torch_to_deterministic_kernels():
    import torch

    from hfpipe.train.common import use_deterministic_algorithms

    try:
        use_deterministic_algorithms(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        use_deterministic_algorithms(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_resumed_trainer_logs_the_same_losses_when_it_stopped_between_two_logs(tiny_tokenizer, tmp_path,
                                                                                  one_torch_thread, monkeypatch):
    """Checkpoint at step 8, logs every 5: the resumed run's loss at step 10 averages steps 6-10 and its
    final train loss all 20 steps, as the uninterrupted run's (the running sum rides in the checkpoint)."""
    from datasets import Dataset

    from hfpipe.checkpoint import complete_checkpoints

    params = parse_params({**TRAIN_PARAMS, "train": {**TRAIN_PARAMS["train"], "max_steps": 20, "save_steps": 8,
                                                      "eval_steps": 100}})
    ids = tiny_tokenizer("import pandas as pd\ndf = pd.frame(data)\n" * 80, add_special_tokens=False)["input_ids"]
    blocks = Dataset.from_dict({"input_ids": [ids[i: i + CONTEXT] for i in range(0, 30 * CONTEXT, CONTEXT)]})

    def run(root, resume_from=None):
        model = build_causal_lm(params.model, tiny_tokenizer, CONTEXT, params.seed)
        setup = causal_lm.training_setup(params, tiny_tokenizer, blocks, blocks.select(range(4)))
        return train_with_trainer(params, model, tiny_tokenizer, setup,
                                  RunFiles(root, root / "live", lambda step: {"step": step}, resume_from))

    def losses(trainer):
        return [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h] + \
               [("train_loss", h["train_loss"]) for h in trainer.state.log_history if "train_loss" in h]

    full = losses(run(tmp_path / "full"))

    run_killed_at_step(monkeypatch, 9, lambda: run(tmp_path / "ckpt"))
    [checkpoint] = complete_checkpoints(tmp_path / "ckpt")
    assert checkpoint.name == "checkpoint-8" and (checkpoint / "running_loss_0.json").is_file()
    resumed = losses(run(tmp_path / "ckpt", resume_from=checkpoint))
    after_8 = [x for x in full if x[0] == "train_loss" or x[0] > 8]  # (trainer_state.json holds the earlier logs)
    assert [x for x in resumed if x[0] == "train_loss" or x[0] > 8] == after_8 and len(after_8) == 4


@pytest.mark.parametrize("backend", ["trainer", "accelerate"])
def test_the_train_stage_reads_and_writes_the_paths_it_is_given(backend, tiny_tokenizer_dir, tiny_tokenizer, tmp_path,
                                                                 monkeypatch, one_torch_thread):
    """run_train_stage(params, TrainPaths(...)): the stage's one entry point, on other folders than the pipeline's."""
    import shutil

    from datasets import Dataset, DatasetDict

    from hfpipe.io import write_json_atomic
    from hfpipe.train import TrainPaths, run_train_stage

    ids = tiny_tokenizer("import pandas as pd\ndf = pd.frame(data)\n" * 40, add_special_tokens=False)["input_ids"]
    blocks = Dataset.from_dict({"input_ids": [ids[i: i + CONTEXT] for i in range(0, 12 * CONTEXT, CONTEXT)]})
    where = TrainPaths(tokenized=tmp_path / "in" / "tokenized", tokenizer=tmp_path / "in" / "tokenizer",
                       tokenize_stats=tmp_path / "in" / "stats.json", trained=tmp_path / "out" / "trained",
                       live_dir=tmp_path / "out" / "live", checkpoints=tmp_path / "out" / "checkpoints")
    DatasetDict({"train": blocks.select(range(8)), "validation": blocks.select(range(8, 12))}).save_to_disk(
        str(where.tokenized))
    shutil.copytree(tiny_tokenizer_dir, where.tokenizer)
    write_json_atomic(where.tokenize_stats, {"context_length": CONTEXT})
    params = parse_params({**TRAIN_PARAMS, "train": {**TRAIN_PARAMS["train"], "backend": backend, "max_steps": 4,
                                                     "eval_steps": 2, "save_steps": 2, "logging_steps": 2}})
    monkeypatch.chdir(tmp_path)  # anything written to the pipeline's own paths would land here
    run_train_stage(params, where)
    assert (where.trained / "model.safetensors").is_file() and (where.trained / "tokenizer.json").is_file()
    assert (where.live_dir / "plots" / "metrics" / "loss.tsv").is_file()
    assert not any(where.checkpoints.glob("run-*"))  # the finished run's checkpoints are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]
