"""D3PM transition matrices: products in closed form and the absorbing posterior."""
import pytest
import torch

from diffedu.text import discrete as D

K, M, T = 6, 5, 10  # 5 characters + a mask token (id 5); 10 steps


def products(kind):
    alpha_bar = D.linear_alpha_bar(T)
    betas = D.betas_from_alpha_bar(alpha_bar)
    Q = torch.eye(K, dtype=torch.float64)
    out = [Q]
    for t in range(1, T + 1):
        step = D.absorbing_Q(betas[t], K, M) if kind == "absorbing" else D.uniform_Q(betas[t], K)
        Q = Q @ step
        out.append(Q)
    return alpha_bar, betas, out


@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_product_of_steps_equals_closed_form(kind):
    alpha_bar, _, prods = products(kind)
    for t in range(T + 1):
        closed = D.absorbing_Qbar(alpha_bar[t], K, M) if kind == "absorbing" else D.uniform_Qbar(alpha_bar[t], K)
        assert torch.allclose(prods[t], closed, atol=1e-12), t
        assert torch.allclose(prods[t].sum(1), torch.ones(K, dtype=torch.float64))


def test_absorbing_reaches_all_mask_and_mask_is_absorbing():
    _, _, prods = products("absorbing")
    assert torch.allclose(prods[T][:, M], torch.ones(K, dtype=torch.float64))
    Q = D.absorbing_Q(0.3, K, M)
    assert Q[M, M] == 1.0 and Q[M].sum() == 1.0


def test_absorbing_posterior_bayes_on_grid_and_closed_form():
    alpha_bar, betas, prods = products("absorbing")
    for t in range(2, T + 1):
        Q_t = D.absorbing_Q(betas[t], K, M)
        for x0 in range(M):
            # Bayes by brute force: q(x_{t-1} | x_t, x0) ∝ q(x_{t-1} | x0) q(x_t | x_{t-1})
            joint = prods[t - 1][x0][:, None] * Q_t  # (x_{t-1}, x_t)
            for xt in ((x0, M) if t < T else (M,)):  # at t = T every token is masked
                brute = joint[:, xt] / joint[:, xt].sum()
                post = D.posterior(torch.tensor(xt), torch.tensor(x0), Q_t, prods[t - 1])
                assert torch.allclose(post, brute, atol=1e-12)
            unmask, stay = D.absorbing_posterior_closed_form(alpha_bar[t], alpha_bar[t - 1])
            post = D.posterior(torch.tensor(M), torch.tensor(x0), Q_t, prods[t - 1])
            assert post[x0].item() == pytest.approx(unmask, abs=1e-12)
            assert post[M].item() == pytest.approx(stay, abs=1e-12)
            assert unmask + stay == pytest.approx(1.0)


def test_absorbing_posterior_matches_simulation():
    g = torch.Generator().manual_seed(0)
    alpha_bar, betas, prods = products("absorbing")
    t, n = 6, 200_000
    x0 = torch.full((n,), 2)
    x_prev = D.q_sample(x0, prods[t - 1], g)
    x_t = D.q_step(x_prev, D.absorbing_Q(betas[t], K, M), g)
    given_mask = x_prev[x_t == M]
    unmask, _ = D.absorbing_posterior_closed_form(alpha_bar[t], alpha_bar[t - 1])
    freq = (given_mask == 2).double().mean().item()
    se = (unmask * (1 - unmask) / given_mask.numel()) ** 0.5
    assert abs(freq - unmask) < 5 * se


def test_bad_inputs():
    with pytest.raises(ValueError, match="beta"):
        D.uniform_Q(1.5, K)
    with pytest.raises(ValueError, match="mask_id"):
        D.absorbing_Q(0.1, K, K)
    with pytest.raises(ValueError, match="alpha_bar"):
        D.absorbing_posterior_closed_form(0.5, 0.4)
