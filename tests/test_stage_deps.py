"""dvc.yaml's deps: every project file a stage runs is one of its deps, and no stage depends on
project code it never runs (the import walk: hfpipe.stage_deps; `hfpipe deps --fix` rewrites them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from hfpipe import stage_deps
from hfpipe.stage_deps import PACKAGES, check_dvc_yaml, files_run_by, fix_dvc_yaml, imported_modules, stage_code_deps

ROOT = Path(__file__).resolve().parents[1]
REPORT = check_dvc_yaml(ROOT)
__all__ = ["ROOT", "imported_modules", "module_file"]  # tests/test_layout.py reads the import graph with these


def module_file(module: str) -> Path | None:
    """hfpipe.io -> this repository's hfpipe/io.py (None: not the project's)."""
    return stage_deps.module_file(module, ROOT)


@pytest.mark.parametrize("stage", sorted(REPORT))
def test_every_file_a_stage_runs_is_a_dep(stage):
    _, missing, _ = REPORT[stage]
    assert not missing, (f"stage {stage} runs {', '.join(missing)} but dvc.yaml does not list it in its deps "
                         f"(hfpipe deps --fix)")


@pytest.mark.parametrize("stage", sorted(REPORT))
def test_no_stage_depends_on_code_it_never_runs(stage):
    _, _, extra = REPORT[stage]
    assert not extra, (f"stage {stage} lists {', '.join(extra)} in its deps but never runs all of it "
                       f"(hfpipe deps --fix)")


def test_the_import_reader_sees_function_local_and_transitive_imports():
    # stages/train.py imports hfpipe.train inside main(); hfpipe.train imports hfpipe.checkpoint at the
    # top and hfpipe.train.accelerate_loop inside a function
    runs = files_run_by("stages.train", ROOT)
    assert {"stages/__init__.py", "stages/train.py", "hfpipe/__init__.py", "hfpipe/train/__init__.py",
            "hfpipe/checkpoint.py", "hfpipe/train/accelerate_loop.py", "hfpipe/params.py", "hfpipe/io.py"} <= runs
    assert "hfpipe/plots.py" not in runs  # `python -m hfpipe.plots` is no stage's code


def test_a_subpackage_the_stage_runs_whole_is_one_folder_dep():
    deps = stage_code_deps("stages.train", ROOT)
    assert "hfpipe/train" in deps and "hfpipe/tasks" in deps
    assert not any(d.startswith(("hfpipe/train/", "hfpipe/tasks/")) for d in deps)
    assert "hfpipe/plots.py" not in deps


def copy_project(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def test_a_missing_dep_fails_and_the_fix_puts_it_back_keeping_the_rest(tmp_path):
    repo = copy_project(tmp_path)
    original = (repo / "dvc.yaml").read_text()
    assert fix_dvc_yaml(repo) == {}  # nothing to fix: dvc.yaml written back untouched
    assert (repo / "dvc.yaml").read_text() == original
    lines = original.splitlines(keepends=True)
    train = lines.index("  train:\n")
    removed = next(i for i in range(train, len(lines)) if lines[i] == "      - hfpipe/checkpoint.py\n")
    extra = next(i for i in range(train, len(lines)) if lines[i].startswith("      - hfpipe/resources.py"))
    lines[extra:extra] = ["      - hfpipe/plots.py\n"]  # code train never runs
    del lines[removed]
    (repo / "dvc.yaml").write_text("".join(lines))

    report = check_dvc_yaml(repo)
    assert report["train"][1:] == (["hfpipe/checkpoint.py"], ["hfpipe/plots.py"])
    assert all(not missing and not extra for stage, (_, missing, extra) in report.items() if stage != "train")

    assert fix_dvc_yaml(repo) == {"train": (["hfpipe/checkpoint.py"], ["hfpipe/plots.py"])}
    assert (repo / "dvc.yaml").read_text() == original  # comments, params, outs and the order as they were
    assert all(not missing and not extra for _, missing, extra in check_dvc_yaml(repo).values())


def test_the_deps_command_exits_1_until_fixed(tmp_path, monkeypatch, capsys):
    from hfpipe.cli import main

    repo = copy_project(tmp_path)
    text = (repo / "dvc.yaml").read_text()
    (repo / "dvc.yaml").write_text(text.replace("      - hfpipe/launch.py\n", "", 1))
    monkeypatch.chdir(repo)
    assert main(["deps"]) == 1
    assert "  + hfpipe/launch.py" in capsys.readouterr().out
    assert main(["deps", "--fix"]) == 0
    assert capsys.readouterr().out == "train: +hfpipe/launch.py\n"
    assert main(["deps"]) == 0
    assert (repo / "dvc.yaml").read_text() == text


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


def test_each_stage_depends_on_its_own_stage_module_only():
    """The task modules hold every stage's part of the task and import each stage's module inside
    that part (or under TYPE_CHECKING, for annotations): neither makes it another stage's dep."""
    deps = {stage: stage_code_deps(f"stages.{script}", ROOT) for stage, script in
            (("fetch", "fetch"), ("tokenize", "tokenize"), ("train", "train"), ("evaluate", "evaluate"),
             ("export", "export"))}
    assert "hfpipe/export.py" in deps["export"] and "hfpipe/evaluate.py" in deps["evaluate"]
    for stage in ("fetch", "tokenize", "train", "evaluate"):
        assert "hfpipe/export.py" not in deps[stage] and "hfpipe/export_onnx.py" not in deps[stage], stage
    for stage in ("fetch", "tokenize", "train", "export"):
        assert "hfpipe/evaluate.py" not in deps[stage], stage
    assert "hfpipe/data.py" in deps["fetch"] and "hfpipe/data.py" not in deps["train"]


def test_type_checking_imports_are_not_followed(tmp_path):
    (tmp_path / "hfpipe").mkdir()
    (tmp_path / "hfpipe/__init__.py").write_text("")
    (tmp_path / "hfpipe/a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                          "    from hfpipe import b\n")
    (tmp_path / "hfpipe/b.py").write_text("")
    assert files_run_by("hfpipe.a", tmp_path) == {"hfpipe/__init__.py", "hfpipe/a.py"}
