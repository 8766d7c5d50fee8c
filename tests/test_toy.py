"""The exact oracles of Part 1 checked against independent computations:
finite differences, numerical integration on a grid, Bayes' rule and Monte Carlo."""
import math

import pytest
import torch

from diffedu import toy


pytestmark = pytest.mark.usefixtures("one_thread")


MIXTURES = {
    "lesson": toy.lesson_mixture,
    "ring": lambda: toy.ring_mixture(8, radius=4.0, std=0.4),
    "two": toy.two_modes,
}


def _grid(lim, n):
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    return g, torch.stack([xx.flatten(), yy.flatten()], 1), (g[1] - g[0]).item()


def _mixture_moments(m):
    mean = (m.weights[:, None] * m.means).sum(0)
    second = (m.weights[:, None, None] * (m.covs + m.means[:, :, None] * m.means[:, None, :])).sum(0)
    return mean, second - torch.outer(mean, mean)


@pytest.mark.parametrize("name", list(MIXTURES))
def test_score_is_the_gradient_of_log_prob(name):
    mix = MIXTURES[name]()
    x = 3 * torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h = 1e-5
    fd = torch.stack([(mix.log_prob(x + h * e) - mix.log_prob(x - h * e)) / (2 * h)
                      for e in torch.eye(2, dtype=torch.float64)], dim=1)
    assert torch.allclose(mix.score(x), fd, atol=1e-6, rtol=1e-6)
    # and autograd agrees too
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.log_prob(xr).sum(), xr)
    assert torch.allclose(mix.score(x), grad, atol=1e-9)


def test_log_prob_is_a_normalized_density():
    mix = toy.lesson_mixture()
    g, pts, dx = _grid(8.0, 501)
    mass = mix.log_prob(pts).exp().sum().item() * dx * dx
    assert mass == pytest.approx(1.0, abs=1e-4)


def test_responsibilities_are_bayes_rule():
    mix = toy.lesson_mixture()
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    dens = torch.stack([w * torch.distributions.MultivariateNormal(m, c).log_prob(x).exp()
                        for w, m, c in zip(mix.weights, mix.means, mix.covs)], 1)
    r = mix.responsibilities(x)
    assert torch.allclose(r, dens / dens.sum(1, keepdim=True), atol=1e-10)
    assert torch.allclose(mix.log_prob(x), dens.sum(1).log(), atol=1e-10)


def test_samples_have_the_exact_moments_and_weights():
    mix = toy.lesson_mixture()
    N = 200_000
    x, k = mix.sample(N, generator=torch.Generator().manual_seed(2), return_labels=True)
    mean, cov = _mixture_moments(mix)
    se = 5 / math.sqrt(N)
    assert torch.allclose(x.double().mean(0), mean, atol=se * 2)
    assert torch.allclose(torch.cov(x.double().T), cov, atol=se * 6)
    freq = torch.bincount(k, minlength=3).double() / N
    assert torch.allclose(freq, mix.weights, atol=se)


@pytest.mark.parametrize("alpha_bar", [0.9, 0.3, 0.02])
def test_noised_matches_monte_carlo_of_the_forward_process(alpha_bar):
    """x_t = sqrt(ab) x0 + sqrt(1 - ab) eps with x0 ~ p has exactly the law mix.noised(ab)."""
    mix = toy.lesson_mixture()
    N, g = 200_000, torch.Generator().manual_seed(3)
    x0 = mix.sample(N, generator=g).double()
    x_t = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * torch.randn(N, 2, generator=g, dtype=torch.float64)
    p_t = mix.noised(alpha_bar)
    mean, cov = _mixture_moments(p_t)
    se = 5 / math.sqrt(N)
    assert torch.allclose(x_t.mean(0), mean, atol=se * 2)
    assert torch.allclose(torch.cov(x_t.T), cov, atol=se * 6)
    # shape, not only moments: the average log-density equals that of exact samples of p_t
    ll_mc = p_t.log_prob(x_t).mean().item()
    ll_exact = p_t.log_prob(p_t.sample(N, generator=g).double()).mean().item()
    assert ll_mc == pytest.approx(ll_exact, abs=0.02)


def test_noised_density_is_the_convolution_on_a_grid():
    """p_t(y) = int p(x0) N(y; sqrt(ab) x0, (1 - ab) I) dx0, integrated numerically."""
    mix, ab = toy.lesson_mixture(), 0.6
    _, x0, dx = _grid(7.0, 281)
    p0 = mix.log_prob(x0).exp() * dx * dx
    y = torch.tensor([[0.0, 0.0], [1.5, 1.0], [-2.0, 1.0], [0.3, -1.8]], dtype=torch.float64)
    d2 = torch.cdist(y, math.sqrt(ab) * x0).pow(2)
    kernel = torch.exp(-0.5 * d2 / (1 - ab)) / (2 * math.pi * (1 - ab))
    conv = (kernel * p0).sum(1)
    assert torch.allclose(mix.noised(ab).log_prob(y).exp(), conv, rtol=1e-4)


def test_eps_star_is_the_posterior_mean_of_the_noise():
    """eps*(x_t) = E[eps | x_t], computed by Bayes' rule on a grid over x0."""
    mix, ab = toy.lesson_mixture(), 0.5
    _, x0, dx = _grid(7.0, 281)
    logp0 = mix.log_prob(x0)
    for x_t in ([0.4, -0.2], [1.2, 1.5], [-1.0, 0.8]):
        x_t = torch.tensor(x_t, dtype=torch.float64)
        loglik = -0.5 * (x_t - math.sqrt(ab) * x0).pow(2).sum(1) / (1 - ab)
        post = torch.softmax(logp0 + loglik, 0)
        eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)  # the noise each x0 would imply
        eps_bayes = (post[:, None] * eps).sum(0)
        eps_star = mix.eps_star(x_t[None], ab)[0]
        assert torch.allclose(eps_star, eps_bayes, atol=1e-5)
        # the identity eps* = -sqrt(1 - ab) grad log p_t
        assert torch.allclose(eps_star, -math.sqrt(1 - ab) * mix.noised(ab).score(x_t[None])[0], atol=1e-12)


def test_eps_star_is_the_best_regression_of_eps():
    """E||eps - eps*(x_t)||^2 is below that of any other predictor (here: small perturbations)."""
    mix, ab, N = toy.ring_mixture(), 0.4, 100_000
    g = torch.Generator().manual_seed(4)
    x0 = mix.sample(N, generator=g).double()
    eps = torch.randn(N, 2, generator=g, dtype=torch.float64)
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    e = mix.eps_star(x_t, ab)
    best = (eps - e).pow(2).sum(1).mean()
    for other in (1.05 * e, 0.95 * e, e + 0.05):
        assert (eps - other).pow(2).sum(1).mean() > best
    # orthogonality: the residual is uncorrelated with any function of x_t
    resid = eps - e
    for f in (x_t, x_t.pow(2), torch.tanh(x_t)):
        assert (resid * f).mean(0).abs().max() < 5 * f.std() / math.sqrt(N)


def test_noised_at_alpha_bar_one_is_the_data_and_near_zero_is_standard_normal():
    mix = toy.lesson_mixture()
    same = mix.noised(1.0)
    assert torch.allclose(same.means, mix.means) and torch.allclose(same.covs, mix.covs)
    far = mix.noised(1e-8)
    x = torch.randn(10, 2, dtype=torch.float64)
    assert torch.allclose(far.score(x), -x, atol=1e-3)


# --- bad input --------------------------------------------------------------------------------
def test_covariance_not_positive_definite_is_rejected():
    with pytest.raises(ValueError, match="not positive definite"):
        toy.GaussianMixture([0.5, 0.5], [[0, 0], [1, 1]], [[[1, 0], [0, 1]], [[1, 2], [2, 1]]])


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="covs must have shape"):
        toy.GaussianMixture([0.5, 0.5], [[0, 0], [1, 1]], [[[1, 0], [0, 1]]])
    with pytest.raises(ValueError, match="need weights"):
        toy.GaussianMixture([1.0], [[0, 0], [1, 1]], [[[1, 0], [0, 1]]] * 2)
    with pytest.raises(ValueError, match=r"points must have shape \(N, 2\)"):
        toy.lesson_mixture().score(torch.zeros(5, 3))


def test_bad_weights_alpha_bar_and_n_are_rejected():
    with pytest.raises(ValueError, match="sum to 1"):
        toy.GaussianMixture([0.5, 0.6], [[0, 0], [1, 1]], [[[1, 0], [0, 1]]] * 2)
    with pytest.raises(ValueError, match=r"alpha_bar must be in \(0, 1\]"):
        toy.lesson_mixture().noised(0.0)
    with pytest.raises(ValueError, match="n must be a positive int"):
        toy.lesson_mixture().sample(0)


def test_eps_star_outside_the_schedule_is_rejected_clearly():
    with pytest.raises(ValueError, match=r"alpha_bar must be in \(0, 1\]"):
        toy.lesson_mixture().eps_star(torch.zeros(2, 2), 1.5)
    with pytest.raises(ValueError, match=r"alpha_bar must be in \(0, 1\]"):
        toy.lesson_mixture().eps_star(torch.zeros(2, 2), -0.5)
