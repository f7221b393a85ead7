"""dvc.yaml's deps: every project file a stage runs is one of its deps, and no stage depends on
project code it never runs.

A stage runs `python -m stages.NAME`; the files it runs are that script and, transitively, every
module of this project it imports (module-level imports and imports inside functions alike: a
function-local import still runs when the stage calls it). Read from the source with `ast`, so
the check needs no import of torch or transformers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hfpipe", "stages")


def module_file(module: str) -> Path | None:
    """hfpipe.io -> hfpipe/io.py; a package -> its __init__.py; None for other projects' modules."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement anywhere in `path` names (`from a import b`: a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def files_run_by(module: str) -> set[str]:
    """The project files `python -m module` runs: the module, its imports' files transitively, and
    the __init__.py of every package on the way (importing a.b runs a/__init__.py first)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            f = module_file(".".join(parts[:i]))
            if f is None or f in seen:
                continue
            seen.add(f)
            todo += sorted(imported_modules(f))
    return {f.relative_to(ROOT).as_posix() for f in seen}


def stage_commands() -> dict[str, tuple[str, list[str]]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        match = re.fullmatch(r"python -m ([\w.]+)", stage["cmd"])
        assert match, f"stage {name}: cmd {stage['cmd']!r} is not `python -m stages.NAME`"
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
        out[name] = (match.group(1), deps)
    return out


def covered(file: str, deps: list[str]) -> bool:
    return any(file == d or file.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(stage_commands()))
def test_every_file_a_stage_runs_is_a_dep(stage):
    module, deps = stage_commands()[stage]
    missing = sorted(f for f in files_run_by(module) if not covered(f, deps))
    assert not missing, f"stage {stage} runs {', '.join(missing)} but dvc.yaml does not list it in its deps"


@pytest.mark.parametrize("stage", sorted(stage_commands()))
def test_no_stage_depends_on_code_it_never_runs(stage):
    module, deps = stage_commands()[stage]
    runs = files_run_by(module)
    code_deps = [d for d in deps if d.split("/")[0] in PACKAGES]
    unused = sorted(d for d in code_deps if not any(covered(f, [d]) for f in runs))
    assert not unused, f"stage {stage} lists {', '.join(unused)} in its deps but never runs it"
    # a folder dep must not pull in files the stage never runs either
    for d in code_deps:
        if (ROOT / d).is_dir():
            extra = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / d).rglob("*.py")
                           if p.relative_to(ROOT).as_posix() not in runs)
            assert not extra, f"stage {stage}: dep {d} includes {', '.join(extra)}, which it never runs"


def test_the_import_reader_sees_function_local_and_transitive_imports():
    # stages/train.py imports hfpipe.train inside main(); hfpipe.train imports hfpipe.checkpoint at the
    # top and hfpipe.train.accelerate_loop inside a function
    runs = files_run_by("stages.train")
    assert {"stages/__init__.py", "stages/train.py", "hfpipe/__init__.py", "hfpipe/train/__init__.py",
            "hfpipe/checkpoint.py", "hfpipe/train/accelerate_loop.py", "hfpipe/params.py", "hfpipe/io.py"} <= runs
    assert "hfpipe/plots.py" not in runs  # `python -m hfpipe.plots` is no stage's code


def test_the_committed_dvc_lock_matches_the_code_it_ran():
    """Every project file a stage ran is, byte for byte, what dvc.lock recorded: a clone's `dvc status`
    must not find a stage changed (re-run `dvc repro` and commit dvc.lock with a code change)."""
    import hashlib

    stale = []
    for stage, entry in yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"].items():
        for dep in entry.get("deps", []):
            path = ROOT / dep["path"]
            if dep["path"].startswith(PACKAGES) and path.is_file():
                if hashlib.md5(path.read_bytes()).hexdigest() != dep["md5"]:
                    stale.append(f"{stage}: {dep['path']}")
    assert stale == [], "dvc.lock is older than the code (run dvc repro, commit dvc.lock): " + ", ".join(stale)
