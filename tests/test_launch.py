"""hfpipe.launch: the torchrun command, and workers that never outlive their launcher (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
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


@linux_only
def test_a_worker_is_stopped_when_its_launcher_is_killed(tmp_path):
    """A parent starts a child in a session of its own (as torchrun starts its workers) that calls
    exit_with_parent; a SIGKILL of the parent alone must take the child down within seconds."""
    ready = tmp_path / "ready"
    child = textwrap.dedent(f"""
        import time
        from hfpipe.launch import exit_with_parent
        assert exit_with_parent()
        open({str(ready)!r}, "w").close()
        time.sleep(60)
    """)
    parent = textwrap.dedent(f"""
        import os, subprocess, sys, time
        env = dict(os.environ, {launch.LAUNCHER_PID_ENV}=str(os.getpid()))
        child = subprocess.Popen([sys.executable, "-c", {child!r}], env=env, start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child_pid = int(proc.stdout.readline())
    try:
        deadline = time.time() + 30
        while not ready.exists():
            assert time.time() < deadline, "the child did not start"
            time.sleep(0.02)
        assert not _gone(child_pid)
        proc.send_signal(signal.SIGKILL)  # the launcher only, not its children (they are in other sessions)
        proc.wait()
        deadline = time.time() + 5
        while not _gone(child_pid):
            assert time.time() < deadline, "the child outlived its killed parent"
            time.sleep(0.02)
    finally:
        if not _gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)


@linux_only
def test_a_worker_whose_launcher_is_already_gone_exits_at_once(tmp_path):
    """The launcher died while the worker was starting: the worker is no longer its child."""
    code = "from hfpipe.launch import exit_with_parent; exit_with_parent(); print('still here')"
    env = dict(os.environ, **{launch.LAUNCHER_PID_ENV: "999999999"})  # not this process's parent
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "still here" not in result.stdout
    assert "the launcher (parent) is gone; exiting" in result.stderr
    env[launch.LAUNCHER_PID_ENV] = str(os.getpid())  # this process is its parent: it goes on
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout == "still here\n"
