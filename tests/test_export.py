"""hfpipe.export: a self-contained safetensors folder with a model card that pipeline() loads."""

from __future__ import annotations

import json

import pytest
import torch

from hfpipe.export import ExportInputs
from hfpipe.io import PipelineError
from hfpipe.params import parse_params, read_params
from hfpipe.tasks.causal_lm import export as export_causal_lm
from hfpipe.tasks.causal_lm import model_card

CONTEXT = 32
PARAMS = {"model": {"n_layer": 1, "n_head": 2, "n_embd": 16}, "tokenize": {"context_length": CONTEXT}}
DATA_STATS = {"source": "installed-packages", "kept": 20, "seen": 161, "bytes": 4321,
              "split_documents": {"train": 15, "validation": 5},
              "documents_by_source": {"pandas==3.1.1": 12, "seaborn==0.13.2": 8}}
CHUNK_STATS = {"method": "packing", "context_length": CONTEXT,
               "train": {"documents": 15, "blocks": 40, "tokens_kept_pct": 99.5}}
METRICS = {"loss": 5.873034, "perplexity": 355.3254, "accuracy": 0.010753, "keytoken_accuracy": 0.0,
           "tokens": 186, "keytoken_positions": 8}


@pytest.fixture(scope="module")
def exported(tiny_model, tiny_tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    trained = root / "trained"
    tiny_model.save_pretrained(trained)
    tiny_tokenizer.save_pretrained(trained)
    out = root / "export"
    out.mkdir()
    export_causal_lm(parse_params(PARAMS), trained, out, ExportInputs(DATA_STATS, CHUNK_STATS, METRICS))
    return out


def test_export_writes_safetensors_tokenizer_and_card(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md"} <= names
    assert not {"pytorch_model.bin", "training_args.bin"} & names
    config = json.loads((exported / "config.json").read_text())
    assert (config["vocab_size"], config["n_positions"], config["pad_token_id"]) == (350, CONTEXT, 1)


def test_exported_weights_equal_the_trained_model(exported, tiny_model):
    from safetensors.torch import load_file

    saved = load_file(str(exported / "model.safetensors"))
    original = tiny_model.state_dict()
    assert saved  # not empty
    for name, tensor in saved.items():
        assert torch.equal(tensor, original[name]), name


def test_exported_tokenizer_is_the_same_and_bounded_by_positions(exported, tiny_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    assert tok.model_max_length == CONTEXT
    assert (tok.eos_token_id, tok.pad_token_id) == (tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id)
    text = "import pandas as pd\nplt.plot(x, y)"
    assert tok(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]


def test_model_card_contains_metrics_data_and_params(exported):
    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    assert json.dumps(METRICS, indent=2) in card
    assert '"perplexity": 355.3254' in card
    kept = {k: v for k, v in DATA_STATS.items() if k != "documents_by_source"}
    assert json.dumps(kept, indent=2) in card
    assert json.dumps(CHUNK_STATS, indent=2) in card
    assert "- pandas==3.1.1: 12 documents\n- seaborn==0.13.2: 8 documents" in card
    assert json.dumps(read_params(parse_params(PARAMS)), indent=2) in card
    assert "GPT-2 trained from scratch" in card
    # the corpus is the installed packages: no Hub source, so no such section (the counts are above)
    assert "Hub sources" not in card
    assert "(`packing`, context 32)" in card


def test_model_card_parameter_count_and_pretrained_name():
    params = parse_params({"model": {"name_or_path": "gpt2", "from_scratch": False}})
    card = model_card(params, ExportInputs({"kept": 1}, {}, {"loss": 1.0}), 1_234_567)
    assert "A 1.23M-parameter gpt2" in card
    assert "Documents by source package:" not in card


def test_a_base_model_name_cannot_add_keys_to_the_cards_front_matter():
    import yaml

    from hfpipe.export import ModelCard, render_model_card

    params = parse_params({"task": "classification", "model": {"name_or_path": "gpt2", "from_scratch": False, "peft": {"method": "lora"}},
                           "tokenizer": {"name_or_path": "gpt2"}, "dataset": {"path": "nyu-mll/glue", "source": "load_dataset",
                                                                                "label_column": "label"}})
    evil = params.model_copy(update={"model": params.model.model_copy(update={"name_or_path": "gpt2\nlicense: evil"})})
    card = render_model_card(evil, ModelCard("text-classification", "s", "u", "d", {}, "m", "l"))
    front = yaml.safe_load(card.split("---\n")[1])
    assert set(front) == {"library_name", "pipeline_tag", "tags", "base_model"}
    assert front["base_model"] == "gpt2\nlicense: evil"


def test_pipeline_loads_the_export_and_generates_like_the_model(exported, tiny_model, tiny_tokenizer):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(exported))
    [result] = pipe("import pandas as", max_new_tokens=5, do_sample=False, return_tensors=True)
    prompt_ids = tiny_tokenizer("import pandas as")["input_ids"]
    with torch.no_grad():
        expected = tiny_model.generate(input_ids=torch.tensor([prompt_ids]),
                                       attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                                       max_new_tokens=5, do_sample=False, pad_token_id=1)
    assert list(result["generated_token_ids"]) == expected[0].tolist()
    [text] = pipe("import pandas as", max_new_tokens=5, do_sample=False)
    assert text["generated_text"].startswith("import pandas as")
    assert len(text["generated_text"]) > len("import pandas as")


def test_export_without_trained_model_is_a_pipeline_error(tmp_path):
    with pytest.raises(PipelineError, match=r"no trained model \(config.json missing\); run the train stage first"):
        export_causal_lm(parse_params(PARAMS), tmp_path / "missing", tmp_path / "out", ExportInputs({}, {}, {}))
    assert not (tmp_path / "out").exists()


def test_model_card_lists_the_keys_the_run_reads_and_its_hub_sources():
    """A pretrained start: the sizes of the model and tokenizer it loads as they are, and other
    tasks' keys, are not in the params block; the Hub sources are the revisions asked for and read."""
    params = parse_params({"model": {"name_or_path": "gpt2", "from_scratch": False}, "tokenizer": {"name_or_path": "gpt2"}})
    sources = {"model": {"name_or_path": "gpt2", "revision": "main", "commit": "0" * 40}}
    card = model_card(params, ExportInputs({"kept": 1}, {}, {"loss": 1.0}), 1_234_567, sources)
    listed = json.loads(card.split("## Params\n\n```json\n")[1].split("```")[0])
    assert listed == read_params(params)
    assert "n_layer" not in listed["model"] and "vocab_size" not in listed["tokenizer"]
    assert "label_column" not in listed["dataset"] and listed["model"]["name_or_path"] == "gpt2"
    hub = card.split("### Hub sources")[1].split("```json\n")[1].split("```")[0]
    assert json.loads(hub) == sources
