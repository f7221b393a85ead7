"""End-to-end: a queued seed and lr sweep (`dvc exp run --queue -S seed=1 -S lr=a,b` + `dvc queue start`)
on a tiny default-recipe config, and the commands that compare its results: `dvc exp show`,
`dvc metrics diff`, `dvc plots diff` and `hfpipe compare` (checked in tests/test_compare.py's helper).

Queued experiments run in a temporary copy made from the last commit, so this only passes when
everything the pipeline needs is tracked by git. The repo is committed after one `dvc repro`
(with its dvc.lock), as a user's would be; the queued runs restore fetch/tokenize from the shared
cache and rerun train, evaluate and export.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path

import pytest

from tests.e2e import copy_run, dvc

pytestmark = pytest.mark.e2e

# Three queued runs: seed 1 at the committed lr and at 0.001, seed 2 at 0.001. They show the queue, the
# sorting and the comparisons, and give `hfpipe compare` two groups of two seeds with HEAD (seed 42).
# Each costs ~35 s here (a temporary copy each, train + evaluate + export).
OTHER_LR = "0.001"

@pytest.fixture
def repo(tiny_default_repo, tmp_path) -> Path:
    return copy_run(tiny_default_repo, tmp_path / "repo")  # conftest: TINY default recipe, committed


def wait_for_queue(repo: Path, timeout: float = 420) -> str:
    deadline = time.time() + timeout
    while True:
        status = dvc(repo, "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        assert time.time() < deadline, f"queue still busy after {timeout}s:\n{status}"
        time.sleep(2)


def test_queued_seed_and_lr_sweep_runs_and_its_results_compare(repo):
    import yaml

    from tests.test_compare import assert_compare_matches_the_experiments

    committed = yaml.safe_load((repo / "params.yaml").read_text())["lr"]
    assert float(OTHER_LR) != committed
    dvc(repo, "exp", "run", "--queue", "-S", "seed=1", "-S", f"lr={committed},{OTHER_LR}")
    dvc(repo, "exp", "run", "--queue", "-S", "seed=2", "-S", f"lr={OTHER_LR}")
    dvc(repo, "queue", "start", "-j", "1")
    status = wait_for_queue(repo)
    assert status.count("Success") == 3, status

    table = dvc(repo, "exp", "show", "--csv", "--sort-by", "metrics/eval.json:perplexity", "--sort-order", "asc",
                "--keep", "lr").stdout
    rows = [r for r in csv.DictReader(io.StringIO(table)) if r.get("Experiment")]  # the queued experiments
    assert sorted(float(r["lr"]) for r in rows) == sorted([committed, float(OTHER_LR), float(OTHER_LR)])
    perplexities = [float(r["perplexity"]) for r in rows]
    assert perplexities == sorted(perplexities) and len(set(perplexities)) == 3
    best = rows[0]["Experiment"]

    diff = json.loads(dvc(repo, "metrics", "diff", "HEAD", best, "--all", "--json").stdout)
    assert diff["metrics/eval.json"]["perplexity"]["diff"] != 0
    assert diff["metrics/eval.json"]["perplexity"]["new"] == pytest.approx(perplexities[0], rel=1e-3)
    # the export stage reran for the experiment too: its ONNX check scored the new model
    export = diff["metrics/export.json"]
    assert export["onnx.pytorch_perplexity"]["diff"] != 0 and export["onnx.onnx_max_abs_logit_diff"]["new"] < 1e-3
    plots = json.loads(dvc(repo, "plots", "diff", "HEAD", best, "--json").stdout)
    revisions = {rev for item in plots["data"]["Loss"] for rev in item["revisions"]}
    assert len(revisions) == 2, revisions  # the baseline's and the best experiment's curves

    # and the README's workflow ends with `hfpipe compare`: seeds pooled, lr groups against HEAD's
    assert_compare_matches_the_experiments(repo, f"lr={committed}")
