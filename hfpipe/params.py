"""params.yaml -> one typed, validated `Params` object.

Every stage calls `load_params()` first, before any data or model is loaded, so a wrong value
stops the stage in a fraction of a second with one line that names the key, the bad value and
what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hfpipe.io import PipelineError

PARAMS_FILE = "params.yaml"

Task = Literal["causal-lm", "classification", "gpt2-classifier"]


class _Section(BaseModel):
    # Unknown keys are refused: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetParams(_Section):
    # installed-packages: the .py files of the packages installed in this environment (offline,
    # pinned by requirements.txt). load_dataset: `path`/`name` as datasets.load_dataset takes them
    # (a Hub id, a local folder whose files are named by split, or a local file).
    source: Literal["installed-packages", "load_dataset"] = "installed-packages"
    path: str | None = None
    name: str | None = None
    data_files: dict[str, str] | None = None
    streaming: bool = True  # Hub datasets: filter on the fly instead of downloading everything
    text_column: str = "content"
    # Classification: one or two text columns, a label column and optional label names.
    text_pair_column: str | None = None
    label_column: str | None = None
    label_names: list[str] | None = None
    delimiter: str | None = None  # csv/tsv; None: guessed from the file extension
    filter_keywords: list[str] = Field(default_factory=lambda: ["pandas", "sklearn", "matplotlib", "seaborn"],
                                       min_length=1)
    validation_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    # Seeds the train/validation hash split and the document sample: kept apart from the top-level
    # training seed so that `-S seed=...` compares models on the same validation data.
    seed: int = 0
    max_documents: int | None = Field(None, gt=0)
    max_bytes: int | None = Field(None, gt=0)
    max_train_samples: int | None = Field(None, gt=0)
    max_eval_samples: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _path_needed(self) -> "DatasetParams":
        if self.source == "load_dataset" and not self.path:
            raise ValueError("dataset.path is required when dataset.source is load_dataset (a Hub id or a local path)")
        return self


class TokenizerParams(_Section):
    name_or_path: str | None = None  # None: train a byte-level BPE tokenizer on the train split
    vocab_size: int = Field(8192, ge=300, le=1_000_000)
    min_frequency: int = Field(2, ge=1)


class TokenizeParams(_Section):
    context_length: int = Field(128, ge=8, le=1_000_000)
    # packing: concatenate documents with EOS across the split, cut into blocks (drops at most one
    # partial block per split). overflow: seed 04's return_overflowing_tokens, drops every short tail.
    method: Literal["packing", "overflow"] = "packing"
    batch_size: int = Field(1000, ge=1)
    max_length: int = Field(128, ge=8)  # classification: truncation length


class ModelParams(_Section):
    # from_scratch: build a fresh model from a config (name_or_path's config if given, else GPT-2
    # with the size params below). Otherwise from_pretrained(name_or_path).
    name_or_path: str | None = None
    from_scratch: bool = True
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(256, ge=8)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> "ModelParams":
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not self.from_scratch and not self.name_or_path:
            raise ValueError("model.name_or_path is required when model.from_scratch is false")
        return self


class TrainParams(_Section):
    backend: Literal["trainer", "accelerate"] = "trainer"
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)  # -1: run `epochs`
    # (0 is refused below: the Trainer would silently read it as -1)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(32, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    weight_decay: float = Field(0.1, ge=0.0)
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = Field(1.0, gt=0)
    eval_steps: int = Field(50, ge=1)
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1)
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None: torch's default


    @model_validator(mode="after")
    def _check_steps(self) -> "TrainParams":
        if self.max_steps == 0:
            raise ValueError("train.max_steps must be -1 (train for train.epochs) or a positive number of steps")
        return self


class EvaluateParams(_Section):
    batch_size: int = Field(32, ge=1)
    max_blocks: int | None = Field(None, gt=0)  # causal LM: validation blocks scored (None: all)
    keytokens: list[str] = Field(default_factory=lambda: ["plt", "pd", "sk", "fit", "predict"])
    max_new_tokens: int = Field(24, ge=1)


class Params(_Section):
    task: Task = "causal-lm"
    seed: int = 42
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    dataset: DatasetParams = Field(default_factory=DatasetParams)
    tokenizer: TokenizerParams = Field(default_factory=TokenizerParams)
    tokenize: TokenizeParams = Field(default_factory=TokenizeParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def format_validation_error(err: ValidationError, source: str = PARAMS_FILE) -> str:
    """The first problem as one line: file, dotted key, bad value, what is allowed."""
    e = err.errors()[0]
    loc = tuple(p for p in e["loc"])
    key = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc))
        return f"{source}: unknown key '{key}'; allowed keys here: {allowed}"
    msg = e["msg"].removeprefix("Value error, ")
    if not key:  # a model-level check: its message names the keys itself
        return f"{source}: {msg}"
    return f"{source}: {key} = {e.get('input')!r}: {msg}"


def parse_params(raw: dict, source: str = PARAMS_FILE) -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise PipelineError(format_validation_error(err, source)) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run from the repository root or copy a recipe: cp recipes/code-lm.yaml params.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is not None and not isinstance(raw, dict):
        raise PipelineError(f"{path}: must be a mapping of keys to values, got {type(raw).__name__}")
    return parse_params(raw, str(path))
