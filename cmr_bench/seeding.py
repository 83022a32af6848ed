"""One seed per run covers python, numpy and torch (CPU and CUDA)."""

import os
import random

import numpy as np


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    import torch

    from cmr_bench.errors import CmrBenchError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CmrBenchError("--device cuda was asked for but no CUDA device is visible (use --device auto or cpu)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise CmrBenchError(f"unknown device '{device}' (auto, cpu or cuda)")
    return device
