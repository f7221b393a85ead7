"""The package's imports point one way: no module of hfpipe imports, directly or through others, a
module that imports it back. Function-local imports count (they are how a circle hides), read from
the source with `ast` as tests/test_stage_deps.py does.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_stage_deps import ROOT, imported_modules, module_file


def package_modules() -> dict[str, Path]:
    """hfpipe's modules by dotted name (a package by its own name, for its __init__.py)."""
    out = {}
    for path in sorted((ROOT / "hfpipe").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the hfpipe modules it imports (not its own parent packages: importing a.b runs
    a/__init__.py first, which is no dependency of a.b's code on a's)."""
    modules = package_modules()
    by_file = {path: name for name, path in modules.items()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_modules(path):
            target = module_file(imported)
            if target is not None and target in by_file:
                targets.add(by_file[target])
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "hfpipe.train" in graph and graph["hfpipe.evaluate"]  # the graph was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# ---- the task is resolved once per stage: no stage script, stage module or backend branches on it

TASK_FREE = ["stages", "hfpipe/train", "hfpipe/evaluate.py", "hfpipe/export.py", "hfpipe/export_onnx.py",
             "hfpipe/data.py", "hfpipe/tokenize.py", "hfpipe/plots.py"]


def task_branches(path: Path) -> list[str]:
    """Where `path` decides by task name: a task name as a string literal, or `task`/`params.task`
    compared (==, !=, in) with anything. Each as "file:line: source"."""
    from hfpipe.tasks import TASKS

    source = path.read_text()
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        hit = isinstance(node, ast.Constant) and node.value in TASKS
        if isinstance(node, ast.Compare):
            names = [node.left, *node.comparators]
            hit = any((isinstance(n, ast.Name) and n.id == "task") or (isinstance(n, ast.Attribute) and n.attr == "task")
                      for n in names)
        if hit:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_task_branches_are_found():
    import tempfile

    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        probe = Path(tmp) / "probe.py"
        probe.write_text('if params.task == "x":\n    pass\nkind = "gpt2-classifier"\nok = task_module.KIND\n')
        assert [line.split(": ", 1)[1] for line in task_branches(probe)] == ['params.task == "x"', '"gpt2-classifier"']


def test_no_stage_or_backend_branches_on_the_task():
    files = [p for entry in TASK_FREE for p in sorted((ROOT / entry).rglob("*.py") if (ROOT / entry).is_dir()
                                                        else [ROOT / entry])]
    assert len(files) > 10
    branches = [b for f in files for b in task_branches(f)]
    assert not branches, "decide through hfpipe.tasks (TASKS[params.task]) instead:\n" + "\n".join(branches)


# ---- every task module provides the protocol hfpipe.tasks.common describes

PROTOCOL = ["KIND", "TOKENIZER_TEXT_COLUMN", "SEQUENCE_LENGTH_KEY", "PIPELINE_TASK", "PEFT_TASK_TYPE",
            "prepare_tokenizer", "tokenize", "tokenize_summary", "sequence_length", "training_setup", "build_model", "auto_model_class", "collator",
            "loop_fns"]
CLASSIFIER_PROTOCOL = ["model_columns", "label_tokens_of", "class_scores", "compute_metrics", "preprocess_logits",
                       "card_usage", "pipeline_works"]


def test_every_task_module_provides_the_protocol_its_kind_needs():
    from hfpipe.data import FETCHES
    from hfpipe.evaluate import EVALUATIONS
    from hfpipe.export import EXPORTS
    from hfpipe.tasks import TASKS

    for name, task in TASKS.items():
        needed = PROTOCOL + (CLASSIFIER_PROTOCOL if task.KIND == "classifier" else [])
        assert not [n for n in needed if not hasattr(task, n)], name
        assert task.KIND in FETCHES and task.KIND in EVALUATIONS and task.KIND in EXPORTS, name
    assert set(FETCHES) == set(EVALUATIONS) == set(EXPORTS) == {t.KIND for t in TASKS.values()}
