"""hfpipe.launch: the torchrun command, and workers that never outlive their launcher (real processes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hfpipe import launch

ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


def test_torchrun_command_is_a_standalone_relaunch_of_the_module():
    cmd = launch.torchrun_command(2, "stages.train")
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "stages.train"]


def test_torchrun_command_for_several_machines_meets_at_the_endpoint_under_the_runs_id():
    cmd = launch.torchrun_command(4, "stages.train", nnodes=2, rdzv_endpoint="node0:29400", rdzv_id="run-0123abcd",
                                  max_restarts=3)
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--rdzv-backend", "c10d",
                   "--rdzv-endpoint", "node0:29400", "--rdzv-id", "run-0123abcd", "--nproc_per_node", "4",
                   "--max-restarts", "3", "-m", "stages.train"]
    # one machine keeps --standalone (a free port: queued experiments never collide), with restarts if asked
    assert launch.torchrun_command(2, "stages.train", max_restarts=1)[3:] == [
        "--standalone", "--nproc_per_node", "2", "--max-restarts", "1", "-m", "stages.train"]
    with pytest.raises(ValueError):
        launch.torchrun_command(1, "stages.train", nnodes=2, rdzv_id="run-0123abcd")  # no endpoint: no default port


def test_nodes_and_processes_come_from_torchruns_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert launch.nodes_and_processes() == (2, 4) and launch.restart_count() == 2
    monkeypatch.delenv("LOCAL_WORLD_SIZE")  # another launcher: one machine
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    assert launch.nodes_and_processes() == (1, 8) and launch.restart_count() == 0


# ---------------------------------------------------------------- a restarted group (torchrun --max-restarts)

class _Tokenizer:
    def save_pretrained(self, out):
        (Path(out) / "tokenizer.json").write_text("{}")


def _stage(tmp_path: Path):
    from hfpipe.train import TrainPaths

    for name in ("tokenized", "tokenizer"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.bin").write_bytes(name.encode())
    return TrainPaths(tokenized=tmp_path / "tokenized", tokenizer=tmp_path / "tokenizer",
                      tokenize_stats=tmp_path / "stats.json", trained=tmp_path / "trained", live_dir=tmp_path / "live",
                      checkpoints=tmp_path / "checkpoints")


def _killed_groups_checkpoints(params, stage_paths) -> Path:
    """What a killed group leaves: a complete checkpoint-4 and a half-written checkpoint-8 (no marker)."""
    from hfpipe.checkpoint import data_fingerprint, marker_data, run_dir, write_marker

    data_hash = data_fingerprint([stage_paths.tokenized, stage_paths.tokenizer])
    folder = run_dir(params, data_hash, stage_paths.checkpoints)
    for step in (4, 8):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"weights %d" % step)
    write_marker(folder / "checkpoint-4", marker_data(params, data_hash, 4, params.train.backend))
    return folder


def _run_worker(params, stage_paths, monkeypatch, rank: int, restart: int,
                checked: Path | None = None) -> tuple[dict, list[str]]:
    """train_resumable in a worker of our own relaunch (rank `rank` of 2 machines, after `restart`
    restarts of its machine's torchrun agent; `checked`: the checkpoint the launcher verified)."""
    from hfpipe.train import train_resumable

    monkeypatch.setenv(launch.LAUNCHER_PID_ENV, str(os.getppid()))
    monkeypatch.setenv(launch.CHECKED_CHECKPOINT_ENV, str(checked or ""))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(restart))
    seen: dict = {}
    logs: list[str] = []

    def train(model, files):
        seen["resume_from"] = files.resume_from
        seen["left"] = sorted(p.name for p in Path(files.checkpoint_dir).iterdir())
        return lambda out: (Path(out) / "model.safetensors").write_bytes(b"trained")

    train_resumable(params, _Tokenizer(), lambda: object(), train, stage_paths, log=logs.append)
    return seen, logs


PARAMS = {"nnodes": 2, "rdzv_endpoint": "127.0.0.1:29400", "max_restarts": 1}


@pytest.mark.parametrize("restart", [1, 0])  # 0: the agent of a machine that only followed the others' restart
@pytest.mark.parametrize("resume", [True, False])
def test_a_restarted_group_resumes_the_newest_complete_checkpoint_and_says_so(tmp_path, monkeypatch, resume,
                                                                               restart):
    """After torchrun restarted the group, the workers go on from the newest complete checkpoint the
    killed group wrote (also with train.resume: false: the launcher applied it at the start), never
    the half-written one, which they leave alone; the main process says so."""
    from hfpipe.params import parse_params

    params = parse_params({"train": {**PARAMS, "resume": resume}})
    stage_paths = _stage(tmp_path)
    folder = _killed_groups_checkpoints(params, stage_paths)
    seen, logs = _run_worker(params, stage_paths, monkeypatch, rank=0, restart=restart)
    assert seen == {"resume_from": folder / "checkpoint-4", "left": ["checkpoint-4", "checkpoint-8"]}
    assert f"torchrun restarted the group (a worker died): resuming from {folder / 'checkpoint-4'}" in logs
    assert (stage_paths.trained / "model.safetensors").read_bytes() == b"trained" and not folder.exists()


def test_a_first_start_of_our_relaunch_resumes_what_its_launcher_checked(tmp_path, monkeypatch):
    from hfpipe.params import parse_params

    params = parse_params({"train": PARAMS})
    stage_paths = _stage(tmp_path)
    folder = _killed_groups_checkpoints(params, stage_paths)
    seen, logs = _run_worker(params, stage_paths, monkeypatch, rank=1, restart=0, checked=folder / "checkpoint-4")
    assert seen == {"resume_from": folder / "checkpoint-4", "left": ["checkpoint-4", "checkpoint-8"]}
    assert not any("restart" in line for line in logs)


@pytest.mark.parametrize("rank", [0, 1])
def test_every_process_checks_a_checkpoint_written_after_the_launch(tmp_path, monkeypatch, rank):
    """The launcher checked none (or an older one): each process of the restarted group checks the
    killed group's checkpoint before loading it (the main one alone could check it only after the
    others had loaded it), and deletes nothing."""
    from hfpipe.io import PipelineError
    from hfpipe.params import parse_params

    params = parse_params({"train": PARAMS})
    stage_paths = _stage(tmp_path)
    folder = _killed_groups_checkpoints(params, stage_paths)
    (folder / "checkpoint-4" / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(PipelineError, match=r"checkpoint-4: not as it was written \(model.safetensors changed\)"):
        _run_worker(params, stage_paths, monkeypatch, rank=rank, restart=1)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-4", "checkpoint-8"]


# ------------------------------------------- a restarted group across machines (real torchrun, gloo)

RESTART_WORKER = '''
import datetime, os, sys, time
from pathlib import Path

import torch
import torch.distributed as dist

here = Path(sys.argv[1])
killed = here / "killed-agent"  # the torchrun agent (machine) whose worker was killed
if killed.exists():  # the restarted group
    if int(killed.read_text()) == os.getppid():
        # The killed worker's machine starts last: the other machine's worker reads the store first,
        # where a store left from the killed group still holds the killed worker's address.
        while not (here / "other-started").exists():
            time.sleep(0.05)
        time.sleep(2)
    else:
        (here / "other-started").write_text("")
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
x = torch.ones(1)
dist.all_reduce(x)
if not killed.exists() and dist.get_rank() == 1:
    killed.write_text(str(os.getppid()))
    os.kill(os.getpid(), 9)
x = torch.ones(1)
dist.all_reduce(x)
print(f"rank {dist.get_rank()} restart {os.environ['TORCHELASTIC_RESTART_COUNT']}: all-reduce {x.item()}", flush=True)
dist.destroy_process_group()
'''


@linux_only
def test_a_group_torchrun_restarts_across_two_machines_meets_again(tmp_path, loopback_only):
    """Two machines (torchrun agents of 1 process each, in a loopback-only network namespace) with
    our launch command and environment; one worker is SIGKILLed after the group formed. torchrun
    restarts the group, whose workers form a new process group and all-reduce. The killed worker's
    machine starts last, so the other one reads the rendezvous store first: with the store torch
    shares across restarts by default, it reads the dead worker's address and the restart fails
    (pytorch/pytorch#135712); torchrun_environment gives each group a store of its own."""
    from tests.e2e import free_loopback_port

    (tmp_path / "restart_worker.py").write_text(RESTART_WORKER)
    endpoint = f"127.0.0.1:{free_loopback_port()}"
    cmd = launch.torchrun_command(1, "restart_worker", nnodes=2, rdzv_endpoint=endpoint, rdzv_id="run-restart",
                                  max_restarts=1)
    env = launch.torchrun_environment({**os.environ, "PYTHONPATH": str(tmp_path), "GLOO_SOCKET_IFNAME": "lo"},
                                      nnodes=2, max_restarts=1)
    machines = []
    for i in range(2):
        with open(tmp_path / f"machine{i}.log", "wb") as out:
            machines.append(subprocess.Popen([*loopback_only, *cmd, str(tmp_path)], cwd=tmp_path, env=env,
                                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
    try:
        for machine in machines:
            machine.wait(timeout=150)
    finally:
        for machine in machines:
            if machine.poll() is None:
                os.killpg(machine.pid, signal.SIGKILL)
                machine.wait()
    out = "\n".join((tmp_path / f"machine{i}.log").read_text(errors="replace") for i in range(2))
    assert [m.returncode for m in machines] == [0, 0], out[-6000:]
    assert (tmp_path / "killed-agent").exists() and (tmp_path / "other-started").exists()
    assert "will restart worker group" in out
    # both ranks of the restarted group all-reduced (2 processes: 1 + 1)
    assert sorted(re.findall(r"rank (\d) restart \d: all-reduce 2\.0", out)) == ["0", "1"], out[-6000:]


def test_torchrun_environment_gives_a_restartable_group_a_store_of_its_own(monkeypatch):
    env = launch.torchrun_environment({"PATH": "/bin"}, nnodes=2, max_restarts=1, checked_checkpoint=Path("c/x"))
    assert env[launch.SHARED_STORE_ENV] == "1" and env[launch.CHECKED_CHECKPOINT_ENV] == "c/x"
    assert env[launch.LAUNCHER_PID_ENV] == str(os.getpid()) and env["PATH"] == "/bin"
    assert launch.SHARED_STORE_ENV not in launch.torchrun_environment({}, nnodes=1)


def test_a_worker_of_a_restarting_torchrun_that_shares_its_store_is_refused(monkeypatch):
    from hfpipe.io import PipelineError

    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    with pytest.raises(PipelineError, match=r"^torchrun --max-restarts 3 shares its rendezvous store .* "
                                            r"TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        launch.check_restartable_launch()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # torchrun_environment's
    launch.check_restartable_launch()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")  # no restarts: sharing is harmless
    launch.check_restartable_launch()


CONCURRENT_WORKER = '''
import os, sys, time
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
time.sleep(2)  # both runs' groups up at once
x = torch.ones(1) * (int(sys.argv[1]) + 1)
dist.all_reduce(x)
print(f"run {sys.argv[1]} rank {dist.get_rank()}: MASTER_PORT {os.environ['MASTER_PORT']} all-reduce {x.item()}",
      flush=True)
dist.destroy_process_group()
'''


@linux_only
def test_two_runs_relaunched_at_once_on_one_machine_do_not_share_a_rendezvous(tmp_path, loopback_only):
    """What two `dvc exp run --queue` workers do when both experiments set train.num_processes: two
    of our one-machine torchrun relaunches at the same time. Each rendezvous is on a free port of
    its own (--standalone), so each group is its own 2 processes: a fixed port would put the second
    run's workers into the first run's rendezvous, or fail to bind it."""
    (tmp_path / "concurrent_worker.py").write_text(CONCURRENT_WORKER)
    cmd = launch.torchrun_command(2, "concurrent_worker")
    env = launch.torchrun_environment({**os.environ, "PYTHONPATH": str(tmp_path)})
    runs = [subprocess.Popen([*loopback_only, *cmd, str(i)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(outs)[-6000:]
    ports = set()
    for i, out in enumerate(outs):
        found = re.findall(rf"run {i} rank (\d): MASTER_PORT (\d+) all-reduce (\d+\.\d)", out)
        # both ranks of this run and no other's: the sum of two processes of run i
        assert sorted(rank for rank, _, _ in found) == ["0", "1"], out[-3000:]
        assert {float(total) for _, _, total in found} == {2.0 * (i + 1)}
        ports |= {port for _, port, _ in found}
    assert len(ports) == 2  # a store each


def test_the_train_stage_refuses_a_restarting_torchrun_that_shares_its_store_before_anything_else(tmp_path,
                                                                                                 monkeypatch):
    """The check is wired into the stage: a worker of such a torchrun stops before it reads params' inputs."""
    from hfpipe.io import PipelineError
    from hfpipe.params import parse_params
    from hfpipe.train import run_train_stage

    for name, value in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_MAX_RESTARTS": "1",
                        "TORCHELASTIC_USE_AGENT_STORE": "True"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(PipelineError, match=r"^torchrun --max-restarts 1 shares its rendezvous store"):
        run_train_stage(parse_params({}), _stage(tmp_path))
