"""2D sample-quality metrics against closed forms."""
import math

import pytest
import torch

from diffedu import metrics, toy


pytestmark = pytest.mark.usefixtures("one_thread")


def _normal(n, mean, std, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.tensor(mean, dtype=torch.float64) + std * torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_mode_weights_of_exact_samples_are_the_weights():
    mix = toy.ring_mixture(8, radius=4.0, std=0.35, weights=torch.tensor([4, 1, 1, 1, 4, 1, 1, 3.0]) / 16)
    x, k = mix.sample(50_000, generator=torch.Generator().manual_seed(0), return_labels=True)
    freq = torch.bincount(k, minlength=8).double() / len(k)
    # well separated modes: the nearest mode is the true label, responsibilities average to the counts
    assert torch.allclose(metrics.mode_weights(x, mix, "nearest"), freq, atol=1e-4)
    assert torch.allclose(metrics.mode_weights(x, mix), freq, atol=1e-3)
    assert metrics.mode_weight_error(x, mix) < 4 / math.sqrt(50_000)


def test_mode_weight_error_is_total_variation():
    mix = toy.two_modes(weights=(0.8, 0.2))
    left = _normal(1000, [-4.0, 0.0], 0.5, 1)
    assert metrics.mode_weight_error(left, mix) == pytest.approx(0.2, abs=1e-6)
    right = _normal(1000, [4.0, 0.0], 0.5, 2)
    assert metrics.mode_weight_error(right, mix, method="nearest") == pytest.approx(0.8)
    half = torch.cat([left[:500], right[:500]])
    assert metrics.mode_weight_error(half, mix) == pytest.approx(0.3, abs=1e-6)


def _mmd_closed_form(m1, m2, s, h):
    """MMD^2 between N(m1, s^2 I) and N(m2, s^2 I) in 2D, RBF of width h:
    E k(x, y) = h^2 / (h^2 + v) * exp(-|a - b|^2 / (2 (h^2 + v))), v = sum of the two variances."""
    def ek(a, b):
        v = 2 * s**2
        d2 = sum((ai - bi) ** 2 for ai, bi in zip(a, b))
        return h**2 / (h**2 + v) * math.exp(-d2 / (2 * (h**2 + v)))
    return ek(m1, m1) + ek(m2, m2) - 2 * ek(m1, m2)


def test_mmd_matches_the_closed_form_for_gaussians():
    h, s = 1.0, 0.7
    x = _normal(3000, [0.0, 0.0], s, 3)
    for shift, seed in ((0.0, 4), (0.5, 5), (1.5, 6)):
        y = _normal(3000, [shift, 0.0], s, seed)
        want = _mmd_closed_form([0.0, 0.0], [shift, 0.0], s, h)
        assert metrics.mmd(x, y, bandwidth=h) == pytest.approx(want, abs=0.01)  # 3 standard deviations
    # unbiased: the estimate for equal laws scatters around 0, on both sides
    vals = [metrics.mmd(_normal(300, [0, 0], s, 10 + i), _normal(300, [0, 0], s, 50 + i), bandwidth=h)
            for i in range(20)]
    assert min(vals) < 0 < max(vals) and abs(sum(vals) / 20) < 0.003


def test_mmd_blocks_and_median_bandwidth():
    x, y = _normal(2500, [0, 0], 1.0, 7), _normal(2100, [1, 0], 1.0, 8)
    full = metrics.mmd(x, y, bandwidth=0.8)
    kxx = torch.exp(-torch.cdist(x, x) ** 2 / (2 * 0.8**2))
    kyy = torch.exp(-torch.cdist(y, y) ** 2 / (2 * 0.8**2))
    kxy = torch.exp(-torch.cdist(x, y) ** 2 / (2 * 0.8**2))
    n, m = len(x), len(y)
    direct = (kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.mean()
    assert full == pytest.approx(direct.item(), abs=1e-10)
    assert metrics.median_bandwidth(x, y) > 0 and metrics.mmd(x, y) > 0


def test_sliced_wasserstein_closed_forms():
    """Shift d: every projection is shifted by theta.d, so SW_2 = |d| / sqrt(2) in 2D.
    Scale: N(0, a^2 I) vs N(0, b^2 I) projects to N(0, a^2) vs N(0, b^2), W_2 = |a - b|."""
    g = torch.Generator().manual_seed(9)
    x = _normal(10_000, [0, 0], 1.0, 10)
    y = _normal(10_000, [2.0, 0], 1.0, 11)
    assert metrics.sliced_wasserstein(x, y, n_proj=500, generator=g) == pytest.approx(2 / math.sqrt(2), rel=0.03)
    z = _normal(10_000, [0, 0], 1.5, 12)
    assert metrics.sliced_wasserstein(x, z, n_proj=200, generator=g) == pytest.approx(0.5, rel=0.05)
    assert metrics.sliced_wasserstein(x, x, generator=g) == 0.0
    # different sample sizes go through quantiles
    assert metrics.sliced_wasserstein(x[:3000], y, generator=g) == pytest.approx(2 / math.sqrt(2), rel=0.05)


def test_sliced_wasserstein_is_seeded():
    x, y = _normal(500, [0, 0], 1.0, 13), _normal(500, [1, 1], 1.0, 14)
    a = metrics.sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0))
    b = metrics.sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(0))
    assert a == b


# --- bad input --------------------------------------------------------------------------------
def test_bad_inputs_are_rejected():
    mix, x = toy.lesson_mixture(), torch.zeros(10, 2)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        metrics.mmd(torch.zeros(10), x)
    with pytest.raises(ValueError, match="dimension 3, expected 2"):
        metrics.mmd(x, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="dimension 3, expected 2"):
        metrics.mode_weights(torch.zeros(10, 3), mix)
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.sliced_wasserstein(torch.full((10, 2), float("nan")), x)
    with pytest.raises(TypeError, match="torch.Tensor"):
        metrics.mmd(x.numpy(), x)
    with pytest.raises(ValueError, match="bandwidth must be a positive"):
        metrics.mmd(x, x, bandwidth=0.0)
    with pytest.raises(ValueError, match="n_proj must be a positive int"):
        metrics.sliced_wasserstein(x, x, n_proj=0)
    with pytest.raises(ValueError, match="method must be"):
        metrics.mode_weights(x, mix, method="kmeans")
