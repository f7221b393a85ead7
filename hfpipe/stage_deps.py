"""dvc.yaml's code deps, read from the source: every project file a stage runs is one of its deps,
and no stage depends on project code it never runs (`hfpipe deps` prints them, `--fix` writes them;
tests/test_stage_deps.py checks).

A stage runs `python -m stages.NAME`; the files it runs are that script and, transitively, every
module of this project it imports (module-level imports and imports inside functions alike: a
function-local import still runs when the stage calls it). Read from the source with `ast`, so
nothing is imported (no torch, no transformers).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

PACKAGES = ("hfpipe", "stages")  # the project's code: a dep under one of these is a code dep
DVC_YAML = "dvc.yaml"


def module_file(module: str, root: Path) -> Path | None:
    """hfpipe.io -> hfpipe/io.py; a package -> its __init__.py; None for other projects' modules."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
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


def files_run_by(module: str, root: Path = Path(".")) -> set[str]:
    """The project files `python -m module` runs, relative to `root`: the module, its imports' files
    transitively, and the __init__.py of every package on the way (importing a.b runs a/__init__.py first)."""
    root = root.resolve()
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            f = module_file(".".join(parts[:i]), root)
            if f is None or f in seen:
                continue
            seen.add(f)
            todo += sorted(imported_modules(f))
    return {f.relative_to(root).as_posix() for f in seen}


def stage_code_deps(module: str, root: Path = Path(".")) -> list[str]:
    """The code deps dvc.yaml lists for the stage `python -m module`, sorted: the files it runs, a
    sub-package (hfpipe/tasks) as one folder when the stage runs every module in it, so a module
    added there is a dep already."""
    root = root.resolve()
    runs = files_run_by(module, root)
    folders = sorted({Path(f).parent.as_posix() for f in runs if f.count("/") >= 2}, key=lambda d: d.count("/"))
    deps = set(runs)
    for folder in folders:  # outermost first: a collapsed folder takes its sub-folders with it
        if folder in deps or any(folder.startswith(d + "/") for d in deps if not d.endswith(".py")):
            continue
        modules = {p.relative_to(root).as_posix() for p in (root / folder).rglob("*.py")}
        if modules <= runs:
            deps = {d for d in deps if not d.startswith(folder + "/")} | {folder}
    return sorted(deps)


def is_code_dep(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


def stage_modules(dvc_yaml: dict) -> dict[str, str]:
    """Each stage's module (`cmd: python -m stages.NAME`)."""
    from hfpipe.io import PipelineError

    modules = {}
    for name, stage in dvc_yaml["stages"].items():
        match = re.fullmatch(r"python -m ([\w.]+)", stage["cmd"])
        if not match:
            raise PipelineError(f"{DVC_YAML}: stage {name}: cmd {stage['cmd']!r} is not `python -m stages.NAME`")
        modules[name] = match.group(1)
    return modules


def declared_deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def check_dvc_yaml(root: Path = Path(".")) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Per stage: (its code deps from the imports, those dvc.yaml lacks, those it lists extra)."""
    dvc_yaml = yaml.safe_load((root / DVC_YAML).read_text())
    report = {}
    for name, module in stage_modules(dvc_yaml).items():
        computed = stage_code_deps(module, root)
        declared = [d for d in declared_deps(dvc_yaml["stages"][name]) if is_code_dep(d)]
        report[name] = (computed, [d for d in computed if d not in declared],
                        [d for d in declared if d not in computed])
    return report


def fix_dvc_yaml(root: Path = Path(".")) -> dict[str, tuple[list[str], list[str]]]:
    """Rewrite each stage's code deps in dvc.yaml to the computed ones: an extra one is removed, a
    missing one inserted among the code deps in sorted order; comments and every other entry stay
    (ruamel.yaml's round trip, which writes an unchanged dvc.yaml back byte for byte). Returns, per
    stage that changed, (added, removed)."""
    from hfpipe.io import PipelineError

    try:
        from ruamel.yaml import YAML  # installed with dvc
    except ImportError:
        raise PipelineError("rewriting dvc.yaml needs ruamel.yaml (pip install ruamel.yaml, or install dvc)") from None

    changes = {name: (missing, extra) for name, (_, missing, extra) in check_dvc_yaml(root).items()
               if missing or extra}
    if not changes:
        return changes
    rt = YAML()
    rt.indent(mapping=2, sequence=4, offset=2)  # dvc.yaml's layout
    rt.width = 4096  # never wrap a long line
    rt.preserve_quotes = True
    path = root / DVC_YAML
    doc = rt.load(path.read_text())
    for name, (missing, extra) in changes.items():
        deps = doc["stages"][name].setdefault("deps", [])
        for i in reversed(range(len(deps))):
            if isinstance(deps[i], str) and deps[i] in extra:
                del deps[i]
        for dep in missing:
            code = [i for i, d in enumerate(deps) if isinstance(d, str) and is_code_dep(d)]
            after = [i for i in code if deps[i] > dep]
            deps.insert(after[0] if after else (code[-1] + 1 if code else 0), dep)
    with path.open("w") as f:
        rt.dump(doc, f)
    return changes
