"""scripts/check_locks.py's parsing, and the two locks kept in step (no network: resolving is the script's)."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_locks", ROOT / "scripts/check_locks.py")
assert spec and spec.loader
check_locks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_locks)

LOCK = """\
#    pip-compile --allow-unsafe -o requirements.txt requirements.in
-e .
    # via -r requirements.in
Flufl.Lock==9.2.0
    # via dvc
torch==2.13.0+cpu
uvicorn[standard]==0.30.0 ; python_version >= "3.10"
"""


def report(*items: tuple[str, str, str]) -> dict:
    return {"install": [{"metadata": {"name": name, "version": version}, "download_info": {"url": url}}
                        for name, version, url in items]}


def test_lock_pins_reads_every_pin_by_canonical_name():
    assert check_locks.lock_pins(LOCK) == {"flufl-lock": "9.2.0", "torch": "2.13.0+cpu", "uvicorn": "0.30.0"}


def test_pin_mismatches_holds_the_local_label_and_flags_added_packages():
    pins = check_locks.lock_pins(LOCK)
    exact = report(("flufl.lock", "9.2.0", "u"), ("torch", "2.13.0+cpu", "file:///w/torch.whl"),
                   ("uvicorn", "0.30.0", "u"), ("hfpipe", "0.1.0", "file:///repo"))
    assert check_locks.pin_mismatches(pins, check_locks.report_versions(exact)) == []
    cuda_torch = report(("flufl.lock", "9.2.0", "u"), ("torch", "2.13.0", "https://pypi/torch.whl"),
                        ("nvidia-nccl-cu13", "2.29.7", "u"))
    assert check_locks.pin_mismatches(pins, check_locks.report_versions(cuda_torch)) == [
        "torch: lock 2.13.0+cpu, resolved 2.13.0", "uvicorn: lock 0.30.0, resolved nothing",
        "nvidia-nccl-cu13: not in the lock"]


def test_cuda_lock_is_the_cpu_lock_with_pypis_torch_and_its_cuda_packages():
    """Regenerating one lock and not the other would let the variants drift apart: every package
    both pin is at the same version, torch differs only by the +cpu label, and what the CUDA lock
    adds is torch's CUDA stack."""
    cpu = check_locks.lock_pins((ROOT / "requirements.txt").read_text())
    cuda = check_locks.lock_pins((ROOT / "requirements-cuda.txt").read_text())
    assert (cpu.pop("torch"), cuda.pop("torch")) == ("2.13.0+cpu", "2.13.0")
    assert {name: v for name, v in cuda.items() if name in cpu} == cpu
    added = set(cuda) - set(cpu)
    assert added and all(re.match(r"(nvidia-|cuda-|triton$)", name) for name in added), sorted(added)
