"""Benchmark (not a test): LoRA (model.peft) against full fine-tuning, all-MiniLM-L6-v2 on GLUE SST-2.

Runs bench/sentiment_sst2.py twice, each in its own process so that its peak RSS is its own (read
with os.wait4): full fine-tuning at its lr, then LoRA (r 8, alpha 16, dropout 0.1, the issue's
example) at a LoRA lr (3e-3), on the same rows and steps (8,000 rows, 1 epoch, 250 steps). Prints and writes
bench/lora_results.json: trainable params %, peak RSS, training tokens/s, SST-2 dev accuracy, and
the ratios measured in this one run. Skips with a message when ../shared/data/glue-sst2 is absent.

    python bench/lora_sst2.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from sentiment_sst2 import DEFAULT_DATA  # noqa: E402


def run(args: list[str], out: Path) -> dict:
    """sentiment_sst2.py with `args` in a child process: its results and its own peak RSS."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench/sentiment_sst2.py"), *args, "--out", str(out),
                             "--work", str(out.with_suffix(""))], cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bench/sentiment_sst2.py {' '.join(args)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return {**json.loads(out.read_text()), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}  # ru_maxrss: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--full-lr", type=float, default=1e-4)
    ap.add_argument("--lora-lr", type=float, default=3e-3)  # the best of 1e-3, 2e-3, 3e-3, 5e-3 here (README)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "lora_results.json")
    args = ap.parse_args()
    if not (args.data / "train.tsv").is_file() or not (args.data / "dev.tsv").is_file():
        print(f"skipped: {args.data} (train.tsv, dev.tsv) not found; this benchmark needs GLUE SST-2 there")
        return
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        full = run(["--data", str(args.data), "--lr", str(args.full_lr)], Path(tmp) / "full.json")
        lora = run(["--data", str(args.data), "--lr", str(args.lora_lr), "--lora-r", str(args.lora_r)],
                   Path(tmp) / "lora.json")
    keys = ("lr", "peft", "optimizer_steps", "parameters", "trainable_parameters", "trainable_percent",
            "peak_rss_mb", "train_tokens_per_second", "train_samples_per_second", "dev", "seconds")
    results = {
        "data": str(args.data), "model": full["model"], "train_rows": full["train_rows"], "dev_rows": full["dev_rows"],
        "full": {k: full[k] for k in keys}, "lora": {k: lora[k] for k in keys},
        "lora_over_full": {
            "trainable_parameters": round(lora["trainable_parameters"] / full["trainable_parameters"], 5),
            "peak_rss": round(lora["peak_rss_mb"] / full["peak_rss_mb"], 3),
            "train_tokens_per_second": round(lora["train_tokens_per_second"] / full["train_tokens_per_second"], 3),
        },
        "dev_accuracy_difference_points": round(100 * (lora["dev"]["accuracy"] - full["dev"]["accuracy"]), 2),
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    r = results["lora_over_full"]
    print(f"LoRA r={args.lora_r}: {lora['trainable_percent']}% of the parameters train; peak RSS x{r['peak_rss']}, "
          f"training tokens/s x{r['train_tokens_per_second']}; SST-2 dev accuracy {lora['dev']['accuracy']:.4f} "
          f"vs full {full['dev']['accuracy']:.4f} ({results['dev_accuracy_difference_points']:+} points)")


if __name__ == "__main__":
    sys.exit(main())
