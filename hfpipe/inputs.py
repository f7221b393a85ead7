"""What the stages will read from outside dvc.yaml's reach, fingerprinted, so DVC sees a change:
the installed packages behind the default corpus, a user's local data files (inside the repository
or not), a Hub dataset's revision (data/stats/inputs.json: fetch's dep); a pretrained tokenizer's
and model's local folder or Hub commit (data/stats/tokenizer_inputs.json: the tokenizer stage's;
data/stats/model_inputs.json: train's and export's, which loads the base model of a LoRA adapter).

The `inputs` stage runs on every `dvc repro` (always_changed: it takes ~1 s, plus ~1 s per GB of a
local model folder) and rewrites the three files. Only when a file's content changes does DVC rerun
the stages that depend on it, and a stage whose output comes out byte-identical leaves every later
stage cached.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

from hfpipe.data import EXCLUDED_DISTRIBUTIONS
from hfpipe.hub import hub_commit
from hfpipe.io import looks_local
from hfpipe.modeling import PKG_PREFIX
from hfpipe.params import DatasetParams


def corpus_distributions() -> dict[str, str]:
    """`name==version` -> a hash of the .py files the wheel installed (their RECORD sha256s).

    Exactly the files hfpipe.data.installed_python_files reads, named by what pip recorded, so the
    fingerprint is the same on every machine installed from the same lock and moves when a package
    is added, removed or upgraded. (A hand edit of an installed file keeps its RECORD hash: reinstall.)
    """
    out: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() in EXCLUDED_DISTRIBUTIONS:
            continue
        digest = hashlib.sha256()
        for f in sorted(dist.files or [], key=lambda f: f.as_posix()):
            if f.suffix == ".py":
                digest.update(f"{f.as_posix()},{f.hash.value if f.hash else f.size}\n".encode())
        key = f"{name}=={dist.version}"
        out[key] = digest.hexdigest()[:16] if key not in out else out[key] + "+" + digest.hexdigest()[:16]
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def local_files(path: str | Path) -> dict[str, str]:
    """Every file under a local file or folder (hidden ones and caches skipped) -> its sha256."""
    root = Path(path).expanduser()
    if root.is_file():
        return {root.name: file_sha256(root)}
    if not root.is_dir():
        return {}
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            if not name.startswith("."):
                f = Path(dirpath) / name
                out[f.relative_to(root).as_posix()] = file_sha256(f)
    return dict(sorted(out.items()))


def fetch_inputs(dp: DatasetParams) -> dict:
    """The fingerprint of what fetch reads for these dataset params (data/stats/inputs.json)."""
    if dp.source == "installed-packages":
        return {"source": dp.source, "distributions": corpus_distributions()}
    if looks_local(dp.path):
        # A folder is hashed whole: dataset.data_files name files inside it (load_dataset resolves
        # them against the folder), and adding or deleting a file counts as a change.
        path = Path(dp.path).expanduser()
        return {"source": dp.source, "path": dp.path, "exists": path.exists(), "files": local_files(path)}
    return {"source": dp.source, "path": dp.path, "name": dp.name, "revision": dp.revision,
            "commit": hub_commit(dp.path, dp.revision, "dataset")}


def pretrained_inputs(name_or_path: str | None, revision: str | None) -> dict:
    """The fingerprint of a pretrained tokenizer or model a stage loads: a local folder's files, or
    the commit a Hub revision points at (None offline: the revision as written is all there is). A
    pip package's folder (pkg:...) is pinned by the lock, which every stage depends on."""
    if not name_or_path or name_or_path.startswith(PKG_PREFIX):
        return {"name_or_path": name_or_path}
    if looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        return {"name_or_path": name_or_path, "exists": path.exists(), "files": local_files(path)}
    return {"name_or_path": name_or_path, "revision": revision, "commit": hub_commit(name_or_path, revision)}
