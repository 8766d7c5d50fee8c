"""Interpolating masking + uniform noise (diffedu.text.gidd) against discrete.py and exact answers."""
import pytest
import torch

from diffedu.text import discrete, gidd, masked

K = 3                                                         # characters 0, 1, 2 and the mask 3
P = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
ENTROPY = -(P * P.log()).sum().item()
TABLE = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.4, 0.4, 0.2]], dtype=torch.float64)


def Qbar(t, p_u):
    """q_t(. | x) of eq. (1) as rows x = 0..K-1 (and, to make the matrix square, the same formula for the mask)."""
    eye = torch.eye(K + 1, dtype=torch.float64)
    return (1 - t) * eye + gidd.noise(torch.tensor(t), p_u, K).expand(K + 1, K + 1)


def Q_transition(s, t, p_u):
    """The transition s -> t from its definition: kept with alpha_t / alpha_s, else a jump drawn the same way
    from every state, the mask included (not from gidd.posterior_probs)."""
    a_ts = (1 - t) / (1 - s)
    arrive = gidd.noise(torch.tensor(t), p_u, K) - a_ts * gidd.noise(torch.tensor(s), p_u, K)
    return a_ts * torch.eye(K + 1, dtype=torch.float64) + arrive.expand(K + 1, K + 1)


def continuous_nelbo(x_theta_of, p_u, n_t=40000):
    t = (torch.arange(n_t, dtype=torch.float64) + 0.5) / n_t
    pairs = torch.cartesian_prod(torch.arange(K), torch.arange(K + 1))       # (x, z_t)
    x, i = pairs.T
    n = len(pairs)
    tt, xx, ii = t.repeat_interleave(n), x.repeat(n_t), i.repeat(n_t)
    q_i = gidd.marginal(torch.nn.functional.one_hot(xx, K).double(), tt, p_u).gather(-1, ii[:, None]).squeeze(-1)
    keep = q_i > 0
    f = gidd.nelbo_terms(xx[keep, None], ii[keep, None], tt[keep], x_theta_of(ii[keep])[:, None, :], p_u)
    return (P[xx[keep]] * q_i[keep] * f).sum().item() / n_t


def discrete_nelbo(x_theta_of, p_u, T):
    total = 0.0
    for k in range(1, T + 1):
        t, s = k / T, (k - 1) / T
        Q_ts, Qbar_s, Qbar_t = Q_transition(s, t, p_u), Qbar(s, p_u), Qbar(t, p_u)
        for x in range(K):
            for i in range(K + 1):
                if Qbar_t[x, i] == 0:
                    continue
                q = discrete.posterior(i, x, Q_ts, Qbar_s)
                xt = torch.cat([x_theta_of(torch.tensor(i)), torch.zeros(1, dtype=torch.float64)])
                p = (discrete.one_hot(i, K + 1) @ Q_ts.T) * (xt @ Qbar_s)
                p = p / p.sum()
                kl = torch.special.xlogy(q, q).sum() - torch.special.xlogy(q, p).sum()
                total += P[x].item() * Qbar_t[x, i].item() * kl.item()
    return total


@pytest.mark.parametrize("p_u", [0.0, 0.5, 1.0])
def test_transitions_compose_into_the_marginals(p_u):
    """Chapman-Kolmogorov: q_s then the s -> t step is q_t; the steps are stochastic (rates >= 0)."""
    for s, t in [(0.0, 0.3), (0.2, 0.5), (0.5, 0.9), (0.3, 1.0)]:
        Q = Q_transition(s, t, p_u)
        assert (Q >= -1e-12).all() and torch.allclose(Q.sum(1), torch.ones(K + 1, dtype=torch.float64))
        assert torch.allclose(Qbar(s, p_u) @ Q, Qbar(t, p_u), atol=1e-12)
    assert (gidd.jump_rates(torch.linspace(0, 0.999, 200), p_u, K) >= 0).all()


@pytest.mark.parametrize("p_u", [0.0, 0.5, 1.0])
def test_posterior_matches_discrete_py(p_u):
    t, s = 0.6, 0.35
    for x in range(K):
        for i in range(K + 1):
            if Qbar(t, p_u)[x, i] == 0:
                continue
            got = gidd.posterior_probs(torch.tensor(i), torch.eye(K, dtype=torch.float64)[x], t, s, p_u)
            assert torch.allclose(got, discrete.posterior(i, x, Q_transition(s, t, p_u), Qbar(s, p_u)), atol=1e-12)


@pytest.mark.parametrize("p_u", [0.0, 0.5, 1.0])
def test_exact_denoiser_bound_is_the_entropy(p_u):
    const = lambda i: P.expand(*i.shape, K)
    assert continuous_nelbo(const, p_u) == pytest.approx(ENTROPY, rel=3e-3)
    assert discrete_nelbo(const, p_u, T=40) == pytest.approx(ENTROPY, rel=1e-9)


@pytest.mark.parametrize("p_u", [0.0, 0.5])
def test_continuous_bound_is_the_limit_of_discrete_steps(p_u):
    table = lambda i: TABLE[i]
    cont = continuous_nelbo(table, p_u)
    d_100, d_800 = discrete_nelbo(table, p_u, 100), discrete_nelbo(table, p_u, 800)
    assert cont > ENTROPY + 0.05
    assert abs(d_800 - cont) < abs(d_100 - cont)
    assert d_800 == pytest.approx(cont, rel=5e-3)


def test_no_uniform_noise_is_the_masked_bound():
    """p_u = 0: eq. (3) is MDLM's (1/t) x cross-entropy on the masked positions (masked.py)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, K, (64, 12), generator=g)
    t = torch.rand(64, generator=g).clamp(0.01, 0.99)
    z_t = gidd.forward_noise(x0, t, 0.0, K, g)
    logits = torch.randn(64, 12, K + 1, generator=g)
    mine = gidd.nelbo_terms(x0, z_t, t, gidd.x_theta(logits, K), 0.0)
    nll = masked.masked_nll(lambda z: logits, x0, z_t, K)
    assert torch.allclose(mine, masked.loss_weight(t) * nll, rtol=1e-5)


def test_forward_noise_frequencies_match_eq1():
    x0 = torch.zeros(3, 30000, dtype=torch.long)
    t = torch.tensor([0.2, 0.5, 0.8])
    z = gidd.forward_noise(x0, t, 0.6, K, torch.Generator().manual_seed(1))
    for row, tt in zip(z, t):
        want = Qbar(tt.item(), 0.6)[0]
        assert torch.allclose(torch.bincount(row, minlength=K + 1).double() / row.numel(), want, atol=0.012)


def test_sampler_with_exact_denoiser_draws_p_and_rewrites_characters():
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.cat([P.log(), torch.tensor([-1e9], dtype=torch.float64)]))

        def forward(self, z):
            return self.logits.expand(*z.shape, K + 1)

    z, rewritten = gidd.sample(Constant(), (20000, 1), 0.8, K, steps=6, generator=torch.Generator().manual_seed(2),
                               progress=False)
    assert (z < K).all()                                       # no mask survives t = 0
    assert torch.allclose(torch.bincount(z.flatten(), minlength=K).double() / z.numel(), P, atol=0.015)
    assert rewritten.sum() > 0                                 # uniform noise lets a step change a written character
    _, rewritten0 = gidd.sample(Constant(), (2000, 1), 0.0, K, steps=6, generator=torch.Generator().manual_seed(2),
                                 progress=False)
    assert rewritten0.sum() == 0                               # masking alone never does


@pytest.mark.parametrize("call, err", [
    (lambda: gidd.check_p_u(1.5), r"p_u must be a number in \[0, 1\]"),
    (lambda: gidd.check_p_u(-0.1), r"p_u must be a number in \[0, 1\]"),
    (lambda: gidd.forward_noise(torch.tensor([[0, 3]]), torch.tensor([0.5]), 0.5, K), "outside the K = 3 characters"),
    (lambda: gidd.forward_noise(torch.tensor([[0, 1]]), torch.tensor([-0.5]), 0.5, K), r"t must lie in \[0"),
    (lambda: gidd.posterior_probs(torch.tensor(0), P, 0.3, 0.5, 0.5), "Need 0 <= s < t <= 1"),
])
def test_bad_input_raises_one_clear_error(call, err):
    with pytest.raises((ValueError, TypeError), match=err):
        call()


def test_the_gidd_task_warm_starts_from_the_masked_model(tmp_path):
    from diffedu.train import Trainer, load_config
    cfg = load_config("configs/text_gidd_pu050.json")
    tiny = {**cfg, "model": {**cfg["model"], "d_model": 32, "n_layers": 1, "n_heads": 2, "context": 32}, "batch_size": 4}
    trainer = Trainer(tiny, tmp_path / "a")
    assert trainer.task.p_u == 0.5 and "p_u = 0.5" in trainer.task.architecture
    b1, b2 = (next(trainer.task.batches(torch.Generator().manual_seed(3))) for _ in range(2))
    assert all(torch.equal(u, v) for u, v in zip(b1, b2))
    assert 0.5 < trainer.task.loss(trainer.model, b1).item() < 6.0
    assert 1.0 < trainer.task.validate(trainer.model)["val_bpc_64"] < 20.0     # the bound runs, in bits/char
    with pytest.raises(ValueError, match="p_u"):
        Trainer({**tiny, "p_u": 2.0}, tmp_path / "b")
    full = Trainer(cfg, tmp_path / "c")
    full.warm_start("shakespeare_mdlm_scratch")                       # the masked model: same transformer
    assert full.init["checkpoint"] == "shakespeare_mdlm_scratch"
