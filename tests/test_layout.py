"""The package's imports point one way: no module of hfpipe imports, directly or through others, a
module that imports it back. Function-local imports count (they are how a circle hides), read from
the source with `ast` as tests/test_stage_deps.py does; imports under `if TYPE_CHECKING:` do not
(they never run: type annotations only). The task modules implement one interface and are the only
place that decides by task.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_stage_deps import ROOT, module_file


def imported_modules(path: Path) -> set[str]:
    """tests.test_stage_deps.imported_modules without the imports under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


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


# ---- the task is resolved once per stage: no stage script, stage module or backend decides by task
# except through the task object (hfpipe.tasks.common.Task)

TASK_FREE = ["stages", "hfpipe/train", "hfpipe/evaluate.py", "hfpipe/export.py", "hfpipe/export_onnx.py",
             "hfpipe/data.py", "hfpipe/tokenize.py", "hfpipe/plots.py", "hfpipe/modeling.py"]
# Column names a task's tokenize writes (its examples' marks); a module reading one decides by task.
# (text / text_pair come from the dataset params, token_type_ids from the tokenizer: no task in them.)
TASK_COLUMNS = {"label", "labels", "label_position", "input_ids"}
# Metric keys only some tasks' figures have; testing for one decides by task.
TASK_METRICS = {"loss", "perplexity", "accuracy", "f1", "pytorch_loss", "pytorch_accuracy", "pytorch_perplexity",
                "int8_loss", "int8_accuracy", "idioms", "keytoken_accuracy"}
# Stand-ins for the task: its old kind key, and peft's task type compared instead of asking the task.
PROXY_NAMES = {"KIND", "PEFT_TASK_TYPE"}
# peft's task types: one compared decides by task too (whether a head is trained is the task's to say)
PEFT_TASK_TYPES = {"SEQ_CLS", "CAUSAL_LM", "TOKEN_CLS", "SEQ_2_SEQ_LM", "QUESTION_ANS", "FEATURE_EXTRACTION"}


def _is_task(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "task") or (isinstance(node, ast.Attribute) and node.attr == "task")


def task_branches(path: Path) -> list[str]:
    """Where `path` decides by task other than through the task object, each as "file:line: source":
    a task name as a string literal; `task`/`params.task` compared (==, !=, in) with anything; a
    `KIND` anywhere or `PEFT_TASK_TYPE` compared; a task column tested against `.column_names`; a
    task's metric key tested with `in`."""
    from hfpipe.tasks import TASKS

    source = path.read_text()
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        hit = isinstance(node, ast.Constant) and node.value in TASKS
        hit = hit or (isinstance(node, ast.Name | ast.Attribute) and getattr(node, "id", getattr(node, "attr", None))
                      == "KIND")
        if isinstance(node, ast.Compare):
            names = [node.left, *node.comparators]
            hit = any(_is_task(n) for n in names) or any(
                isinstance(n, ast.Name | ast.Attribute) and getattr(n, "id", getattr(n, "attr", None)) in PROXY_NAMES
                for n in names) or any(isinstance(n, ast.Constant) and n.value in PEFT_TASK_TYPES for n in names)
            if isinstance(node.ops[0], ast.In | ast.NotIn) and isinstance(node.left, ast.Constant):
                right = node.comparators[0]
                sniffs_column = (isinstance(right, ast.Attribute) and right.attr == "column_names"
                                 and node.left.value in TASK_COLUMNS)
                hit = hit or sniffs_column or node.left.value in TASK_METRICS
        if hit:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_task_branches_are_found():
    import tempfile

    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        probe = Path(tmp) / "probe.py"
        probe.write_text('if params.task == "x":\n    pass\nkind = "gpt2-classifier"\nok = task_module.KIND\n'
                         'a = task.PEFT_TASK_TYPE == "SEQ_CLS"\nb = "label_position" in rows.column_names\n'
                         'c = "pytorch_loss" in m\nd = "text_pair" in rows.column_names\ne = "x" in m\n'
                         'f = task_type == "SEQ_CLS"\n')
        assert [line.split(": ", 1)[1] for line in task_branches(probe)] == [
            'params.task == "x"', '"gpt2-classifier"', "task_module.KIND", 'task.PEFT_TASK_TYPE == "SEQ_CLS"',
            '"label_position" in rows.column_names', '"pytorch_loss" in m', 'task_type == "SEQ_CLS"']


def test_no_stage_or_backend_branches_on_the_task():
    files = [p for entry in TASK_FREE for p in sorted((ROOT / entry).rglob("*.py") if (ROOT / entry).is_dir()
                                                        else [ROOT / entry])]
    assert len(files) > 10
    branches = [b for f in files for b in task_branches(f)]
    assert not branches, "decide through the task object (hfpipe.tasks.TASKS[params.task]) instead:\n" + "\n".join(
        branches)


# ---- every task module implements hfpipe.tasks.common.Task (mypy checks it statically: TASKS is typed)


def test_every_task_module_provides_every_member_of_the_task_interface():
    from hfpipe.params import TASK_KEYS, Params
    from hfpipe.tasks import TASKS
    from hfpipe.tasks.common import Task
    from hfpipe.tasks.names import TASK_NAMES, TASK_PARAM_KEYS

    members = [m for m in dir(Task) if not m.startswith("_")] + list(Task.__annotations__)
    assert {"fetch", "evaluate", "export", "check_batch", "PLOTS", "HAS_CLASSIFICATION_HEAD"} <= set(members)
    for name, task in TASKS.items():
        assert not [m for m in members if not hasattr(task, m)], name
        assert task.NAME == name and task.PARAM_KEYS == TASK_PARAM_KEYS[name]
    # the names params.yaml accepts and the keys only some tasks read come from the task table
    assert TASK_NAMES == tuple(TASKS)
    assert set(TASK_KEYS) == {key for task in TASKS.values() for key in task.PARAM_KEYS}
    for key, names in TASK_KEYS.items():
        assert names == tuple(name for name, task in TASKS.items() if key in task.PARAM_KEYS), key
    assert Params.model_fields["task"].default in TASKS
