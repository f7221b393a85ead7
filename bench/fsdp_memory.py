"""Benchmark: 1 process against 2-process DDP and 2-process FSDP (train.distributed), at the same
global batch, on the default recipe's model, data and bf16; side by side in one run.

Runs the real train stage (`python -m stages.train`, the Accelerate backend; 2 processes: its
torchrun relaunch over gloo) in a temporary copy of the repo whose data stages ran once. Each
process prints its training time and peak RSS (hfpipe.train.accelerate_loop), and under FSDP the
parameter and optimizer-state elements it holds; tokens/s is global batch x context x steps over
the slowest process's training time (no evaluation or checkpoint inside the timed loop).
torch.compile is off in all three (FSDP does not compile).

    python bench/fsdp_memory.py [--steps 200] [--mb 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e import env, make_repo_copy, set_train  # noqa: E402

GLOBAL_BATCH = 32  # the recipe's train.batch_size on 1 process
CONFIGS = {"1 process": {"num_processes": 1, "batch_size": GLOBAL_BATCH, "distributed": "ddp"},
           "2-process DDP": {"num_processes": 2, "batch_size": GLOBAL_BATCH // 2, "distributed": "ddp"},
           "2-process FSDP": {"num_processes": 2, "batch_size": GLOBAL_BATCH // 2, "distributed": "fsdp"}}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run_stage(repo: Path, module: str) -> str:
    result = subprocess.run([sys.executable, "-m", module], cwd=repo, env=env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{module} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout + result.stderr


def measure(repo: Path, steps: int, context: int, config: dict) -> dict:
    set_train(repo, **config)
    out = run_stage(repo, "stages.train")
    n = config["num_processes"]
    runs = re.findall(rf"process (\d)/{n}: trained on \d+ batches \(blocks digest \w+\) in ([\d.]+)s, "
                      r"peak RSS (\d+) MB", out)
    assert len(runs) == n, out[-3000:]
    seconds = max(float(s) for _, s, _ in runs)
    figures = {"tokens_per_s": round(GLOBAL_BATCH * context * steps / seconds),
               "train_seconds": seconds,
               "peak_rss_mb_per_process": [int(rss) for _, _, rss in sorted(runs)]}
    held = re.findall(rf"process (\d)/{n} holds (\d+) of (\d+) parameter elements and (\d+) of (\d+) "
                      r"optimizer-state elements", out)
    if held:
        # fp32 bytes of weights + gradients (as many as the weights) + AdamW state held per process
        figures["weights_grads_adamw_mb_per_process"] = [round((2 * int(p) + int(o)) * 4 / 1e6, 2)
                                                         for _, p, _, o, _ in sorted(held)]
        figures["weights_grads_adamw_mb_unsharded"] = round((2 * int(held[0][2]) + int(held[0][4])) * 4 / 1e6, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--mb", type=float, default=2.0, help="corpus size in MB (enough blocks for the steps)")
    parser.add_argument("--out", default="bench/fsdp_results.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo_copy(Path(tmp) / "repo", "params.yaml", {
            "dataset": {"max_bytes": int(args.mb * 1e6)},
            "train": {"backend": "accelerate", "max_steps": args.steps, "eval_steps": 10 * args.steps,
                      "save_steps": 10 * args.steps, "logging_steps": 50, "torch_compile": False}})
        for module in ("stages.fetch", "stages.train_tokenizer", "stages.tokenize"):
            run_stage(repo, module)
        context = yaml.safe_load((repo / "params.yaml").read_text())["tokenize"]["context_length"]
        results = {name: measure(repo, args.steps, context, config) for name, config in CONFIGS.items()}

    one, ddp, fsdp = (results[name] for name in CONFIGS)
    figures = {
        "machine": f"{cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores", "steps": args.steps,
        "global_batch": GLOBAL_BATCH, "mixed_precision": "bf16", "results": results,
        "ratios": {"ddp_tokens_per_s_vs_1": round(ddp["tokens_per_s"] / one["tokens_per_s"], 3),
                   "fsdp_tokens_per_s_vs_1": round(fsdp["tokens_per_s"] / one["tokens_per_s"], 3),
                   "fsdp_tokens_per_s_vs_ddp": round(fsdp["tokens_per_s"] / ddp["tokens_per_s"], 3),
                   "fsdp_peak_rss_vs_ddp": round(max(fsdp["peak_rss_mb_per_process"])
                                                 / max(ddp["peak_rss_mb_per_process"]), 3),
                   "fsdp_held_state_vs_unsharded": round(max(fsdp["weights_grads_adamw_mb_per_process"])
                                                         / fsdp["weights_grads_adamw_mb_unsharded"], 3)}}
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
