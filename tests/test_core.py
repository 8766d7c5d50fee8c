"""Unit tests of the foundation: runtime, schedules, the forward process, samplers' plumbing."""
import math

import numpy as np
import pytest
import torch

import diffedu as dd
from diffedu import samplers
from diffedu.schedules import NoiseSchedule


# --- runtime -----------------------------------------------------------------------------------
def test_seed_gives_same_numbers():
    dd.seed_everything(123)
    a = torch.randn(5), np.random.rand(3)
    dd.seed_everything(123)
    b = torch.randn(5), np.random.rand(3)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    g1, g2 = dd.seed_everything(7), dd.seed_everything(7)
    assert torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2))


@pytest.mark.parametrize("bad", [1.5, "0", None, True])
def test_seed_of_wrong_type_is_rejected(bad):
    with pytest.raises(TypeError, match="seed must be an int"):
        dd.seed_everything(bad)


def test_device_choice(monkeypatch):
    assert dd.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("DIFFEDU_DEVICE", "cpu")
    assert dd.get_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        dd.get_device("tpu")
    monkeypatch.setenv("DIFFEDU_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="unknown device"):
        dd.get_device()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            dd.get_device("cuda")


# --- schedules -------------------------------------------------------------------------------
def test_linear_schedule_matches_ddpm_paper():
    s = NoiseSchedule.linear(1000)
    assert s.betas[0] == 0 and s.alpha_bar[0] == 1 and len(s.alpha_bar) == 1001
    assert math.isclose(s.betas[1].item(), 1e-4) and math.isclose(s.betas[-1].item(), 0.02)
    # alpha_bar is the running product of (1 - beta)
    assert torch.allclose(s.alpha_bar[1:], torch.cumprod(1 - s.betas[1:], 0))
    assert 4.0e-5 < s.alpha_bar[-1] < 4.1e-5  # the known value for T = 1000


def test_cosine_schedule_closed_form_and_clipping():
    T, s_ = 1000, 0.008
    s = NoiseSchedule.cosine(T, s=s_)
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2
    for t in (1, 250, 500, 900):  # unclipped region: alpha_bar_t = f(t) / f(0) exactly
        assert math.isclose(s.alpha_bar[t].item(), f(t) / f(0), rel_tol=1e-9)
    assert s.betas.max().item() == pytest.approx(0.999)
    assert (s.betas[1:] > 0).all()


def test_snr_and_t_validation():
    s = NoiseSchedule.linear(100)
    assert torch.allclose(s.snr(5), s.alpha_bar[5] / (1 - s.alpha_bar[5]))
    for bad in (-1, 101, torch.tensor([0, 200])):
        with pytest.raises(ValueError, match="timestep out of range"):
            s.check_t(bad)
    with pytest.raises(TypeError, match="integers"):
        s.check_t(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="T must be a positive int"):
        NoiseSchedule.linear(0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        NoiseSchedule(torch.tensor([0.1, 1.5]))


# --- forward process -----------------------------------------------------------------------
def test_q_sample_moments_match_closed_form():
    s = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 2.0, dtype=torch.float64)
    x_t, eps = dd.q_sample(x0, 400, s, generator=g)
    ab = s.alpha_bar[400].item()
    assert abs(x_t.mean().item() - 2 * math.sqrt(ab)) < 5 * math.sqrt((1 - ab) / 2e5)
    assert abs(x_t.var().item() - (1 - ab)) < 0.01
    assert torch.allclose(dd.x0_from_eps(x_t, 400, eps, s), x0)
    assert torch.allclose(dd.eps_from_x0(x_t, 400, x0, s), eps)


def test_iterated_steps_match_jump():
    s = NoiseSchedule.cosine(50)
    g = torch.Generator().manual_seed(1)
    x = torch.full((100_000, 1), 1.5, dtype=torch.float64)
    for t in range(1, 31):
        x = dd.q_step(x, t, s, generator=g)
    ab = s.alpha_bar[30].item()
    assert abs(x.mean().item() - 1.5 * math.sqrt(ab)) < 0.01
    assert abs(x.var().item() - (1 - ab)) < 0.01


def test_posterior_matches_bayes_on_a_grid():
    """q(x_{t-1} | x_t, x0) from eqs. 6-7 vs Bayes' rule q(x_t | x_{t-1}) q(x_{t-1} | x0) / q(x_t | x0)."""
    s = NoiseSchedule.linear(100)
    t, x0, x_t = 40, torch.tensor([[0.7]], dtype=torch.float64), torch.tensor([[-0.3]], dtype=torch.float64)
    grid = torch.linspace(-4, 4, 20001, dtype=torch.float64)
    normal = lambda x, m, v: torch.exp(-0.5 * (x - m) ** 2 / v) / torch.sqrt(2 * math.pi * v)
    ab_prev, beta = s.alpha_bar[t - 1], s.betas[t]
    post = normal(x_t[0, 0], (1 - beta).sqrt() * grid, beta) * normal(grid, ab_prev.sqrt() * x0[0, 0], 1 - ab_prev)
    post = post / torch.trapezoid(post, grid)
    mean_grid = torch.trapezoid(grid * post, grid)
    var_grid = torch.trapezoid((grid - mean_grid) ** 2 * post, grid)
    mean, var = dd.q_posterior(x0, x_t, t, s)
    assert mean.item() == pytest.approx(mean_grid.item(), abs=1e-7)
    assert var.item() == pytest.approx(var_grid.item(), rel=1e-5)


def test_forward_bad_inputs():
    s = NoiseSchedule.linear(10)
    with pytest.raises(ValueError, match="eps has shape"):
        dd.q_sample(torch.zeros(4, 2), 3, s, eps=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="timestep out of range"):
        dd.q_sample(torch.zeros(4, 2), 11, s)
    with pytest.raises(ValueError, match="2 timesteps for a batch of 4"):
        dd.q_sample(torch.zeros(4, 2), torch.tensor([1, 2]), s)
    with pytest.raises(ValueError, match="needs t >= 1"):
        dd.q_posterior(torch.zeros(2, 2), torch.zeros(2, 2), 0, s)


# --- samplers ------------------------------------------------------------------------------
def _gaussian_eps_model(m, v, s):
    """Exact eps* for data x0 ~ N(m, v) in 1D: p_t = N(sqrt(ab) m, ab v + 1 - ab)."""
    def eps_model(x_t, t):
        ab = s.at(s.alpha_bar, t, x_t)
        var_t = ab * v + 1 - ab
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * m) / var_t
    return eps_model


@pytest.mark.parametrize("kind", ["ddpm", "ddim0", "ddim1"])
def test_samplers_recover_a_gaussian_with_the_exact_eps(kind):
    s = NoiseSchedule.cosine(200)  # alpha_bar_T ~ 0, so x_T ~ N(0, I) is exact enough
    model, g = _gaussian_eps_model(1.0, 0.25, s), torch.Generator().manual_seed(0)
    if kind == "ddpm":
        x = samplers.ddpm_sample(model, s, (20000, 1), generator=g, progress=False)
    else:
        x = samplers.ddim_sample(model, s, (20000, 1), steps=50, eta=float(kind[-1]), generator=g, progress=False)
    assert x.mean().item() == pytest.approx(1.0, abs=0.02)
    assert x.std().item() == pytest.approx(0.5, abs=0.03)


def test_ddim_timesteps_and_bad_steps():
    assert samplers.ddim_timesteps(1000, 4) == [1000, 750, 500, 250]
    with pytest.raises(ValueError, match="does not divide"):
        samplers.ddim_timesteps(1000, 30)
    with pytest.raises(ValueError, match="positive int"):
        samplers.ddim_timesteps(1000, 0)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        samplers.ddim_step(torch.zeros(1, 1), 10, torch.zeros(1, 1), NoiseSchedule.linear(10), t_prev=5, eta=-1)


def test_samplers_are_seeded():
    s = NoiseSchedule.linear(20)
    model = _gaussian_eps_model(0.0, 1.0, s)
    a = samplers.ddpm_sample(model, s, (5, 2), generator=torch.Generator().manual_seed(3), progress=False)
    b = samplers.ddpm_sample(model, s, (5, 2), generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(a, b)
