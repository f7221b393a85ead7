"""End-to-end: a queued lr sweep (`dvc exp run --queue -S lr=a,b,c` + `dvc queue start`) on a tiny
default-recipe config, and the commands that compare its results.

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

LRS = ["0.0003", "0.001"]  # two runs show the queue, the sorting and the comparisons; each costs ~30 s


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


def test_queued_lr_sweep_runs_and_its_results_compare(repo):
    dvc(repo, "exp", "run", "--queue", "-S", f"lr={','.join(LRS)}")
    dvc(repo, "queue", "start", "-j", "1")
    status = wait_for_queue(repo)
    assert status.count("Success") == len(LRS), status

    table = dvc(repo, "exp", "show", "--csv", "--sort-by", "metrics/eval.json:perplexity", "--sort-order", "asc",
                "--keep", "lr").stdout
    rows = [r for r in csv.DictReader(io.StringIO(table)) if r.get("Experiment")]  # the queued experiments
    assert sorted(r["lr"] for r in rows) == sorted(str(float(lr)) for lr in LRS)
    perplexities = [float(r["perplexity"]) for r in rows]
    assert perplexities == sorted(perplexities) and len(set(perplexities)) == len(LRS)
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
