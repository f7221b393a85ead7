"""Does each lock resolve, to exactly its pins, from the indexes it is meant to be installed from?

One lock per machine variant (README: set-up):
  cpu   requirements.txt       torch 2.13.0+cpu, from PyTorch's CPU index (+ PyPI for the rest)
  cuda  requirements-cuda.txt  torch 2.13.0 from PyPI, a CUDA build on Linux, with its nvidia-* packages

For each variant: which of its indexes answer, then `pip install --dry-run --ignore-installed --report`
of the lock for a throwaway venv's interpreter, with pip's own configuration switched off (a machine's
pip.conf, find-links or constraints would change what resolves). An unreachable index is left out (pip
would retry it for every package); `--local-wheels DIR` stands in for it with a directory of wheels.
Nothing is installed. pip reads each wheel's metadata alone (PEP 658 files, or HTTP range requests:
--use-feature=fast-deps, for an index that does not advertise the metadata files), so a resolve
writes about 10 MB, not the multi-GB CUDA wheels; a watchdog stops pip if the throwaway directory
takes more than --max-mb on disk all the same. Run it with a python whose pip is 22.3 or newer.

    python scripts/check_locks.py                             # every variant
    python scripts/check_locks.py cuda                        # one
    python scripts/check_locks.py --local-wheels /opt/wheels  # a wheel dir for an unreachable index

Exit code 0 when every variant checked resolved to its pins, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/simple"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"  # the README's CPU-only command adds it

# variant -> (lock, the indexes it installs from; the first is pip's --index-url)
LOCKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cpu": ("requirements.txt", (PYPI, TORCH_CPU_INDEX)),
    "cuda": ("requirements-cuda.txt", (PYPI,)),
}
# pip settings that say where packages come from or what they are held to: the check drops them
PIP_SOURCE_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "PIP_CONSTRAINT",
                  "PIP_REQUIREMENT", "PIP_CONFIG_FILE")


def canonical_name(name: str) -> str:
    """A distribution's name as PEP 503 compares them (Flufl.Lock, flufl_lock -> flufl-lock)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, str]:
    """canonical name -> version, for every `name==version` line of a pip-compile lock."""
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            pins[canonical_name(match.group(1))] = match.group(3)
    return pins


def report_versions(report: dict) -> dict[str, tuple[str, str]]:
    """canonical name -> (version, where pip would get it), from `pip install --report`'s JSON."""
    return {canonical_name(item["metadata"]["name"]): (item["metadata"]["version"], item["download_info"]["url"])
            for item in report["install"]}


def pin_mismatches(pins: dict[str, str], resolved: dict[str, tuple[str, str]]) -> list[str]:
    """'name: lock X, resolved Y' for every pin pip did not resolve to exactly (local label included:
    2.13.0 is not 2.13.0+cpu), and 'name: not in the lock' for what it added."""
    out = [f"{name}: lock {version}, resolved {resolved[name][0] if name in resolved else 'nothing'}"
           for name, version in sorted(pins.items()) if resolved.get(name, ("",))[0] != version]
    out += [f"{name}: not in the lock" for name in sorted(set(resolved) - set(pins) - {"hfpipe"})]
    return out


def index_problem(index: str, timeout: float = 10.0) -> str | None:
    """None when the index answers for pip's own project page, else why not (one line)."""
    try:
        with urllib.request.urlopen(f"{index}/pip/", timeout=timeout) as response:
            response.read(1)
        return None
    except urllib.error.HTTPError as e:
        return None if e.code == 404 else f"HTTP {e.code}"  # it answers; pip just is not on it
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def dir_mb(path: Path) -> float:
    """MB the files under path take on disk, while pip writes and deletes them. Blocks, not sizes: pip's
    lazy wheel is a sparse file of the whole wheel's size holding only the ranges it read."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except FileNotFoundError:  # deleted since the listing
                pass
    return total / 2**20


def pip_dry_run(lock: Path, index_args: list[str], work: Path, max_mb: float,
                timeout: float) -> tuple[dict | None, str, float]:
    """(pip's report or None, why not / pip's last line, peak MB on disk) for a dry-run install of the
    lock into a throwaway venv (work/venv), pip's caches and temp files inside `work`."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work / "venv")], check=True)
    (work / "tmp").mkdir()
    report_path = work / "report.json"
    command = [sys.executable, "-m", "pip", "--python", str(work / "venv/bin/python"), "install", "--dry-run",
               "--ignore-installed", "--report", str(report_path), "--use-feature=fast-deps",
               "--cache-dir", str(work / "cache"), "--disable-pip-version-check", "--progress-bar", "off",
               *index_args, "-r", str(lock)]
    env = {k: v for k, v in os.environ.items() if k not in PIP_SOURCE_ENV}
    env.update(PIP_CONFIG_FILE=os.devnull, TMPDIR=str(work / "tmp"))
    log = (work / "pip.log").open("w+")
    # its own process group: stopping pip stops the build backends it started too
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    start, peak, stopped = time.monotonic(), 0.0, ""
    try:
        while proc.poll() is None:
            peak = max(peak, dir_mb(work))
            if peak > max_mb:
                stopped = f"stopped: pip took {peak:.0f} MB on disk, past --max-mb {max_mb:.0f} (whole wheels?)"
            elif time.monotonic() - start > timeout:
                stopped = f"stopped: no answer within {timeout:.0f} s"
            if stopped:
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    tail = lines[-1][:300] if lines else ""  # pip's last line: the error it ends with
    log.close()
    if stopped:
        return None, stopped, peak
    if proc.returncode != 0:
        return None, f"pip exit {proc.returncode}: {tail}", peak
    return json.loads(report_path.read_text()), "", peak


def check_variant(variant: str, local_wheels: list[str], max_mb: float, timeout: float) -> bool:
    """Print one variant's indexes, whether its lock resolved to its pins, and from where torch came."""
    lock_name, indexes = LOCKS[variant]
    lock = ROOT / lock_name
    print(f"{variant}: {lock_name}")
    problems = {index: index_problem(index) for index in indexes}
    for index, problem in problems.items():
        print(f"  index {index}: {'reachable' if problem is None else 'UNREACHABLE (' + problem + ')'}")
    reachable = [index for index in indexes if problems[index] is None]
    index_args = ["--index-url", reachable[0]] if reachable else ["--no-index"]
    index_args += [arg for index in reachable[1:] for arg in ("--extra-index-url", index)]
    if len(reachable) < len(indexes) and local_wheels:
        print(f"  standing in for the unreachable: local wheels {', '.join(local_wheels)}")
        index_args += [arg for folder in local_wheels for arg in ("--find-links", folder)]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"check-locks-{variant}-") as tmp:
        report, problem, peak_mb = pip_dry_run(lock, index_args, Path(tmp), max_mb, timeout)
    seconds = time.monotonic() - start
    if report is None:
        print(f"  NOT RESOLVED in {seconds:.0f} s ({problem})")
        return False
    resolved = report_versions(report)
    mismatches = pin_mismatches(lock_pins(lock.read_text()), resolved)
    torch_version, torch_url = resolved.get("torch", ("-", "-"))
    print(f"  torch {torch_version} from {torch_url}")
    if mismatches:
        print(f"  RESOLVED, BUT NOT TO THE LOCK'S PINS in {seconds:.0f} s: {'; '.join(mismatches[:10])}")
        return False
    print(f"  resolved: {len(resolved)} packages, each at its pin, in {seconds:.0f} s, "
          f"{peak_mb:.0f} MB on disk at most (nothing installed)")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=f"some of {', '.join(LOCKS)} (default: all)")
    parser.add_argument("--local-wheels", action="append", default=[], metavar="DIR",
                        help="a directory of wheels standing in for an unreachable index (repeatable)")
    parser.add_argument("--max-mb", type=float, default=500, help="stop pip past this much on disk (500)")
    parser.add_argument("--timeout", type=float, default=900, help="stop pip after this many seconds (900)")
    args = parser.parse_args()
    unknown = sorted(set(args.variants) - set(LOCKS))
    if unknown:
        parser.error(f"unknown variant {', '.join(unknown)}: choose from {', '.join(LOCKS)}")
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        print(f"error: {sys.executable} has no pip: run this with the project's venv python", file=sys.stderr)
        return 2
    results = [check_variant(v, args.local_wheels, args.max_mb, args.timeout) for v in args.variants or LOCKS]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
