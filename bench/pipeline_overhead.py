"""Benchmark: the pipeline's own overhead, in a temporary copy of the repo on a tiny config.

* a no-op `dvc repro` (nothing changed) in seconds;
* each stage's start-up cost: seconds from process start to the end of the imports it needs before
  real work (measured by running the stage's imports alone), against its whole run on tiny data;
* the `dvc exp run -S lr=...` rerun's wall time against the sum of the stages it reruns
  (train, evaluate, export: from logs/<stage>.json), i.e. what DVC itself adds.

    python bench/pipeline_overhead.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e import TINY, dvc, env, git, make_repo_copy  # noqa: E402  (TINY: the e2e tests' tiny config)

# What each stage imports before it does real work (the heavy libraries it needs, nothing else).
STAGE_IMPORTS = {
    "fetch": "import stages.fetch, hfpipe.data, datasets",
    "train_tokenizer": "import stages.train_tokenizer, datasets, hfpipe.tokenize, transformers, tokenizers",
    "tokenize": "import stages.tokenize, datasets, transformers, hfpipe.tokenize",
    "train": "import stages.train, datasets, transformers, hfpipe.train, hfpipe.modeling; "
             "from transformers import Trainer, AutoModelForCausalLM",
    "evaluate": "import stages.evaluate, torch, datasets; from transformers import AutoModelForCausalLM",
    "export": "import stages.export, hfpipe.export; from transformers import AutoModelForCausalLM, pipeline",
}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/pipeline_results.json")
    args = parser.parse_args()
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo_copy(Path(tmp) / "repo", "params.yaml", TINY)
        dvc(repo, "repro")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "run")
        stage_seconds = {name: json.loads((repo / "logs" / f"{name}.json").read_text())["seconds_total"]
                         for name in STAGE_IMPORTS}
        figures["noop_repro_seconds"] = round(min(timed(lambda: dvc(repo, "repro")) for _ in range(3)), 2)
        for name, imports in STAGE_IMPORTS.items():
            t = min(timed(lambda imports=imports: subprocess.run([sys.executable, "-c", imports], cwd=repo, env=env(), check=True))
                    for _ in range(2))
            figures[f"startup_seconds_{name}"] = round(t, 2)
            figures[f"tiny_run_seconds_{name}"] = stage_seconds[name]
        wall = timed(lambda: dvc(repo, "exp", "run", "-S", "lr=0.01"))
        rerun = sum(json.loads((repo / "logs" / f"{n}.json").read_text())["seconds_total"]
                    for n in ("train", "evaluate", "export"))
        figures["lr_rerun_wall_seconds"] = round(wall, 2)
        figures["lr_rerun_stage_seconds_sum"] = round(rerun, 2)
        figures["lr_rerun_overhead_ratio"] = round(wall / rerun, 3)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:36s} {value}")


if __name__ == "__main__":
    main()
