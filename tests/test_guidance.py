"""Guidance against exact answers: a 2D Gaussian mixture whose classifier p(y | x_t) is known."""
import math

import pytest
import torch

import diffedu as dd
from diffedu import guidance as G
from diffedu import samplers, toy
from diffedu.images import classifier as C
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


class ConstantEps:
    """A fake network: eps = 3 given a label, 1 without one (the null class)."""
    num_classes = 10

    def __call__(self, x_t, t, y=None):
        return torch.full_like(x_t, 1.0 if y is None else 3.0)


def test_cfg_convention_maps_to_the_one_plus_w_form():
    """Ours: e_u + w (e_c - e_u). Ho & Salimans: (1 + w') e_c - w' e_u, i.e. w' = w - 1.
    With e_u = 1 and e_c = 3 (by hand): ours = 1 + 2 w, theirs = 3 + 2 w'."""
    x, t, y = torch.zeros(4, 2), torch.full((4,), 10), torch.tensor([0, 1, 2, 3])
    for w, want in [(0.0, 1.0), (1.0, 3.0), (2.5, 6.0), (4.0, 9.0)]:
        assert torch.equal(G.cfg_eps(ConstantEps(), x, t, y, w), torch.full_like(x, want))
        w_theirs = w - 1
        assert want == (1 + w_theirs) * 3.0 - w_theirs * 1.0
    assert torch.equal(G.cfg_model(ConstantEps(), 2, 2.5)(x, t), torch.full_like(x, 6.0))  # one label for all


def test_ddpm_mean_shift_is_s_sigma_grad(mix):
    """Same noise: guided step - plain step = s Sigma grad log p(y | x_t) (Dhariwal & Nichol alg. 1)."""
    t, x, y, s = 300, points(seed=4).float(), 2, 2.0
    den, clf = G.MixtureDenoiser(mix, SCHED), G.MixtureClassifier(mix, SCHED)
    tt = torch.full((64,), t)
    eps, grad = den(x, tt, None), G.classifier_grad(clf, x, tt, y)
    plain, _ = samplers.ddpm_step(x, t, eps, SCHED, generator=torch.Generator().manual_seed(5))
    guided, _ = G.guided_ddpm_step(x, t, eps, SCHED, grad=grad, scale=s, generator=torch.Generator().manual_seed(5))
    ab, ab_prev, beta = (SCHED.alpha_bar[t].item(), SCHED.alpha_bar[t - 1].item(), SCHED.betas[t].item())
    var = (1 - ab_prev) / (1 - ab) * beta  # beta_tilde_t, the variance of the plain step
    want = s * var * (component_score(mix, y, x, ab) - mix.noised(ab).score(x.double())).float()
    assert torch.allclose(guided - plain, want, atol=1e-5)
    same, _ = G.guided_ddpm_step(x, t, eps, SCHED, grad=grad, scale=0.0, generator=torch.Generator().manual_seed(5))
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
    x = points().float()
    with pytest.raises(ValueError, match="scale must be >= 0"):
        G.guided_ddpm_step(x, 5, x, SCHED, grad=x, scale=-2.0)
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
    eps = G.MixtureDenoiser(mix, SCHED)(x, torch.full((64,), t), None)
    ours, _ = samplers.ddpm_step(x, t, eps, SCHED, t_prev=t_prev, generator=torch.Generator().manual_seed(2))
    ddim, _ = samplers.ddim_step(x, t, eps, SCHED, t_prev=t_prev, eta=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(ours, ddim, atol=1e-5)
    with pytest.raises(ValueError, match="t_prev < t"):
        dd.q_posterior(x, x, 5, SCHED, t_prev=7)


# ----------------------------------------------------------------------------- the trade-off metrics
def test_mean_pairwise_distance_by_hand():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert G.mean_pairwise_distance(f) == pytest.approx((5 + 10 + 5) / 3)
    with pytest.raises(ValueError, match="at least 2"):
        G.mean_pairwise_distance(f[:1])


class PixelJudge(torch.nn.Module):
    """A judge whose features are the first two pixels and whose head says 1 when their sum is > 0."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
            self.head.bias.zero_()

    def features(self, x):
        return x.flatten(1)[:, :2]


def test_tradeoff_metrics_by_hand():
    """Class 0: features (0, 0), (0.3, 0.4), (0.6, 0.8); class 1: (0, 0), (0, 0.5), (0.5, 0).
    accuracy: the head says 0 only at (0, 0), so 1 + 2 of 6 are right = 0.5;
    diversity: class 0 distances 0.5, 1.0, 0.5 (mean 2/3), class 1: 0.5, 0.5, sqrt(0.5); mean of the two;
    FD against themselves: 0; against themselves shifted by (1, 0): |shift|^2 = 1 per class."""
    feats = torch.tensor([[0, 0], [0.3, 0.4], [0.6, 0.8], [0, 0], [0, 0.5], [0.5, 0]])
    images = torch.zeros(6, 1, 28, 28)
    images.view(6, -1)[:, :2] = feats
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    m = G.tradeoff_metrics(PixelJudge(), images, labels, feats.double(), labels)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["diversity"] == pytest.approx((2 / 3 + (1 + 0.5**0.5) / 3) / 2)
    assert m["fd"] == pytest.approx(0.0, abs=1e-8) and len(m["fd_per_class"]) == 2   # rounding of the matrix root
    shifted = G.tradeoff_metrics(PixelJudge(), images, labels, feats.double() + torch.tensor([1.0, 0.0]), labels)
    assert shifted["fd_per_class"] == pytest.approx([1.0, 1.0])


def test_real_digits_against_themselves():
    """Properties of the shipped judge on real test digits: FD of a set to itself is 0, and it is accurate."""
    from diffedu import data, metrics
    judge = C.load("mnist_classifier")
    x, y = data.mnist("test").tensors
    idx = torch.cat([torch.nonzero(y == c).flatten()[:80] for c in range(10)])
    x, y = x[idx], y[idx]
    m = G.tradeoff_metrics(judge, x, y, metrics.mnist_features(x, judge).double(), y)
    assert m["fd"] == pytest.approx(0.0, abs=1e-6)  # identical sets: same mean, same covariance
    assert m["accuracy"] >= 0.97 and m["diversity"] > 0


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
