"""Helpers for end-to-end tests: a temporary git+DVC copy of this repo, and running dvc in it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"  # this venv's python and dvc
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1", TOKENIZERS_PARALLELISM="true",
             GIT_AUTHOR_NAME="e2e", GIT_AUTHOR_EMAIL="e2e@example.com", GIT_COMMITTER_NAME="e2e",
             GIT_COMMITTER_EMAIL="e2e@example.com")
    return e


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, "git", *args, check=check)


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def stages_run(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", stdout))


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def make_repo_copy(dest: Path, params_source: str, overrides: dict) -> Path:
    """Copy the files git tracks (or would track) into `dest`, apply `overrides` to a params file,
    and make it a fresh git repo with one commit, as a user's clone would be."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    skip = ("data/", "models/", "metrics/", "dvclive/", "dvc.lock", "bench/")
    for name in files:
        if name.startswith(skip) or not (ROOT / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    params = yaml.safe_load((ROOT / params_source).read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_update(params, overrides), sort_keys=False))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "copy")
    return dest


def set_train(repo: Path, **values) -> None:
    """Update the train section of the copy's params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def checkpoints(repo: Path) -> list[str]:
    """The names in the copy's models/checkpoints, sorted."""
    root = repo / "models" / "checkpoints"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []
