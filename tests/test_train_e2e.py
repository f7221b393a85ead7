"""End-to-end: the real train stage killed with SIGKILL and resumed with the Accelerate backend
(torch.compile, dropout: bit-identical), a killed run's checkpoints kept through a param change, the
Trainer backend against it, and two processes (torchrun, gloo), on the tiny default recipe with 80
steps. (The Trainer's kill and resume: tests/test_kill_e2e.py.)

`accelerate_run` is one finished, committed `dvc repro` with the Accelerate backend; every test
works on its own copy of it (tests.e2e.copy_run) and compares with it, so the tests are independent.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e import (
    TINY,
    checkpoints,
    copy_run,
    dvc,
    make_repo_copy,
    repro_and_commit,
    run,
    set_train,
    stages_run,
    stale_stages,
    start_and_kill_after_first_checkpoint,
)

pytestmark = pytest.mark.e2e

MAX_STEPS, SAVE_STEPS = 80, 10
TRAIN = {"max_steps": MAX_STEPS, "save_steps": SAVE_STEPS, "eval_steps": 20, "logging_steps": 5, "batch_size": 8,
         "threads": 1, "torch_compile": True}  # the recipe's (TINY turns it off)


@pytest.fixture(scope="module")
def accelerate_run(tmp_path_factory) -> Path:
    """The whole pipeline with the Accelerate backend (the default recipe's bf16 autocast,
    torch.compile and deterministic kernels), uninterrupted, committed."""
    overrides = copy.deepcopy(TINY)
    overrides["train"].update(TRAIN, backend="accelerate")
    overrides["model"]["dropout"] = 0.1  # so resuming must also restore the RNG streams exactly
    path = make_repo_copy(tmp_path_factory.mktemp("train-e2e") / "repo", "params.yaml", overrides)
    repro_and_commit(path, "accelerate run")
    assert checkpoints(path) == []  # a finished run leaves nothing to resume
    return path


@pytest.fixture
def repo(accelerate_run, tmp_path) -> Path:
    return copy_run(accelerate_run, tmp_path / "repo")


def eval_loss(repo: Path) -> float:
    return json.loads((repo / "dvclive/metrics.json").read_text())["eval"]["loss"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def resumed_step(output: str) -> int:
    found = re.findall(r"^resumed from models/checkpoints/run-\w+/checkpoint-(\d+) at step (\d+)", output, re.M)
    assert len(found) == 1, output[-3000:]
    assert found[0][0] == found[0][1]
    return int(found[0][0])


def test_accelerate_backend_killed_then_dvc_repro_resumes_to_identical_results(accelerate_run, repo):
    full = {"weights": sha256(accelerate_run / "models/trained/model.safetensors"),
            "dvclive": tree(accelerate_run / "dvclive"),
            "eval": json.loads((accelerate_run / "metrics/eval.json").read_text())}
    start_and_kill_after_first_checkpoint(repo, sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "train")
    assert checkpoints(repo)
    # forced, as the killed run was: a plain repro would check out the finished run of these same
    # params from the DVC cache (dvc.lock has it) instead of training. A killed run of new params has no
    # such run anywhere, and a plain `dvc repro` resumes it.
    result = dvc(repo, "repro", "--force", "--single-item", "train")
    assert "train" in stages_run(result.stdout)
    step = resumed_step(result.stdout)
    assert SAVE_STEPS <= step < MAX_STEPS and step % SAVE_STEPS == 0
    # bit-identical: the weights, and every curve and summary dvclive wrote
    assert sha256(repo / "models/trained/model.safetensors") == full["weights"]
    assert tree(repo / "dvclive") == full["dvclive"]
    assert json.loads((repo / "metrics/eval.json").read_text()) == full["eval"]
    assert checkpoints(repo) == []
    assert stale_stages(repo) == set()


def test_trainer_backend_agrees_with_accelerate_and_2_processes_match_1(accelerate_run, repo):
    """(Its kill and resume, bit-identical with every output, is tests/test_kill_e2e.py's: the
    default recipe trains with the Trainer.)"""
    set_train(repo, backend="trainer", torch_compile=False)
    result = dvc(repo, "repro", "train")  # (the eval loss is train's: evaluate and export are not needed)
    assert stages_run(result.stdout) == {"train"}
    assert checkpoints(repo) == []
    # the two backends agree on this data
    assert abs(eval_loss(repo) - eval_loss(accelerate_run)) / eval_loss(accelerate_run) < 0.05

    # 2 processes (DDP over gloo) at the same global batch reach the 1-process validation loss
    one = eval_loss(repo)
    result = dvc(repo, "exp", "run", "-S", "train.num_processes=2", "-S", "train.batch_size=4", "train")
    assert "relaunching as -m torch.distributed.run --standalone --nproc_per_node 2 -m stages.train" in result.stdout
    two = eval_loss(repo)
    print(f"Trainer eval loss: 1 process x 8 = {one:.6f}; 2 processes x 4 = {two:.6f}")
    assert two != one and abs(two - one) / one < 0.02


def test_a_killed_runs_checkpoints_outlive_a_param_change_and_resume_when_the_params_come_back(repo):
    """Killed, then run with another lr (or model, or logging_steps: any param that defines the run):
    that run trains from scratch in its own folder and keeps the killed run's checkpoints, said at
    its start; back at the killed run's params, the stage resumes them."""
    set_train(repo, torch_compile=False)  # (not what this is about; saves the compile)
    start_and_kill_after_first_checkpoint(repo, sys.executable, "-m", "stages.train")
    [killed] = checkpoints(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    lr = params["lr"]
    params["lr"] = lr * 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(repo, sys.executable, "-m", "stages.train")
    run_folder, step = killed.split("/")[0], int(killed.split("-")[-1])
    assert (f"models/checkpoints/{run_folder}: kept, checkpoint at step {step} of a run with other params "
            f"(lr: {lr!r} -> {lr * 2!r};") in result.stdout
    assert "resumed from" not in result.stdout and checkpoints(repo) == [killed]  # its own, done, are gone
    params["lr"] = lr
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(repo, sys.executable, "-m", "stages.train")
    assert resumed_step(result.stdout) == step and checkpoints(repo) == []
    assert not (repo / "models" / "checkpoints").exists()


def test_two_processes_with_dvc_exp_run(accelerate_run, repo):
    """torchrun relaunch, gloo MULTI_CPU: sharded data, one writer, the 1-process loss at the same global batch."""
    result = dvc(repo, "exp", "run", "-S", "train.num_processes=2", "-S", "train.batch_size=4",
                 "-S", "train.torch_compile=false", "train")  # (no compiles, up to train: not what this is about)
    out = result.stdout
    assert stages_run(out) == {"train"}
    assert "relaunching as -m torch.distributed.run --standalone --nproc_per_node 2 -m stages.train" in out
    # not anchored at line starts: the two processes share the pipe with progress bars ("\r", no newline)
    shards = dict(re.findall(r"process (\d)/2: trained on \d+ batches \(blocks digest (\w+)\)", out))
    assert set(shards) == {"0", "1"}
    assert shards["0"] != shards["1"]  # each process saw different blocks
    assert len(re.findall(r"process \d/2: trained on 80 batches", out)) == 2
    # only the main process reports, checkpoints and logs: one line per checkpoint, one row per step
    saved = re.findall(r"^saved checkpoint models/checkpoints/run-\w+/checkpoint-(\d+)$", out, re.M)
    assert saved == [str(s) for s in range(SAVE_STEPS, MAX_STEPS, SAVE_STEPS)]
    steps = [line.split("\t")[0] for line in (repo / "dvclive/plots/metrics/loss.tsv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps), key=int)
    assert checkpoints(repo) == [] and (repo / "models/trained/model.safetensors").is_file()
    one, two = eval_loss(accelerate_run), eval_loss(repo)
    print(f"eval loss: 1 process x batch 8 = {one:.6f}; 2 processes x batch 4 = {two:.6f}")
    assert abs(two - one) / one < 0.02
