"""More than one process: `train.num_processes: N` makes the train stage re-execute itself under
torchrun, so `dvc exp run -S train.num_processes=2` needs no launcher in dvc.yaml.

Under any launcher (torchrun, `accelerate launch`, a cluster's) the environment says which
process this is; the stage then just trains: Accelerator() / the Trainer pick it up.
"""

from __future__ import annotations

import os
import signal
import sys

# exec_torchrun puts the launcher's PID (the stage's own: exec keeps it) here, so that a worker can
# tell that the launcher it was started by is gone.
LAUNCHER_PID_ENV = "HFPIPE_LAUNCHER_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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


def torchrun_command(num_processes: int, module: str) -> list[str]:
    # --standalone: a single-node rendezvous on a free port, so parallel experiments don't collide.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(num_processes),
            "-m", module]


def exec_torchrun(num_processes: int, module: str) -> None:
    """Replace this process with torchrun running `module` in `num_processes` processes.

    exec, not a child process: the stage's PID becomes torchrun's, so when DVC (or a user) stops
    the stage the launcher is stopped too, and its exit code is the stage's.
    """
    cmd = torchrun_command(num_processes, module)
    print(f"train.num_processes = {num_processes}: relaunching as {' '.join(cmd[1:])}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    env = dict(os.environ)
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; set here to silence its warning
    os.execve(cmd[0], cmd, env)


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
