"""End-to-end: kill anywhere, lose nothing. Real `dvc repro` of a tiny recipe, SIGKILLed (dvc and the
stage, its whole process group, as an OOM kill or a lost machine would) at points spread across
every stage, and run again after each kill, from a fresh clone with an empty cache: every run
completes with outputs byte-identical to an uninterrupted run's (dvc.lock's hashes), no scratch or
half-written output is left, the killed train resumes from its checkpoint, and a stage killed
under `--force` that DVC then restores from its run-cache (so its own clean-up never runs) leaves
nothing behind either.

The kill points are timers started when dvc announces the stage, at fractions of the stage's time
in the uninterrupted run (its logs/<stage>.json), plus the moment train's first checkpoint is
complete; the note of each test prints where each kill landed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e import MRPC, TINY, dvc, env, make_repo_copy, stale_stages

pytestmark = pytest.mark.e2e

# (stage, when): a fraction of the stage's uninterrupted time, or "checkpoint" (train's first complete one)
DEFAULT_KILLS = [("fetch", 0.5), ("train_tokenizer", 0.6), ("tokenize", 0.5), ("train", "checkpoint"), ("train", 0.6),
                 ("evaluate", 0.5), ("export", 0.6)]
MRPC_KILLS = [("fetch", 0.5), ("tokenize", 0.7), ("train", "checkpoint"), ("export", 0.6)]


def outputs(repo: Path) -> dict[str, str]:
    """Every output's hash in dvc.lock (dvclive's holds timings: its curves are compared apart)."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"].values()
    return {o["path"]: o["md5"] for s in stages for o in s.get("outs", []) if o["path"] != "dvclive"}


CURVES = ["dvclive/plots/metrics/loss.tsv", "dvclive/plots/metrics/eval/loss.tsv"]


def leftovers(repo: Path) -> list[str]:
    """Scratch folders and half-written outputs anywhere in the workspace (not DVC's own .dvc/)."""
    found = []
    for root in ("data", "models", "metrics", "dvclive"):
        for p in (repo / root).rglob("*") if (repo / root).exists() else []:
            if ".tmp-" in p.name or p.name == ".incomplete" or p.name.endswith(".tmp"):
                found.append(str(p.relative_to(repo)))
    return found


def kill_during(repo: Path, stage: str, when, seconds: dict[str, float], log_name: str) -> str:
    """Start `dvc repro`, SIGKILL its process group at the kill point in `stage`; returns where
    it landed (the stage running then), or 'finished' if the run ended first."""
    log = repo.parent / log_name
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    try:
        while f"Running stage '{stage}'" not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                return "finished"
            assert time.time() < deadline, f"stage {stage} did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.02)
        if when == "checkpoint":
            while not list((repo / "models/checkpoints").glob("run-*/checkpoint-*/hfpipe_checkpoint.json")):
                if proc.poll() is not None:
                    return "finished"
                time.sleep(0.01)
        else:
            stop = time.time() + when * seconds[stage]
            while time.time() < stop and proc.poll() is None:
                time.sleep(0.01)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it had finished
            pass
        proc.wait()
    if proc.returncode not in (-signal.SIGKILL, None) and proc.returncode != 0:
        raise AssertionError(f"dvc repro failed before the kill ({proc.returncode}):\n{log.read_text()[-3000:]}")
    ran = re.findall(r"Running stage '([\w-]+)'", log.read_text(errors="replace"))
    return ran[-1] if ran else "dvc"


def sweep(baseline: Path, repo: Path, kills: list) -> tuple[list[str], str]:
    """Kill `dvc repro` at each point in turn, then let one run to the end; returns where each kill landed
    and the output of the last run."""
    seconds = {p.stem: json.loads(p.read_text())["seconds_total"] for p in (baseline / "logs").glob("*.json")}
    landed = [kill_during(repo, stage, when, seconds, log_name=f"kill-{i}.log") for i, (stage, when) in enumerate(kills)]
    final = dvc(repo, "repro")
    print(f"kill points ({len(kills)}): " + ", ".join(f"{s}@{w} -> {at}" for (s, w), at in zip(kills, landed, strict=True)))
    return landed, final.stdout


def fresh_clone(dest: Path, recipe: str, overrides: dict) -> Path:
    """A clone with no outputs and an empty DVC cache: nothing can be restored, everything runs."""
    return make_repo_copy(dest, recipe, overrides)


def assert_whole_and_identical(repo: Path, baseline: Path) -> None:
    assert outputs(repo) == outputs(baseline)
    assert {c: (repo / c).read_bytes() for c in CURVES} == {c: (baseline / c).read_bytes() for c in CURVES}
    assert leftovers(repo) == []
    assert not (repo / "models/checkpoints").exists()  # the finished run removed its own
    assert stale_stages(repo) == set()


def assert_a_forced_kill_restored_from_the_run_cache_leaves_nothing(repo: Path, baseline: Path, stage: str,
                                                                     output: str) -> None:
    """`dvc repro --force` killed while `stage` writes `output` (flagged .incomplete), then a plain
    `dvc repro`: DVC restores the stage from its run-cache, so the stage's own code never runs, and
    still nothing half-written is left (DVC deletes a stage's outputs before it restores them)."""
    log = repo.parent / "kill-forced.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force"], cwd=repo, env=env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    try:
        while not (repo / output / ".incomplete").exists():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert leftovers(repo) == [f"{output}/.incomplete"]
    result = dvc(repo, "repro")
    assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in result.stdout, result.stdout[-2000:]
    assert_whole_and_identical(repo, baseline)


def test_the_default_recipe_killed_anywhere_completes_byte_identical(tiny_default_repo, tmp_path):
    repo = fresh_clone(tmp_path / "repo", "params.yaml", TINY)  # (TINY checkpoints every 4 of its 12 steps)
    landed, final = sweep(tiny_default_repo, repo, DEFAULT_KILLS)
    assert set(landed) >= {"fetch", "train_tokenizer", "tokenize", "train", "evaluate", "export"}, landed
    logs = "".join((tmp_path / f"kill-{i}.log").read_text(errors="replace") for i in range(len(DEFAULT_KILLS)))
    assert re.search(r"resumed from models/checkpoints/run-\w+/checkpoint-\d+", logs + final), "train never resumed"
    assert_whole_and_identical(repo, tiny_default_repo)
    assert_a_forced_kill_restored_from_the_run_cache_leaves_nothing(repo, tiny_default_repo, "tokenize", "data/tokenized")


def test_the_mrpc_recipe_killed_anywhere_completes_byte_identical(mrpc_run, tmp_path):
    repo = fresh_clone(tmp_path / "repo", "mrpc", MRPC)  # (checkpoints every 2 of its 6 steps)
    landed, final = sweep(mrpc_run, repo, MRPC_KILLS)
    assert set(landed) >= {"fetch", "tokenize", "train", "export"}, landed
    logs = "".join((tmp_path / f"kill-{i}.log").read_text(errors="replace") for i in range(len(MRPC_KILLS)))
    assert re.search(r"resumed from models/checkpoints/run-\w+/checkpoint-\d+", logs + final), "train never resumed"
    assert_whole_and_identical(repo, mrpc_run)
