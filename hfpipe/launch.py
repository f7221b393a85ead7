"""More than one process: `train.num_processes: N` makes the train stage re-execute itself under
torchrun, so `dvc exp run -S train.num_processes=2` needs no launcher in dvc.yaml; `train.nnodes: M`
(with train.rdzv_endpoint) makes it one of M machines that meet in torchrun's c10d rendezvous, and
`train.max_restarts` lets torchrun restart the group when a worker dies (it resumes from the newest
complete checkpoint: hfpipe.train.train_resumable).

Under any launcher (torchrun, `accelerate launch`, a cluster's) the environment says which
process this is; the stage then just trains: Accelerator() / the Trainer pick it up.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

# exec_torchrun puts the launcher's PID (the stage's own: exec keeps it) here, so that a worker can
# tell that the launcher it was started by is gone.
LAUNCHER_PID_ENV = "HFPIPE_LAUNCHER_PID"
# ... and the checkpoint it checked (hashes) before the relaunch: a worker that finds a newer one
# (a group torchrun restarted) checks that itself.
CHECKED_CHECKPOINT_ENV = "HFPIPE_CHECKED_CHECKPOINT"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# torch >= 2.4 lets torchrun's workers share its rendezvous store; "1" gives each group its own
SHARED_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def in_distributed_run() -> bool:
    """True when a launcher started this process (torchrun and accelerate launch set LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ or world_size() > 1


def relaunched() -> bool:
    """A worker of exec_torchrun's relaunch: the launcher before it already did the one-process checks."""
    return LAUNCHER_PID_ENV in os.environ


def restart_count() -> int:
    """How often torchrun has restarted this worker group after a worker died (0: the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def nodes_and_processes() -> tuple[int, int]:
    """(machines, processes per machine) of the run this process is in, from the launcher's environment."""
    world = world_size()
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return max(world // max(per_node, 1), 1), per_node


def torchrun_command(num_processes: int, module: str, nnodes: int = 1, rdzv_endpoint: str | None = None,
                     rdzv_id: str | None = None, max_restarts: int = 0) -> list[str]:
    """torchrun running `module` in `num_processes` processes on each of `nnodes` machines.

    One machine: --standalone, a rendezvous on a free local port, so parallel experiments (dvc exp
    run --queue workers) never collide. Several: a c10d rendezvous at `rdzv_endpoint` (HOST:PORT; the
    agent on that host serves it, the others join) under `rdzv_id`, which every machine of a run
    must give alike and two runs sharing an endpoint must not (the train stage passes its run's
    fingerprint). `max_restarts`: how often torchrun restarts the group when a worker dies.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        cmd.append("--standalone")
    else:
        if not (rdzv_endpoint and rdzv_id):
            raise ValueError("several machines need a rendezvous endpoint and id")
        cmd += ["--nnodes", str(nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint,
                "--rdzv-id", rdzv_id]
    cmd += ["--nproc_per_node", str(num_processes)]
    if max_restarts:
        cmd += ["--max-restarts", str(max_restarts)]
    return [*cmd, "-m", module]


def exec_torchrun(num_processes: int, module: str, nnodes: int = 1, rdzv_endpoint: str | None = None,
                  rdzv_id: str | None = None, max_restarts: int = 0, checked_checkpoint: Path | None = None) -> None:
    """Replace this process with torchrun_command(...) (the same arguments); its workers find this
    process's PID and `checked_checkpoint` (the one it verified, if any) in their environment.

    exec, not a child process: the stage's PID becomes torchrun's, so when DVC (or a user) stops
    the stage the launcher is stopped too, and its exit code is the stage's.
    """
    cmd = torchrun_command(num_processes, module, nnodes, rdzv_endpoint, rdzv_id, max_restarts)
    what = f"train.num_processes = {num_processes}" + (f", train.nnodes = {nnodes}" if nnodes > 1 else "")
    print(f"{what}: relaunching as {' '.join(cmd[1:])}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd[0], cmd, torchrun_environment(dict(os.environ), nnodes, max_restarts, checked_checkpoint))


def torchrun_environment(env: dict[str, str], nnodes: int = 1, max_restarts: int = 0,
                         checked_checkpoint: Path | None = None) -> dict[str, str]:
    """`env` plus what exec_torchrun's torchrun and its workers need (see there)."""
    env = {**env, LAUNCHER_PID_ENV: str(os.getpid()), CHECKED_CHECKPOINT_ENV: str(checked_checkpoint or "")}
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; set here to silence its warning
    if nnodes > 1 or max_restarts:
        # torchrun logs at WARNING by default; at INFO it says which machine got which ranks and when
        # it restarts the group after a worker died ("... attempts left; will restart worker group")
        env.setdefault("LOGLEVEL", "INFO")
    if max_restarts:
        env[SHARED_STORE_ENV] = "1"  # see check_restartable_launch
    return env


def check_restartable_launch() -> None:
    """Refuse, in a worker, a torchrun that restarts its group (--max-restarts) while sharing its
    rendezvous store with the workers, torch's default since 2.4: the store outlives a restart, so
    a restarted worker can read the killed group's addresses from it and fail to connect, or wait
    for the process group forever (pytorch/pytorch#135712; seen here in most restarts across two
    machines). With TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 each group gets a store of its own, as
    exec_torchrun sets it."""
    from hfpipe.io import PipelineError

    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if restarts and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        raise PipelineError(
            f"torchrun --max-restarts {restarts} shares its rendezvous store with the workers, so a restarted "
            f"group can read the killed group's addresses and hang (pytorch/pytorch#135712): launch with "
            f"{SHARED_STORE_ENV}=1 in torchrun's environment, or let the train stage launch itself "
            f"(train.num_processes / train.nnodes / train.max_restarts)")


def exit_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Make the kernel send `sig` to this process when its parent dies; exit at once if it already has.

    torchrun starts its workers in sessions of their own, so a SIGKILL of the stage (the torchrun
    process, as a crash, an OOM kill or `kill -9` of dvc's process group does it) would leave them
    training, holding the machine and writing checkpoints. Called by each worker of a multi-process
    run at stage start (Linux: prctl(PR_SET_PDEATHSIG) through ctypes; a no-op returning False
    elsewhere). The parent counts as gone when it is no longer the launcher that exec_torchrun named
    in HFPIPE_LAUNCHER_PID (or, under another launcher, when this process was handed to PID 1).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    # Checked after prctl: a parent that dies from here on triggers the signal; one that died
    # before (while this process was starting) is caught here.
    expected = os.environ.get(LAUNCHER_PID_ENV)
    parent = os.getppid()
    if parent == 1 or (expected and expected.isdigit() and parent != int(expected)):
        print(f"process {os.getpid()}: the launcher (parent) is gone; exiting", file=sys.stderr, flush=True)
        os._exit(1)
    return ok
