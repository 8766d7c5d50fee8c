"""Checks for exercises and for the claims a lesson makes.

* ``check_answer(name, got, want)`` compares a learner's answer with the exact answer and
  says in plain words what is wrong (not attempted, wrong shape, NaN, largest error); it
  never raises, and returns True when the answer is right (``dd.check_answer`` in the lessons).
* ``expect(name, value, lo, hi)`` prints a measured number with the band the lesson
  promises, and raises if the number leaves the band - so a lesson whose claim stops
  being true fails its test instead of quietly printing a different number.
"""
import math

import numpy as np
import torch


def _as_array(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def check_answer(name: str, got, want, atol: float = 1e-6, rtol: float = 1e-5) -> bool:
    """Compare ``got`` with the exact ``want``; print a verdict; return True when they agree."""
    if got is None:
        print(f"[{name}] not attempted yet: replace the `return None` with your code.")
        return False
    try:
        g, w = _as_array(got), _as_array(want)
    except (TypeError, ValueError):
        print(f"[{name}] expected numbers (a tensor or array), got {type(got).__name__}.")
        return False
    if g.shape != w.shape:
        print(f"[{name}] wrong shape: got {g.shape}, expected {w.shape}.")
        return False
    if not np.isfinite(g).all():
        print(f"[{name}] your answer contains NaN or inf ({int((~np.isfinite(g)).sum())} entries).")
        return False
    err = np.abs(g - w)
    tol = atol + rtol * np.abs(w)
    if (err <= tol).all():
        print(f"[{name}] correct (largest error {err.max() if err.size else 0:.2e}).")
        return True
    idx = np.unravel_index(np.argmax(err - tol), err.shape) if err.ndim else ()
    where = f" at index {tuple(int(i) for i in idx)}" if idx else ""
    print(f"[{name}] not yet: {int((err > tol).sum())} of {err.size} entries differ; largest error "
          f"{err.max():.3g}{where} (got {g[idx]:.6g}, expected {w[idx]:.6g}).")
    return False


def expect(name: str, value, lo: float | None = None, hi: float | None = None):
    """Print ``name = value`` and check lo <= value <= hi; raise AssertionError otherwise."""
    v = float(value.item() if isinstance(value, torch.Tensor) else value)
    band = f"[{'-inf' if lo is None else f'{lo:.4g}'}, {'inf' if hi is None else f'{hi:.4g}'}]"
    ok = math.isfinite(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
    print(f"{name} = {v:.4g}   (expected in {band}) {'ok' if ok else 'FAILED'}")
    if not ok:
        raise AssertionError(f"{name} = {v:.6g} is outside the expected band {band}")
    return v


