"""Sharded training (train.distributed: fsdp) for the Accelerate loop: PyTorch's FSDP2.

`fully_shard` on each transformer block, then on the root: every process keeps 1/N of the weights,
their gradients and the AdamW state (DTensors sharded on dim 0), and gathers a block's weights only
while it runs. Accelerate's own FSDP is not used: on a CPU-only machine it silently runs DDP
(accelerate 1.15 enables FSDP only for GPU/NPU/XPU). The Accelerator still makes the process group
(gloo on CPU, NCCL on GPU), the data loaders and the gradient accumulation, so the data order is the
ddp path's for the same global batch; only the model is not passed to its prepare().

Checkpoints are torch.distributed.checkpoint (DCP) folders: each process writes its own shard
(__<rank>_0.distcp), rank 0 the .metadata. Only tensors go through DCP: DCP stores anything else as
a pickle it loads with torch.load(weights_only=False), so the optimizer's param groups go to JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hfpipe.checkpoint import SHARDED_DIR
from hfpipe.io import PipelineError

if TYPE_CHECKING:
    import torch

PARAM_GROUPS_JSON = "optimizer_param_groups.json"


def transformer_blocks(model) -> list:
    """The model's repeated blocks: the longest ModuleList whose children all have one class
    (GPT-2: transformer.h, BERT: encoder.layer, DistilBERT: transformer.layer); one line if none."""
    import torch

    best: list = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            if len({type(child) for child in module}) == 1:
                best = list(module)
    if not best:
        raise PipelineError(f"train.distributed = fsdp: found no list of transformer blocks in "
                            f"{type(model).__name__} to shard; use train.distributed: ddp")
    return best


def shard_model(model, device, mixed_precision: str, compile_blocks: bool = False):
    """fully_shard each block, then the root (which holds the embeddings, final norm and head), on
    a 1-D mesh of all processes. bf16: the weights are gathered and computed in bf16, gradients are
    reduced and AdamW steps in fp32 (MixedPrecisionPolicy); fp32 otherwise. compile_blocks
    (train.torch_compile): each block is torch.compiled before it is sharded, as torchtitan does
    (FSDP's gathers between the blocks stay outside the compiled graphs)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    world = dist.get_world_size() if dist.is_initialized() else 1
    if world < 2:
        raise PipelineError("train.distributed = fsdp shards across processes and this run has 1; set "
                            "train.num_processes to 2 or more, or train.distributed: ddp")
    model.to(device)
    mesh = init_device_mesh(torch.device(device).type, (world,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if mixed_precision == "bf16" else MixedPrecisionPolicy())
    for block in transformer_blocks(model):
        if compile_blocks:
            block.compile()  # in place: the module keeps its name, so state dict keys do not change
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def clip_grad_norm(model, max_norm: float) -> torch.Tensor:
    """Clip the sharded gradients by their global norm; returns that norm (a plain tensor)."""
    import torch

    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def reshard(model) -> None:
    """Back to shards only. FSDP2 leaves the root's weights whole after a forward, for the
    backward that follows; after an evaluation none follows, so they would stay whole."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _local(tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def shard_sizes(model, optimizer) -> dict[str, int]:
    """Elements this process holds of the parameters and the optimizer state, and of the whole
    model's (what the memory test and the log line compare)."""
    import torch

    reshard(model)
    sizes = {"params": 0, "params_full": 0, "optimizer": 0, "optimizer_full": 0}
    for p in model.parameters():
        sizes["params"] += _local(p).numel()
        sizes["params_full"] += p.numel()
    for values in optimizer.state.values():
        for value in values.values():
            if isinstance(value, torch.Tensor):
                sizes["optimizer"] += _local(value).numel()
                sizes["optimizer_full"] += value.numel()
    return sizes


def save_sharded(model, optimizer, folder: Path, main: bool) -> None:
    """Every process writes its shard of the weights and AdamW state into folder/sharded (a
    collective: all processes call it); the main process the param groups as JSON."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, typed_optimizer_state = get_state_dict(model, optimizer)
    optimizer_state = cast(dict[str, Any], typed_optimizer_state)  # (typed as a union of every state-dict shape)
    for name, values in optimizer_state["state"].items():
        for key, value in values.items():  # AdamW's step is a tensor too: nothing here would be pickled
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {name}.{key} is a {type(value).__name__}, not a tensor")
    dcp.save({"model": model_state, "optimizer": optimizer_state["state"]}, checkpoint_id=str(folder / SHARDED_DIR))
    if main:
        (folder / PARAM_GROUPS_JSON).write_text(json.dumps(optimizer_state["param_groups"]))


def load_sharded(model, optimizer, folder: Path) -> None:
    """Put back what save_sharded wrote (a collective).

    DCP's FileSystemReader unpickles .metadata (pickle.load): what makes that safe is that the
    checkpoint was checked file by file against its marker's sha256 before any process gets here
    (hfpipe.checkpoint.find_resume_checkpoint, in the launcher or rank 0, which the other processes
    wait for at the process group's start), so it is a file we wrote. Only tensors were saved, so no
    other item goes through DCP's torch.load(weights_only=False).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_state, "optimizer": cast(dict[str, Any], optimizer_state)["state"]}
    dcp.load(state, checkpoint_id=str(folder / SHARDED_DIR))
    param_groups = json.loads((folder / PARAM_GROUPS_JSON).read_text())
    for group in param_groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict={"state": state["optimizer"], "param_groups": param_groups})


def full_state_dict(model) -> dict:
    """The whole model's weights on the main process's CPU (a collective; the others get {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def plain_model(sharded_model, state_dict: dict):
    """The model's own class (not FSDP's subclass) with `state_dict`'s weights: what
    save_pretrained writes and transformers.pipeline loads. Built by from_pretrained from the
    config and the weights, which ties GPT-2's embedding and output weights again. A LoRA model
    (model.peft) comes back as a PeftModel with the same adapters (and head), for
    hfpipe.modeling.save_trained_model to save the adapter and merge it."""
    from torch.distributed.fsdp import FSDPModule

    from hfpipe.modeling import is_peft_model

    if is_peft_model(sharded_model):
        from peft import get_peft_model

        base = sharded_model.get_base_model()  # not sharded itself (its blocks and the PeftModel are)
        # a fresh base of the same class and config, wrapped alike: the state dict's keys are the sharded model's
        fresh = get_peft_model(type(base)._from_config(base.config), sharded_model.peft_config["default"])
        fresh.load_state_dict(state_dict)
        return fresh
    cls: Any = next(c for c in type(sharded_model).__bases__ if c is not FSDPModule)
    return cls.from_pretrained(None, config=sharded_model.config, state_dict=state_dict)
