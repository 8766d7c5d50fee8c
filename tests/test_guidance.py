"""Guidance against exact answers: a 2D Gaussian mixture whose classifier p(y | x_t) is known."""
import math

import pytest
import torch

from diffedu import classifier as C
from diffedu import guidance as G
from diffedu import samplers, toy
from diffedu.schedules import NoiseSchedule

SCHED = NoiseSchedule.linear(1000)


@pytest.fixture(scope="module")
def mix():
    return toy.lesson_mixture()


def component_score(mix, k, x, ab):
    """grad log N(x; sqrt(ab) mu_k, ab Sigma_k + (1 - ab) I) in closed form: -C^{-1}(x - m)."""
    m = math.sqrt(ab) * mix.means[k]
    cov = ab * mix.covs[k] + (1 - ab) * torch.eye(2, dtype=torch.float64)
    return -torch.linalg.solve(cov, (x.double() - m).T).T


def points(n=64, seed=0):
    return 2.5 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("t", [0, 50, 300])
@pytest.mark.parametrize("y", [0, 2])
def test_classifier_grad_is_bayes_rule(mix, t, y):
    """grad log p(y | x_t) = grad log p(x_t | y) - grad log p(x_t), all in closed form."""
    x, ab = points(), SCHED.alpha_bar[t].item()
    grad = G.classifier_grad(G.MixtureClassifier(mix, SCHED), x, torch.full((64,), t), y)
    want = component_score(mix, y, x, ab) - mix.noised(ab).score(x)
    assert torch.allclose(grad, want, atol=1e-8)


@pytest.mark.parametrize("s", [0.0, 0.5, 1.0, 3.0])
def test_guided_score_matches_closed_form(mix, s):
    """score + s grad log p(y | x) = (1 - s) score + s score_y: the tilted density p(x) p(y|x)^s."""
    x, y = points(seed=1), 1
    guided = mix.score(x) + s * G.classifier_grad(G.MixtureClassifier(mix, SCHED), x, 0, y)
    want = (1 - s) * mix.score(x) + s * component_score(mix, y, x, 1.0)
    assert torch.allclose(guided, want, atol=1e-8)


@pytest.mark.parametrize("s", [0.0, 1.0, 4.0])
def test_eps_form_is_the_guided_score_times_minus_sigma(mix, s):
    t, x, y = 200, points(seed=2), 2
    ab = SCHED.alpha_bar[t].item()
    den, clf = G.MixtureDenoiser(mix, SCHED), G.MixtureClassifier(mix, SCHED)
    eps = G.classifier_guided_eps(den, clf, y, s, SCHED)(x, torch.full((64,), t))
    score_t = mix.noised(ab).score(x)
    want = -math.sqrt(1 - ab) * ((1 - s) * score_t + s * component_score(mix, y, x, ab))
    assert torch.allclose(eps, want, atol=1e-8)
    if s == 1.0:  # scale 1 is exactly the conditional model
        assert torch.allclose(eps, den(x, torch.full((64,), t), y), atol=1e-8)


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_cfg_equals_classifier_guidance_with_the_implicit_classifier(mix, w):
    """eps_u + w (eps_c - eps_u) = eps_u - w sigma grad log p(y | x_t): CFG is CG with s = w."""
    t, x = 400, points(seed=3)
    y = torch.tensor([0, 1, 2] * 21 + [0])
    tt = torch.full((64,), t)
    den, clf = G.MixtureDenoiser(mix, SCHED), G.MixtureClassifier(mix, SCHED)
    cfg = G.cfg_eps(den, x, tt, y, w)
    cg = G.classifier_guided_eps(lambda a, b: den(a, b, None), clf, y, w, SCHED)(x, tt)
    assert torch.allclose(cfg, cg, atol=1e-8)
    if w == 0.0:
        assert torch.allclose(cfg, den(x, tt, None))
    if w == 1.0:
        assert torch.allclose(cfg, den(x, tt, y))


def test_cfg_convention_maps_to_the_one_plus_w_form():
    """(1 + w') eps_c - w' eps_u (the form of unet.eps_model) is our eq. (4) with w = 1 + w'."""
    from diffedu import unet
    torch.manual_seed(0)
    net = unet.UNet(ch=8, ch_mult=(1, 1, 1), attn_res=(), num_classes=10).eval()
    for p in net.parameters():  # the zero-initialised output layers would make every eps 0
        torch.nn.init.normal_(p, std=0.05)
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([10, 500, 999]), torch.tensor([3, 7, 0])
    with torch.no_grad():
        for w_prime in (0.5, 2.0):
            theirs = unet.eps_model(net, y, guidance=w_prime)(x, t)
            ours = G.cfg_model(net, y, 1 + w_prime)(x, t)
            assert torch.allclose(theirs, ours, atol=1e-5)
        e_u, e_c = net(x, t, None), net(x, t, y)
        assert torch.allclose(G.cfg_eps(net, x, t, y, 3.0), e_u + 3.0 * (e_c - e_u), atol=1e-5)


def test_ddpm_mean_shift_is_s_sigma_grad(mix):
    """Same noise: guided step - plain step = s Sigma grad log p(y | x_t) (Dhariwal & Nichol alg. 1)."""
    t, x, y, s = 300, points(seed=4).float(), 2, 2.0
    den, clf = G.MixtureDenoiser(mix, SCHED), G.MixtureClassifier(mix, SCHED)
    eps_model = lambda a, b: den(a, b, None)
    plain, _ = samplers.ddpm_step(eps_model, x, t, SCHED, torch.Generator().manual_seed(5))
    guided, _ = G.guided_ddpm_step(eps_model, clf, x, t, y, s, SCHED, torch.Generator().manual_seed(5))
    ab, ab_prev, beta = (SCHED.alpha_bar[t].item(), SCHED.alpha_bar[t - 1].item(), SCHED.betas[t].item())
    var = (1 - ab_prev) / (1 - ab) * beta  # beta_tilde_t, the variance of the plain step
    want = s * var * (component_score(mix, y, x, ab) - mix.noised(ab).score(x.double())).float()
    assert torch.allclose(guided - plain, want, atol=1e-5)
    same, _ = G.guided_ddpm_step(eps_model, clf, x, t, y, 0.0, SCHED, torch.Generator().manual_seed(5))
    assert torch.equal(same, plain)


def test_guided_sampling_lands_in_the_chosen_class(mix):
    """The smallest component (weight 0.2) gets almost every sample when guided towards it."""
    sched = SCHED  # T = 1000, so that x_T is (almost exactly) N(0, I)
    den, clf = G.MixtureDenoiser(mix, sched), G.MixtureClassifier(mix, sched)
    eps_u = lambda a, b: den(a, b, None)
    g = torch.Generator().manual_seed(0)
    frac = lambda x: (mix.responsibilities(x).argmax(1) == 2).double().mean().item()
    plain = samplers.ddim_sample(eps_u, sched, (300, 2), steps=50, generator=g, progress=False)
    guided = samplers.ddim_sample(G.classifier_guided_eps(eps_u, clf, 2, 3.0, sched), sched, (300, 2),
                                  steps=50, generator=torch.Generator().manual_seed(0), progress=False)
    ddpm = G.guided_ddpm_sample(eps_u, clf, 2, 3.0, sched, (300, 2), torch.Generator().manual_seed(0),
                                progress=False)
    assert 0.13 < frac(plain) < 0.27  # about its weight 0.2
    assert frac(guided) > 0.97 and frac(ddpm) > 0.97


# ----------------------------------------------------------------------------- bad input
def test_negative_scale_is_rejected(mix):
    den, clf = G.MixtureDenoiser(mix, SCHED), G.MixtureClassifier(mix, SCHED)
    with pytest.raises(ValueError, match="scale must be >= 0"):
        G.classifier_guided_eps(den, clf, 0, -1.0, SCHED)
    with pytest.raises(ValueError, match="w must be >= 0"):
        G.cfg_model(den, 0, -0.5)
    with pytest.raises(ValueError, match="scale must be >= 0"):
        G.guided_ddpm_step(den, clf, points().float(), 5, 0, -2.0, SCHED)
    with pytest.raises(TypeError, match="finite number"):
        G.check_scale(float("nan"))


@pytest.mark.parametrize("bad", [10, -1, [0, 11]])
def test_label_outside_the_classes_is_rejected(bad):
    net = C.NoisyMnistClassifier()
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match="class labels must be in 0..9"):
        G.classifier_grad(net, x, torch.tensor([5, 5]), bad)
    with pytest.raises(ValueError, match="class labels must be in 0..9"):
        G.cfg_model(lambda a, b, c: a, bad, 2.0)
    with pytest.raises(TypeError, match="integers"):
        G.classifier_grad(net, x, torch.tensor([5, 5]), 1.5)


def test_classifier_input_size_mismatch_is_rejected(mix):
    net = C.NoisyMnistClassifier()
    with pytest.raises(ValueError, match="input size does not match"):
        G.classifier_grad(net, torch.randn(2, 1, 32, 32), torch.tensor([5, 5]), 3)
    with pytest.raises(ValueError, match="input size does not match"):  # a 2D classifier on images
        G.classifier_grad(G.MixtureClassifier(mix, SCHED), torch.randn(2, 1, 28, 28), 5, 0)


def test_respaced_ddpm_step_matches_ddim_with_eta_one(mix):
    """A jump t -> t' of ancestral sampling is DDIM with eta = 1 (same mean, same variance)."""
    t, t_prev, x = 600, 580, points(seed=6).float()
    eps_model = lambda a, b: G.MixtureDenoiser(mix, SCHED)(a, b, None)
    clf = G.MixtureClassifier(mix, SCHED)
    ours, _ = G.guided_ddpm_step(eps_model, clf, x, t, 0, 0.0, SCHED, torch.Generator().manual_seed(2),
                                 t_prev=t_prev)
    eps = eps_model(x, torch.full((64,), t))
    ddim, _ = samplers.ddim_step(x, t, t_prev, eps, SCHED, eta=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(ours, ddim, atol=1e-5)
    with pytest.raises(ValueError, match="t_prev < t"):
        G.posterior(x, x, 5, 7, SCHED)


# ----------------------------------------------------------------------------- the trade-off metrics
def test_mean_pairwise_distance_by_hand():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert G.mean_pairwise_distance(f) == pytest.approx((5 + 10 + 5) / 3)
    with pytest.raises(ValueError, match="at least 2"):
        G.mean_pairwise_distance(f[:1])


def test_tradeoff_metrics_of_real_digits_against_themselves():
    from diffedu import data, metrics
    judge = C.load("mnist_classifier")
    x, y = data.mnist("test").tensors
    idx = torch.cat([torch.nonzero(y == c).flatten()[:80] for c in range(10)])
    x, y = x[idx], y[idx]
    f = metrics.mnist_features(x, judge).double()
    m = G.tradeoff_metrics(judge, x, y, f, y)
    assert m["fd"] == pytest.approx(0.0, abs=1e-6)  # identical sets: same mean, same covariance
    assert m["accuracy"] == pytest.approx((C.predict(judge, x) == y).double().mean().item())
    assert m["diversity"] == pytest.approx(sum(G.mean_pairwise_distance(f[y == c]) for c in range(10)) / 10)
    assert len(m["fd_per_class"]) == 10


def test_sample_per_class_orders_labels_and_keeps_the_range():
    seen = []

    def make(y):
        seen.append(y.clone())
        return lambda x_t, t: torch.zeros_like(x_t) + 3.0  # a silly model: x0_hat far outside [-1, 1]

    x, y = G.sample_per_class(make, NoiseSchedule.linear(100), 3, classes=(4, 7), steps=5, batch_size=4,
                              generator=torch.Generator().manual_seed(0), progress=False)
    assert y.tolist() == [4, 4, 4, 7, 7, 7] and x.shape == (6, 1, 28, 28)
    assert torch.cat(seen).tolist() == y.tolist()  # batches of at most 4 labels, in order
    assert x.min() >= -1 and x.max() <= 1
