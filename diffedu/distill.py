r"""Progressive distillation (Salimans & Ho 2022): halve the number of sampling steps, again and again.

A teacher samples with N deterministic DDIM steps on the grid T = t_0 > t_1 > ... > t_N = 0
(``time_grid``). Its student gets N / 2 steps, on every other time of that grid, and is trained so
that ONE of its steps lands where TWO of the teacher's land. Then the student becomes the teacher,
and the number of steps halves again: 64 -> 32 -> ... -> 1.

With alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t), a DDIM step (eta = 0, the
samplers module's eq. 2) from t to s with the guess x0_hat reads

    x_s = alpha_s x0_hat + sigma_s (x_t - alpha_t x0_hat) / sigma_t                          (1)

For a training point x_t = alpha_t x_0 + sigma_t eps at a student time t = t_i (i even), with
t' = t_{i+1} and t'' = t_{i+2} the next two times of the teacher's grid:

    x_t'  = DDIM step of the teacher from x_t  (t -> t')                                     (2)
    x_t'' = DDIM step of the teacher from x_t' (t' -> t'')

Solving (1) with s = t'' for the x0_hat that lands exactly on x_t'' gives the student's target

    x0_target = (x_t'' - (sigma_t'' / sigma_t) x_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)   (3)

At the last step t'' = 0 (sigma_0 = 0, alpha_0 = 1) this is the teacher's output itself. The
student's x0_hat is trained with the x0 error weighted by the truncated signal-to-noise ratio
(Salimans & Ho, section 4):

    L = E_{x_0, eps, t}  max(alpha_t^2 / sigma_t^2, 1) || x0_hat_student(x_t, t) - x0_target ||^2   (4)

with t drawn uniformly from the student's times (one t per batch: the teacher then needs two
calls per training step, whatever the batch). The student predicts v = alpha_t eps - sigma_t x0
(nets.ScoreMLP(predict="v"), the parametrisation Salimans & Ho introduced for this), so that

    x0_hat = alpha_t x_t - sigma_t v_theta(x_t, t)                                           (5)

Why not eps: the one-step student starts from pure noise at t = T, where x0 = (x_t - sigma_t eps)
/ alpha_t divides any eps error by alpha_T = 0.006. An x0-network (predict="x0") avoids that but
must learn the near-identity x0 ~ x_t at small t; (5) has both ends built in.
"""
import copy

import torch

from . import _validate
from .forward import eps_from_x0, q_sample
from .nets import train_loop
from .samplers import ddim_step, timestep_batch
from .schedules import NoiseSchedule


def time_grid(T: int, steps: int) -> list[int]:
    """t_i = round(T (steps - i) / steps), i = 0..steps: T, ..., 0 (integers, halves rounded up).

    Exact integer arithmetic, so the grid of steps / 2 is exactly every other time of the grid of
    steps (the student's times are its teacher's).
    """
    _validate.int_in("steps", steps, 1, T)
    return [(2 * T * (steps - i) + steps) // (2 * steps) for i in range(steps + 1)]


def student_steps(teacher_steps: int) -> int:
    """N / 2: a student takes half its teacher's steps, so the teacher needs an even number >= 2."""
    if isinstance(teacher_steps, bool) or not isinstance(teacher_steps, int) or teacher_steps < 2 \
            or teacher_steps % 2:
        raise ValueError(f"a student takes half of its teacher's steps, so teacher_steps must be an even int "
                         f">= 2, got {teacher_steps!r}; a student cannot have as many steps as its teacher, "
                         f"or more.")
    return teacher_steps // 2


def stages(start: int = 64, end: int = 1) -> list[int]:
    """The step counts of progressive distillation: start, start / 2, ..., end (start = end * 2^k)."""
    _validate.positive_int("start", start)
    _validate.positive_int("end", end)
    if start < end or start % end or (start // end) & (start // end - 1):
        raise ValueError(f"start must be end times a power of two (64 -> 32 -> ... -> 1), got start={start}, "
                         f"end={end}.")
    out = [start]
    while out[-1] > end:
        out.append(out[-1] // 2)
    return out


def _alpha_sigma(schedule: NoiseSchedule, t: torch.Tensor, x: torch.Tensor):
    ab = schedule.at(schedule.alpha_bar, t, x)
    return ab.sqrt(), (1 - ab).sqrt()


@torch.no_grad()
def sample(eps_model, schedule: NoiseSchedule, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """Deterministic DDIM on time_grid(T, steps), from x_T; `steps` network calls.

    The loop of lesson 4: eps = eps_model(x_t, t), then one step.
    """
    grid = time_grid(schedule.T, steps)
    x = _validate.finite_tensor("x_T", x_T, "").clone()
    for t, t_prev in zip(grid[:-1], grid[1:]):
        eps = eps_model(x, timestep_batch(t, x))
        x, _ = ddim_step(x, t, eps, schedule, t_prev=t_prev)
    return x


@torch.no_grad()
def target(teacher_eps, x_t: torch.Tensor, i: torch.Tensor, grid: list[int], schedule: NoiseSchedule):
    """x0_target of eq. (3) for points x_t at the times grid[i] (i even: the student's times).

    Two teacher DDIM steps (2), grid[i] -> grid[i + 1] -> grid[i + 2], then (3). One teacher call per
    step for the whole batch at each distinct time (the times are few).
    """
    g = torch.tensor(grid)
    t, t1, t2 = g[i], g[i + 1], g[i + 2]
    x1, x2 = torch.empty_like(x_t), torch.empty_like(x_t)
    for k in torch.unique(i).tolist():
        rows = i == k
        x1[rows], _ = ddim_step(x_t[rows], grid[k], teacher_eps(x_t[rows], t[rows]), schedule, t_prev=grid[k + 1])
        x2[rows], _ = ddim_step(x1[rows], grid[k + 1], teacher_eps(x1[rows], t1[rows]), schedule,
                                t_prev=grid[k + 2])
    a, s = _alpha_sigma(schedule, t, x_t)
    a2, s2 = _alpha_sigma(schedule, t2, x_t)
    ratio = s2 / s
    return ((x2 - ratio * x_t) / (a2 - ratio * a)).to(x_t.dtype)


def x0_hat(student, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """The student's guess of x0: eq. (5) for a v-network, its output for an x0-network."""
    if getattr(student, "predict", None) not in ("v", "x0"):
        raise ValueError(f"the student must predict v or x0 (nets.ScoreMLP(predict='v')), got "
                         f"{getattr(student, 'predict', None)!r}: an eps-student divides its error by alpha_T = 0.006.")
    if student.predict == "x0":
        return student(x_t, t)
    a, s = _alpha_sigma(schedule, t, x_t)
    return (a * x_t - s * student(x_t, t)).to(x_t.dtype)


def loss(student, teacher_eps, x0: torch.Tensor, schedule: NoiseSchedule, teacher_steps: int, generator=None):
    """Eq. (4) on a batch of data x0: one student time for the batch, x_t, the teacher's target (3)."""
    _validate.generator("generator", generator)
    grid = time_grid(schedule.T, teacher_steps)
    n_student = student_steps(teacher_steps)
    i = 2 * torch.randint(n_student, (1,), generator=generator).expand(x0.shape[0])  # an even index: a student time
    t = torch.tensor(grid)[i]
    x_t, _ = q_sample(x0, t, schedule, generator=generator)
    x0_target = target(teacher_eps, x_t, i, grid, schedule)
    a, s = _alpha_sigma(schedule, t, x0)
    w = torch.clamp(a**2 / s**2, min=1.0)                                   # truncated SNR
    return (w * (x0_hat(student, x_t, t, schedule) - x0_target).pow(2)).sum(1).mean()


def as_eps_model(student, schedule: NoiseSchedule):
    """eps_model(x_t, t) of a student, for the samplers: eps = (x_t - alpha_t x0_hat) / sigma_t."""
    def eps(x_t, t):
        return eps_from_x0(x_t, t, x0_hat(student, x_t, t, schedule), schedule)
    return eps


def train_student(student, teacher_eps, sample_fn, schedule: NoiseSchedule, teacher_steps: int, steps=1000,
                  batch_size=512, lr=1e-3, generator=None, progress=True) -> list:
    """One halving: train `student` (in place) on eq. (4) against the N-step teacher; returns the losses."""
    student_steps(teacher_steps)
    return train_loop(student, lambda x0: loss(student, teacher_eps, x0, schedule, teacher_steps, generator),
                      sample_fn, steps, batch_size, lr, generator, progress,
                      f"distil {teacher_steps} -> {teacher_steps // 2}")


def progressive(student, teacher_eps, sample_fn, schedule: NoiseSchedule, start=64, end=1, steps=1000,
                first_steps=None, batch_size=512, lr=1e-3, generator=None, progress=True) -> dict:
    """start -> start / 2 -> ... -> end: {student steps: a trained copy of the student}.

    The first teacher is teacher_eps with `start` steps; each student starts from its teacher's
    weights (the first from `student`'s) and then teaches the next. `steps` training steps per
    halving, `first_steps` (default: steps) for the first, whose student may start from scratch.
    """
    students, teacher = {}, teacher_eps
    for k, n in enumerate(stages(start, end)[:-1]):
        student = copy.deepcopy(student)
        n_steps = (first_steps or steps) if k == 0 else steps
        train_student(student, teacher, sample_fn, schedule, n, n_steps, batch_size, lr, generator, progress)
        student.requires_grad_(False)
        students[n // 2] = student
        teacher = as_eps_model(student, schedule)
        student = copy.deepcopy(student).requires_grad_(True)
    return students
