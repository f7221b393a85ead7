"""hfpipe.train.accelerate_loop: grouped weight decay, training steps, and real short runs of the
Accelerate loop (one process, in-process) against the Trainer backend on the same data."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from hfpipe.io import PipelineError
from hfpipe.params import parse_params
from hfpipe.train.common import RunFiles

CONTEXT = 32
MAX_STEPS, LOGGING_STEPS, EVAL_STEPS = 30, 5, 10
PARAMS = {"seed": 0, "lr": 0.01,
          "model": {"n_layer": 1, "n_head": 2, "n_embd": 16},
          "tokenize": {"context_length": CONTEXT},
          "train": {"max_steps": MAX_STEPS, "batch_size": 8, "eval_batch_size": 8, "eval_steps": EVAL_STEPS,
                    "logging_steps": LOGGING_STEPS, "warmup_ratio": 0.1, "threads": 1, "save_steps": 4,
                    "mixed_precision": "no", "torch_compile": False}}


def read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fd:
        return list(csv.DictReader(fd, delimiter="\t"))


# ------------------------------------------------------------------------------ loss and params


def test_grouped_params_exempt_biases_and_layernorms(tiny_tokenizer):
    from hfpipe.modeling import build_causal_lm
    from hfpipe.params import ModelParams
    from hfpipe.train.accelerate_loop import get_grouped_params

    model = build_causal_lm(ModelParams(n_layer=1, n_head=2, n_embd=16), tiny_tokenizer, CONTEXT, seed=0)
    decay, no_decay = get_grouped_params(model, 0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "transformer.ln_f.weight" in no_decay_names and "transformer.h.0.ln_1.weight" in no_decay_names
    assert all(n.endswith("bias") or ".ln_" in n for n in no_decay_names)
    assert "transformer.wte.weight" in decay_names and "transformer.h.0.attn.c_attn.weight" in decay_names
    assert not decay_names & no_decay_names
    assert len(decay_names) + len(no_decay_names) == len(list(model.parameters()))  # every param, once


def test_training_steps_counts_like_the_trainer():
    from hfpipe.train.accelerate_loop import training_steps

    assert training_steps(10, 1, 1.0, -1) == 10
    assert training_steps(10, 4, 1.0, -1) == 3  # a short last accumulation still steps
    assert training_steps(10, 4, 2.0, -1) == 6
    assert training_steps(10, 4, 2.0, 7) == 7


def test_accelerate_loop_trains_a_sequence_classifier(tiny_tokenizer, tmp_path, one_torch_thread):
    """A tiny GPT-2 sequence classifier learns whether a line mentions plt, on the Accelerate loop."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from hfpipe.train.accelerate_loop import train_with_accelerate

    texts = [f"{'plt.plot' if i % 2 else 'df.head'}(x{i % 7})" for i in range(96)]
    enc = tiny_tokenizer(texts, truncation=True, max_length=16)
    features = Features({"input_ids": Sequence(Value("int32")), "attention_mask": Sequence(Value("int8")),
                         "label": ClassLabel(names=["other", "plot"])})
    data = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                              "label": [i % 2 for i in range(96)]}, features=features)
    params = parse_params({"task": "classification", "seed": 0, "lr": 0.01,
                           "dataset": {"source": "load_dataset", "path": "x", "label_column": "label"},
                           "model": {"name_or_path": "tiny", "from_scratch": True},
                           "tokenizer": {"name_or_path": "tiny"},
                           "train": {"backend": "accelerate", "max_steps": 24, "batch_size": 8, "eval_batch_size": 16,
                                     "eval_steps": 12, "logging_steps": 6, "threads": 1,
                                     "mixed_precision": "no", "torch_compile": False}})
    config = GPT2Config(vocab_size=len(tiny_tokenizer), n_positions=16, n_layer=1, n_head=2, n_embd=16, num_labels=2,
                        pad_token_id=tiny_tokenizer.pad_token_id)
    import torch

    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config)
    result = train_with_accelerate(params, model, _setup(params, tiny_tokenizer, data.select(range(64)), data.select(range(64, 96))),
                                   RunFiles(tmp_path / "ckpt", tmp_path / "live"))
    last = result.eval_history[-1]
    assert set(last) >= {"step", "loss", "accuracy", "f1", "precision", "recall"}
    assert last["accuracy"] == 1.0 and last["loss"] < result.eval_history[0]["loss"]
    assert (tmp_path / "live" / "plots" / "metrics" / "eval" / "accuracy.tsv").is_file()


def _classification_data(tokenizer):
    """Lines that mention plt (label 1) or not, of varied lengths (so length grouping matters)."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    texts = [f"{'plt.plot' if i % 2 else 'df.head'}(" + ", ".join(f"x{j}" for j in range(i % 6)) + ")"
             for i in range(96)]
    enc = tokenizer(texts, truncation=True, max_length=16)
    features = Features({"input_ids": Sequence(Value("int32")), "attention_mask": Sequence(Value("int8")),
                         "label": ClassLabel(names=["other", "plot"])})
    data = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                              "label": [i % 2 for i in range(96)]}, features=features)
    return data.select(range(64)), data.select(range(64, 96))


def _classifier_params(lr: float = 0.01, **train):
    return parse_params({"task": "classification", "seed": 0, "lr": lr,
                         "dataset": {"source": "load_dataset", "path": "x", "label_column": "label"},
                         "model": {"name_or_path": "tiny", "from_scratch": True},
                         "tokenizer": {"name_or_path": "tiny"},
                         "train": {"backend": "accelerate", "epochs": 3, "max_steps": -1, "batch_size": 8,
                                   "eval_batch_size": 16, "mixed_precision": "no", "torch_compile": False,
                                   "logging_steps": 4, "threads": 1, "eval_strategy": "epoch",
                                   "load_best_model_at_end": True, "metric_for_best_model": "accuracy",
                                   "warmup_ratio": 0.0, "lr_scheduler": "linear", **train}})


def _tiny_classifier(tokenizer):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_layer=1, n_head=2, n_embd=16, num_labels=2,
                        pad_token_id=tokenizer.pad_token_id)  # dropout 0.1 (GPT-2's default): RNG matters
    torch.manual_seed(0)
    return GPT2ForSequenceClassification(config)


def _eval_loss(model, tokenizer, eval_set) -> float:
    import torch
    from transformers import DataCollatorWithPadding

    model.eval()
    batch = DataCollatorWithPadding(tokenizer)([eval_set[i] for i in range(len(eval_set))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    return torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none").double().mean().item()


def test_accelerate_evaluates_each_epoch_and_keeps_the_best_model(tiny_tokenizer, tmp_path, one_torch_thread):
    from hfpipe.train.accelerate_loop import train_with_accelerate

    train_set, eval_set = _classification_data(tiny_tokenizer)
    params = _classifier_params(lr=0.02)
    result = train_with_accelerate(params, _tiny_classifier(tiny_tokenizer), _setup(params, tiny_tokenizer, train_set, eval_set),
                                   RunFiles(tmp_path / "ckpt", tmp_path / "live"))
    history = result.eval_history
    assert [e["step"] for e in history] == [8, 16, 24]  # 64 examples / batch 8: an evaluation per epoch
    rows = read_tsv(tmp_path / "live" / "plots" / "metrics" / "eval" / "accuracy.tsv")
    assert [int(r["step"]) for r in rows] == [8, 16, 24]
    best = max(history, key=lambda e: e["accuracy"])  # the first of equals: only a strict gain replaces it
    assert best is not history[-1], history  # the case that matters: the last model is not the best
    loss = _eval_loss(result.model, tiny_tokenizer, eval_set)
    assert loss == pytest.approx(best["loss"], abs=1e-6) and loss != pytest.approx(history[-1]["loss"], abs=1e-6)


def test_accelerate_classifier_killed_then_resumed_gives_identical_weights_and_best(tiny_tokenizer, tmp_path,
                                                                                     one_torch_thread):
    """Length-grouped batches, evaluation per epoch, the best model: a run stopped in its second epoch
    and resumed from its newest checkpoint ends with the uninterrupted run's weights, bit for bit."""
    import torch

    from hfpipe.checkpoint import complete_checkpoints
    from hfpipe.train.accelerate_loop import BEST_FILE, train_with_accelerate

    train_set, eval_set = _classification_data(tiny_tokenizer)
    params = _classifier_params(save_steps=3, group_by_length=True)  # best by accuracy: the first 1.0 (step 8)

    def marker(step):
        return {"step": step, "backend": "accelerate", "fingerprint": "t"}

    full = train_with_accelerate(params, _tiny_classifier(tiny_tokenizer), _setup(params, tiny_tokenizer, train_set, eval_set),
                                 RunFiles(tmp_path / "full", tmp_path / "full-live", marker))
    # finished: the checkpoints stay until the train stage has saved the model (it then removes them)
    assert complete_checkpoints(tmp_path / "full")

    class Killed(Exception):
        pass

    import hfpipe.tasks.classification as task_module
    from hfpipe.tasks.common import LoopFns

    calls = {"n": 0}
    plain = task_module.loop_fns

    def dying_loop_fns(*args, **kwargs):  # dies at the 20th micro-batch: step 20, epoch 2 of 3
        loop_fns = plain(*args, **kwargs)

        def train_loss(batch, outputs):
            calls["n"] += 1
            if calls["n"] == 20:
                raise Killed
            return loop_fns.train_loss(batch, outputs)

        return LoopFns(train_loss, loop_fns.eval_stats, loop_fns.eval_metrics)

    task_module.loop_fns = dying_loop_fns
    try:
        with pytest.raises(Killed):
            train_with_accelerate(params, _tiny_classifier(tiny_tokenizer), _setup(params, tiny_tokenizer, train_set, eval_set),
                                  RunFiles(tmp_path / "ckpt", tmp_path / "live", marker))
    finally:
        task_module.loop_fns = plain
    saved = complete_checkpoints(tmp_path / "ckpt")
    assert [p.name for p in saved] == ["checkpoint-15", "checkpoint-18"]
    assert all((p / BEST_FILE).is_file() for p in saved)
    # safetensors and JSON only: a resume unpickles nothing (no optimizer.bin, random_states_0.pkl,
    # custom_checkpoint_0.pkl); the marker holds every file's sha256
    files = {f.relative_to(saved[-1]).as_posix() for f in saved[-1].rglob("*") if f.is_file()}
    assert {f for f in files if not f.startswith("dvclive/")} == {
        "model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json", "rng_0.json",
        "rng_0.safetensors", "running_loss_0.json", "loop_state.json", BEST_FILE, "hfpipe_checkpoint.json"}
    assert set(json.loads((saved[-1] / "hfpipe_checkpoint.json").read_text())["files"]) == files - {"hfpipe_checkpoint.json"}
    states = [json.loads((p / "loop_state.json").read_text()) for p in saved]
    assert states[-1]["epoch"] == 2 and [s["best_step"] for s in states] == [8, 8]
    # the best has not changed since the previous checkpoint: a hard link, not a second copy
    assert (saved[0] / BEST_FILE).stat().st_ino == (saved[1] / BEST_FILE).stat().st_ino

    resumed = train_with_accelerate(params, _tiny_classifier(tiny_tokenizer), _setup(params, tiny_tokenizer, train_set, eval_set),
                                    RunFiles(tmp_path / "ckpt", tmp_path / "live", marker, resume_from=saved[-1]))
    assert resumed.resumed_from == 18
    assert resumed.eval_history == full.eval_history[-1:]  # the epoch-3 evaluation, the same numbers
    assert [e["accuracy"] for e in full.eval_history] == [1.0, 1.0, 1.0]  # so the model kept is step 8's,
    # which the resumed run only has from the checkpoint's best_model.safetensors
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "live" / "metrics.json").read_text() == (tmp_path / "full-live" / "metrics.json").read_text()


# ------------------------------------------------------------------------------ validation


def test_fp16_on_a_cpu_only_machine_fails_at_validation():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(PipelineError) as err:
        parse_params({"train": {"mixed_precision": "fp16"}})
    assert str(err.value) == ("params.yaml: train.mixed_precision = 'fp16': fp16 needs a CUDA, XPU or MPS device "
                              "and this machine has none; use bf16 or no")
    assert parse_params({"train": {"mixed_precision": "bf16"}}).train.mixed_precision == "bf16"
    assert parse_params({"train": {"mixed_precision": False}}).train.mixed_precision == "no"  # YAML's unquoted no


def test_keytoken_loss_needs_the_accelerate_backend():
    with pytest.raises(PipelineError, match="keytoken_alpha = 1.0: the keytoken-weighted loss needs train.backend"):
        parse_params({"train": {"keytoken_alpha": 1.0}})
    assert parse_params({"train": {"keytoken_alpha": 1.0, "backend": "accelerate"}}).train.keytoken_alpha == 1.0


def test_gradient_accumulation_beyond_an_epoch_fails_with_the_numbers(tiny_tokenizer):
    from hfpipe.train import check_training_inputs

    params = parse_params({"train": {"batch_size": 8, "gradient_accumulation_steps": 5}})
    with pytest.raises(PipelineError) as err:
        check_training_inputs(params, n_train=30)  # 4 batches per epoch
    assert str(err.value).startswith("train.gradient_accumulation_steps = 5: exceeds the 4 batches per epoch "
                                     "(30 training examples / train.batch_size 8 / 1 process(es))")
    params2 = parse_params({"train": {"batch_size": 8, "gradient_accumulation_steps": 2, "num_processes": 2}})
    with pytest.raises(PipelineError, match="exceeds the 1 batches per epoch"):
        check_training_inputs(params2, n_train=12)
    check_training_inputs(params, n_train=40)  # 5 batches: fine


# ------------------------------------------------------------------------------ real runs


def _data(tokenizer):
    from datasets import Dataset

    text = "import pandas as pd\ndf = pd.frame(data)\nplt.plot(df, value)\n" * 60
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    blocks = [ids[i: i + CONTEXT] for i in range(0, len(ids) - CONTEXT + 1, CONTEXT)]
    return Dataset.from_dict({"input_ids": blocks[:24]}), Dataset.from_dict({"input_ids": blocks[24:30]})


def _run_accelerate(params, tokenizer, root: Path, loop_fns=None, marker=None):
    from accelerate.state import AcceleratorState
    from transformers import DataCollatorForLanguageModeling

    # Accelerate keeps its state (mixed precision, dynamo backend) in a process-wide singleton that a
    # later Accelerator() cannot change: a stage runs one loop per process, a test several.
    AcceleratorState._reset_state(reset_partial_state=True)

    from hfpipe.modeling import build_causal_lm
    from hfpipe.tasks.causal_lm import loop_fns as causal_lm_loop_fns
    from hfpipe.tasks.common import TrainingSetup
    from hfpipe.train.accelerate_loop import train_with_accelerate

    train_blocks, eval_blocks = _data(tokenizer)
    model = build_causal_lm(params.model, tokenizer, CONTEXT, params.seed)
    setup = TrainingSetup(train_set=train_blocks, eval_set=eval_blocks,
                          collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                          loop_fns=loop_fns or causal_lm_loop_fns(), compute_metrics=None, preprocess_logits=None,
                          description="")
    return train_with_accelerate(params, model, setup, RunFiles(root / "checkpoints", root / "live", marker))


@pytest.fixture(scope="module")
def accelerate_run(tiny_tokenizer, tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("accelerate")
    params = parse_params({**PARAMS, "train": {**PARAMS["train"], "backend": "accelerate"}})
    from hfpipe.tasks.causal_lm import causal_lm_metrics

    result = _run_accelerate(params, tiny_tokenizer, root, marker=lambda step: {"step": step, "backend": "accelerate",
                                                                                 "fingerprint": "t"})
    return {"result": result, "root": root, "after": causal_lm_metrics(result.model, _data(tiny_tokenizer)[1], [], 8)}


def test_accelerate_loop_trains_and_logs_like_the_trainer_backend(accelerate_run):
    result, live = accelerate_run["result"], accelerate_run["root"] / "live"
    assert result.step == MAX_STEPS and result.num_processes == 1 and result.is_main_process
    evals = [e["loss"] for e in result.eval_history]
    assert [e["step"] for e in result.eval_history] == [10, 20, 30]
    assert evals[-1] < evals[0] and evals[0] < 5.5
    # the eval loss the loop logs is the evaluate stage's token-level loss
    assert evals[-1] == pytest.approx(accelerate_run["after"]["loss"], abs=1e-4)
    assert result.eval_history[-1]["perplexity"] == pytest.approx(math.exp(evals[-1]), rel=1e-9)
    # the same dvclive files as the Trainer backend, x = optimizer step
    train_rows = read_tsv(live / "plots" / "metrics" / "loss.tsv")
    assert [int(r["step"]) for r in train_rows] == [1, 5, 10, 15, 20, 25, 30]
    eval_rows = read_tsv(live / "plots" / "metrics" / "eval" / "loss.tsv")
    assert [int(r["step"]) for r in eval_rows] == [10, 20, 30]
    assert [float(r["loss"]) for r in eval_rows] == pytest.approx(evals, rel=1e-9)
    lrs = {int(r["step"]): float(r["learning_rate"]) for r in read_tsv(live / "plots" / "metrics" / "learning_rate.tsv")}
    assert lrs[1] == 0.0 and max(lrs.values()) <= 0.01 and lrs[5] > lrs[10] > lrs[20] > lrs[30]  # warmup, cosine
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == MAX_STEPS and summary["eval"]["loss"] == pytest.approx(evals[-1])
    assert not (live / "dvc.yaml").exists()
    # checkpoints were written during the run (every 4 steps); the train stage removes them once it has
    # saved the model (tests/test_train_e2e.py), not the loop
    from hfpipe.checkpoint import complete_checkpoints

    assert [p.name for p in complete_checkpoints(accelerate_run["root"] / "checkpoints")] == ["checkpoint-24", "checkpoint-28"]


def test_backends_reach_the_same_validation_loss(accelerate_run, tiny_tokenizer, tmp_path):
    from hfpipe.modeling import build_causal_lm
    from hfpipe.tasks.causal_lm import causal_lm_metrics
    from hfpipe.train.trainer import train_with_trainer

    params = parse_params(PARAMS)
    train_blocks, eval_blocks = _data(tiny_tokenizer)
    model = build_causal_lm(params.model, tiny_tokenizer, CONTEXT, params.seed)
    train_with_trainer(params, model, tiny_tokenizer, _setup(params, tiny_tokenizer, train_blocks, eval_blocks),
                       RunFiles(tmp_path / "work", tmp_path / "live"))
    trainer_loss = causal_lm_metrics(model, eval_blocks, [], 8)["loss"]
    accelerate_loss = accelerate_run["after"]["loss"]
    untrained = causal_lm_metrics(build_causal_lm(params.model, tiny_tokenizer, CONTEXT, params.seed), eval_blocks, [], 8)
    assert accelerate_loss < untrained["loss"] - 1.0 and trainer_loss < untrained["loss"] - 1.0
    print(f"validation loss: trainer {trainer_loss:.6f}, accelerate {accelerate_loss:.6f}")
    # the same optimiser, schedule, weight decay, clipping and batches: the same numbers to float rounding
    # (without the Accelerate loop's weight decay, or with a linear schedule, they differ by ~0.4%)
    assert accelerate_loss == pytest.approx(trainer_loss, rel=1e-5)


def test_torch_compile_trains_to_the_same_loss_on_both_backends(accelerate_run, tiny_tokenizer, tmp_path):
    """train.torch_compile: the compiled model computes the same numbers up to float rounding, and
    the saved weights are plain (no torch.compile wrapper prefixes in their names)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from hfpipe.modeling import build_causal_lm
    from hfpipe.tasks.causal_lm import causal_lm_metrics
    from hfpipe.train.trainer import train_with_trainer

    def compiled_graphs() -> int:  # graphs dynamo compiled since the last reset
        return counters["stats"]["unique_graphs"]

    eager = accelerate_run["after"]["loss"]
    params = parse_params({**PARAMS, "train": {**PARAMS["train"], "backend": "accelerate", "torch_compile": True}})
    torch._dynamo.reset()
    counters.clear()
    result = _run_accelerate(params, tiny_tokenizer, tmp_path / "acc")
    assert compiled_graphs() > 0  # the loop really ran a compiled model
    compiled = causal_lm_metrics(result.model, _data(tiny_tokenizer)[1], [], 8)["loss"]
    assert compiled == pytest.approx(eager, rel=1e-3)
    assert all("_orig_mod" not in name for name in result.model.state_dict())

    params = parse_params({**PARAMS, "train": {**PARAMS["train"], "torch_compile": True}})
    train_blocks, eval_blocks = _data(tiny_tokenizer)
    model = build_causal_lm(params.model, tiny_tokenizer, CONTEXT, params.seed)
    torch._dynamo.reset()
    counters.clear()
    trainer = train_with_trainer(params, model, tiny_tokenizer, _setup(params, tiny_tokenizer, train_blocks, eval_blocks),
                                 RunFiles(tmp_path / "work", tmp_path / "live"))
    assert compiled_graphs() > 0  # and so did the Trainer
    trainer.save_model(str(tmp_path / "saved"))
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    trainer_loss = causal_lm_metrics(reloaded, eval_blocks, [], 8)["loss"]
    assert abs(trainer_loss - eager) / eager < 0.05  # the backends' usual agreement, compiled


def test_bf16_autocast_is_applied_on_both_backends(accelerate_run, tiny_tokenizer, tmp_path):
    """train.mixed_precision: bf16 trains under bf16 autocast (TrainingArguments.bf16, the Accelerator's
    mixed_precision): the numbers move off fp32's by bf16 rounding, and both backends move alike."""
    from hfpipe.modeling import build_causal_lm
    from hfpipe.tasks.causal_lm import causal_lm_metrics
    from hfpipe.train.trainer import train_with_trainer

    fp32 = accelerate_run["after"]["loss"]
    bf16 = {**PARAMS["train"], "mixed_precision": "bf16"}
    result = _run_accelerate(parse_params({**PARAMS, "train": {**bf16, "backend": "accelerate"}}), tiny_tokenizer,
                             tmp_path / "acc")
    train_blocks, eval_blocks = _data(tiny_tokenizer)
    accelerate_bf16 = causal_lm_metrics(result.model, eval_blocks, [], 8)["loss"]
    params = parse_params({**PARAMS, "train": bf16})
    model = build_causal_lm(params.model, tiny_tokenizer, CONTEXT, params.seed)
    train_with_trainer(params, model, tiny_tokenizer, _setup(params, tiny_tokenizer, train_blocks, eval_blocks),
                       RunFiles(tmp_path / "work", tmp_path / "live"))
    trainer_bf16 = causal_lm_metrics(model, eval_blocks, [], 8)["loss"]
    print(f"validation loss: fp32 {fp32:.6f}, bf16 accelerate {accelerate_bf16:.6f}, bf16 trainer {trainer_bf16:.6f}")
    for loss in (accelerate_bf16, trainer_bf16):
        assert abs(loss - fp32) > 1e-5  # autocast ran: not fp32's numbers
        assert loss == pytest.approx(fp32, rel=0.05)  # and it trained as well
    assert accelerate_bf16 == pytest.approx(trainer_bf16, rel=1e-2)


def test_keytoken_weighted_training_runs_and_differs_from_plain(accelerate_run, tiny_tokenizer, tmp_path):
    from hfpipe.tasks.causal_lm import loop_fns as causal_lm_loop_fns

    params = parse_params({**PARAMS, "train": {**PARAMS["train"], "backend": "accelerate", "keytoken_alpha": 1.0}})
    keys = [tiny_tokenizer.convert_tokens_to_ids(t) for t in ["pd", "Ġpd"] if t in tiny_tokenizer.get_vocab()]
    assert keys
    result = _run_accelerate(params, tiny_tokenizer, tmp_path, loop_fns=causal_lm_loop_fns(keys, 1.0))
    plain = accelerate_run["result"].eval_history[-1]["loss"]
    weighted = result.eval_history[-1]["loss"]
    assert weighted != plain and abs(weighted - plain) / plain < 0.5  # trains, differently


def test_a_nan_loss_stops_training_naming_the_step_and_last_checkpoint(tiny_tokenizer, tmp_path):
    from hfpipe.tasks.causal_lm import loop_fns as causal_lm_loop_fns
    from hfpipe.tasks.common import LoopFns

    # Fault injection: a loss that turns NaN from the 7th micro-batch on (as a diverging run would).
    plain = causal_lm_loop_fns()
    calls = {"n": 0}

    def exploding_loss(batch, outputs):
        calls["n"] += 1
        loss = plain.train_loss(batch, outputs)
        return loss * float("nan") if calls["n"] >= 7 else loss

    params = parse_params({**PARAMS, "train": {**PARAMS["train"], "backend": "accelerate"}})
    with pytest.raises(PipelineError) as err:
        _run_accelerate(params, tiny_tokenizer, tmp_path, loop_fns=LoopFns(exploding_loss, plain.eval_stats, plain.eval_metrics),
                        marker=lambda step: {"step": step, "fingerprint": "t", "backend": "accelerate"})
    message = str(err.value)
    assert message.startswith("training loss is nan (gradient norm nan) at step 7; last good checkpoint: ")
    assert message.split("last good checkpoint: ")[1].startswith(str(tmp_path / "checkpoints" / "checkpoint-4"))


def test_trainer_nan_guard_names_the_step(tmp_path):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hfpipe.train.trainer import checkpoint_callbacks

    _, guard = checkpoint_callbacks(RunFiles(tmp_path / "checkpoints", tmp_path / "live"))
    args = TrainingArguments(output_dir=str(tmp_path), logging_steps=5, report_to="none", use_cpu=True)
    state = TrainerState()
    state.global_step = 15
    guard.on_log(args, state, TrainerControl(), logs={"loss": 2.5, "grad_norm": 1.0})  # finite: nothing
    with pytest.raises(PipelineError, match=r"^training loss is inf at step 15 \(logged every 5 steps\); "
                                            r"last good checkpoint: none"):
        guard.on_log(args, state, TrainerControl(), logs={"loss": float("inf")})


def _setup(params, tokenizer, train_set, eval_set):
    """What the train stage gives a backend: the task module's training setup."""
    from hfpipe.tasks import TASKS

    return TASKS[params.task].training_setup(params, tokenizer, train_set, eval_set)
