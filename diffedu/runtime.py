"""Where the computation runs, and how to make it repeatable.

* ``get_device()`` picks CUDA, then Apple's MPS, then the CPU. Set the environment
  variable ``DIFFEDU_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) to override.
* ``seed_everything(seed)`` seeds Python, NumPy and PyTorch at once and hands back a
  ``torch.Generator`` for code that wants its own stream of random numbers.
  The same seed gives the same numbers on the CPU.
* ``banner()`` is the one line every lesson prints: versions and device.
"""
import os
import platform
import random

import numpy as np
import torch

_KNOWN = ("cpu", "cuda", "mps")


def get_device(name: str | None = None) -> torch.device:
    """Return the device to compute on: ``name``, else ``$DIFFEDU_DEVICE``, else the best available."""
    name = name if name is not None else os.environ.get("DIFFEDU_DEVICE") or None
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(name, str) or name.split(":")[0] not in _KNOWN:
        raise ValueError(f"unknown device {name!r}: expected one of 'cpu', 'cuda', 'cuda:N' or 'mps'")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but PyTorch sees no CUDA GPU here; use 'cpu'")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but this machine has no Apple GPU; use 'cpu'")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed ``random``, NumPy and PyTorch (all devices); return a CPU generator seeded with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def banner(device: torch.device | None = None) -> str:
    """One line with the versions and the device, to print at the top of a lesson."""
    device = device or get_device()
    return (f"diffedu | python {platform.python_version()} | torch {torch.__version__} | "
            f"device {device} | threads {torch.get_num_threads()}")
