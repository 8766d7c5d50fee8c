"""diffedu's conventions, pinned to numbers computed by hand from the closed forms.

diffedu counts the noising steps t = 1..T (index 0 is the clean data); diffusers counts them
0..T-1. So diffedu's step t is diffusers' step t - 1, and every number below is what diffusers
gives at the step one lower, with the setting named in each test (diffusers is not needed to run
these tests; its tensors are float32, so it agrees to about 1e-7, ours are float64).
"""
import math

import pytest
import torch

from diffedu import samplers
from diffedu.forward import q_posterior, x0_from_eps
from diffedu.schedules import NoiseSchedule

LINEAR, COSINE = NoiseSchedule.linear(1000), NoiseSchedule.cosine(1000)


def test_linear_alpha_bar_by_hand():
    """beta_t = 1e-4 + (t - 1) (0.02 - 1e-4) / 999, alpha_bar_t = prod_{s <= t} (1 - beta_s):
    alpha_bar_1 = 0.9999, alpha_bar_2 = 0.9999 (1 - 1.1991991991992e-4) = 0.99978009207207.
    diffusers: DDPMScheduler(beta_schedule="linear") has alphas_cumprod[0] and [1] (float32)."""
    assert LINEAR.alpha_bar[0].item() == 1.0  # the clean data, an index diffusers does not have
    assert LINEAR.alpha_bar[1].item() == pytest.approx(0.9999, rel=1e-14)
    assert LINEAR.betas[2].item() == pytest.approx(1.1991991991992e-4, rel=1e-12)
    assert LINEAR.alpha_bar[2].item() == pytest.approx(0.99978009207207, rel=1e-13)
    assert LINEAR.betas[1000].item() == pytest.approx(0.02, rel=1e-14)  # diffusers' betas[999]


@pytest.mark.parametrize("t, want", [(1, 0.999958715775178), (100, 0.972092737113969),
                                     (400, 0.6474782111465038), (500, 0.49384359044063775)])
def test_cosine_alpha_bar_by_hand(t, want):
    """alpha_bar_t = f(t) / f(0), f(t) = cos^2((t / 1000 + 0.008) / 1.008 * pi / 2) (no clipping below t = T).
    diffusers: beta_schedule="squaredcos_cap_v2" has alphas_cumprod[t - 1] = the same product."""
    assert COSINE.alpha_bar[t].item() == pytest.approx(want, rel=1e-12)


def test_ddim_grid_is_diffusers_trailing_spacing():
    """ddim_timesteps(T, S) = T, T - T/S, ..., T/S. diffusers: DDIMScheduler(timestep_spacing="trailing")
    .set_timesteps(S) gives round(arange(T, 0, -T/S)) - 1 = T - 1, ..., T/S - 1: ours minus one.
    Its default "leading" spacing, arange(S) * T/S reversed (+ steps_offset), is another grid."""
    ours = samplers.ddim_timesteps(1000, 10)
    trailing = [round(t) - 1 for t in range(1000, 0, -100)]
    leading = [i * 100 for i in range(10)][::-1]
    assert ours == [1000, 900, 800, 700, 600, 500, 400, 300, 200, 100]
    assert [t - 1 for t in ours] == trailing
    assert [t - 1 for t in ours] != leading


def test_a_ddim_step_by_hand():
    """Cosine schedule, t = 500 -> t' = 400, x_t = 0.5, eps = -1 (eta = 0, no clipping):
    x0_hat = (x_t - sqrt(1 - ab_500) eps) / sqrt(ab_500) = 1.7238902015427342,
    x_t'   = sqrt(ab_400) x0_hat + sqrt(1 - ab_400) eps  = 0.7934105668053916.
    diffusers: DDIMScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing",
    clip_sample=False), set_timesteps(10), then step(eps, timestep=499, sample=x_t, eta=0.0)."""
    x_t, eps = torch.tensor([0.5], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    x_prev, x0_hat = samplers.ddim_step(x_t, 500, eps, COSINE, t_prev=400)
    assert x0_hat.item() == pytest.approx(1.7238902015427342, rel=1e-12)
    assert x_prev.item() == pytest.approx(0.7934105668053916, rel=1e-12)


def test_the_last_ddim_step_returns_x0_hat():
    """The last step goes to t' = 0, where alpha_bar_0 = 1: x_0 = x0_hat exactly (t = 100, x_t = 0.5, eps = -1:
    (0.5 + sqrt(1 - ab_100)) / sqrt(ab_100) = 0.6765619666859338). diffusers: set_alpha_to_one=True."""
    x_t, eps = torch.tensor([0.5], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    x_prev, x0_hat = samplers.ddim_step(x_t, 100, eps, COSINE, t_prev=0)
    assert torch.equal(x_prev, x0_hat) and x_prev.item() == pytest.approx(0.6765619666859338, rel=1e-12)


def test_a_ddpm_step_by_hand():
    """Linear schedule, t = 2 -> 1, x_t = 0.5, eps = -1: the mean of algorithm 2,
    (x_t - beta_2 / sqrt(1 - ab_2) eps) / sqrt(alpha_2) = 0.5081171593050409, and the variance
    beta_tilde_2 = (1 - ab_1) / (1 - ab_2) beta_2 = 5.4531876613021935e-05.
    diffusers: DDPMScheduler(variance_type="fixed_small", clip_sample=False).step(eps, timestep=1, sample=x_t)."""
    x_t, eps = torch.tensor([0.5], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    mean, var = q_posterior(x0_from_eps(x_t, 2, eps, LINEAR), x_t, 2, LINEAR)
    assert mean.item() == pytest.approx(0.5081171593050409, rel=1e-12)
    assert var.item() == pytest.approx(5.4531876613021935e-05, rel=1e-12)
    x_prev, _ = samplers.ddpm_step(x_t, 2, eps, LINEAR, noise=torch.tensor([1.0], dtype=torch.float64))
    assert x_prev.item() == pytest.approx(0.5081171593050409 + math.sqrt(5.4531876613021935e-05), rel=1e-12)
    last, _ = samplers.ddpm_step(x_t, 1, eps, LINEAR, noise=torch.tensor([1.0], dtype=torch.float64))
    assert last.item() == pytest.approx((0.5 + math.sqrt(1e-4)) / math.sqrt(0.9999), rel=1e-12)  # t = 1: no noise
