"""Where the computation runs, and how to make it repeatable.

* ``get_device()`` picks CUDA, then Apple's MPS, then the CPU. Set the environment
  variable ``DIFFEDU_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) to override.
* ``seed_everything(seed)`` seeds Python, NumPy and PyTorch at once and hands back a
  ``torch.Generator`` for code that wants its own stream of random numbers.
  The same seed gives the same numbers on the CPU.
* ``banner()`` is the one line every lesson prints: versions, device and thread count.
* ``native_bf16(device)`` says whether bfloat16 matrix products are fast on this hardware
  (a CUDA GPU with bf16, or a CPU with AMX / AVX512-BF16), ``hardware()`` names the machine.

Repeatable means: the same seed, the same number of threads and the same torch build give
bit-identical numbers on the CPU. A different thread count changes the order of floating-point
sums (U-Net outputs then differ by about 1e-5), and so does another torch build or CPU kernel.
"""
import os
import platform
import random
from pathlib import Path

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


def native_bf16(device: torch.device) -> bool:
    """True where bf16 autocast speeds training up: CUDA with bf16, or a CPU with AMX / AVX512-BF16.

    On a CPU without them (e.g. AVX2 only) PyTorch emulates bf16 and a U-Net step was measured
    about 10x slower than in fp32, so the trainer decides from the hardware, never from a flag.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def hardware() -> str:
    """'CPU: <model> (N cores, AVX2), T torch threads' or 'GPU: <name>', for model cards and tables."""
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    name = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        models = [l.split(":", 1)[1].strip() for l in info.read_text().splitlines() if l.startswith("model name")]
        name = models[0] if models else name
    return (f"CPU: {name} ({os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}), "
            f"{torch.get_num_threads()} torch threads")
