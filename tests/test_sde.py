"""The VP-SDE view: continuous schedule, reverse SDE and probability-flow ODE with exact scores."""
import math

import pytest
import torch

import diffedu as dd
from diffedu import metrics, sde, toy


pytestmark = pytest.mark.usefixtures("one_thread")


def _gaussian_eps(m, s2, sched):
    """Exact eps* for data N(m, s2 I): p_t = N(sqrt(ab) m, (ab s2 + 1 - ab) I)."""
    m = torch.as_tensor(m, dtype=torch.float64)

    def eps_model(x_t, t):
        ab = sched.alpha_bar[t][:, None].to(x_t.dtype)
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * m.to(x_t.dtype)) / (ab * s2 + 1 - ab)
    return eps_model


def test_continuous_schedule_matches_the_discrete_one():
    s = dd.NoiseSchedule.linear(1000)
    t = torch.tensor([1, 10, 500, 1000])
    assert torch.allclose(sde.alpha_bar_continuous(s, t.double() / 1000), s.alpha_bar[t], rtol=1e-12)
    # beta(s) = -T log(1 - beta_t): T beta_t to first order (0.1 .. 20 for the DDPM schedule)
    assert torch.allclose(sde.beta_continuous(s, t.double() / 1000), 1000 * s.betas[t], rtol=0.011)
    # alpha_bar(s) = exp(-int_0^s beta(u) du) holds exactly at the grid points s = t / T
    u = torch.linspace(0, 1, 1001, dtype=torch.float64)
    mid = (u[1:] + u[:-1]) / 2
    integral = torch.cumsum(sde.beta_continuous(s, mid) / 1000, 0)
    assert torch.allclose(sde.alpha_bar_continuous(s, u[1:]), torch.exp(-integral), rtol=1e-9)


def test_time_grid():
    g = sde.time_grid(1000, 7)
    assert g[0] == 1000 and g[-1] == 1 and len(g) == 8 and (g[1:] < g[:-1]).all()
    assert sde.time_grid(10, 9).tolist() == list(range(10, 0, -1))


def test_score_and_eps_are_the_same_up_to_scale():
    mix, s = toy.lesson_mixture(), dd.NoiseSchedule.linear(1000)
    x, t = torch.randn(20, 2, dtype=torch.float64), 300
    ab = s.alpha_bar[t].item()
    eps = mix.eps_star(x, ab)
    assert torch.allclose(sde.score_from_eps(eps, t, s), mix.noised(ab).score(x), atol=1e-10)
    score_fn = lambda x_t, tt: mix.noised(s.alpha_bar[tt[0]].item()).score(x_t)
    eps_model = sde.eps_model_from_score(score_fn, s)
    assert torch.allclose(eps_model(x, torch.full((20,), t)), eps, atol=1e-10)


def _exact_transport(s, m, s2, x_T):
    ab_T = s.alpha_bar[-1].item()
    return m.double() + math.sqrt(s2 / (ab_T * s2 + 1 - ab_T)) * (x_T - math.sqrt(ab_T) * m.double())


@pytest.mark.parametrize("method,steps,tol", [("heun", 100, 2e-3), ("euler", 500, 2e-2)])
def test_probability_flow_is_the_exact_transport_for_gaussian_data(method, steps, tol):
    """For data N(m, s2 I) the ODE is the linear map x_0 = m + sqrt(s2 / v_T) (x_T - sqrt(ab_T) m),
    v_T = ab_T s2 + 1 - ab_T: it rescales p_T = N(sqrt(ab_T) m, v_T I) into the data law."""
    s, m, s2 = dd.NoiseSchedule.linear(1000), torch.tensor([1.0, -2.0]), 0.25
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(500, 2, generator=g, dtype=torch.float64)
    x0 = sde.probability_flow_sample(_gaussian_eps(m, s2, s), s, (500, 2), steps=steps, method=method,
                                     x_T=x_T, progress=False)
    want = _exact_transport(s, m, s2, x_T)
    assert (x0 - want).abs().max().item() < tol


def test_heun_beats_euler_at_the_same_number_of_steps():
    s, m, s2 = dd.NoiseSchedule.linear(1000), torch.tensor([1.0, -2.0]), 0.25
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = _exact_transport(s, m, s2, x_T)
    err = {k: (sde.probability_flow_sample(_gaussian_eps(m, s2, s), s, (200, 2), steps=20, method=k, x_T=x_T,
                                           progress=False) - want).abs().max().item() for k in ("euler", "heun")}
    assert err["heun"] < 0.2 * err["euler"]


def test_reverse_sde_recovers_the_mixture_with_the_exact_score():
    mix, s = toy.lesson_mixture(), dd.NoiseSchedule.linear(1000)
    eps_model = lambda x, t: mix.eps_star(x, s.alpha_bar[t[0]].item())
    g = torch.Generator().manual_seed(2)
    x = sde.reverse_sde_sample(eps_model, s, (2000, 2), steps=500, generator=g, dtype=torch.float64, progress=False)
    ref = mix.sample(2000, generator=torch.Generator().manual_seed(3))
    assert metrics.mode_weight_error(x, mix) < 0.04
    assert metrics.mmd(x, ref, bandwidth=0.5) < 0.003
    # a far-too-coarse run is measurably worse: the check can fail
    bad = sde.reverse_sde_sample(eps_model, s, (2000, 2), steps=5, generator=g, dtype=torch.float64, progress=False)
    assert metrics.mmd(bad, ref, bandwidth=0.5) > 0.01


def test_samplers_are_seeded_and_return_trajectories():
    s = dd.NoiseSchedule.linear(100)
    model = _gaussian_eps([0.0, 0.0], 1.0, s)
    a = sde.reverse_sde_sample(model, s, (4, 2), steps=10, generator=torch.Generator().manual_seed(4), progress=False)
    b, traj = sde.reverse_sde_sample(model, s, (4, 2), steps=10, generator=torch.Generator().manual_seed(4),
                                     progress=False, trajectory=True)
    assert torch.equal(a, b) and traj.shape == (12, 4, 2) and torch.equal(traj[-1], b)
    _, traj = sde.probability_flow_sample(model, s, (4, 2), steps=10, progress=False, trajectory=True)
    assert traj.shape == (12, 4, 2)


# --- bad input --------------------------------------------------------------------------------
def test_bad_inputs_are_rejected():
    s = dd.NoiseSchedule.linear(100)
    model = _gaussian_eps([0.0, 0.0], 1.0, s)
    with pytest.raises(ValueError, match=r"steps must be an int in 1..99"):
        sde.reverse_sde_sample(model, s, (4, 2), steps=0, progress=False)
    with pytest.raises(ValueError, match=r"steps must be an int in 1..99"):
        sde.probability_flow_sample(model, s, (4, 2), steps=100, progress=False)
    with pytest.raises(ValueError, match="method must be 'euler' or 'heun'"):
        sde.probability_flow_sample(model, s, (4, 2), steps=10, method="rk4", progress=False)
    with pytest.raises(ValueError, match="eps_model must return a tensor shaped like x_t"):
        sde.reverse_sde_sample(lambda x, t: x[:, :1], s, (4, 2), steps=10, progress=False)
    with pytest.raises(ValueError, match=r"shape must be a tuple \(N, D, ...\)"):
        sde.reverse_sde_sample(model, s, 4, steps=10, progress=False)
    with pytest.raises(ValueError, match=r"continuous time s must lie in \[0, 1\]"):
        sde.beta_continuous(s, 1.5)
    with pytest.raises(ValueError, match=r"continuous time s must lie in \[0, 1\]"):
        sde.alpha_bar_continuous(s, -0.1)


def test_t_outside_the_schedule_is_rejected():
    s = dd.NoiseSchedule.linear(100)
    with pytest.raises(ValueError, match="timestep out of range"):
        sde.score_from_eps(torch.zeros(3, 2), 101, s)
    with pytest.raises(ValueError, match="needs t >= 1"):
        sde.score_from_eps(torch.zeros(3, 2), 0, s)
    eps_model = sde.eps_model_from_score(lambda x, t: -x, s)
    with pytest.raises(ValueError, match="timestep out of range"):
        eps_model(torch.zeros(3, 2), torch.full((3,), 200))
