"""Benchmark: peak RSS of the fetch/filter and tokenize stages at 1x and 8x the data.

Runs the real stage scripts in a temporary copy of the repo (default recipe, installed-packages
corpus) with dataset.max_bytes = X and 8X, and reads each process's peak RSS from the kernel
(os.wait4's rusage). The Arrow path streams documents and blocks in batches, so memory should stay
flat while the data grows 8x.

    python bench/memory.py [--mb 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e import env, make_repo_copy  # noqa: E402


def peak_rss_mb(cwd: Path, module: str) -> float:
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=cwd, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{module} failed in {cwd}: {proc.stderr.read()[-2000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="1x corpus size in MB")
    parser.add_argument("--out", default="bench/memory_results.json")
    args = parser.parse_args()

    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 8):
            repo = make_repo_copy(Path(tmp) / f"x{scale}", "params.yaml", {
                "dataset": {"max_bytes": int(args.mb * scale * 1e6), "max_documents": None},
                "tokenizer": {"vocab_size": 2000}})
            figures[f"fetch_peak_rss_mb_{scale}x"] = round(peak_rss_mb(repo, "stages.fetch"), 1)
            subprocess.run([sys.executable, "-m", "stages.train_tokenizer"], cwd=repo, env=env(), check=True,
                           capture_output=True)
            figures[f"tokenize_peak_rss_mb_{scale}x"] = round(peak_rss_mb(repo, "stages.tokenize"), 1)
            stats = json.loads((repo / "data/stats/fetch.json").read_text())
            figures[f"corpus_mb_{scale}x"] = round(stats["bytes"] / 1e6, 2)
            tok = json.loads((repo / "data/stats/tokenize.json").read_text())
            figures[f"tokens_{scale}x"] = tok["train"]["tokens"] + tok["validation"]["tokens"]
    figures["fetch_rss_ratio_8x_vs_1x"] = round(figures["fetch_peak_rss_mb_8x"] / figures["fetch_peak_rss_mb_1x"], 3)
    figures["tokenize_rss_ratio_8x_vs_1x"] = round(figures["tokenize_peak_rss_mb_8x"] / figures["tokenize_peak_rss_mb_1x"], 3)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:32s} {value}")


if __name__ == "__main__":
    main()
