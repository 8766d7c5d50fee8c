"""Small 2D networks: embedding, heads, adapters, and the two losses against their exact minima."""
import math

import pytest
import torch

import diffedu as dd
from diffedu import nets, toy


pytestmark = pytest.mark.usefixtures("one_thread")


def test_sinusoidal_embedding():
    e = nets.sinusoidal_embedding(torch.tensor([0.0, 1.0, 500.0]), 16)
    assert e.shape == (3, 16)
    assert torch.allclose(e[0, :8], torch.zeros(8)) and torch.allclose(e[0, 8:], torch.ones(8))
    assert e[1, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)  # first frequency is 1
    assert torch.allclose(e.pow(2).reshape(3, 2, 8).sum(1), torch.ones(3, 8), atol=1e-6)  # sin^2 + cos^2
    assert (e[1] - e[2]).abs().max() > 0.1


@pytest.mark.parametrize("cond,label", [("t", torch.tensor([1, 500, 1000])),
                                        ("sigma", torch.tensor([0.01, 1.0, 10.0]))])
def test_forward_shapes_and_scalar_labels(cond, label):
    net = nets.ScoreMLP(hidden=32, depth=2, cond=cond)
    x = torch.randn(3, 2)
    assert net(x, label).shape == (3, 2)
    assert torch.allclose(net(x, label[1]), net(x, label[1].expand(3)))
    assert dd.parameter_count(net) == sum(p.numel() for p in net.parameters()) > 0


def test_x0_head_becomes_an_eps_model():
    s = dd.NoiseSchedule.linear(100)
    net = nets.ScoreMLP(hidden=16, depth=1, predict="x0")
    x_t, t = torch.randn(6, 2), torch.randint(1, 101, (6,))
    eps = nets.eps_model(net, s)(x_t, t)
    assert torch.allclose(dd.x0_from_eps(x_t, t, eps, s), net(x_t, t), atol=1e-5)
    eps_net = nets.ScoreMLP(hidden=16, depth=1, predict="eps")
    assert nets.eps_model(eps_net, s) is eps_net


def test_score_fn_of_the_optimal_denoiser_is_the_smoothed_score():
    """Data N(0, s^2 I): the best noise prediction at level sigma is eps* = sigma x / (s^2 + sigma^2), so
    score_fn must give -x / (s^2 + sigma^2), the score of N(0, (s^2 + sigma^2) I). s^2 = sigma = 0.5:
    -x / 0.75, by hand (-4/3, 8/3) at x = (1, -2)."""
    class OptimalDenoiser(torch.nn.Module):
        cond, predict = "sigma", "eps"

        def forward(self, x, sigma):
            return sigma[:, None] * x / (0.5 + sigma[:, None] ** 2)

    score = nets.score_fn(OptimalDenoiser())(torch.tensor([[1.0, -2.0]]), 0.5)
    torch.testing.assert_close(score, torch.tensor([[-4 / 3, 8 / 3]]))


def _gaussian_data(s2):
    return toy.GaussianMixture([1.0], [[0.0, 0.0]], [[[s2, 0.0], [0.0, s2]]])


def test_dsm_loss_of_the_exact_score_is_the_closed_form_minimum():
    """Data N(0, s^2 I), noise sigma: eps* = sigma x / (s^2 + sigma^2) and the minimum of
    E||eps_hat - eps||^2 is 2 s^2 / (s^2 + sigma^2) (per 2D point), averaged over the ladder."""
    s2, sigmas = 0.5, torch.tensor([0.1, 0.5, 2.0])
    data = _gaussian_data(s2)
    exact = lambda x, sigma: sigma[:, None] * x / (s2 + sigma[:, None] ** 2)
    exact.predict = "eps"
    g = torch.Generator().manual_seed(0)
    loss = nets.dsm_loss(exact, data.sample(200_000, g).double(), sigmas, generator=g).item()
    want = (2 * s2 / (s2 + sigmas**2)).mean().item()
    assert loss == pytest.approx(want, rel=0.01)


def test_ddpm_loss_of_the_exact_eps_is_the_closed_form_minimum():
    """Data N(0, s^2 I): eps*(x_t) = sqrt(1 - ab) x_t / (ab s^2 + 1 - ab), minimum 2 ab s^2 / (ab s^2 + 1 - ab)."""
    s2, sched = 0.5, dd.NoiseSchedule.linear(50)
    data = _gaussian_data(s2)

    def exact(x_t, t):
        ab = sched.alpha_bar[t][:, None].to(x_t.dtype)
        return (1 - ab).sqrt() * x_t / (ab * s2 + 1 - ab)
    exact.predict = "eps"
    g = torch.Generator().manual_seed(1)
    loss = nets.ddpm_loss(exact, data.sample(200_000, g).double(), sched, generator=g).item()
    ab = sched.alpha_bar[1:]
    assert loss == pytest.approx((2 * ab * s2 / (ab * s2 + 1 - ab)).mean().item(), rel=0.01)


def test_short_dsm_training_learns_the_exact_score():
    dd.seed_everything(0)
    s2, sigmas = 0.5, torch.tensor([0.2, 0.5, 1.0])
    data = _gaussian_data(s2)
    net = nets.ScoreMLP(hidden=32, depth=2, cond="sigma")
    losses = nets.train_dsm(net, data.sample, sigmas, steps=300, batch_size=256, lr=3e-3,
                            generator=torch.Generator().manual_seed(2), progress=False)
    floor = (2 * s2 / (s2 + sigmas**2)).mean().item()  # the exact minimum, as in the test above
    assert sum(losses[:10]) / 10 > 1.1 * floor and sum(losses[-50:]) / 50 < 1.05 * floor
    x = torch.randn(500, 2)
    for sigma in sigmas.tolist():
        exact = -x / (s2 + sigma**2)  # score of N(0, (s^2 + sigma^2) I)
        with torch.no_grad():
            err = (nets.score_fn(net)(x, sigma) - exact).norm(dim=1).mean() / exact.norm(dim=1).mean()
        assert err < 0.15


# --- bad input --------------------------------------------------------------------------------
def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="cond must be one of"):
        nets.ScoreMLP(cond="time")
    with pytest.raises(ValueError, match="predict must be one of"):
        nets.ScoreMLP(predict="score")
    with pytest.raises(ValueError, match="depth must be a positive int"):
        nets.ScoreMLP(depth=0)
    with pytest.raises(ValueError, match="embedding dim must be even"):
        nets.sinusoidal_embedding(torch.zeros(2), 7)
    with pytest.raises(ValueError, match="cond='t'"):
        nets.eps_model(nets.ScoreMLP(cond="sigma"), dd.NoiseSchedule.linear(10))
    with pytest.raises(ValueError, match="cond='sigma'"):
        nets.score_fn(nets.ScoreMLP(cond="t"))


def test_bad_inputs_are_rejected():
    net = nets.ScoreMLP(hidden=8, depth=1, cond="sigma")
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        net(torch.zeros(4, 3), 1.0)
    with pytest.raises(ValueError, match="noise label must be a scalar or shape"):
        net(torch.zeros(4, 2), torch.ones(3))
    with pytest.raises(ValueError, match="sigma must be positive"):
        net(torch.zeros(4, 2), torch.tensor(0.0))
    with pytest.raises(ValueError, match="steps must be a positive int"):
        nets.train_dsm(net, toy.lesson_mixture().sample, [1.0], steps=0, progress=False)
    x0_model = nets.eps_model(nets.ScoreMLP(hidden=8, depth=1, predict="x0"), dd.NoiseSchedule.linear(10))
    with pytest.raises(ValueError, match="timestep out of range"):
        x0_model(torch.zeros(4, 2), torch.full((4,), 11))
    with pytest.raises(ValueError, match="lr must be a positive"):
        nets.train_dsm(net, toy.lesson_mixture().sample, [1.0], steps=5, lr=-1.0, progress=False)
