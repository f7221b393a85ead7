"""Shared fixtures for the unit tests: a tiny byte-level BPE tokenizer and a tiny GPT-2, built once.

Everything is offline and synthetic: the documents are python-like lines generated from a seeded
random number generator, never real code or a real dataset.
"""

from __future__ import annotations

import os
import random
import subprocess

# Set before anything imports huggingface_hub / datasets / transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

CONTEXT = 32  # block size / n_positions of the tiny model

_NAMES = ["data", "frame", "model", "value", "count", "item", "result", "total", "index", "score"]
_MODULES = ["pd", "np", "plt", "sk"]


def _synthetic_line(rng: random.Random) -> str:
    a, b = rng.choice(_NAMES), rng.choice(_NAMES)
    kind = rng.randrange(6)
    if kind == 0:
        return "import pandas as pd"
    if kind == 1:
        return f"{a} = {rng.choice(_MODULES)}.{b}({rng.randrange(100)})"
    if kind == 2:
        return f"def fit_{a}({b}, n={rng.randrange(10)}):\n    return {b} + {rng.randrange(10)}"
    if kind == 3:
        return f"for {a} in range({rng.randrange(50)}):\n    print({a}, {b})"
    if kind == 4:
        return f"# predict the {a} of the {b}\n{a}.fit({b})"
    return f"plt.plot({a}, {b})\nplt.show()"


def synthetic_documents(n: int, seed: int = 1234) -> list[str]:
    """n distinct-ish python-like documents of 2-7 lines each (deterministic for a seed)."""
    rng = random.Random(seed)
    return ["\n".join(_synthetic_line(rng) for _ in range(rng.randrange(2, 8))) for _ in range(n)]


@pytest.fixture(scope="session")
def synthetic_docs() -> list[str]:
    return synthetic_documents(300)


@pytest.fixture(scope="session")
def one_torch_thread():
    """Tiny models run far faster on one intra-op thread than on two competing ones."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def fresh_tokenizer(synthetic_docs):
    """The object hfpipe.tokenize.train_bpe_tokenizer returns, as it returns it (not reloaded)."""
    from hfpipe.tokenize import train_bpe_tokenizer

    return train_bpe_tokenizer(synthetic_docs, vocab_size=350, min_frequency=2)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(fresh_tokenizer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-tokenizer")
    fresh_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    """The tiny tokenizer as the pipeline's later stages see it: saved, then AutoTokenizer-loaded."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model_params():
    from hfpipe.params import ModelParams

    return ModelParams(n_layer=1, n_head=2, n_embd=16)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_params, tiny_tokenizer, one_torch_thread):
    """A 1-layer GPT-2 (n_embd 16) with n_positions = CONTEXT. Read-only: tests must not train it."""
    from hfpipe.modeling import build_causal_lm

    model = build_causal_lm(tiny_model_params, tiny_tokenizer, CONTEXT, seed=0)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_blocks(tiny_tokenizer, synthetic_docs):
    """Eight packed CONTEXT-token blocks of the synthetic documents, as an in-memory Dataset."""
    from datasets import Dataset

    ids: list[int] = []
    for doc in synthetic_docs[:40]:
        ids += tiny_tokenizer(doc, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    blocks = [ids[i: i + CONTEXT] for i in range(0, 8 * CONTEXT, CONTEXT)]
    assert all(len(b) == CONTEXT for b in blocks)
    return Dataset.from_dict({"input_ids": blocks})


# ------------------------------------------------------------------------------------------------
# pytest-xdist (`pytest` runs `-n auto`): the e2e tests that share a session run below go to one
# worker, so each run is built once. (xdist's own xdist_group marks do not reach its scheduler under
# pytest 9: the node-id suffix they rely on is lost.) Every other test is a scope of its own.
RUN_GROUPS = {"tests/test_cache_e2e.py": "tiny-default", "tests/test_pipeline_e2e.py": "tiny-default",
              "tests/test_sweep_e2e.py": "tiny-default", "tests/test_classification_e2e.py": "classification",
              "tests/test_train_e2e.py": "train-e2e", "tests/test_compare.py": "tiny-default",
              "tests/test_hub_e2e.py": "hub", "tests/test_remote_e2e.py": "tiny-default",
              # one worker builds the tiny default run for both (not one each)
              "tests/test_fsdp_e2e.py": "distributed", "tests/test_multinode_e2e.py": "distributed"}


def run_group(nodeid: str) -> str:
    """The scheduling scope of a test: its session run's group, or the test itself."""
    path = nodeid.split("::")[0]
    if path == "tests/test_plots_browser.py":  # one test per task, each on its run's worker
        return "classification" if "[classification]" in nodeid or "[gpt2-classifier]" in nodeid else "tiny-default"
    if path == "tests/test_kill_e2e.py":  # each recipe's sweep on the worker of its uninterrupted run
        return "classification" if "mrpc" in nodeid else "tiny-default"
    if path == "tests/test_lora_e2e.py":  # the worker of the run it copies, the one of their fixture, or any
        if "default_recipes_trained_model" in nodeid:
            return "tiny-default"
        return "lora-gpt2" if "gpt2_classifier" in nodeid else nodeid
    return RUN_GROUPS.get(path, nodeid)


# The longest scopes first (measured on 2 cores, minutes: tiny-default ~5, classification ~4.5,
# distributed ~3.5, hub ~3.3, train-e2e ~2, lora-gpt2 ~1): xdist hands scopes out in collection
# order, so the long ones start at once and the short ones fill in at the end instead of one long
# scope starting last.
LONGEST_FIRST = ["tiny-default", "classification", "distributed", "hub", "train-e2e", "lora-gpt2"]


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        group = run_group(item.nodeid)
        for i, name in enumerate(LONGEST_FIRST):
            if group == name or group.startswith(name + "::"):
                return i
        return len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each scope's tests keep their order


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class RunGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return run_group(nodeid)

    return RunGroupScheduling(config, log)


# ------------------------------------------------------------------------------------------------
# Finished tiny runs of each recipe under real dvc, built once per session (tests/e2e.py's configs):
# a temporary git+DVC copy of the repo after `dvc repro`, committed with its dvc.lock. Tests that
# only read one use it as it is; a test that changes things works on its own copy
# (tests.e2e.copy_run), so every test starts from the same finished state, in any order.

def _finished_run(dest: Path, recipe: str, overrides: dict, local: dict[str, Path] | None = None) -> Path:
    from tests.e2e import ALL_STAGES, make_repo_copy, repro_and_commit, stages_run, undeclared_imports

    repo = make_repo_copy(dest, recipe, overrides, local)
    result = repro_and_commit(repo, "tiny run")
    assert stages_run(result.stdout) == ALL_STAGES, result.stdout[-3000:]
    # every recipe's run: what each stage really imported is among its deps (hfpipe.stage_deps)
    assert undeclared_imports(repo) == []
    assert {log.stem for log in (repo / "logs").glob("*.json")} >= ALL_STAGES
    return repo


@pytest.fixture(scope="session")
def tiny_default_repo(tmp_path_factory) -> Path:
    """The default recipe (code LM) on tests/e2e.py's TINY config."""
    from tests.e2e import TINY

    return _finished_run(tmp_path_factory.mktemp("tiny-default") / "repo", "params.yaml", TINY)


@pytest.fixture(scope="session")
def sentiment_run(tmp_path_factory, standins) -> Path:
    """The sentiment recipe on a user's folder of CSVs (data/raw/mydata, a copy of samples/sentiment)
    and a local tiny DistilBERT stand-in (models/pretrained/distilbert)."""
    from tests.e2e import ROOT, sentiment_overrides

    root = tmp_path_factory.mktemp("sentiment-run")
    local = {"data/raw/mydata": ROOT / "samples/sentiment", "models/pretrained/distilbert": standins["distilbert"]}
    return _finished_run(root / "repo", "sentiment",
                         sentiment_overrides("data/raw/mydata", "models/pretrained/distilbert"), local)


@pytest.fixture(scope="session")
def mrpc_run(tmp_path_factory) -> Path:
    """The mrpc recipe on samples/mrpc (GLUE's raw TSVs, inside the repo), all-MiniLM-L6-v2."""
    from tests.e2e import MRPC

    return _finished_run(tmp_path_factory.mktemp("mrpc-run") / "repo", "mrpc", MRPC)


@pytest.fixture(scope="session")
def gpt2_classifier_run(tmp_path_factory, standins) -> Path:
    """The gpt2-classifier recipe as written (pretrained GPT-2 stand-in, a [PAD] added)."""
    from tests.e2e import gpt2_overrides

    return _finished_run(tmp_path_factory.mktemp("gpt2-classifier-run") / "repo", "gpt2-classifier",
                         gpt2_overrides("models/pretrained/gpt2"), {"models/pretrained/gpt2": standins["gpt2"]})


@pytest.fixture(scope="session")
def standins(tmp_path_factory) -> dict[str, Path]:
    """Local stand-ins for the Hub models and tokenizers the recipes name, built once (tests/e2e.py):
    distilbert (a DistilBERT, no token_type_ids), gpt2 (a GPT-2 + its GPT-2-kind tokenizer),
    code_tokenizer (a byte-level BPE like the course's code-search-net tokenizer)."""
    from tests.e2e import gpt2_standin_texts, save_bpe_tokenizer, save_distilbert_standin, save_gpt2_standin

    root = tmp_path_factory.mktemp("standins")
    return {"distilbert": save_distilbert_standin(root / "distilbert-base-uncased"),
            "gpt2": save_gpt2_standin(root / "gpt2", gpt2_standin_texts()),
            "code_tokenizer": save_bpe_tokenizer(root / "code-search-net-tokenizer", synthetic_documents(400, seed=7))}


@pytest.fixture
def loopback_only():
    """A new network namespace with only the loopback device, up; the command prefix that runs a
    process in it. Skips where namespaces cannot be made (not root)."""
    name = f"hfpipe-test-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"a loopback-only network namespace is needed (ip netns add: {made.stderr.strip()})")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
