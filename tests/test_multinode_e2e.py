"""End-to-end: several machines, and a worker lost among them. Two "machines" on this one, each
running the train stage with one process, meet in torchrun's c10d rendezvous on a free loopback
port (train.nnodes 2, train.rdzv_endpoint 127.0.0.1:PORT, train.max_restarts 1), as
docs/training.md ("Several machines") says to run them: one repository folder (here the same one,
standing for the shared filesystem), `dvc repro train` on the first machine and
`python -m stages.train` on the other. (Two `dvc repro` in one folder would fight over DVC's lock.)

One worker process (not its torchrun agent) is SIGKILLed right after the first complete
checkpoint: torchrun restarts the group, the group resumes from the newest complete checkpoint (the
log says so) and ends with the weights and curves of an uninterrupted 2-machine run.

Both machines run in a network namespace of their own that has only the loopback device: torch's
rendezvous store listens on every interface of its host (whatever the endpoint's address), and
there every interface is the loopback.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import checkpoints, copy_run, env, free_loopback_port, set_train

pytestmark = pytest.mark.e2e

# 2 machines x 1 process x batch 4: TINY's global batch of 8; a checkpoint every 4 of 16 steps
TRAIN = {"nnodes": 2, "num_processes": 1, "batch_size": 4, "max_steps": 16, "save_steps": 4, "max_restarts": 1}
CURVES = ["dvclive/plots/metrics/loss.tsv", "dvclive/plots/metrics/eval/loss.tsv"]
MARKERS = "models/checkpoints/run-*/checkpoint-*/hfpipe_checkpoint.json"


def node_env() -> dict[str, str]:
    # gloo's own connections between the ranks on the loopback too (it picks the host's address otherwise)
    return {**env(), "GLOO_SOCKET_IFNAME": "lo"}


def start_machines(repo: Path, name: str, netns: list[str]) -> tuple[list[subprocess.Popen], list[Path]]:
    """Machine 0: `dvc repro train`; machine 1: `python -m stages.train`; both in `repo`, meeting on a
    new free port, in the namespace `netns` enters. Output to files (a pipe nobody reads fills up and
    stalls the run)."""
    set_train(repo, rdzv_endpoint=f"127.0.0.1:{free_loopback_port()}")
    # (`ip netns exec` execs the command: each Popen's pid is the stage's own)
    commands = [[*netns, sys.executable, "-m", "dvc", "repro", "train"], [*netns, sys.executable, "-m", "stages.train"]]
    procs, logs = [], []
    for i, cmd in enumerate(commands):
        log = repo.parent / f"{name}-machine{i}.log"
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(cmd, cwd=repo, env=node_env(), stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        logs.append(log)
    return procs, logs


def wait_all(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 300) -> str:
    """Both machines' output, once both have ended (each with exit code 0)."""
    deadline = time.time() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.time(), 1))
    finally:
        stop(procs)
    text = [log.read_text(errors="replace") for log in logs]
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, f"machine {i} failed ({proc.returncode}):\n{text[i][-4000:]}"
    return "\n".join(text)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:  # its workers follow their agent (hfpipe.launch.exit_with_parent)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def complete_steps(repo: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[-1]) for p in repo.glob(MARKERS))


def test_two_machines_survive_a_killed_worker_and_end_with_the_uninterrupted_weights(tiny_default_repo, tmp_path,
                                                                                    loopback_only):
    import psutil

    repo = copy_run(tiny_default_repo, tmp_path / "repo")  # data/tokenized and models/tokenizer made
    set_train(repo, **TRAIN)

    # uninterrupted: both machines relaunch under torchrun with the same rendezvous, under the run's id
    out = wait_all(*start_machines(repo, "whole", loopback_only))
    relaunches = re.findall(r"train\.num_processes = 1, train\.nnodes = 2: relaunching as -m torch\.distributed\.run "
                            r"--nnodes 2 --rdzv-backend c10d --rdzv-endpoint 127\.0\.0\.1:\d+ --rdzv-id (run-\w+) "
                            r"--nproc_per_node 1 --max-restarts 1 -m stages\.train", out)
    assert len(relaunches) == 2 and len(set(relaunches)) == 1, out[-4000:]
    assert "2 process(es)" in out and checkpoints(repo) == []
    whole = {"weights": sha256(repo / "models/trained/model.safetensors"),
             **{c: (repo / c).read_bytes() for c in CURVES}}

    # a worker killed after the first complete checkpoint
    procs, logs = start_machines(repo, "killed", loopback_only)
    try:
        deadline = time.time() + 240
        while not complete_steps(repo):
            assert all(p.poll() is None for p in procs), "a machine ended before the first checkpoint"
            assert time.time() < deadline, "no complete checkpoint within 240 s"
            time.sleep(0.01)
        agent = psutil.Process(procs[1].pid)  # machine 1's stage: exec'd into its torchrun agent
        [worker] = [p for p in agent.children() if "stages.train" in p.cmdline()]
        worker.send_signal(signal.SIGKILL)
        complete_at_kill = complete_steps(repo)
    except BaseException:
        stop(procs)
        raise
    out = wait_all(procs, logs)
    print(f"killed machine 1's worker (pid {worker.pid}) with complete checkpoints at steps {complete_at_kill}")

    # torchrun restarted the group (its agent's log, at INFO: hfpipe.launch sets LOGLEVEL for it) ...
    assert "Worker group FAILED. 1/1 attempts left; will restart worker group" in logs[1].read_text(), out[-4000:]
    # ... which resumed (rank 0 alone says so) from the newest complete checkpoint
    resumed = re.findall(r"resumed from models/checkpoints/run-\w+/checkpoint-(\d+) at step (\d+)", out)
    assert len(resumed) == 1 and resumed[0][0] == resumed[0][1], out[-4000:]
    step = int(resumed[0][0])
    # (a resume from an older one would save some step twice, before the kill and after the restart)
    saved = [int(s) for s in re.findall(r"saved checkpoint models/checkpoints/run-\w+/checkpoint-(\d+)", out)]
    assert step >= max(complete_at_kill) and step in saved and len(saved) == len(set(saved)), (step, saved)
    assert re.search(rf"torchrun restarted the group \(a worker died\): resuming from "
                     rf"models/checkpoints/run-\w+/checkpoint-{step}", out)
    # the same weights and curves as the uninterrupted run; the finished run leaves no checkpoints
    assert sha256(repo / "models/trained/model.safetensors") == whole["weights"]
    assert {c: (repo / c).read_bytes() for c in CURVES} == {c: whole[c] for c in CURVES}
    assert checkpoints(repo) == []
