"""DDPM and DDIM on a 2D mixture with the EXACT noise prediction eps* of diffedu.toy:
whatever error remains is the sampler's own. Plus the reverse kernel against Bayes' rule."""
import math

import pytest
import torch

import diffedu as dd
from diffedu import metrics, samplers, toy


pytestmark = pytest.mark.usefixtures("one_thread")


SCHED = dd.NoiseSchedule.linear(1000)
MIX = toy.lesson_mixture()


def exact_eps(x_t, t):
    return MIX.eps_star(x_t, SCHED.alpha_bar[t[0]].item()).to(x_t.dtype)


@pytest.fixture(scope="module")
def reference():
    return MIX.sample(3000, generator=torch.Generator().manual_seed(100))


@pytest.mark.parametrize("kind", ["ddpm", "ddim-eta0-50", "ddim-eta1-100"])
def test_sampling_with_the_exact_eps_reproduces_the_mixture(kind, reference):
    g = torch.Generator().manual_seed(0)
    if kind == "ddpm":
        x = samplers.ddpm_sample(exact_eps, SCHED, (3000, 2), generator=g, progress=False)
    else:
        _, eta, steps = kind.split("-")
        x = samplers.ddim_sample(exact_eps, SCHED, (3000, 2), steps=int(steps), eta=float(eta[3:]),
                                 generator=g, progress=False)
    assert metrics.mode_weight_error(x, MIX) < 0.03
    assert metrics.mmd(x, reference, bandwidth=0.5) < 0.002


def test_too_few_ddim_steps_are_measurably_worse(reference):
    """The same metric catches a bad sampler: 2 deterministic steps blur the mixture."""
    x = samplers.ddim_sample(exact_eps, SCHED, (3000, 2), steps=2, generator=torch.Generator().manual_seed(1),
                             progress=False)
    assert metrics.mmd(x, reference, bandwidth=0.5) > 0.01


def test_exact_ddpm_step_mean_is_the_bayes_posterior_mean_on_a_grid():
    """With eps*, the DDPM mean equals E[x_{t-1} | x_t] where
    p(x_{t-1} | x_t) is proportional to p_{t-1}(x_{t-1}) q(x_t | x_{t-1}) (both exact)."""
    for t in (50, 200, 600):
        p_prev, beta = MIX.noised(SCHED.alpha_bar[t - 1].item()), SCHED.betas[t].item()
        x_t = torch.tensor([[0.3, 0.4], [-1.0, 1.0]], dtype=torch.float64) * math.sqrt(SCHED.alpha_bar[t].item())
        x_t = x_t + torch.tensor([0.1, -0.2], dtype=torch.float64)
        for x in x_t:
            # the posterior is narrow (std ~ sqrt(beta)), so integrate on a fine grid around x / sqrt(alpha)
            c = x / math.sqrt(1 - beta)
            g = torch.linspace(-0.8, 0.8, 801, dtype=torch.float64)
            xx, yy = torch.meshgrid(c[0] + g, c[1] + g, indexing="ij")
            pts = torch.stack([xx.flatten(), yy.flatten()], 1)
            logw = p_prev.log_prob(pts) - 0.5 * (x - math.sqrt(1 - beta) * pts).pow(2).sum(1) / beta
            w = torch.softmax(logw, 0)
            mean_bayes = (w[:, None] * pts).sum(0)
            eps = exact_eps(x[None], torch.tensor([t]))
            x0_hat = dd.x0_from_eps(x[None], t, eps, SCHED)
            mean, _ = dd.q_posterior(x0_hat, x[None], t, SCHED)
            assert torch.allclose(mean[0], mean_bayes, atol=1e-5)
            # (the true reverse variance var_bayes is NOT exactly DDPM's beta_tilde or beta_t: a choice)


def test_q_posterior_is_the_monte_carlo_regression():
    """Given x0, (x_{t-1}, x_t) is jointly Gaussian: regressing x_{t-1} on x_t by Monte Carlo gives the
    coefficient of x_t in the posterior mean, and the residual variance is beta_tilde."""
    s, t, N = dd.NoiseSchedule.linear(100), 30, 400_000
    g = torch.Generator().manual_seed(2)
    x0 = torch.tensor([[1.5, -0.5]], dtype=torch.float64).expand(N, 2)
    x_prev, _ = dd.q_sample(x0, t - 1, s, generator=g)
    x_t = dd.q_step(x_prev, t, s, generator=g)
    xc, yc = x_t - x_t.mean(0), x_prev - x_prev.mean(0)
    coef = (xc * yc).sum(0) / xc.pow(2).sum(0)
    resid_var = (yc - coef * xc).var(0)
    mean0, var = dd.q_posterior(x0[:1], torch.zeros(1, 2, dtype=torch.float64), t, s)   # x_t = 0: the x0 part
    mean1, _ = dd.q_posterior(x0[:1], torch.ones(1, 2, dtype=torch.float64), t, s)     # x_t = 1: adds the coefficient
    assert torch.allclose(coef, (mean1 - mean0)[0], atol=3e-3)
    assert torch.allclose(resid_var, var.expand(2), rtol=1e-2)
    assert torch.allclose(x_prev.mean(0) - coef * x_t.mean(0), mean0[0], atol=3e-3)


def test_exact_reverse_steps_keep_the_marginal():
    """x_t ~ p_t exactly, then 30 DDPM steps with eps*: the result has the law p_{t-30}
    (E log p_{t-30} agrees with that of exact samples); dropping the noise z breaks it."""
    t0, t1, N = 300, 270, 20_000
    g = torch.Generator().manual_seed(3)
    x_start = MIX.noised(SCHED.alpha_bar[t0].item()).sample(N, generator=g).double()
    p_end = MIX.noised(SCHED.alpha_bar[t1].item())
    ll_exact = p_end.log_prob(p_end.sample(10 * N, generator=g).double()).mean().item()  # -E log p, precise
    x, x_mean = x_start, x_start
    for t in range(t0, t1, -1):
        x, _ = samplers.ddpm_step(x, t, exact_eps(x, torch.tensor([t])), SCHED, generator=g)
        x0_hat = dd.x0_from_eps(x_mean, t, exact_eps(x_mean, torch.tensor([t])), SCHED)
        x_mean = dd.q_posterior(x0_hat, x_mean, t, SCHED)[0]  # the wrong sampler: mean only
    assert p_end.log_prob(x).mean().item() == pytest.approx(ll_exact, abs=0.03)
    assert abs(p_end.log_prob(x_mean).mean().item() - ll_exact) > 0.1
