"""The Hugging Face Hub inputs (a dataset, a tokenizer, a model), each locked to a commit in hub.lock.yaml.

A recipe names a repository and a revision (a branch, tag or commit; null: main). The first stage
that reads it resolves that revision to a commit once and records it in hub.lock.yaml (committed
with dvc.lock); every later repro, on any machine, online or offline, loads exactly that commit, and
a push upstream changes nothing until `hfpipe update` moves the lock (as `dvc update` moves an
import's `rev_lock`). Each stage tracks only its own entry (dvc.yaml: `hub.lock.yaml: [dataset]`),
so a moved commit reruns exactly the stages that read it. Changing a repository or revision param
resolves anew on the next repro.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from hfpipe import paths
from hfpipe.io import PipelineError, first_line, looks_local, write_text_atomic
from hfpipe.params import Params

LOCK_FILE = paths.HUB_LOCK
INPUTS = ("dataset", "tokenizer", "model")  # the lock's keys: the params sections that can name a Hub repo
# A tokenizer or model folder's record of the Hub repository it came from (tokenizer and train stages).
PROVENANCE_FILE = "hub_provenance.json"
COMMIT = re.compile(r"^[0-9a-f]{40}$")
LOCK_HEADER = """\
# The Hub commit each Hub input resolved to (hfpipe/hub.py). Written by the stage that first reads
# an input and by `hfpipe update`; commit it with dvc.lock. Repros load exactly these commits, online
# or offline; `hfpipe update [dataset|tokenizer|model] [--dry-run]` moves them to the revisions' newest.
"""


def hub_repo(params: Params, key: str) -> tuple[str, str | None, str] | None:
    """(repo id, revision asked for, repo type) of an input when it is a Hub repository, else None
    (the installed-packages corpus, a local path, a pip package's model, a tokenizer trained here)."""
    section = getattr(params, key)
    if key == "dataset":
        if section.source != "load_dataset" or not section.path or looks_local(section.path):
            return None
        return section.path, section.revision, "dataset"
    name = section.name_or_path
    if not name or looks_local(name):
        return None
    return name, section.revision, "model"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def read_lock(path: Path = LOCK_FILE) -> dict:
    import yaml

    if not path.is_file():
        return {key: None for key in INPUTS}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({first_line(err)}); restore it from git "
                            f"(git checkout {path}) or delete it and run `hfpipe update`") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping of {', '.join(INPUTS)}; restore it from git or delete it "
                            f"and run `hfpipe update`")
    return {key: data.get(key) for key in INPUTS}


def write_lock(lock: dict, path: Path = LOCK_FILE) -> None:
    import yaml

    body = yaml.safe_dump({key: lock.get(key) for key in INPUTS}, sort_keys=False)
    write_text_atomic(path, LOCK_HEADER + body)


def matches(entry, repo_id: str, revision: str | None) -> bool:
    return (isinstance(entry, dict) and entry.get("repo") == repo_id and entry.get("revision") == revision
            and isinstance(entry.get("commit"), str) and bool(COMMIT.match(entry["commit"])))


def locked_commit(params: Params, key: str, path: Path = LOCK_FILE) -> str | None:
    """The commit to load for input `key`: the lock's, when it was resolved for the same repository
    and revision; else resolved now and written to the lock. None when the input is not a Hub repo
    (its lock entry is then cleared). Only a stage that reads the input calls this."""
    repo = hub_repo(params, key)
    lock = read_lock(path)
    if repo is None:
        if lock[key] is not None:
            lock[key] = None
            write_lock(lock, path)
        return None
    repo_id, revision, repo_type = repo
    if matches(lock[key], repo_id, revision):
        return lock[key]["commit"]
    commit = resolve_commit(repo_id, revision, repo_type, key)
    lock[key] = {"repo": repo_id, "revision": revision, "commit": commit}
    write_lock(lock, path)
    print(f"{key}: {repo_id} at {revision or 'main'} -> commit {commit} (locked in {path})")
    return commit


def update_lock(params: Params, keys: tuple[str, ...] = INPUTS, dry_run: bool = False,
                path: Path = LOCK_FILE) -> list[tuple[str, dict | None, dict | None]]:
    """Re-resolve the inputs' revisions on the Hub (`hfpipe update`): (key, old entry, new entry) for
    each that moved. Writes the lock unless dry_run."""
    lock = read_lock(path)
    moved = []
    for key in keys:
        repo = hub_repo(params, key)
        new = None
        if repo is not None:
            repo_id, revision, repo_type = repo
            new = {"repo": repo_id, "revision": revision, "commit": resolve_commit(repo_id, revision, repo_type, key)}
        if new != lock[key]:
            moved.append((key, lock[key], new))
            lock[key] = new
    if moved and not dry_run:
        write_lock(lock, path)
    return moved


def _revision_key(key: str) -> str:
    return f"{key}.revision"


def _name_key(key: str) -> str:
    return "dataset.path" if key == "dataset" else f"{key}.name_or_path"


def resolve_commit(repo_id: str, revision: str | None, repo_type: str, key: str) -> str:
    """The commit a revision of a Hub repository points at now. A full commit sha is its own answer
    (no network). Every failure is one line: what was asked, what the Hub said, the fix."""
    if revision and COMMIT.match(revision):
        return revision
    what = f"{_name_key(key)} = {repo_id!r} at {_revision_key(key)} = {revision or 'main'!r}"
    if offline():
        raise PipelineError(f"{what}: not locked in {LOCK_FILE} yet and HF_HUB_OFFLINE=1, so its commit cannot be "
                            f"resolved; go online once (unset HF_HUB_OFFLINE), or set {_revision_key(key)} to a "
                            f"full commit sha")
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        info = (api.dataset_info(repo_id, revision=revision, timeout=30) if repo_type == "dataset"
                else api.model_info(repo_id, revision=revision, timeout=30))
    except Exception as err:
        raise hub_error(err, key, repo_id, revision, repo_type) from None
    if not info.sha:
        raise PipelineError(f"{what}: the Hub answered without a commit sha; retry, or set {_revision_key(key)} "
                            f"to a full commit sha")
    return info.sha


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def hub_error(err: BaseException, key: str, repo_id: str, revision: str | None, repo_type: str) -> PipelineError:
    """One line for a failed Hub call: no such repository, no such revision, no access, unreachable or
    offline and not in the local cache; each with its fix."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"{_name_key(key)} = {repo_id!r}" + (f" at {revision!r}" if revision else "")
    kinds = list(_chain(err))
    status = next((getattr(getattr(e, "response", None), "status_code", None) for e in kinds
                   if getattr(getattr(e, "response", None), "status_code", None)), None)
    download = f"hf download {repo_id}" + (" --repo-type dataset" if repo_type == "dataset" else "") + (
        f" --revision {revision}" if revision else "")
    if any(isinstance(e, GatedRepoError) for e in kinds) or status == 403:
        return PipelineError(f"{what}: the Hub refused access (403: gated or private); accept its terms on the "
                             f"Hub and set HF_TOKEN or run `hf auth login`")
    if any(isinstance(e, RevisionNotFoundError) for e in kinds):
        return PipelineError(f"{_revision_key(key)} = {revision!r}: no such branch, tag or commit in {repo_id}; "
                             f"name one that exists (null: main)")
    if any(isinstance(e, RepositoryNotFoundError) for e in kinds):
        return PipelineError(f"{what}: no such {repo_type} repository on the Hub, or a private one (401); check the "
                             f"name (org/name), or set HF_TOKEN / run `hf auth login` if it is yours")
    if status == 401:
        return PipelineError(f"{what}: the Hub asked for credentials (401); set HF_TOKEN or run `hf auth login`")
    if offline() or any(isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) for e in kinds) or any(
            type(e).__name__ in ("ConnectError", "ConnectTimeout", "ReadTimeout", "ConnectionError", "Timeout")
            for e in kinds):
        return PipelineError(f"{what}: not in the local Hugging Face cache, and the Hub is "
                             f"{'offline (HF_HUB_OFFLINE=1)' if offline() else 'unreachable'}; go online, or "
                             f"download that commit into the cache: {download}")
    return PipelineError(f"{what}: could not load ({type(kinds[-1]).__name__}: {first_line(kinds[-1])})")


def load_failure(err: BaseException, key: str, name_or_path: str | None, revision: str | None,
                 repo_type: str = "model") -> PipelineError | None:
    """hub_error's line when a load from a Hub repository failed; None for a local path (the caller
    describes those)."""
    if not name_or_path or looks_local(name_or_path):
        return None
    return hub_error(err, key, name_or_path, revision, repo_type)


def provenance(name_or_path: str | None, revision: str | None, commit: str | None) -> dict:
    """What a stage loaded: the name, the revision asked for and the commit read (None: not from the Hub)."""
    return {"name_or_path": name_or_path, "revision": revision, "commit": commit}
