"""More than one process: `train.num_processes: N` makes the train stage re-execute itself under
torchrun, so `dvc exp run -S train.num_processes=2` needs no launcher in dvc.yaml.

Under any launcher (torchrun, `accelerate launch`, a cluster's) the environment says which
process this is; the stage then just trains: Accelerator() / the Trainer pick it up.
"""

from __future__ import annotations

import os
import sys


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def in_distributed_run() -> bool:
    """True when a launcher started this process (torchrun and accelerate launch set LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ or world_size() > 1


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
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; set here to silence its warning
    os.execve(cmd[0], cmd, env)
