"""End-to-end against a real Hub-API server on 127.0.0.1 (olah serving git repos: tests/hub.py), through
the real huggingface_hub, datasets and transformers clients, with real dvc. Each recipe runs as
written with only HF_ENDPOINT set and its sizes shrunk; the mrpc run also checks what the lock
promises: commits recorded, an upstream push changes nothing until `hfpipe update`, a pinned tag,
offline repros, and one-line errors for a missing repo, a missing revision and an empty cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import hub as hubs
from tests.e2e import ALL_STAGES, deep_update, env, git, make_repo_copy, stages_run

pytestmark = pytest.mark.e2e

SMALL_CLASSIFIER = {"tokenize": {"max_length": 32}, "export": {"onnx": False, "quantize_int8": False},
                    "train": {"epochs": 1, "max_steps": 8, "batch_size": 16, "eval_batch_size": 32,
                              "logging_steps": 4, "save_steps": 4, "eval_strategy": "steps", "eval_steps": 4}}


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory):
    """One olah for the module with every stand-in repo the recipes name, and an HF cache of its own."""
    root = tmp_path_factory.mktemp("hub")
    hub = hubs.LocalHub.start(root / "server")
    repos = {"glue": hubs.glue_mrpc_dataset(hub), "bert": hubs.bert_model(hub), "imdb": hubs.imdb_dataset(hub),
             "distilbert": hubs.distilbert_model(hub), "rotten": hubs.rotten_tomatoes_dataset(hub),
             "gpt2": hubs.gpt2_model(hub), "codeparrot": hubs.codeparrot_dataset(hub),
             "code_tokenizer": hubs.code_tokenizer(hub)}
    hub.repos = repos
    hub.hf_home = root / "hf-home"
    yield hub
    hub.stop()


def hub_env(hub, offline: bool = False, hf_home: Path | None = None) -> dict[str, str]:
    e = env()
    e.update(hub.env(), HF_HOME=str(hf_home or hub.hf_home))
    if offline:
        e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return e


def run(repo: Path, e: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=repo, env=e, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def dvc(repo: Path, e: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, e, sys.executable, "-m", "dvc", *args, check=check)


def hfpipe(repo: Path, e: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, e, sys.executable, "-m", "hfpipe.cli", *args, check=check)


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def lock(repo: Path) -> dict:
    return yaml.safe_load((repo / "hub.lock.yaml").read_text())


def set_params(repo: Path, **sections) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(deep_update(params, sections), sort_keys=False))


def test_mrpc_from_the_hub_is_locked_reproducible_offline_and_fails_in_one_line(local_hub, tmp_path):
    hub, glue, bert = local_hub, local_hub.repos["glue"], local_hub.repos["bert"]
    online = hub_env(hub)
    repo = make_repo_copy(tmp_path / "repo", "mrpc", SMALL_CLASSIFIER)
    result = dvc(repo, online, "repro")
    assert stages_run(result.stdout) == ALL_STAGES
    # every Hub input's commit is locked, and the outputs record what they read
    assert lock(repo) == {"dataset": {"repo": "nyu-mll/glue", "revision": None, "commit": glue.main},
                          "tokenizer": {"repo": "google-bert/bert-base-uncased", "revision": None, "commit": bert.main},
                          "model": {"repo": "google-bert/bert-base-uncased", "revision": None, "commit": bert.main}}
    fetch = json.loads((repo / "data/stats/fetch.json").read_text())
    assert (fetch["commit"], fetch["split_rows"]["train"]) == (glue.main, 240)  # main: v1's 200 rows + 40
    provenance = json.loads((repo / "models/trained/hub_provenance.json").read_text())
    assert provenance["model"]["commit"] == provenance["tokenizer"]["commit"] == bert.main
    assert glue.main in (repo / "models/export/README.md").read_text()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "run")
    assert dvc(repo, online, "status").stdout.strip() == "Data and pipelines are up to date."

    # upstream moves: nothing moves here until asked
    newer = hubs.publish(hub, "nyu-mll/glue", "dataset", {"README.md": "moved\n"}, "upstream push")
    try:
        assert "Running stage" not in dvc(repo, online, "repro").stdout
        dry = hfpipe(repo, online, "update", "--dry-run")
        assert f"dataset: nyu-mll/glue at main: {glue.main} -> {newer}" in dry.stdout, dry.stdout
        assert "1 input(s) would move" in dry.stdout and lock(repo)["dataset"]["commit"] == glue.main
        hfpipe(repo, online, "update", "dataset")
        assert lock(repo)["dataset"]["commit"] == newer
        assert set(json.loads(dvc(repo, online, "status", "--json").stdout)) == {"fetch"}  # only its reader
        git(repo, "checkout", "hub.lock.yaml")
    finally:  # main back where the builders left it, for the other tests of the module
        subprocess.run(["git", "reset", "-q", "--hard", glue.main], cwd=hubs.repo_path(hub, "nyu-mll/glue", "dataset"),
                       check=True, capture_output=True)

    # a pinned tag reads that tag's rows; a revision or a repo that does not exist: one line each
    set_params(repo, dataset={"revision": "v1"})
    dvc(repo, online, "repro", "fetch")
    fetch = json.loads((repo / "data/stats/fetch.json").read_text())
    assert (fetch["commit"], fetch["split_rows"]["train"], lock(repo)["dataset"]["commit"]) == (glue.tags["v1"], 200, glue.tags["v1"])
    set_params(repo, dataset={"revision": "no-such-tag"})
    assert one_error(dvc(repo, online, "repro", "fetch", check=False)) == (
        "error: dataset.revision = 'no-such-tag': no such branch, tag or commit in nyu-mll/glue; name one that "
        "exists (null: main)")
    set_params(repo, dataset={"revision": None, "path": "nyu-mll/no-such-dataset"})
    error = one_error(dvc(repo, online, "repro", "fetch", check=False))
    assert error.startswith("error: dataset.path = 'nyu-mll/no-such-dataset': no such dataset repository on the Hub"), error
    git(repo, "checkout", "--", ".")  # back to the committed run
    dvc(repo, online, "checkout", "--force")

    # the Hub gone: an unchanged pipeline is up to date and reruns nothing; an experiment trains from
    # the locked commit in the local cache
    hub.stop()
    try:
        # unreachable (nothing listens) without HF_HUB_OFFLINE: the same, as no stage asks the Hub anything
        unreachable = hub_env(hub)
        assert dvc(repo, unreachable, "status").stdout.strip() == "Data and pipelines are up to date."
        assert "Running stage" not in dvc(repo, unreachable, "repro").stdout
        offline = hub_env(hub, offline=True)
        assert dvc(repo, offline, "status").stdout.strip() == "Data and pipelines are up to date."
        assert "Running stage" not in dvc(repo, offline, "repro").stdout
        result = dvc(repo, offline, "exp", "run", "-S", "lr=1e-4", "train")  # (to train: what needs the model)
        assert stages_run(result.stdout) == {"train"}
        assert json.loads((repo / "models/trained/hub_provenance.json").read_text())["model"]["commit"] == bert.main
        # datasets 5.2 offline reads the newest cached commit of a dataset whatever the revision (v1 here,
        # loaded last above): fetch sees the files are not the locked commit's and refuses in one line
        error = one_error(dvc(repo, offline, "repro", "--force", "fetch", check=False))
        assert error.startswith(f"error: dataset.path = 'nyu-mll/glue' at '{glue.main}': not in the local datasets "
                                "cache (it holds another commit of it)"), error
        assert not [p for p in (repo / "data").iterdir() if ".tmp-" in p.name]
        git(repo, "checkout", "--", ".")
        dvc(repo, offline, "checkout", "--force")
        # with an empty cache it cannot: one line naming the repo, the commit and the fix
        result = dvc(repo, hub_env(hub, offline=True, hf_home=tmp_path / "empty-cache"), "exp", "run", "-S", "lr=2e-4",
                     check=False)
        error = one_error(result)
        assert error.startswith("error: model.name_or_path = 'google-bert/bert-base-uncased' at "
                                f"'{bert.main}': not in the local Hugging Face cache"), error
        assert f"hf download google-bert/bert-base-uncased --revision {bert.main}" in error
        assert not [p for p in (repo / "models").iterdir() if ".tmp-" in p.name]
    finally:
        hub.restart()


RECIPES = {
    # sentiment: stanfordnlp/imdb (no validation split: train_test_split) + distilbert/distilbert-base-uncased
    "sentiment": {"lr": 3e-3, "dataset": {"max_train_samples": 120}},
    # gpt2-classifier: rotten_tomatoes + openai-community/gpt2, a [PAD] added, LoRA on top
    "gpt2-classifier": {"lr": 1e-2, "model": {"peft": {"method": "lora", "r": 4, "alpha": 16, "dropout": 0.0}}},
    # codeparrot: streamed JSON lines + the course's code tokenizer + gpt2's config from scratch, two
    # tokenize processes, gradient accumulation, ONNX + int8
    "codeparrot": {"dataset": {"validation_fraction": 0.1}, "tokenize": {"context_length": 32, "num_proc": 2},
                   "train": {"max_steps": 8, "batch_size": 8, "eval_batch_size": 16, "gradient_accumulation_steps": 2,
                             "warmup_ratio": 0.1, "eval_steps": 4, "logging_steps": 2, "save_steps": 4,
                             "eval_max_blocks": 16, "torch_compile": False},
                   "evaluate": {"max_blocks": 16, "batch_size": 16, "max_new_tokens": 4},
                   "export": {"check_examples": 8}},
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_as_written_runs_from_the_hub(local_hub, recipe, tmp_path):
    overrides = RECIPES[recipe] if recipe == "codeparrot" else deep_update(
        json.loads(json.dumps(SMALL_CLASSIFIER)), RECIPES[recipe])
    repo = make_repo_copy(tmp_path / "repo", recipe, overrides)
    online = hub_env(local_hub)
    result = dvc(repo, online, "repro")
    assert stages_run(result.stdout) == ALL_STAGES
    params = yaml.safe_load((repo / "params.yaml").read_text())
    locked = lock(repo)
    by_repo = {r.repo_id: r.main for r in local_hub.repos.values()}
    assert locked["dataset"]["commit"] == by_repo[params["dataset"]["path"]]
    for key in ("tokenizer", "model"):
        assert locked[key] == {"repo": params[key]["name_or_path"], "revision": None,
                               "commit": by_repo[params[key]["name_or_path"]]}
    assert json.loads((repo / "data/stats/fetch.json").read_text())["commit"] == locked["dataset"]["commit"]
    assert dvc(repo, online, "status").stdout.strip() == "Data and pipelines are up to date."
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    print(f"{recipe} from the Hub: {metrics}")
    if recipe == "gpt2-classifier":
        assert (repo / "models/export/adapter/adapter_config.json").is_file()
    if recipe == "codeparrot":
        fetch = json.loads((repo / "data/stats/fetch.json").read_text())
        # streamed and keyword-filtered: only the documents naming the stack are kept
        assert fetch["seen"] == 600 and fetch["kept"] == 140 and fetch["split_documents"]["validation"] > 0
        from transformers import AutoTokenizer, pipeline

        trained = json.loads((repo / "models/trained/config.json").read_text())
        vocab = len(AutoTokenizer.from_pretrained(repo / "models/tokenizer"))
        # gpt2's config (its layers), the recipe's context and the Hub tokenizer's vocabulary
        assert (trained["n_positions"], trained["vocab_size"], trained["n_layer"]) == (32, vocab, 1)
        assert metrics["perplexity"] < metrics["untrained_perplexity"]
        onnx = json.loads((repo / "metrics/export.json").read_text())["onnx"]
        assert onnx["onnx_max_abs_logit_diff"] < 1e-3 and onnx["examples"] == 8
        assert (repo / "models/export/onnx/model.int8.onnx").is_file()
        out = pipeline("text-generation", model=str(repo / "models/export"))("import pandas as", max_new_tokens=3,
                                                                            do_sample=False)
        assert out[0]["generated_text"].startswith("import pandas as")
