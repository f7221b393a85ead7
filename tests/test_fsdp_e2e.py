"""End-to-end: train.distributed: fsdp (FSDP2 over gloo, 2 processes under torchrun) on the tiny
default recipe, through real `dvc repro train`: the 1-process loss at the same global batch, half
the parameters and optimizer state per process, a full model that transformers.pipeline loads, and
a run SIGKILLed after its first sharded checkpoint resuming to the uninterrupted run's weights.

Each test works on its own copy of the session's finished tiny default run (tests.e2e.copy_run),
where only train reruns.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import checkpoints, copy_run, dvc, env, set_train, stages_run, start_and_kill_after_first_checkpoint

pytestmark = pytest.mark.e2e

FSDP = {"backend": "accelerate", "distributed": "fsdp", "num_processes": 2, "batch_size": 4}  # TINY: 1 x 8
RELAUNCH = "relaunching as -m torch.distributed.run --standalone --nproc_per_node 2 -m stages.train"


def eval_loss(repo: Path) -> float:
    return json.loads((repo / "dvclive/metrics.json").read_text())["eval"]["loss"]


def weights_sha256(repo: Path) -> str:
    return hashlib.sha256((repo / "models/trained/model.safetensors").read_bytes()).hexdigest()


def held_fractions(output: str) -> dict[str, tuple[float, float]]:
    """Per process: the fraction of the parameter and of the optimizer-state elements it holds."""
    found = re.findall(r"process (\d)/2 holds (\d+) of (\d+) parameter elements and (\d+) of (\d+) "
                       r"optimizer-state elements \(FSDP shards\)", output)
    return {rank: (int(p) / int(pf), int(o) / int(of)) for rank, p, pf, o, of in found}


def test_two_process_fsdp_matches_one_process_holds_half_per_process_and_saves_the_full_model(
        tiny_default_repo, tmp_path):
    repo = copy_run(tiny_default_repo, tmp_path / "repo")
    # fp32: the comparison is of the sharding, not of bf16's rounding
    set_train(repo, backend="accelerate", mixed_precision="no")
    dvc(repo, "repro", "train")
    one = eval_loss(repo)

    set_train(repo, **FSDP)
    result = dvc(repo, "repro", "train")
    assert stages_run(result.stdout) == {"train"} and RELAUNCH in result.stdout
    two = eval_loss(repo)
    print(f"eval loss: 1 process x batch 8 = {one!r}; 2 FSDP processes x batch 4 = {two!r}")
    assert two != one  # sharded sums in another order: close, not bit-equal
    assert abs(two - one) / one < 1e-3
    held = held_fractions(result.stdout)
    print(f"held (parameters, optimizer state) per process: {held}")
    assert set(held) == {"0", "1"}
    assert all(0.45 < fraction < 0.55 for fractions in held.values() for fraction in fractions)
    assert checkpoints(repo) == []

    # models/trained is the whole model, as transformers saves it and a pipeline loads it
    probe = ("from transformers import pipeline; import sys; "
             "g = pipeline('text-generation', model='models/trained', device='cpu'); "
             "print(g('import', max_new_tokens=3, do_sample=False)[0]['generated_text'])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=repo, env=env(), capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("import"), out.stderr[-2000:]


def test_fsdp_killed_after_a_sharded_checkpoint_resumes_to_the_uninterrupted_runs_weights(tiny_default_repo,
                                                                                         tmp_path):
    """bf16 (the recipe's: FSDP2's MixedPrecisionPolicy), SIGKILL of dvc, torchrun and both workers
    once the first checkpoint is complete, then a plain `dvc repro train`."""
    whole = copy_run(tiny_default_repo, tmp_path / "whole")
    set_train(whole, **FSDP)
    dvc(whole, "repro", "train")

    repo = copy_run(tiny_default_repo, tmp_path / "killed")
    set_train(repo, **FSDP)
    start_and_kill_after_first_checkpoint(repo, sys.executable, "-m", "dvc", "repro", "train", timeout=180)
    markers = list((repo / "models/checkpoints").glob("run-*/checkpoint-*/hfpipe_checkpoint.json"))
    marker = json.loads(markers[0].read_text())
    assert marker["shards"] == 2
    assert {"sharded/.metadata", "sharded/__0_0.distcp", "sharded/__1_0.distcp"} <= set(marker["files"])

    result = dvc(repo, "repro", "train")
    resumed = re.findall(r"resumed from models/checkpoints/run-\w+/checkpoint-(\d+) at step (\d+)", result.stdout)
    assert resumed and resumed[0][0] == resumed[0][1], result.stdout[-3000:]
    assert weights_sha256(repo) == weights_sha256(whole)
    assert eval_loss(repo) == eval_loss(whole)
    assert checkpoints(repo) == []


def test_lora_under_fsdp_matches_one_process_shards_the_frozen_weights_and_saves_the_adapter(tiny_default_repo,
                                                                                            tmp_path):
    """model.peft with train.distributed: fsdp: LoRA on the tiny default's trained model (as in
    tests/test_lora_e2e.py), 2 FSDP processes against 1 at the same global batch; the frozen base
    weights are sharded too, and models/trained is the merged model with the adapter beside it."""
    import shutil

    import yaml

    repo = copy_run(tiny_default_repo, tmp_path / "repo")
    start = "models/pretrained/code-lm"
    shutil.copytree(tiny_default_repo / "models/trained", repo / start)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"] = {"name_or_path": start, "from_scratch": False,
                       "peft": {"method": "lora", "r": 4, "alpha": 16, "dropout": 0.0}}
    params["lr"] = 1e-2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    set_train(repo, backend="accelerate", mixed_precision="no")
    dvc(repo, "repro", "train")
    one = eval_loss(repo)
    one_adapter = (repo / "models/trained/adapter/adapter_model.safetensors").read_bytes()

    set_train(repo, **FSDP)
    result = dvc(repo, "repro", "train")
    assert RELAUNCH in result.stdout
    two = eval_loss(repo)
    print(f"LoRA eval loss: 1 process x batch 8 = {one!r}; 2 FSDP processes x batch 4 = {two!r}")
    assert two != one and abs(two - one) / one < 1e-3
    held = held_fractions(result.stdout)
    print(f"held (parameters, optimizer state) per process: {held}")
    assert set(held) == {"0", "1"}
    # the frozen base is sharded like the adapters; AdamW holds state for the adapters alone, sharded too
    assert all(0.45 < fraction < 0.55 for fractions in held.values() for fraction in fractions)
    assert checkpoints(repo) == []
    adapter = repo / "models/trained/adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    assert (adapter / "adapter_model.safetensors").read_bytes() != one_adapter  # trained anew, under FSDP

    # the merged model loads as a plain transformers model; the adapter on the start model gives the same logits
    probe = ("import torch; from transformers import AutoModelForCausalLM; from peft import PeftModel; "
             f"base = AutoModelForCausalLM.from_pretrained('{start}'); "
             "tuned = PeftModel.from_pretrained(base, 'models/trained/adapter').eval(); "
             "merged = AutoModelForCausalLM.from_pretrained('models/trained').eval(); "
             "x = torch.arange(1, 17)[None]; "
             "print(float((tuned(x).logits - merged(x).logits).abs().max()))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=repo, env=env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-4
