"""Progressive distillation (diffedu.distill) and the v-parametrisation (diffedu.nets)."""
import pytest
import torch

import diffedu as dd
from diffedu import distill, metrics, nets, samplers, toy
from diffedu.forward import eps_from_x0

SCHED = dd.NoiseSchedule.linear(1000)
MIX = toy.lesson_mixture()


def exact_eps(x_t, t):
    return MIX.eps_star(x_t, SCHED.alpha_bar[t[0]].item()).to(x_t.dtype)


def test_the_student_grid_is_every_other_time_of_the_teacher_grid():
    for n in (64, 32, 16, 8, 4, 2):
        teacher, student = distill.time_grid(1000, n), distill.time_grid(1000, n // 2)
        assert teacher[::2] == student and teacher[0] == 1000 and teacher[-1] == 0
        assert all(a > b for a, b in zip(teacher, teacher[1:])) and all(isinstance(t, int) for t in teacher)
    assert distill.time_grid(1000, 50) == samplers.ddim_timesteps(1000, 50) + [0]
    assert distill.stages(64, 1) == [64, 32, 16, 8, 4, 2, 1] and distill.stages(8, 2) == [8, 4, 2]


@pytest.mark.parametrize("k", [0, 2, 6])
def test_one_student_step_to_the_target_lands_where_two_teacher_steps_land(k):
    """Eq. (3): the x0_hat it returns, put into one DDIM step t -> t'', gives the teacher's x_t''."""
    grid = distill.time_grid(1000, 8)
    x_t = MIX.noised(SCHED.alpha_bar[grid[k]].item()).sample(50, generator=torch.Generator().manual_seed(k)).double()
    i = torch.full((50,), k)
    x0_target = distill.target(exact_eps, x_t, i, grid, SCHED)
    x1, _ = samplers.ddim_step(x_t, grid[k], exact_eps(x_t, samplers.timestep_batch(grid[k], x_t)), SCHED,
                               t_prev=grid[k + 1])
    x2, _ = samplers.ddim_step(x1, grid[k + 1], exact_eps(x1, samplers.timestep_batch(grid[k + 1], x1)), SCHED,
                               t_prev=grid[k + 2])
    eps = eps_from_x0(x_t, grid[k], x0_target, SCHED)
    one, _ = samplers.ddim_step(x_t, grid[k], eps, SCHED, t_prev=grid[k + 2])
    assert torch.allclose(one, x2, atol=1e-9, rtol=0)
    if grid[k + 2] == 0:
        assert torch.allclose(x0_target, x2, atol=1e-12)


def test_the_last_target_is_the_teachers_sample():
    grid = distill.time_grid(1000, 2)
    x_T = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = distill.sample(exact_eps, SCHED, x_T, 2)
    got = distill.target(exact_eps, x_T, torch.zeros(20, dtype=torch.long), grid, SCHED)
    assert torch.allclose(got, want, atol=1e-12)


def test_v_prediction_converts_to_eps_and_x0_consistently():
    net = nets.ScoreMLP(hidden=16, depth=1, predict="v")
    x_t = torch.randn(30, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.randint(1, 1001, (30,), generator=torch.Generator().manual_seed(2))
    ab = SCHED.alpha_bar[t][:, None]
    v = net(x_t, t)
    x0 = distill.x0_hat(net, x_t, t, SCHED)
    eps = nets.eps_model(net, SCHED)(x_t, t)
    assert torch.allclose(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, x_t, atol=1e-6)     # x_t = alpha x0 + sigma eps
    assert torch.allclose(ab.sqrt() * eps - (1 - ab).sqrt() * x0, v, atol=1e-6)       # v = alpha eps - sigma x0
    assert torch.allclose(distill.as_eps_model(net, SCHED)(x_t, t), eps, atol=1e-6)
    assert nets.ddpm_loss(net, MIX.sample(64, generator=torch.Generator().manual_seed(3)).float(), SCHED,
                          generator=torch.Generator().manual_seed(4)).item() > 0


def test_distillation_makes_a_one_step_sampler_far_better_than_one_ddim_step():
    g = torch.Generator().manual_seed(0)
    students = distill.progressive(nets.ScoreMLP(hidden=32, depth=2, predict="v"), exact_eps, MIX.sample, SCHED,
                                   start=4, end=1, steps=150, first_steps=400, batch_size=256, lr=3e-3,
                                   generator=g, progress=False)
    assert sorted(students) == [1, 2]
    ref = MIX.sample(1000, generator=torch.Generator().manual_seed(5))
    x_T = torch.randn(1000, 2, generator=torch.Generator().manual_seed(6))
    one_student = distill.sample(distill.as_eps_model(students[1], SCHED), SCHED, x_T, 1)
    one_ddim = distill.sample(exact_eps, SCHED, x_T, 1)
    assert metrics.mmd(one_student, ref, bandwidth=0.5) < 0.1 * metrics.mmd(one_ddim, ref, bandwidth=0.5)


@pytest.mark.parametrize("call, msg", [
    (lambda: distill.student_steps(1), "teacher_steps must be an even int >= 2"),
    (lambda: distill.student_steps(3), "cannot have as many steps as its teacher"),
    (lambda: distill.student_steps(2.0), "teacher_steps must be an even int"),
    (lambda: distill.stages(48, 1), "power of two"),
    (lambda: distill.stages(1, 2), "power of two"),
    (lambda: distill.time_grid(1000, 0), "steps"),
    (lambda: distill.x0_hat(nets.ScoreMLP(hidden=8, depth=1), torch.zeros(2, 2), torch.tensor([5, 5]), SCHED),
     "must predict v or x0"),
    (lambda: distill.train_student(nets.ScoreMLP(hidden=8, depth=1, predict="v"), exact_eps, MIX.sample, SCHED,
                                   teacher_steps=1, steps=1), "even int >= 2"),
    (lambda: distill.sample(exact_eps, SCHED, torch.full((2, 2), float("nan")), 2), "NaN"),
])
def test_bad_input_gives_one_clear_error(call, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        call()
