"""dvc.yaml's code deps, read from the source: every project file a stage runs is one of its deps,
and no stage depends on project code it never runs (`hfpipe deps` prints them, `--fix` writes them;
tests/test_stage_deps.py checks).

A stage runs `python -m stages.NAME`; the files it runs are that script and, transitively, every
module of this project it imports (module-level imports and imports inside functions alike: a
function-local import still runs when the stage calls it). Read from the source with `ast`, so
nothing is imported (no torch, no transformers).

One exception keeps each stage's deps its own: a task module (hfpipe/tasks) implements every
stage's part of the task interface, and each part imports its stage's module inside the function
(`causal_lm.export` imports hfpipe.export). Those imports are followed only for the stage whose
module they name, so an edit to hfpipe/export.py reruns export, not fetch. What a stage really
imports is recorded at run time (hfpipe.io.run_stage: logs/<stage>.json) and the end-to-end tests
check it against dvc.yaml, so a task part that reached into another stage's module would fail them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from hfpipe.paths import CODE_PACKAGES as PACKAGES  # a dep under one of these is a code dep

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


# The modules aligned with the stages (a stage script imports its own); a task module's imports of
# these inside its functions belong to that stage alone (see above).
STAGE_MODULES = frozenset({"hfpipe.data", "hfpipe.tokenize", "hfpipe.train", "hfpipe.evaluate", "hfpipe.export",
                           "hfpipe.export_onnx", "hfpipe.plots"})
TASKS_PACKAGE = "hfpipe/tasks/"


def _names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return set()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the import nodes under `if TYPE_CHECKING:`, which never run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            skipped |= {id(n) for branch in node.body for n in ast.walk(branch)}
    return skipped


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement anywhere in `path` names (`from a import b`: a and a.b),
    but those under `if TYPE_CHECKING:` (annotations only: they never run)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) not in skipped:
            found |= _names(node)
    return found


def function_level_imports(path: Path) -> set[str]:
    """The modules `path` imports only inside functions (never at module level)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    in_functions = {id(n) for func in ast.walk(tree) if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
                    for n in ast.walk(func)}
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(tree):
        if id(node) not in skipped:
            (inside if id(node) in in_functions else outside).update(_names(node))
    return inside - outside


def files_run_by(module: str, root: Path = Path(".")) -> set[str]:
    """The project files `python -m module` runs, relative to `root`: the module, its imports' files
    transitively, and the __init__.py of every package on the way (importing a.b runs a/__init__.py first)."""
    root = root.resolve()
    script = module_file(module, root)
    own = imported_modules(script) & STAGE_MODULES if script else set()  # the stage's own modules
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            f = module_file(".".join(parts[:i]), root)
            if f is None or f in seen:
                continue
            seen.add(f)
            imports = imported_modules(f)
            if f.relative_to(root).as_posix().startswith(TASKS_PACKAGE):
                imports -= {m for m in function_level_imports(f) if _stage_module(m) - own}
            todo += sorted(imports)
    return {f.relative_to(root).as_posix() for f in seen}


def _stage_module(name: str) -> set[str]:
    """The stage module `name` is or is inside (hfpipe.export.ModelCard -> hfpipe.export), if any."""
    return {m for m in STAGE_MODULES if name == m or name.startswith(m + ".")}


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
