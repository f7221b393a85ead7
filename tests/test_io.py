"""hfpipe.io: atomic outputs, one-line stage errors with exit code 2, JSON helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfpipe.io import PipelineError, atomic_dir, read_json, run_stage, write_json_atomic, write_text_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_atomic_dir_success_creates_output(tmp_path):
    out = tmp_path / "sub" / "out"
    with atomic_dir(out) as scratch:
        assert scratch.parent == out.parent and scratch != out
        assert not out.exists()  # nothing visible until the block succeeds
        (scratch / "a.txt").write_text("A")
    assert (out / "a.txt").read_text() == "A"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no temp folder left


def test_atomic_dir_replaces_existing_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_dir(out) as scratch:
        (scratch / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # the old output stays until the block succeeds
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_replaces_existing_file(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file where a folder goes")
    with atomic_dir(out) as scratch:
        (scratch / "x").write_text("x")
    assert out.is_dir() and (out / "x").read_text() == "x"


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(out) as scratch:
            (scratch / "partial.txt").write_text("half")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_failure_keeps_previous_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(PipelineError):
        with atomic_dir(out) as scratch:
            (scratch / "new.txt").write_text("new")
            raise PipelineError("bad data")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_keyboard_interrupt_cleans_up(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_run_stage_pipeline_error_is_exit_2_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def main():
        raise PipelineError("params.yaml: lr = -1: Input should be greater than 0")

    with pytest.raises(SystemExit) as info:
        run_stage(main, "demo")
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == "error: params.yaml: lr = -1: Input should be greater than 0\n"
    assert captured.out == ""
    assert not (tmp_path / "logs").exists()  # no timing for a failed stage


def test_run_stage_keyboard_interrupt_is_exit_130(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def main():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        run_stage(main, "demo")
    assert info.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_run_stage_other_errors_propagate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def main():
        raise ValueError("a real bug keeps its traceback")

    with pytest.raises(ValueError, match="real bug"):
        run_stage(main, "demo")


def test_run_stage_success_logs_timing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    run_stage(lambda: calls.append(1), "demo")
    assert calls == [1]
    timing = json.loads((tmp_path / "logs" / "demo.json").read_text())
    assert list(timing) == ["stage", "seconds_total", "seconds_startup", "seconds_work"]
    assert timing["stage"] == "demo"
    assert 0 <= timing["seconds_work"] <= timing["seconds_total"]


def test_stage_script_with_bad_params_exits_2_with_one_line(tmp_path):
    """A real stage script, in a folder whose params.yaml has lr: -1: exit 2, one line, no traceback."""
    (tmp_path / "params.yaml").write_text("lr: -1\n")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "stages.fetch"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == "error: params.yaml: lr = -1: Input should be greater than 0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no data/, no logs/


def test_write_and_read_json(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_json_atomic(path, {"z": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "z": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    assert read_json(path) == {"z": 1, "a": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.json"]  # no .tmp left
    write_text_atomic(path, "{}")
    assert read_json(path) == {}


def test_read_json_missing_and_corrupt(tmp_path):
    with pytest.raises(PipelineError, match="missing; run the stage that writes it first"):
        read_json(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PipelineError, match="corrupt JSON"):
        read_json(bad)


def test_save_dataset_dict_gives_identical_bytes_for_identical_data_from_different_scratch_files(tmp_path):
    """DVC hashes output folders: the same data must give the same files, whatever scratch path made it."""
    import pyarrow as pa
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets.arrow_writer import ArrowWriter

    from hfpipe.io import save_dataset_dict

    features = Features({"content": Value("string")})

    def build(scratch_name: str, out_name: str, rows: list[str]) -> dict[str, bytes]:
        scratch = tmp_path / scratch_name
        scratch.mkdir()
        writer = ArrowWriter(features=features, path=str(scratch / "train.arrow"))
        writer.write_table(pa.table({"content": rows}))
        writer.finalize()
        writer.close()
        save_dataset_dict(DatasetDict({"train": Dataset.from_file(str(scratch / "train.arrow"))}), tmp_path / out_name)
        out = tmp_path / out_name
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    first = build("a", "out1", ["import pandas", "import seaborn"])
    second = build("b", "out2", ["import pandas", "import seaborn"])
    other = build("c", "out3", ["import pandas", "import sklearn"])
    assert first == second
    assert first["train/state.json"] != other["train/state.json"]
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "out2"))["train"]["content"] == ["import pandas", "import seaborn"]
