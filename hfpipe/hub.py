"""The Hugging Face Hub: which commit a revision points at, and the provenance record of a Hub input."""

from __future__ import annotations

import os

from hfpipe.io import looks_local

# A tokenizer or model folder's record of the Hub repository it came from (tokenizer and train stages).
PROVENANCE_FILE = "hub_provenance.json"


def hub_commit(repo_id: str | None, revision: str | None, repo_type: str = "model") -> str | None:
    """The commit a Hub revision (a branch, tag or commit; None: main) points at.

    None for local paths, offline (HF_HUB_OFFLINE) or when the Hub does not answer: the loading
    code then reads `revision` itself and says what went wrong.
    """
    if not repo_id or looks_local(repo_id):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return None
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        info = (api.dataset_info(repo_id, revision=revision, timeout=10) if repo_type == "dataset"
                else api.model_info(repo_id, revision=revision, timeout=10))
        return info.sha
    except Exception:  # unreachable, unknown repo, no access
        return None


def provenance(name_or_path: str | None, revision: str | None, commit: str | None) -> dict:
    """What a stage loaded: the name, the revision asked for and the commit read (None: not from the Hub,
    or the Hub did not answer)."""
    return {"name_or_path": name_or_path, "revision": revision, "commit": commit}
