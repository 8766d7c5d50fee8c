"""Langevin and annealed Langevin dynamics, with the exact score of Gaussians and mixtures."""
import math

import pytest
import torch

from diffedu import langevin as L
from diffedu import metrics, toy


pytestmark = pytest.mark.usefixtures("one_thread")


def _gaussian(mean, var):
    return toy.GaussianMixture([1.0], [mean], [[[var, 0.0], [0.0, var]]])


def test_one_step_by_hand():
    """p = N(0, 0.5 I), score -x / 0.5. From x = (1, -2) with step 0.03 and z = (0.5, 0):
    x' = x + 0.03 (-2x) + sqrt(0.06) z = (0.94 + 0.1224745, -1.88)."""
    score = lambda x: -x / 0.5
    got = L.langevin_step(score, torch.tensor([[1.0, -2.0]], dtype=torch.float64), 0.03,
                          torch.tensor([[0.5, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor([[1.0624745, -1.88]], dtype=torch.float64), atol=1e-7, rtol=0)


def test_a_step_of_the_variance_without_noise_lands_on_the_mean():
    """For p = N(m, s^2 I) and step = s^2, x + s^2 (m - x) / s^2 = m, from anywhere."""
    m, s2 = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = L.langevin_step(_gaussian(m.tolist(), s2).score, x, s2, torch.zeros_like(x))
    torch.testing.assert_close(got, m.expand(10, 2))


def test_langevin_matches_the_discretized_stationary_law_of_a_gaussian():
    """For p = N(m, s^2 I), x' = x + eps (m - x)/s^2 + sqrt(2 eps) z is an AR(1) chain whose
    stationary variance is s^2 / (1 - eps / (2 s^2)): the step size biases the spread."""
    m, s2 = torch.tensor([1.0, -2.0]), 0.5
    p = _gaussian(m.tolist(), s2)
    g = torch.Generator().manual_seed(1)
    for step in (0.02, 0.3):
        x0 = torch.randn(8000, 2, generator=g, dtype=torch.float64) * 3
        x = L.langevin(p.score, x0, step, 250, generator=g, progress=False)
        want = s2 / (1 - step / (2 * s2))
        assert torch.allclose(x.mean(0), m.double(), atol=0.03)
        assert x.var(0).mean().item() == pytest.approx(want, rel=0.03)


def test_plain_langevin_keeps_the_wrong_weights_and_annealing_fixes_them():
    mix = toy.two_modes()  # weights 0.8 / 0.2, modes 8 apart with std 0.5
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(1000, 2, generator=g, dtype=torch.float64) * 16 - 8  # uniform: about half on each side
    plain = L.langevin(mix.score, x0, 0.05, 300, generator=g, progress=False)
    sigmas = L.noise_ladder(10.0, 0.1, 10)
    annealed = L.annealed_langevin(L.smoothed_score_fn(mix), x0, sigmas, step_lr=2e-3, n_steps_each=50,
                                   generator=g, progress=False)
    assert metrics.mode_weight_error(plain, mix) > 0.2
    assert metrics.mode_weight_error(annealed, mix) < 0.06


def test_noise_ladder_is_geometric():
    s = L.noise_ladder(10.0, 0.01, 7)
    assert s[0].item() == pytest.approx(10.0) and s[-1].item() == pytest.approx(0.01)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))


def test_smoothed_mixture_is_the_convolution():
    """p_sigma = p * N(0, sigma^2 I); its score relates to the VP marginal with ab = 1 / (1 + sigma^2):
    x_t = sqrt(ab) (x0 + sigma eps), so grad log p_sigma(x) = sqrt(ab) grad log p_t(sqrt(ab) x)."""
    mix, sigma = toy.lesson_mixture(), 0.7
    ab = 1 / (1 + sigma**2)
    x = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2
    got = L.smoothed(mix, sigma).score(x)
    want = math.sqrt(ab) * mix.noised(ab).score(math.sqrt(ab) * x)
    assert torch.allclose(got, want, atol=1e-10)
    N, g = 100_000, torch.Generator().manual_seed(4)
    y = mix.sample(N, generator=g).double() + sigma * torch.randn(N, 2, generator=g, dtype=torch.float64)
    ll = L.smoothed(mix, sigma).log_prob(y).mean().item()
    ll_exact = L.smoothed(mix, sigma).log_prob(L.smoothed(mix, sigma).sample(N, generator=g).double()).mean().item()
    assert ll == pytest.approx(ll_exact, abs=0.02)


def test_runs_are_seeded_and_trajectories_have_the_right_shape():
    mix = toy.lesson_mixture()
    x0 = torch.zeros(5, 2, dtype=torch.float64)
    a = L.langevin(mix.score, x0, 0.1, 10, generator=torch.Generator().manual_seed(5), progress=False)
    b, traj = L.langevin(mix.score, x0, 0.1, 10, generator=torch.Generator().manual_seed(5), progress=False,
                         trajectory=True, save_every=5)
    assert torch.equal(a, b) and traj.shape == (3, 5, 2) and torch.equal(traj[-1], b)
    c, traj = L.annealed_langevin(L.smoothed_score_fn(mix), x0, [1.0, 0.5], 0.01, 4, progress=False,
                                  generator=torch.Generator().manual_seed(5), trajectory=True)
    assert traj.shape == (9, 5, 2) and torch.equal(traj[-1], c)


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("step", [0.0, -0.1, float("nan"), float("inf")])
def test_non_positive_step_is_rejected(step):
    with pytest.raises(ValueError, match="step must be a positive finite number"):
        L.langevin(toy.lesson_mixture().score, torch.zeros(3, 2), step, 10, progress=False)


def test_bad_counts_and_step_types_are_rejected():
    score = toy.lesson_mixture().score
    with pytest.raises(ValueError, match="n_steps must be a positive int"):
        L.langevin(score, torch.zeros(3, 2), 0.1, 0, progress=False)
    with pytest.raises(TypeError, match="step must be a positive number"):
        L.langevin(score, torch.zeros(3, 2), "0.1", 10, progress=False)
    with pytest.raises(ValueError, match="n_steps_each must be a positive int"):
        L.annealed_langevin(lambda x, s: x, torch.zeros(3, 2), [1.0], 0.1, 2.5, progress=False)


@pytest.mark.parametrize("sigmas", [[1.0, 0.0], [1.0, -0.5], [0.5, 1.0], [1.0, 1.0], []])
def test_bad_noise_levels_are_rejected(sigmas):
    with pytest.raises(ValueError, match="sigmas must be"):
        L.annealed_langevin(lambda x, s: -x, torch.zeros(3, 2), sigmas, 0.1, 5, progress=False)


def test_bad_ladders_and_step_lr_are_rejected():
    with pytest.raises(ValueError, match="sigma_min must be a positive"):
        L.noise_ladder(1.0, 0.0, 5)
    with pytest.raises(ValueError, match="sigma_max > sigma_min"):
        L.noise_ladder(0.1, 1.0, 5)
    with pytest.raises(ValueError, match="step_lr must be a positive"):
        L.annealed_langevin(lambda x, s: -x, torch.zeros(3, 2), [1.0, 0.5], -1e-3, 5, progress=False)
    with pytest.raises(ValueError, match="sigma must be a positive"):
        L.smoothed(toy.lesson_mixture(), 0.0)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        L.langevin(lambda x: -x, torch.zeros(3), 0.1, 10, progress=False)
    with pytest.raises(ValueError, match="score_fn must return a tensor shaped like x"):
        L.langevin(lambda x: x[:, :1], torch.zeros(3, 2), 0.1, 10, progress=False)
    with pytest.raises(TypeError, match="floating-point"):
        L.langevin(lambda x: -x, torch.zeros(3, 2, dtype=torch.long), 0.1, 10, progress=False)
