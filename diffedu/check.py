"""Checks for exercises and for the claims a lesson makes.

* ``check_answer(name, got, want)`` compares a learner's answer with the exact answer and
  says in plain words what is wrong (not attempted, wrong shape, NaN, largest error); it
  never raises, and returns True when the answer is right (``dd.check_answer`` in the lessons).
  ``want`` may be a tuple of tensors (a mean and a covariance): each part is compared and named.
* ``check_solution(name, solution, want)`` asserts that the check accepts the solution and
  rejects wrong answers (perturbed, wrong shape, None): the lessons' hidden solution cells use it.
* ``expect(name, value, lo, hi)`` prints a measured number with the band the lesson
  promises, and raises if the number leaves the band - so a lesson whose claim stops
  being true fails its test instead of quietly printing a different number.
"""
import contextlib
import io
import math

import numpy as np
import torch


def _as_array(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    if isinstance(x, (str, bytes, dict, set)):
        raise TypeError(type(x).__name__)
    return np.asarray(x, dtype=np.float64)


def _kind(x) -> str:
    return "None" if x is None else f"a {type(x).__name__}"


def _verdict(got, want, atol, rtol):
    """(ok, sentence) for one tensor-like part; never raises."""
    if got is None:
        return False, "not attempted yet: replace the `None` with your answer."
    try:
        g = _as_array(got)
    except Exception:
        return False, f"expected numbers (a tensor or array), got {_kind(got)}."
    w = _as_array(want)
    if g.dtype == object or not np.issubdtype(g.dtype, np.number):
        return False, f"expected numbers (a tensor or array), got {_kind(got)}."
    if g.shape != w.shape:
        return False, f"wrong shape: got {tuple(g.shape)}, expected {tuple(w.shape)}."
    if not np.isfinite(g).all():
        return False, f"your answer contains NaN or inf ({int((~np.isfinite(g)).sum())} entries)."
    err = np.abs(g - w)
    tol = atol + rtol * np.abs(w)
    if (err <= tol).all():
        return True, f"correct (largest error {err.max() if err.size else 0:.2e})."
    idx = np.unravel_index(np.argmax(err - tol), err.shape) if err.ndim else ()
    where = f" at index {tuple(int(i) for i in idx)}" if idx else ""
    return False, (f"not yet: {int((err > tol).sum())} of {err.size} entries differ; largest error "
                   f"{err.max():.3g}{where} (got {g[idx]:.6g}, expected {w[idx]:.6g}).")


def check_answer(name: str, got, want, atol: float = 1e-6, rtol: float = 1e-5, parts=None) -> bool:
    """Compare ``got`` with the exact ``want``; print one sentence; return True when they agree.

    ``want`` may be a tuple or list of tensors (e.g. a mean and a covariance): the parts are
    compared one by one and the first wrong part is named (``parts=("mean", "covariance")``,
    default "part 1", "part 2", ...). Never raises, whatever ``got`` is.
    """
    try:
        if isinstance(want, (tuple, list)):
            names = list(parts) if parts is not None else [f"part {i + 1}" for i in range(len(want))]
            if got is None:
                msg = "not attempted yet: replace the `None` with your answer."
                ok = False
            elif not isinstance(got, (tuple, list)):
                ok, msg = False, (f"expected {len(want)} parts ({', '.join(names)}) as a tuple, "
                                  f"got {_kind(got)}.")
            elif len(got) != len(want):
                ok, msg = False, (f"expected {len(want)} parts ({', '.join(names)}), "
                                  f"got {len(got)}.")
            else:
                ok, msg = True, ""
                for part, g, w in zip(names, got, want):
                    part_ok, part_msg = _verdict(g, w, atol, rtol)
                    if not part_ok:
                        ok, msg = False, f"the {part} is wrong: {part_msg}"
                        break
                if ok:
                    msg = f"correct (all {len(want)} parts: {', '.join(names)})."
        else:
            ok, msg = _verdict(got, want, atol, rtol)
    except Exception as e:                      # a check must never give the learner a traceback
        ok, msg = False, f"could not compare your answer ({_kind(got)}) with the exact one: {e}."
    print(f"[{name}] {msg}")
    return ok


def _perturbed(x):
    if isinstance(x, bool):
        return not x
    if isinstance(x, int):
        return x + 1
    if isinstance(x, float):
        return x * 1.01 + 0.01
    if isinstance(x, torch.Tensor):
        return x * 1.01 + 0.01 if x.is_floating_point() or x.is_complex() else x + 1
    a = np.asarray(x)
    return a * 1.01 + 0.01 if np.issubdtype(a.dtype, np.floating) else a + 1


def _wrong_shape(x):
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    flat = t.reshape(-1)
    return torch.cat([flat, flat[:1] if flat.numel() else torch.zeros(1, dtype=t.dtype)])


def check_solution(name: str, solution, want, **tol) -> bool:
    """True when ``check_answer`` accepts ``solution`` and rejects wrong answers.

    Wrong answers tried (silently): the solution perturbed (x * 1.01 + 0.01 for floats,
    + 1 for integers), an answer of the wrong shape, and None; for a tuple of parts, each
    part perturbed and reshaped in turn and a tuple missing its last part.
    Raises AssertionError with a plain sentence otherwise.
    """
    if not check_answer(name, solution, want, **tol):
        raise AssertionError(f"The check '{name}' does not accept the solution.")
    wrong = [("None", None)]
    if isinstance(solution, (tuple, list)):
        for i in range(len(solution)):
            for label, f in (("perturbed", _perturbed), ("of the wrong shape", _wrong_shape)):
                parts = list(solution)
                parts[i] = f(parts[i])
                wrong.append((f"part {i + 1} {label}", tuple(parts)))
        wrong.append(("a tuple missing its last part", tuple(solution[:-1])))
    else:
        wrong += [("the solution perturbed", _perturbed(solution)),
                  ("an answer of the wrong shape", _wrong_shape(solution))]
    for label, answer in wrong:
        with contextlib.redirect_stdout(io.StringIO()):
            accepted = check_answer(name, answer, want, **tol)
        if accepted:
            raise AssertionError(f"The check '{name}' accepts a wrong answer ({label}), "
                                 f"so it cannot tell a learner that an answer is wrong.")
    return True


def expect(name: str, value, lo: float | None = None, hi: float | None = None):
    """Print ``name = value`` and check lo <= value <= hi; raise AssertionError otherwise."""
    v = float(value.item() if isinstance(value, torch.Tensor) else value)
    band = f"[{'-inf' if lo is None else f'{lo:.4g}'}, {'inf' if hi is None else f'{hi:.4g}'}]"
    ok = math.isfinite(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
    print(f"{name} = {v:.4g}   (expected in {band}) {'ok' if ok else 'FAILED'}")
    if not ok:
        raise AssertionError(f"{name} = {v:.6g} is outside the expected band {band}")
    return v


