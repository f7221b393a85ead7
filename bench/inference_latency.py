"""Benchmark: inference latency of the exported model, PyTorch vs ONNX (fp32) vs int8 ONNX, on this CPU.

One forward pass (logits) at batch 1 and batch 32, each row `--length` tokens (default: the model's
context), after warm-up; p50 and p95 over `--repeats` calls. Uses models/export (the default
recipe's export, with its onnx/ folder) when present, else builds a GPT-2 of the default recipe's
size (untrained: latency does not depend on the weights) in bench/work/latency-model and exports it
with the same hfpipe.export_onnx functions the export stage uses.

    python bench/inference_latency.py [--model models/export] [--repeats 50]

Writes bench/latency_results.json. Threads: torch and onnxruntime both use every core by default
(2 here); the figures are for that setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hfpipe.export_onnx import FP32_FILE, INT8_FILE, ONNX_DIR, export_onnx, load_model, quantize_int8  # noqa: E402
from hfpipe.tasks import TASKS  # noqa: E402


def build_default_sized_model(out: Path) -> Path:
    """A GPT-2 shaped like the default recipe (2 layers, 256 wide, vocab 8192, context 128)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if (out / ONNX_DIR / INT8_FILE).is_file():
        return out
    import torch

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=8192, n_positions=128, n_layer=2, n_head=4, n_embd=256)).save_pretrained(out)
    export_onnx(out, out / ONNX_DIR / FP32_FILE, TASKS["causal-lm"])
    quantize_int8(out / ONNX_DIR / FP32_FILE, out / ONNX_DIR / INT8_FILE)
    return out


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def time_calls(call, repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/export")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per (runtime, batch size)")
    parser.add_argument("--length", type=int, default=None, help="tokens per row (default: the model's context)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for torch and onnxruntime (default: their default, every core)")
    parser.add_argument("--out", default="bench/latency_results.json")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    model_dir = ROOT / args.model
    source = "default recipe export (models/export)"
    if not (model_dir / ONNX_DIR / FP32_FILE).is_file():
        model_dir = build_default_sized_model(ROOT / "bench/work/latency-model")
        source = "untrained GPT-2 of the default recipe's size (no models/export/onnx found)"
    if args.threads:
        torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    model = load_model(model_dir, TASKS["causal-lm"])
    length = args.length or model.config.n_positions
    sessions = {}
    for name, file in [("onnx_fp32", FP32_FILE), ("onnx_int8", INT8_FILE)]:
        if (model_dir / ONNX_DIR / file).is_file():
            sessions[name] = ort.InferenceSession(str(model_dir / ONNX_DIR / file), options,
                                                  providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    results: dict = {}
    for batch in (1, 32):
        ids = rng.integers(0, model.config.vocab_size, (batch, length), dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        tensors = {k: torch.from_numpy(v) for k, v in feed.items()}
        repeats = args.repeats if batch == 1 else max(10, args.repeats // 3)

        def run_torch(tensors=tensors):
            with torch.inference_mode():
                model(**tensors, use_cache=False)

        row = {"pytorch": percentiles(time_calls(run_torch, repeats))}
        for name, session in sessions.items():
            row[name] = percentiles(time_calls(lambda s=session, feed=feed: s.run(["logits"], feed), repeats))
        for name in sessions:
            row[name]["speedup_p50_vs_pytorch"] = round(row["pytorch"]["p50_ms"] / row[name]["p50_ms"], 2)
        results[f"batch_{batch}"] = {"repeats": repeats, **row}
        print(f"batch {batch:>2} x {length} tokens: " + ", ".join(
            f"{name} p50 {r['p50_ms']:.1f} ms p95 {r['p95_ms']:.1f} ms" for name, r in row.items()))
    sizes = {name: round((model_dir / ONNX_DIR / file).stat().st_size / 1e6, 1)
             for name, file in [("onnx_fp32", FP32_FILE), ("onnx_int8", INT8_FILE)] if (model_dir / ONNX_DIR / file).is_file()}
    sizes["safetensors"] = round((model_dir / "model.safetensors").stat().st_size / 1e6, 1)
    out = {"model": source, "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
           "tokens_per_row": length, "torch_threads": torch.get_num_threads(), "onnxruntime_threads": args.threads or "default (every core)",
           "cpu_count": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2),
           "machine": platform.machine(), "torch": torch.__version__, "onnxruntime": ort.__version__,
           "file_size_mb": sizes, **results}
    Path(ROOT / args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
