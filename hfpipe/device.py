"""The one accelerator probe: every decision that depends on a GPU (Trainer's use_cpu, the
Accelerator's cpu flag, fp16's validity, the slow-bf16 warning) asks this."""

from __future__ import annotations


def has_accelerator() -> bool:
    """A CUDA, XPU or MPS device is available (torch is imported only when asked)."""
    import torch

    return bool(torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
                or torch.backends.mps.is_available())
