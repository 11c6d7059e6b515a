"""Device and dtype choice from the names users type (`auto`, `cpu`, `cuda:1`, `bf16`, ...)."""

from __future__ import annotations

import torch

from midas_cli.errors import MidasError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` → CUDA when there is one, else the CPU; an unavailable or unknown name → MidasError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MidasError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise MidasError(f"--device {name}: expected auto, cpu or cuda")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` → bf16 on a GPU, fp32 on a CPU (CPU bf16 matmuls are slower than fp32)."""
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in table:
        raise MidasError(f"--dtype {name}: expected auto, float32 or bfloat16")
    return table[name]
