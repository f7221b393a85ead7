"""hfpipe.io: atomic outputs, one-line stage errors with exit code 2, JSON helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfpipe.io import (
    INCOMPLETE,
    PipelineError,
    atomic_dir,
    exchange_paths,
    read_json,
    require_complete,
    run_stage,
    write_json_atomic,
    write_text_atomic,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_atomic_dir_writes_a_new_output_in_place_flagged_incomplete_until_the_block_ends(tmp_path):
    out = tmp_path / "sub" / "out"
    with atomic_dir(out) as target:
        assert target == out and (out / INCOMPLETE).exists()  # DVC deleted it: nothing to keep
        with pytest.raises(PipelineError, match="half-written"):
            require_complete(out)
        (target / "a.txt").write_text("A")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    assert require_complete(out) == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no scratch folder


def test_atomic_dir_replaces_existing_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_dir(out) as scratch:
        assert scratch.parent == out.parent and scratch != out
        (scratch / "new.txt").write_text("new")
        assert sorted(p.name for p in out.iterdir()) == ["old.txt"]  # the old output stays until the swap
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("kernel_swap", [True, False])
def test_exchange_paths_swaps_two_folders(tmp_path, monkeypatch, kernel_swap):
    import hfpipe.io

    if not kernel_swap:  # another OS or file system: moved aside, then swapped
        monkeypatch.setattr(hfpipe.io, "_rename_exchange", lambda a, b: False)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "new").write_text("new"), (b / "old").write_text("old")
    exchange_paths(a, b)
    assert [p.name for p in b.iterdir()] == ["new"] and [p.name for p in a.iterdir()] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_the_old_output_survives_a_failed_swap(tmp_path, monkeypatch):
    import hfpipe.io

    monkeypatch.setattr(hfpipe.io, "_rename_exchange", lambda a, b: False)
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".out.tmp-") and not Path(src).name.endswith("-old") and Path(dst).name == "out":
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(hfpipe.io.os, "replace", replace)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OSError, match="disk gone"):
        with atomic_dir(out) as scratch:
            (scratch / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
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
    assert list(timing) == ["stage", "seconds_total", "seconds_startup", "seconds_work", "modules"]
    assert timing["modules"] == []  # nothing of hfpipe/ or stages/ under this folder was imported
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


# --- sizes, sharded Arrow writing ---------------------------------------------------------------------

def test_parse_size_accepts_bytes_and_save_to_disk_strings():
    from hfpipe.io import parse_size

    assert parse_size(2000) == 2000
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("64MiB") == 64 * 2**20
    assert parse_size("1gb") == 10**9
    assert parse_size("1.5 KB") == 1500
    assert parse_size("2000") == 2000
    for bad in (0, -5, "", "MB", "5XB", "-1MB", True, 1.5, None):
        with pytest.raises(ValueError, match="positive number of bytes or a size such as 500MB"):
            parse_size(bad)


def _write_sharded(out, rows: list[dict], features, max_shard_size, table_rows: int = 256):
    """rows -> a one-split DatasetDict folder through ShardedArrowWriter, in tables of table_rows rows."""
    import pyarrow as pa

    from hfpipe.io import ShardedArrowWriter, finish_split, write_dataset_dict_json

    with ShardedArrowWriter(out / "train", features, max_shard_size) as writer:
        for i in range(0, len(rows), table_rows):
            writer.write_table(pa.Table.from_pylist(rows[i: i + table_rows], schema=features.arrow_schema))
    finish_split(out / "train", writer.shards, features)
    write_dataset_dict_json(out, ["train"])
    return writer


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sharded_writer_tiny_shards_read_back_as_one_dataset_in_order(tmp_path):
    from datasets import Features, Value, load_from_disk

    features = Features({"content": Value("string"), "source": Value("string")})
    rows = [{"content": f"import pandas as pd  # {i} " + "x" * (i % 50), "source": f"s{i % 3}"} for i in range(1500)]
    writer = _write_sharded(tmp_path / "a", rows, features, max_shard_size=8000, table_rows=97)
    names = sorted(p.name for p in (tmp_path / "a" / "train").iterdir())
    n = len(writer.shards)
    assert n > 10
    assert names == [f"data-{i:05d}-of-{n:05d}.arrow" for i in range(n)] + ["dataset_info.json", "state.json"]
    assert writer.rows == 1500
    dd = load_from_disk(str(tmp_path / "a"))
    assert list(dd) == ["train"]
    assert dd["train"]["content"][:] == [r["content"] for r in rows]  # every row, in order
    assert dd["train"]["source"][:] == [r["source"] for r in rows]
    # each shard holds at most max_shard_size bytes of data
    import pyarrow as pa

    for i in range(n):
        with pa.memory_map(str(tmp_path / "a" / "train" / f"data-{i:05d}-of-{n:05d}.arrow")) as source:
            assert 0 < pa.ipc.open_stream(source).read_all().nbytes <= 8000
    # identical data -> identical files (fingerprint included); other data -> another fingerprint
    _write_sharded(tmp_path / "b", rows, features, max_shard_size=8000, table_rows=500)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    rows[700]["content"] += "!"
    _write_sharded(tmp_path / "c", rows, features, max_shard_size=8000)
    state = (tmp_path / "c" / "train" / "state.json").read_text()
    assert json.loads(state)["_fingerprint"] != json.loads(_files(tmp_path / "a")["train/state.json"])["_fingerprint"]


def test_sharded_writer_matches_save_to_disk_byte_for_byte_below_the_shard_size(tmp_path):
    """Under max_shard_size the streamed folder is exactly what save_to_disk made of a scratch file
    (so existing DVC outputs keep their hashes): same record batches, names, state and info."""
    import pyarrow as pa
    from datasets import Dataset, DatasetDict, Features, List, Value
    from datasets.arrow_writer import ArrowWriter

    from hfpipe.io import save_dataset_dict

    cases = [(Features({"content": Value("string"), "source": Value("string")}),
              [{"content": f"import pandas  # {i}" * (1 + i % 7), "source": f"pkg=={i % 5}"} for i in range(2600)]),
             (Features({"input_ids": List(Value("int32"), length=8)}),
              [{"input_ids": list(range(i, i + 8))} for i in range(2345)])]
    for k, (features, rows) in enumerate(cases):
        scratch = tmp_path / f"scratch{k}.arrow"
        writer = ArrowWriter(features=features, path=str(scratch))
        for i in range(0, len(rows), 256):
            writer.write_table(pa.Table.from_pylist(rows[i: i + 256], schema=features.arrow_schema))
        writer.finalize()
        writer.close()
        save_dataset_dict(DatasetDict({"train": Dataset.from_file(str(scratch))}), tmp_path / f"old{k}")
        _write_sharded(tmp_path / f"new{k}", rows, features, "500MB", table_rows=333)
        assert _files(tmp_path / f"new{k}") == _files(tmp_path / f"old{k}")


def test_sharded_writer_with_no_rows_gives_one_empty_shard(tmp_path):
    from datasets import Features, Value, load_from_disk

    features = Features({"content": Value("string")})
    _write_sharded(tmp_path / "out", [], features, "500MB")
    dd = load_from_disk(str(tmp_path / "out"))
    assert len(dd["train"]) == 0 and dd["train"].column_names == ["content"]


def test_save_dataset_dict_max_shard_size(tmp_path):
    from datasets import Dataset, DatasetDict, load_from_disk

    from hfpipe.io import save_dataset_dict

    texts = [f"text {i} " * 20 for i in range(500)]
    save_dataset_dict(DatasetDict({"train": Dataset.from_dict({"text": texts})}), tmp_path / "out", "20KB")
    assert len(list((tmp_path / "out" / "train").glob("data-*.arrow"))) > 1
    assert load_from_disk(str(tmp_path / "out"))["train"]["text"][:] == texts


@pytest.mark.parametrize("existing", [False, True])
def test_a_run_killed_while_writing_leaves_the_old_output_or_a_flagged_one_the_next_run_replaces(tmp_path, existing):
    """SIGKILL inside atomic_dir (as an OOM kill of a stage would). A new output (DVC had deleted the
    old one) is left flagged `.incomplete`: refused by readers, deleted by the next run (and by DVC,
    which sees it changed). An old output is left as it was, with the scratch folder beside it."""
    import signal

    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "old.arrow").write_text("old")
    script = (f"import time\nfrom hfpipe.io import atomic_dir\n"
              f"with atomic_dir({str(out)!r}) as d:\n"
              f"    (d / 'partial.arrow').write_text('half')\n    print('ready', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    if existing:
        assert sorted(p.name for p in out.iterdir()) == ["old.arrow"]
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    else:
        assert sorted(p.name for p in out.iterdir()) == [INCOMPLETE, "partial.arrow"]
        with pytest.raises(PipelineError, match="out: half-written"):
            require_complete(out)
    with atomic_dir(out) as target:
        (target / "data.arrow").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["data.arrow"]


def test_a_stage_records_the_project_files_it_imported():
    import hfpipe.paths  # noqa: F401  (imported: must be listed)
    from hfpipe.io import project_files_imported

    root = Path(__file__).resolve().parents[1]
    files = project_files_imported(root)
    assert {"hfpipe/io.py", "hfpipe/paths.py", "hfpipe/__init__.py"} <= set(files)
    assert all(f.split("/")[0] in ("hfpipe", "stages") and f.endswith(".py") for f in files)
