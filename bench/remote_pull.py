"""Benchmark: what the team cache saves. A fresh clone's `dvc pull` + `dvc repro` of the committed default
recipe, against a full `dvc repro` in another fresh clone (no remote), on this machine in one run.

The remote is a local S3 server on 127.0.0.1 (moto, tests/remote.py), filled from this repository's own
DVC cache (so run `dvc repro` here first). Writes bench/remote_results.json.

    python bench/remote_pull.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.default_sweep import machine  # noqa: E402
from tests import remote  # noqa: E402
from tests.e2e import env  # noqa: E402


def run(cwd: Path, *args: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=remote.env_with_credentials(env()), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def dvc(cwd: Path, *args: str) -> float:
    return run(cwd, sys.executable, "-m", "dvc", *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench/remote_results.json"))
    args = parser.parse_args()
    if not (ROOT / ".dvc/cache").is_dir():
        raise SystemExit("no DVC cache here: run `dvc repro` first")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s3 = remote.LocalS3.start(tmp / "s3")
        try:
            s3.create_bucket("team")
            # a clone that has this repository's cache pushes it to the remote
            source = tmp / "source"
            run(tmp, "git", "clone", "-q", str(ROOT), str(source))
            shutil.copytree(ROOT / ".dvc/cache", source / ".dvc/cache", copy_function=shutil.copy2)
            dvc(source, "remote", "add", "-d", "storage", "s3://team/cache")
            dvc(source, "remote", "modify", "storage", "endpointurl", s3.endpoint)
            run(source, "git", "commit", "-qm", "team cache", ".dvc/config")
            dvc(source, "push", "--run-cache")

            pulled = tmp / "pulled"
            run(tmp, "git", "clone", "-q", str(source), str(pulled))  # its .dvc/config names the remote
            pull_seconds = dvc(pulled, "pull")
            repro_after_pull = dvc(pulled, "repro")
            status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=pulled, capture_output=True,
                                    text=True, env=remote.env_with_credentials(env())).stdout.strip()
        finally:
            s3.stop()
        full = tmp / "full"
        run(tmp, "git", "clone", "-q", str(ROOT), str(full))
        full_seconds = dvc(full, "repro")
    figures = {
        "machine": machine(),
        "pull_seconds": round(pull_seconds, 2),
        "repro_after_pull_seconds": round(repro_after_pull, 2),
        "status_after_pull": status,
        "full_repro_seconds": round(full_seconds, 2),
        "pull_and_repro_vs_full_repro": round((pull_seconds + repro_after_pull) / full_seconds, 4),
    }
    print(json.dumps(figures, indent=2))
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
