"""End-to-end, real dvc: the cache reruns exactly what a change touches.

- every row of the README's "what reruns" table (params, code, the lock), read from `dvc status`
  on the tiny default repo and closed over the pipeline's graph;
- hub.lock.yaml: a moved commit reruns exactly the stages that read that input;
- the installed-packages corpus is pinned by the lock: a package beside it changes nothing, a new
  pin reruns fetch, a version other than the lock's is refused;
- the committed dvc.lock's corpus hash is what a machine installed from the lock makes.
(A user's own local data files: tests/test_classification_e2e.py, on the sentiment and mrpc recipes.)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.e2e import ALWAYS_RUN, ROOT, copy_run, dvc, fake_distribution, git, make_repo_copy

pytestmark = pytest.mark.e2e

STAGES = ["fetch", "train_tokenizer", "tokenize", "train", "evaluate", "export"]


def graph(repo: Path) -> dict[str, set[str]]:
    """stage -> the stages that read one of its outputs (dvc.yaml's deps/outs)."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]

    def names(items):
        return [i if isinstance(i, str) else next(iter(i)) for i in items or []]

    outs = {s: names(d.get("outs")) + names(d.get("metrics")) for s, d in stages.items()}
    return {s: {t for t, d in stages.items() if any(dep == o or dep.startswith(o + "/") for dep in names(d.get("deps"))
                                                      for o in outs[s])} for s in stages}


def would_rerun(repo: Path) -> set[str]:
    """The stages `dvc repro` would rerun: those `dvc status` finds changed, and every stage
    downstream of them (a changed stage's outputs change). The ALWAYS_RUN stages are left out."""
    changed = set(json.loads(dvc(repo, "status", "--json").stdout)) - ALWAYS_RUN
    edges, todo, out = graph(repo), list(changed), set(changed)
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in out:
                out.add(nxt)
                todo.append(nxt)
    return out - ALWAYS_RUN


def _set(params: dict, dotted: str, value) -> None:
    *path, key = dotted.split(".")
    for p in path:
        params = params[p]
    params[key] = value


# The README's "what reruns" table, row by row: a change -> the stages it reruns.
FROM = {stage: set(STAGES[i:]) for i, stage in enumerate(STAGES)}
PARAM_ROWS = [
    ("lr", 0.01, FROM["train"]),
    ("seed", 7, FROM["train"]),
    ("model.n_layer", 2, FROM["train"]),
    ("model.revision", "v1.0", FROM["train"]),
    ("train.max_steps", 13, FROM["train"]),
    ("evaluate.max_new_tokens", 5, {"evaluate", "export"}),
    ("export.onnx_tolerance", 0.01, {"export"}),
    ("tokenize.context_length", 24, FROM["tokenize"]),
    ("tokenizer.vocab_size", 450, FROM["train_tokenizer"]),
    ("tokenizer.revision", "v1.0", FROM["train_tokenizer"]),
    ("dataset.max_documents", 41, FROM["fetch"]),
    ("dataset.revision", "v1.0", FROM["fetch"]),
    ("task", "classification", FROM["fetch"]),
]
FILE_ROWS = [
    ("requirements.txt", FROM["fetch"]),           # the lock: every stage computes with its libraries
    ("hfpipe/params.py", FROM["fetch"]),           # every stage validates its params with it
    ("hfpipe/data.py", FROM["fetch"]),
    ("hfpipe/tokenize.py", FROM["train_tokenizer"]),  # the tokenizer and tokenize stages' code, then downstream
    ("hfpipe/device.py", FROM["fetch"]),           # the accelerator probe: params' fp16 check uses it
    ("hfpipe/train/accelerate_loop.py", FROM["train"]),
    ("hfpipe/tasks/causal_lm.py", FROM["fetch"]),  # every stage resolves its task through hfpipe.tasks
    ("hfpipe/evaluate.py", {"evaluate", "export"}),  # the evaluate stage's code only
    ("hfpipe/export_onnx.py", {"export"}),
    ("hfpipe/export.py", {"export"}),  # the task modules call it only from their export part
]


@pytest.fixture(scope="module")
def repo(tiny_default_repo) -> Path:
    """conftest: TINY default recipe after dvc repro, committed with dvc.lock. Read-only here: the
    tests that edit a file only ask `dvc status`, and put it back."""
    return tiny_default_repo


@pytest.fixture
def own_repo(tiny_default_repo, tmp_path) -> Path:
    """A copy of the finished run for a test that runs stages."""
    return copy_run(tiny_default_repo, tmp_path / "repo")


def test_nothing_changed_reruns_nothing_and_status_is_clean(own_repo):
    repo = own_repo
    assert dvc(repo, "status").stdout.strip() == "Data and pipelines are up to date."
    result = dvc(repo, "repro")
    assert "Running stage" not in result.stdout  # no stage runs on every repro
    assert would_rerun(repo) == set()
    assert git(repo, "status", "--porcelain").stdout == ""


@pytest.mark.parametrize("key, value, expected", PARAM_ROWS, ids=[r[0] for r in PARAM_ROWS])
def test_a_param_change_reruns_exactly_its_row(repo, key, value, expected):
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    _set(params, key, value)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert would_rerun(repo) == expected
    finally:
        (repo / "params.yaml").write_text(original)


@pytest.mark.parametrize("key, first", [("dataset", "fetch"), ("tokenizer", "train_tokenizer"), ("model", "train")])
def test_a_moved_hub_lock_entry_reruns_exactly_the_stages_that_read_it(repo, key, first):
    original = (repo / "hub.lock.yaml").read_text()
    lock = yaml.safe_load(original)
    lock[key] = {"repo": "org/name", "revision": None, "commit": "0" * 40}
    (repo / "hub.lock.yaml").write_text(yaml.safe_dump(lock))
    try:
        assert would_rerun(repo) == FROM[first]
    finally:
        (repo / "hub.lock.yaml").write_text(original)


@pytest.mark.parametrize("path, expected", FILE_ROWS, ids=[r[0] for r in FILE_ROWS])
def test_a_code_change_reruns_exactly_the_stages_that_run_it(repo, path, expected):
    original = (repo / path).read_text()
    (repo / path).write_text(original + "\n# edited\n")
    try:
        assert would_rerun(repo) == expected
    finally:
        (repo / path).write_text(original)


def test_the_default_corpus_is_pinned_by_the_lock(own_repo, tmp_path):
    """The installed-packages corpus is the files of the packages requirements.txt pins, so the lock
    (a dep of fetch) is its fingerprint: a package installed by hand beside the lock changes nothing,
    one at another version than the lock's is refused in one line, and a new pin in the lock reruns
    fetch with that package's files in the corpus."""
    from hfpipe.data import hash_fraction

    repo = own_repo
    filtered = _lock_hash(repo, "data/filtered")
    # a package the lock does not pin, with pandas code the corpus sample would read first: ignored
    name = next(f"fakepkg/mod{i}.py" for i in range(100_000) if hash_fraction(f"fakepkg/fakepkg/mod{i}.py", 0) < 1e-3)
    extra = tmp_path / "extra"
    fake_distribution(extra, "fakepkg", "2.0", {"fakepkg/__init__.py": "VALUE = 1\n",
                                                name: "import pandas as pd\n\ndf = pd.DataFrame({'a': [1, 2]})\n"})
    env = {"PYTHONPATH": str(extra)}
    assert "Data and pipelines are up to date" in _dvc_env(repo, env, "status").stdout
    result = _dvc_env(repo, env, "repro", "fetch", "--force")
    assert "fakepkg==2.0" not in json.loads((repo / "data/stats/fetch.json").read_text())["documents_by_source"]
    assert _lock_hash(repo, "data/filtered") == filtered

    # pinned in the lock: the lock changed, so fetch reruns, and the corpus now has fakepkg's file
    lock = (repo / "requirements.txt").read_text()
    (repo / "requirements.txt").write_text(lock + "fakepkg==2.0\n")
    assert "fetch" in would_rerun(repo)
    _dvc_env(repo, env, "repro", "fetch")
    assert json.loads((repo / "data/stats/fetch.json").read_text())["documents_by_source"]["fakepkg==2.0"] == 1
    assert _lock_hash(repo, "data/filtered") != filtered

    # the lock pins another version than the installed one: one line, nothing half-written
    (repo / "requirements.txt").write_text(lock + "fakepkg==3.0\n")
    result = _dvc_env(repo, env, "repro", "fetch", check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert errors == ["error: fakepkg 2.0 is installed but requirements.txt pins 3.0: the installed-packages corpus "
                      "is the locked packages' files; pip install -r requirements.txt"], result.stderr[-2000:]
    assert not [p for p in (repo / "data").iterdir() if ".tmp-" in p.name]


def _dvc_env(repo: Path, env: dict | None, *args: str, check: bool = True):
    import subprocess
    import sys

    from tests.e2e import env as base_env

    full = base_env()
    if env:
        full["PYTHONPATH"] = env["PYTHONPATH"]
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=full, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def _lock_hash(repo: Path, out: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for o in stage.get("outs", []):
            if o["path"] == out:
                return o["md5"]
    raise AssertionError(f"{out} not in {repo}/dvc.lock")


def lock_differences() -> list[str]:
    """How the installed distributions differ from requirements.txt (the lock), as 'name: a != b'."""
    import importlib.metadata
    import re

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pinned = dict(re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", (ROOT / "requirements.txt").read_text(), re.M))
    pinned = {norm(k): v for k, v in pinned.items()}
    # the test-only packages installed beside the lock (README: set-up) are no part of it, nor of the corpus
    test_only = {norm(k) for k in re.findall(r"^([A-Za-z0-9][\w.-]*)==", (ROOT / "tests/requirements-test.txt").read_text(),
                                             re.M)}
    installed = {norm(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()
                 if norm(d.metadata["Name"]) not in {"hfpipe", *test_only}}
    return [f"{n}: installed {installed.get(n)} != lock {pinned.get(n)}" for n in sorted(set(pinned) | set(installed))
            if installed.get(n) != pinned.get(n)]


def test_the_committed_corpus_is_what_the_lock_installs(tmp_path):
    """On a machine installed from the lock (CI: a fresh venv), fetch with the committed params makes
    the corpus whose hash the committed dvc.lock records."""
    differences = lock_differences()
    if differences:
        message = "this environment is not the lock's: " + "; ".join(differences[:5])
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs from the lock: any difference is a broken lock
        pytest.skip(message)
    copy = make_repo_copy(tmp_path / "repo", "params.yaml", {})
    dvc(copy, "repro", "fetch")
    assert _lock_hash(copy, "data/filtered") == _lock_hash(ROOT, "data/filtered")
    shutil.rmtree(copy / "data")
