"""One clear error per bad argument: the checks that every module of diffedu shares.

Each check returns the value (as the type the caller computes with) when it is fine, and
otherwise raises ONE ValueError or TypeError whose message starts with the argument's name:

    positive_int("steps", 0)        ValueError: steps must be a positive int, got 0.
    positive_float("step", "0.1")   TypeError: step must be a positive number, got str.
    probability("p_uncond", 1.5)    ValueError: p_uncond must be a probability in [0, 1], got 1.5.

so that a learner who passes a wrong value reads what is wrong, not a stack trace from deep
inside a tensor operation.
"""
import math

import torch


def positive_int(name: str, value) -> int:
    """An int >= 1 (a count: steps, samples, layers). bool is not an int here."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return value


def int_in(name: str, value, lo: int, hi: int) -> int:
    """An int with lo <= value <= hi."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in {lo}..{hi}, got {value!r}.")
    return value


def positive_float(name: str, value, why: str = "") -> float:
    """A finite number > 0 (a step size, a noise level, a bandwidth, a learning rate); ``why`` is added."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}{why}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}{why}.")
    return float(value)


def nonnegative_float(name: str, value, why: str = "") -> float:
    """A finite number >= 0 (a guidance scale, DDIM's eta); ``why`` is added to the message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number >= 0, got {value!r}.")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}{why}.")
    return float(value)


def probability(name: str, value) -> float:
    """A number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")
    return float(value)


def one_of(name: str, value, options: tuple):
    """One of a few named choices, e.g. a sampler or a schedule."""
    if value not in options:
        raise ValueError(f"{name} must be {' or '.join(repr(o) for o in options)}, got {value!r}.")
    return value


def finite_tensor(name: str, x: torch.Tensor, why: str = " (did a sampler diverge?)") -> torch.Tensor:
    """A tensor without NaN or infinite entries (a diverged sampler produces those); ``why`` is added."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values{why}.")
    return x


def network_dtype(name: str, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A tensor in the network's dtype: the networks never convert their input silently."""
    if x.dtype != dtype:
        fix = "x.float()" if dtype == torch.float32 else f"x.to({dtype})"
        if not x.dtype.is_floating_point:
            fix += " (uint8 pixels 0..255 map to [-1, 1] with x.float() / 127.5 - 1)"
        raise TypeError(f"{name} must be {str(dtype).removeprefix('torch.')} (the network's dtype), "
                        f"got {x.dtype}; use {fix}.")
    return x


def image_batch(name: str, x, shape=(1, 28, 28), min_batch: int = 1, value_range=(-1.0, 1.0), dtype=None):
    """A float batch of images (N, *shape) with N >= min_batch and values in value_range.

    The defaults are the course's MNIST convention: (N, 1, 28, 28) with pixels in [-1, 1], as
    ``diffedu.data.mnist`` gives them. value_range=None skips the range (a noisy x_t has none).
    dtype: the network's dtype, which x must have exactly (see ``network_dtype``).
    """
    dims = ", ".join(map(str, shape))
    if torch.is_tensor(x) and dtype is not None:
        network_dtype(name, x, dtype)
    if not torch.is_tensor(x) or not x.dtype.is_floating_point:
        got = x.dtype if torch.is_tensor(x) else type(x).__name__
        raise TypeError(f"{name} must be a float tensor of shape (N, {dims}), got {got}.")
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] < min_batch:
        at_least = f" with N >= {min_batch}" if min_batch > 1 else ""
        raise ValueError(f"{name} must have shape (N, {dims}){at_least}, got {tuple(x.shape)}: "
                         f"the input size does not match.")
    if value_range is not None:
        lo, hi = float(x.min()), float(x.max())
        a, b = value_range
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or infinite values; images must be finite numbers "
                             f"in [{a:g}, {b:g}].")
        if lo < a - 1e-3 or hi > b + 1e-3:
            raise ValueError(f"{name} must have values in [{a:g}, {b:g}] (as diffedu.data.mnist gives them), "
                             f"got values in [{lo:.3g}, {hi:.3g}]; map [0, 1] images with x * 2 - 1.")
    return x


def generator(name: str, value):
    """None (torch's global RNG) or a torch.Generator: seeds go into a Generator, not in its place."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}; "
                        f"make one with torch.Generator().manual_seed(seed).")
    return value
