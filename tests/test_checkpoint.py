"""hfpipe.checkpoint: which checkpoint a run resumes from (complete, same run), and which it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfpipe.checkpoint import (
    MARKER,
    data_fingerprint,
    dcp_files,
    find_resume_checkpoint,
    marker_data,
    prune_checkpoints,
    remove_checkpoints,
    restore_dvclive,
    run_dir,
    run_fingerprint,
    snapshot_dvclive,
    write_marker,
)
from hfpipe.io import PipelineError
from hfpipe.params import parse_params

BASE = {"lr": 0.01, "model": {"n_layer": 1, "n_head": 2, "n_embd": 32}, "train": {"save_steps": 5}}


def params(**changes):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for key, value in changes.items():
        section, _, name = key.rpartition("__")
        (raw.setdefault(section, {}) if section else raw)[name] = value
    return parse_params(raw)


def make_checkpoint(root: Path, step: int, p, data: str = "d1", backend: str = "trainer", complete: bool = True,
                    in_run_dir: bool = False) -> Path:
    """A checkpoint in `root` (a run's folder), or with in_run_dir in its run's folder under `root`."""
    path = (run_dir(p, data, root) if in_run_dir else root) / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        write_marker(path, marker_data(p, data, step, backend))
    return path


def test_fingerprint_covers_what_changes_the_numbers_only():
    base = run_fingerprint(params(), "d1")
    assert run_fingerprint(params(), "d1") == base
    assert run_fingerprint(params(lr=0.02), "d1") != base
    assert run_fingerprint(params(train__batch_size=4), "d1") != base
    assert run_fingerprint(params(train__num_processes=2), "d1") != base
    assert run_fingerprint(params(model__n_embd=64), "d1") != base
    assert run_fingerprint(params(), "d2") != base  # other data or tokenizer
    # how often to save, threads, resume: a resumed run may change them
    assert run_fingerprint(params(train__save_steps=50), "d1") == base
    assert run_fingerprint(params(train__threads=2), "d1") == base


def test_data_fingerprint_reads_file_contents(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.arrow").write_bytes(b"abc")
    first = data_fingerprint([tmp_path / "data"])
    assert data_fingerprint([tmp_path / "data"]) == first
    (tmp_path / "data" / "a.arrow").write_bytes(b"abd")
    assert data_fingerprint([tmp_path / "data"]) != first


def test_data_fingerprint_of_saved_datasets_reads_their_fingerprints_not_their_arrow_bytes(tmp_path):
    """save_dataset_dict writes a hash of the Arrow bytes into state.json: the data fingerprint uses
    it (different data, different fingerprint) instead of reading gigabytes at each start."""
    from datasets import Dataset, DatasetDict

    from hfpipe.io import save_dataset_dict

    def save(where: str, rows: list[list[int]]) -> Path:
        out = tmp_path / where / "tokenized"
        data = Dataset.from_dict({"input_ids": rows})
        save_dataset_dict(DatasetDict({"train": data, "validation": data.select([0])}), out)
        return out

    rows = [[1, 2, 3], [4, 5], [6]]
    first = data_fingerprint([save("a", rows)])
    assert data_fingerprint([save("b", rows)]) == first  # the same data saved again: the same fingerprint
    changed = data_fingerprint([save("c", [[1, 2, 3], [4, 5], [7]])])  # one token differs, same sizes
    assert changed != first
    # The Arrow bytes are not read: changing them behind state.json's back (same size) goes unseen,
    # while an edit of state.json's fingerprint (what a new save writes) is seen.
    arrow = next((tmp_path / "a" / "tokenized" / "train").glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[-1] ^= 0xFF
    arrow.write_bytes(bytes(data))
    assert data_fingerprint([tmp_path / "a" / "tokenized"]) == first
    state = tmp_path / "a" / "tokenized" / "train" / "state.json"
    state.write_text(state.read_text().replace('"_fingerprint": "', '"_fingerprint": "0'))
    assert data_fingerprint([tmp_path / "a" / "tokenized"]) != first
    # an Arrow file its state.json does not list (or without a fingerprint) is read byte for byte
    extra = tmp_path / "a" / "tokenized" / "train" / "extra.arrow"
    extra.write_bytes(b"x")
    with_extra = data_fingerprint([tmp_path / "a" / "tokenized"])
    extra.write_bytes(b"y")
    assert data_fingerprint([tmp_path / "a" / "tokenized"]) != with_extra


def test_prune_never_deletes_the_protected_best_checkpoint(tmp_path):
    p = params()
    for step in (5, 10, 15, 20):
        make_checkpoint(tmp_path, step, p)
    prune_checkpoints(tmp_path, protect=tmp_path / "checkpoint-5")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["checkpoint-15", "checkpoint-20", "checkpoint-5"]
    prune_checkpoints(tmp_path, protect="checkpoint-20")  # a relative path that is not it: no effect on the rest
    assert sorted(x.name for x in tmp_path.iterdir()) == ["checkpoint-15", "checkpoint-20"]


def test_resumes_from_the_newest_complete_checkpoint_and_deletes_half_written_ones(tmp_path):
    p = params()
    folder = run_dir(p, "d1", tmp_path)
    assert folder.parent == tmp_path and folder.name == f"run-{run_fingerprint(p, 'd1')}"
    make_checkpoint(folder, 5, p)
    make_checkpoint(folder, 10, p)
    make_checkpoint(folder, 15, p, complete=False)       # killed while the Trainer wrote it
    (folder / ".tmp-checkpoint-15").mkdir()               # killed while the Accelerate loop wrote it
    point = find_resume_checkpoint(p, "d1", "trainer", root=tmp_path, log=lambda *_: None)
    assert point is not None and point.step == 10 and point.path == folder / "checkpoint-10"
    assert sorted(x.name for x in folder.iterdir()) == ["checkpoint-10", "checkpoint-5"]


@pytest.mark.parametrize("marker", ['{"step": 10, "fingerp', "[1, 2]", '{"step": "ten", "files": {}}', b"\xff\xfe"])
def test_an_unreadable_marker_is_refused_in_one_line_and_its_checkpoint_kept(tmp_path, marker):
    p = params()
    folder = run_dir(p, "d1", tmp_path)
    make_checkpoint(folder, 5, p)
    bad = make_checkpoint(folder, 10, p)
    (bad / MARKER).write_bytes(marker.encode() if isinstance(marker, str) else marker)
    with pytest.raises(PipelineError) as err:
        find_resume_checkpoint(p, "d1", "trainer", root=tmp_path, log=lambda *_: None)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{bad / MARKER}: ")
    assert f"delete {bad} to resume from an older checkpoint" in str(err.value)
    assert sorted(x.name for x in folder.iterdir()) == ["checkpoint-10", "checkpoint-5"]  # nothing deleted


@pytest.mark.parametrize("tamper", ["changed", "missing", "added"])
def test_a_checkpoint_that_changed_since_it_was_written_is_refused_before_anything_is_loaded(tmp_path, tamper):
    p = params()
    folder = run_dir(p, "d1", tmp_path)
    good = make_checkpoint(folder, 10, p)
    assert find_resume_checkpoint(p, "d1", "trainer", root=tmp_path, log=lambda *_: None).path == good
    if tamper == "changed":
        (good / "model.safetensors").write_bytes(b"weightz")
    elif tamper == "missing":
        (good / "model.safetensors").unlink()
    else:  # a planted pickle, as accelerate's custom_checkpoint_0.pkl would be loaded
        (good / "custom_checkpoint_0.pkl").write_bytes(b"cos\nsystem\n")
    with pytest.raises(PipelineError) as err:
        find_resume_checkpoint(p, "d1", "trainer", root=tmp_path, log=lambda *_: None)
    name = "custom_checkpoint_0.pkl" if tamper == "added" else "model.safetensors"
    assert str(err.value).startswith(f"{good}: not as it was written ({name} {tamper}); nothing was loaded from it")
    assert good.is_dir()


def test_a_run_with_other_params_keeps_a_killed_runs_checkpoints_and_restoring_them_resumes_it(tmp_path):
    killed = make_checkpoint(tmp_path, 10, params(lr=0.02), in_run_dir=True)
    other_config = make_checkpoint(tmp_path, 5, params(model__n_embd=64), in_run_dir=True)
    logged: list[str] = []
    assert find_resume_checkpoint(params(), "d1", "trainer", root=tmp_path, log=logged.append) is None
    assert sorted(logged) == sorted([
        f"{killed.parent}: kept, checkpoint at step 10 of a run with other params (lr: 0.02 -> 0.01; 0.0 MB): "
        "restore those params to resume it, or delete it",
        f"{other_config.parent}: kept, checkpoint at step 5 of a run with other params (model.n_embd: 64 -> 32; "
        "0.0 MB): restore those params to resume it, or delete it"])
    assert killed.is_dir() and other_config.is_dir()
    # the killed run's params again: it resumes; other data: kept and said
    assert find_resume_checkpoint(params(lr=0.02), "d1", "trainer", root=tmp_path, log=lambda *_: None).path == killed
    logged.clear()
    assert find_resume_checkpoint(params(lr=0.02), "d2", "trainer", root=tmp_path, log=logged.append) is None
    assert any("the tokenized data or tokenizer changed" in line for line in logged)
    # another backend is another run
    assert find_resume_checkpoint(params(lr=0.02, train__backend="accelerate"), "d1", "accelerate", root=tmp_path,
                                  log=lambda *_: None) is None
    assert killed.is_dir()


def test_train_resume_false_starts_over_deleting_only_this_runs_checkpoints(tmp_path):
    mine = make_checkpoint(tmp_path, 10, params(), in_run_dir=True)
    other = make_checkpoint(tmp_path, 10, params(lr=0.02), in_run_dir=True)
    logged: list[str] = []
    assert find_resume_checkpoint(params(train__resume=False), "d1", "trainer", root=tmp_path, log=logged.append) is None
    assert not mine.parent.exists() and other.is_dir()
    assert f"train.resume is false: starting over (deleting this run's 1 checkpoint(s) in {mine.parent})" in logged


def test_other_processes_only_read(tmp_path):
    p = params()
    folder = run_dir(p, "d1", tmp_path)
    make_checkpoint(folder, 10, p)
    (folder / ".tmp-checkpoint-20").mkdir()
    assert find_resume_checkpoint(p, "d1", "trainer", root=tmp_path, cleanup=False, log=lambda *_: None).step == 10
    assert sorted(x.name for x in folder.iterdir()) == [".tmp-checkpoint-20", "checkpoint-10"]


def test_prune_keeps_the_newest_two_and_remove_deletes_the_runs_folder(tmp_path):
    p = params()
    folder = run_dir(p, "d1", tmp_path / "checkpoints")
    for step in (5, 10, 15):
        make_checkpoint(folder, step, p)
    prune_checkpoints(folder)
    assert sorted(x.name for x in folder.iterdir()) == ["checkpoint-10", "checkpoint-15"]
    other = make_checkpoint(tmp_path / "checkpoints", 5, params(lr=0.5), in_run_dir=True)
    remove_checkpoints(folder)
    assert not folder.exists() and other.is_dir()  # another run's stay
    remove_checkpoints(other.parent)
    assert list(tmp_path.iterdir()) == []  # the last one takes models/checkpoints with it


def test_dvclive_snapshot_round_trip(tmp_path):
    live = tmp_path / "dvclive"
    (live / "plots" / "metrics").mkdir(parents=True)
    (live / "plots" / "metrics" / "loss.tsv").write_text("step\tloss\n1\t5.0\n")
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    snapshot_dvclive(live, ckpt)
    (live / "plots" / "metrics" / "loss.tsv").write_text("step\tloss\n1\t5.0\n2\t4.0\n")  # logged after the save
    restore_dvclive(ckpt, live)
    assert (live / "plots" / "metrics" / "loss.tsv").read_text() == "step\tloss\n1\t5.0\n"


def make_sharded_checkpoint(root: Path, step: int, p, shards: int, written: int) -> Path:
    """An FSDP checkpoint of `shards` processes of which `written` saved their shard before the marker."""
    path = run_dir(p, "d1", root) / f"checkpoint-{step}"
    (path / "sharded").mkdir(parents=True)
    for name in dcp_files(shards)[:1 + written]:  # the metadata, then each process's shard
        (path / name).write_bytes(name.encode())
    write_marker(path, {**marker_data(p, "d1", step, "accelerate"), "shards": shards})
    return path


def test_a_sharded_checkpoint_resumes_only_with_every_processs_shard_in_its_marker(tmp_path):
    p = params(train__backend="accelerate", train__distributed="fsdp", train__num_processes=2,
               train__torch_compile=False)
    assert dcp_files(2) == ["sharded/.metadata", "sharded/__0_0.distcp", "sharded/__1_0.distcp"]
    whole = make_sharded_checkpoint(tmp_path, 4, p, shards=2, written=2)
    assert find_resume_checkpoint(p, "d1", "accelerate", root=tmp_path, log=lambda *_: None).path == whole
    # a marker written before process 1's shard (hashes match what is there, and still it is not whole)
    partial = make_sharded_checkpoint(tmp_path, 8, p, shards=2, written=1)
    with pytest.raises(PipelineError) as err:
        find_resume_checkpoint(p, "d1", "accelerate", root=tmp_path, log=lambda *_: None)
    assert str(err.value).startswith(f"{partial}: its marker does not list every shard of its 2 processes "
                                     "(sharded/__1_0.distcp); nothing was loaded from it")
    assert "\n" not in str(err.value)
