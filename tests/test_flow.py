"""Flow matching against exact answers: the mixture's velocity oracle (diffedu.flow eqs. 5-8) checked
by Monte Carlo conditioning, the score and eps identities (9)-(11) against toy.py's oracle, and the
Euler / Heun samplers against closed-form transports."""
import math

import pytest
import torch

import diffedu as dd
from diffedu import flow, metrics, sde, toy


pytestmark = pytest.mark.usefixtures("one_thread")

T_OF = {"ot": 0.5, "vp": 0.6, "ve": 0.3}  # times where the path is neither noise nor data


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- paths

@pytest.mark.parametrize("name", flow.PATHS)
def test_path_derivatives_are_the_derivatives(name):
    p = flow.path(name)
    t, h = torch.linspace(0.05, 0.95, 19, dtype=torch.float64), 1e-6
    a, b, da, db = p(t)
    assert torch.allclose(da, (p.a(t + h) - p.a(t - h)) / (2 * h), rtol=1e-6, atol=1e-8)
    assert torch.allclose(db, (p.b(t + h) - p.b(t - h)) / (2 * h), rtol=1e-6, atol=1e-8)
    assert torch.allclose(p.b_db(t), b * db, rtol=1e-12)


def test_path_endpoints():
    ot, vp, ve = (flow.path(n) for n in flow.PATHS)
    assert [c.item() for c in ot(0.0)] == [0.0, 1.0, 1.0, -1.0] and [c.item() for c in ot(1.0)][:2] == [1.0, 0.0]
    a0, b0 = (c.item() for c in vp(0.0)[:2])
    assert a0 == pytest.approx(math.exp(-(0.1 + 19.9 / 2) / 2), rel=1e-12) and a0**2 + b0**2 == pytest.approx(1)
    a1, b1, _, db1 = vp(1.0)
    assert (a1.item(), b1.item()) == (1.0, 0.0) and db1.item() == -math.inf
    assert vp.b_db(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(-0.05)  # -a a' = -beta(0)/2
    assert ve(0.0)[1].item() == pytest.approx(10.0) and ve(1.0)[1].item() == pytest.approx(0.01)


def test_vp_path_is_the_course_linear_schedule_in_the_limit():
    """a_t^2 = alpha_bar(1 - t) of the continuous linear VP schedule, against NoiseSchedule.linear(1000)."""
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = flow.path("vp")(t)[0]
    ab = sde.alpha_bar_continuous(dd.NoiseSchedule.linear(1000), 1 - t)
    assert (torch.log(a**2) - torch.log(ab)).abs().max().item() < 0.08   # 7 % at t = 0, 0.6 % at t = 0.5


# ----------------------------------------------------------------------------- the oracle

def test_single_gaussian_oracle_is_the_regression_of_u_on_x_t():
    """For one Gaussian, E[u | x_t] is affine: the least-squares fit of u on (x_t, 1) over many pairs."""
    m, S = torch.tensor([[1.0, -2.0]], dtype=torch.float64), torch.tensor([[[0.5, 0.2], [0.2, 0.3]]], dtype=torch.float64)
    mix, g, n = toy.GaussianMixture([1.0], m, S), _gen(0), 400_000
    for name in flow.PATHS:
        t = T_OF[name]
        x1, x0 = mix.sample(n, generator=g).double(), torch.randn(n, 2, generator=g, dtype=torch.float64)
        x_t, u = flow.interpolate(x1, x0, t, name), flow.conditional_velocity(x1, x0, t, name)
        X = torch.cat([x_t, torch.ones(n, 1, dtype=torch.float64)], 1)
        coef = torch.linalg.lstsq(X, u).solution                                   # (3, 2): [A^T; c]
        resid_var = (u - X @ coef).var(0)                                           # (2,)
        se = (torch.linalg.inv(X.T @ X).diagonal()[:, None] * resid_var).sqrt()     # standard errors (3, 2)
        probe = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        exact = flow.exact_velocity(mix, probe, t, name)
        want = torch.cat([exact[1:] - exact[0], exact[:1]])                         # the oracle is affine
        assert ((coef - want).abs() < 5 * se).all(), (name, coef, want, se)
        assert (se < 0.02 * want.abs().max()).all()                                 # the check has teeth


@pytest.mark.parametrize("name", flow.PATHS)
def test_mixture_oracle_matches_exact_conditioning_by_monte_carlo(name):
    """E[u | x_t = x] by Bayes over data samples: weight x1_i by N(x; a x1_i, b^2 I); then
    x0 = (x - a x1_i) / b is fixed, and u_i = a' x1_i + b' x0. Self-normalised, within 4 standard errors."""
    mix, t = toy.lesson_mixture(), T_OF[name]
    a, b, da, db = (c.item() for c in flow.path(name)(t))
    x1 = mix.sample(400_000, generator=_gen(1)).double()
    pts = torch.tensor([[-2.0, 1.5], [2.0, 2.0], [0.0, 0.5], [0.5, -2.0], [-1.0, -1.0]], dtype=torch.float64) * a
    oracle = flow.exact_velocity(mix, pts, t, name)
    for x, want in zip(pts, oracle):
        w = torch.softmax(-(x - a * x1).pow(2).sum(1) / (2 * b * b), 0)
        u = da * x1 + db * (x - a * x1) / b
        est = (w[:, None] * u).sum(0)
        se = ((w[:, None] ** 2) * (u - est) ** 2).sum(0).sqrt()
        assert (se < 0.05).all(), (name, x, se)                                     # the check has teeth
        assert ((est - want).abs() < 4 * se + 1e-3).all(), (name, x.tolist(), est.tolist(), want.tolist())


def _moments(m):
    mean = (m.weights[:, None] * m.means).sum(0)
    second = (m.weights[:, None, None] * (m.covs + m.means[:, :, None] * m.means[:, None, :])).sum(0)
    return mean, second - torch.outer(mean, mean)


@pytest.mark.parametrize("name", flow.PATHS)
def test_marginal_is_the_mixture_at_a_t_b_t(name):
    """Samples of x_t = a x1 + b x0: their moments and histogram match marginal() (eq. 5)."""
    mix, t, n = toy.lesson_mixture(), T_OF[name], 200_000
    p_t = flow.marginal(mix, t, name)
    g = _gen(2)
    x_t = flow.interpolate(mix.sample(n, generator=g).double(), torch.randn(n, 2, generator=g, dtype=torch.float64),
                           t, name)
    mean, cov = _moments(p_t)
    assert torch.allclose(x_t.mean(0), mean, atol=5 * cov.diagonal().max().sqrt().item() / math.sqrt(n))
    assert torch.allclose(torch.cov(x_t.T), cov, rtol=0.02, atol=0.02 * cov.diagonal().max().item())
    # histogram on a 16 x 16 grid against the density integrated over each cell (10 x 10 midpoints)
    lim, cells, sub = 3 * cov.diagonal().max().sqrt().item(), 16, 10
    edges = torch.linspace(-lim, lim, cells + 1, dtype=torch.float64)
    step = (edges[1] - edges[0]).item()
    mid = -lim + step / sub * (torch.arange(cells * sub, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(mid + mean[0], mid + mean[1], indexing="ij")
    dens = p_t.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).exp().reshape(cells * sub, cells * sub)
    prob = dens.reshape(cells, sub, cells, sub).sum((1, 3)) * (step / sub) ** 2
    ij = torch.floor((x_t - mean + lim) / step).long()
    inside = ((ij >= 0) & (ij < cells)).all(1)
    counts = torch.bincount(ij[inside, 0] * cells + ij[inside, 1], minlength=cells * cells).reshape(cells, cells)
    assert ((counts / n - prob).abs() <= 5 * (prob / n).sqrt() + 2e-4).all()


def test_vp_marginal_is_toy_noised_at_alpha_bar_a_squared():
    mix, t = toy.lesson_mixture(), 0.7
    x = 2 * torch.randn(50, 2, generator=_gen(3), dtype=torch.float64)
    a = flow.path("vp")(t)[0].item()
    assert torch.allclose(flow.marginal(mix, t, "vp").log_prob(x), mix.noised(a**2).log_prob(x), atol=1e-12)


def test_the_oracle_minimises_cfm():
    """E[target - u_t(x_t) | x_t] = 0, so shifting the oracle by c raises the CFM loss (3) by |c|^2."""
    mix, n = toy.lesson_mixture(), 100_000
    oracle = lambda x, t: flow.exact_velocity(mix, x, t)
    x1, c = mix.sample(n, generator=_gen(4)).double(), torch.tensor([0.5, -0.5], dtype=torch.float64)
    base = flow.cfm_loss(oracle, x1, "ot", generator=_gen(5)).item()
    shifted = flow.cfm_loss(lambda x, t: oracle(x, t) + c, x1, "ot", generator=_gen(5)).item()
    assert shifted - base == pytest.approx(0.5, abs=0.02)


# ----------------------------------------------------------------------------- score and eps identities

@pytest.mark.parametrize("name", flow.PATHS)
@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 0.97])
def test_velocity_from_eps_and_score_match_the_oracle(name, t):
    """eqs. (9)-(11) with toy.py's eps* and score at the matching noise level, float64, to 1e-6."""
    mix = toy.lesson_mixture()
    ab, s = (c.item() for c in flow.noise_level(t, name))
    x = s * 3 * torch.randn(200, 2, generator=_gen(6), dtype=torch.float64)
    want = flow.exact_velocity(mix, x, t, name)
    eps = mix.eps_star(x / s, ab)                                                  # eq. (11)
    assert (flow.velocity_from_eps(eps, x, t, name) - want).abs().max().item() < 1e-6
    score = flow.marginal(mix, t, name).score(x)
    assert (flow.velocity_from_score(score, x, t, name) - want).abs().max().item() < 1e-6


def test_vp_velocity_is_the_probability_flow_ode():
    """On the vp path, eq. (10) is (beta(1 - t) / 2) (x + score): diffedu.sde eq. 3 with s = 1 - t."""
    mix, t = toy.lesson_mixture(), 0.4
    a = flow.path("vp")(t)[0].item()
    x = torch.randn(100, 2, generator=_gen(7), dtype=torch.float64)
    beta = 0.1 + 19.9 * (1 - t)
    want = 0.5 * beta * (x + mix.noised(a**2).score(x))
    assert torch.allclose(flow.velocity_from_eps(mix.eps_star(x, a**2), x, t, "vp"), want, atol=1e-10)


# ----------------------------------------------------------------------------- samplers

def test_heun_is_the_exact_transport_for_gaussian_data():
    """Data N(m, s^2 I) on the ot path: the flow is the monotone map x_1 = m + s x_0."""
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    mix = toy.GaussianMixture([1.0], m[None], s**2 * torch.eye(2, dtype=torch.float64)[None])
    x0 = torch.randn(300, 2, generator=_gen(8), dtype=torch.float64)
    v = lambda x, t: flow.exact_velocity(mix, x, t)
    err = {(k, n): (flow.sample(v, x0, steps=n, method=k) - (m + s * x0)).abs().max().item()
           for k in flow.METHODS for n in (20, 40)}
    assert err["heun", 40] < 1e-3 and err["heun", 20] < 0.1 * err["euler", 20]
    assert err["euler", 20] / err["euler", 40] == pytest.approx(2, rel=0.1)        # first order
    assert err["heun", 20] / err["heun", 40] == pytest.approx(4, rel=0.1)          # second order


def test_euler_on_the_exact_field_transports_noise_onto_the_mixture():
    mix, n = toy.lesson_mixture(), 2000
    x1 = flow.sample(lambda x, t: flow.exact_velocity(mix, x, t), torch.randn(n, 2, generator=_gen(9)), steps=100)
    assert metrics.mode_weight_error(x1, mix) < 0.03
    assert metrics.mmd(x1, mix.sample(n, generator=_gen(10)), bandwidth=0.5) < 1e-3


def test_evaluation_counts():
    calls = []
    v = lambda x, t: (calls.append(t), torch.zeros_like(x))[1]
    for method, steps in (("euler", 7), ("heun", 7), ("heun", 1)):
        calls.clear()
        _, traj = flow.sample(v, torch.zeros(3, 2), steps=steps, method=method, trajectory=True)
        assert len(calls) == flow.nfe(method, steps) and traj.shape == (steps + 1, 3, 2)
        last = 1.0 if method == "heun" else 6 / 7                                   # Heun's corrector runs at t = 1
        assert calls[-1].tolist() == pytest.approx([last] * 3) and calls[0].tolist() == [0.0] * 3


def test_cfm_training_learns_a_velocity():
    torch.manual_seed(0)
    net, mix = flow.VelocityMLP(hidden=32, depth=2), toy.lesson_mixture()
    losses = flow.train_cfm(net, mix.sample, "ot", steps=300, batch_size=256, lr=3e-3, generator=_gen(11), progress=False)
    assert sum(losses[-50:]) / 50 < 0.8 * sum(losses[:50]) / 50
    x = torch.randn(500, 2, generator=_gen(12))
    with torch.no_grad():
        err = (net(x, torch.full((500,), 0.5)) - flow.exact_velocity(mix, x, 0.5)).pow(2).sum(1).mean().item()
    zero = flow.exact_velocity(mix, x, 0.5).pow(2).sum(1).mean().item()
    assert err < 0.5 * zero                                                         # better than v = 0


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call,err,msg", [
    (lambda: flow.path("rectified"), ValueError, "path must be"),
    (lambda: flow.path("ve", sigma_min=1.0, sigma_max=0.5), ValueError, "sigma_max must exceed"),
    (lambda: flow.check_time(1.5), ValueError, r"t must lie in \[0, 1\]"),
    (lambda: flow.check_time(-0.1), ValueError, r"t must lie in \[0, 1\]"),
    (lambda: flow.check_time(float("nan")), ValueError, "NaN"),
    (lambda: flow.check_time("0.5"), TypeError, "t must be a number"),
    (lambda: flow.check_time(torch.zeros(2, 2)), ValueError, "shape"),
    (lambda: flow.exact_velocity(toy.lesson_mixture(), torch.zeros(4, 3), 0.5), ValueError, r"shape \(N, 2\)"),
    (lambda: flow.exact_velocity(toy.lesson_mixture(), torch.zeros(4, 2), torch.rand(3)), ValueError, "3 times for 4"),
    (lambda: flow.interpolate(torch.zeros(4, 2), torch.zeros(5, 2), 0.5), ValueError, "one shape"),
    (lambda: flow.marginal(toy.lesson_mixture(), torch.rand(3)), ValueError, "one time"),
    (lambda: flow.velocity_from_eps(torch.zeros(4, 2), torch.zeros(4, 2), 0.0), ValueError, "a_t > 0"),
    (lambda: flow.velocity_from_eps(torch.zeros(4, 2), torch.zeros(4, 2), 1.0, "vp"), ValueError, "t < 1"),
    (lambda: flow.velocity_from_score(torch.zeros(4, 3), torch.zeros(4, 2), 0.5), ValueError, "shaped like x"),
    (lambda: flow.sample(lambda x, t: x, torch.zeros(4, 2), steps=0), ValueError, "steps must be a positive int"),
    (lambda: flow.sample(lambda x, t: x, torch.zeros(4, 2), method="rk4"), ValueError, "method must be"),
    (lambda: flow.sample(lambda x, t: x[:, :1], torch.zeros(4, 2)), ValueError, "velocity must return"),
    (lambda: flow.sample(lambda x, t: x, torch.zeros(4)), ValueError, r"x_0 must have shape"),
    (lambda: flow.nfe("heun", 0), ValueError, "steps must be a positive int"),
    (lambda: flow.cfm_loss(lambda x, t: x, torch.zeros(4, 2), generator=0), TypeError, "torch.Generator"),
    (lambda: flow.cfm_loss(lambda x, t: x, torch.full((4, 2), float("nan"))), ValueError, "x1 contains NaN"),
    (lambda: flow.sample(lambda x, t: x, torch.full((4, 2), float("inf"))), ValueError, "x_0 contains NaN"),
    (lambda: flow.train_cfm(flow.VelocityMLP(), lambda n, g: torch.zeros(n, 2), steps=1, generator=1), TypeError,
     "torch.Generator"),
])
def test_bad_input_gives_one_clear_error(call, err, msg):
    with pytest.raises(err, match=msg):
        call()
