"""Sample-quality metrics.

2D toy data (lessons 02-04). With a Gaussian mixture we know the truth exactly, so we
can ask two precise questions of a set of samples x_1..x_n:

* Are the modes populated with the right weights?  Each sample is assigned to the
  mode k that most likely produced it (the posterior responsibility
  r_k(x) = w_k N(x; mu_k, Sigma_k) / p(x)), and the averaged responsibilities

      w_hat_k = (1/n) sum_i r_k(x_i)                                            (1)

  are compared with the true weights w_k by the total-variation distance

      TV(w_hat, w) = 1/2 sum_k |w_hat_k - w_k|           (0 = perfect, 1 = disjoint) (2)

* Is the whole distribution right?  Two sample-based distances:

  MMD^2 (Gretton et al. 2012), unbiased, RBF kernel k(a, b) = exp(-|a-b|^2 / (2 h^2)):
      MMD^2 = mean_{i!=j} k(x_i, x_j) + mean_{i!=j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)   (3)

  sliced Wasserstein-2 (Rabin et al. 2011): project on random unit vectors theta and
  compare sorted projections (1D optimal transport is sorting):
      SW_2^2 = E_theta W_2^2(theta^T x, theta^T y)                                (4)
"""
import torch

from . import _validate


def _as_points(name, x, d=None):
    """Validate a (N, D) floating tensor of samples."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}.")
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, D) with N >= 2 samples, got shape {tuple(x.shape)}.")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{name} has points of dimension {x.shape[1]}, expected {d}.")
    if not torch.is_floating_point(x):
        x = x.float()
    return _validate.finite_tensor(name, x)


# ----------------------------------------------------------------------------- modes

def mode_weights(x, mixture, method="responsibility"):
    """Estimated mode weights w_hat (K,) of samples x (N, 2) under `mixture`.

    method="responsibility": eq. (1), the average posterior responsibility (smooth).
    method="nearest": fraction of samples whose nearest mode mean is mu_k (hard counts).
    """
    means = mixture.means
    x = _as_points("x", x, d=means.shape[-1]).to(means.dtype)
    if method == "responsibility":
        return mixture.responsibilities(x).mean(0)
    if method == "nearest":
        k = torch.cdist(x, means).argmin(dim=1)
        return torch.bincount(k, minlength=means.shape[0]).to(x.dtype) / x.shape[0]
    raise ValueError(f"method must be 'responsibility' or 'nearest', got {method!r}.")


def mode_weight_error(x, mixture, method="responsibility"):
    """Total-variation distance (2) between estimated and true mode weights, a float in [0, 1]."""
    w_hat = mode_weights(x, mixture, method)
    w = mixture.weights.to(w_hat.dtype)
    return 0.5 * (w_hat - w).abs().sum().item()


# ----------------------------------------------------------------------------- distances

def median_bandwidth(x, y):
    """Median heuristic: h = median pairwise distance of the pooled samples (at most 1000 of them)."""
    z = torch.cat([x[:500], y[:500]])
    d = torch.pdist(z)
    return d.median().item()


def _kernel_sum(a, b, gamma, block=2048):
    """sum_{i,j} exp(-gamma |a_i - b_j|^2), computed in blocks to keep memory small."""
    return sum(torch.exp(-gamma * torch.cdist(a[i:i + block], b).pow(2)).sum()
               for i in range(0, a.shape[0], block))


def mmd(x, y, bandwidth=None):
    """Unbiased MMD^2 (3) between samples x (N, D) and y (M, D), RBF kernel of width h.

    bandwidth: h > 0, or None for the median heuristic. The unbiased estimate can be
    slightly negative when the two distributions are equal; it is 0 in expectation then.
    """
    x = _as_points("x", x)
    y = _as_points("y", y, d=x.shape[1]).to(x.dtype)
    h = median_bandwidth(x, y) if bandwidth is None else bandwidth
    h = _validate.positive_float("bandwidth", h)
    gamma = 1.0 / (2.0 * h * h)
    n, m = x.shape[0], y.shape[0]
    sxx = (_kernel_sum(x, x, gamma) - n) / (n * (n - 1))  # k(x_i, x_i) = 1 on the diagonal
    syy = (_kernel_sum(y, y, gamma) - m) / (m * (m - 1))
    sxy = _kernel_sum(x, y, gamma) / (n * m)
    return (sxx + syy - 2.0 * sxy).item()


def _quantiles(p, n):
    """Sorted rows of p (P, N), resampled at n evenly spaced quantile levels (N -> n)."""
    p = p.sort(dim=1).values
    if p.shape[1] == n:
        return p
    pos = torch.linspace(0, p.shape[1] - 1, n, dtype=p.dtype, device=p.device)
    lo = pos.floor().long().clamp(max=p.shape[1] - 2)
    w = pos - lo
    return (1 - w) * p[:, lo] + w * p[:, lo + 1]


def sliced_wasserstein(x, y, n_proj=256, generator=None):
    """Sliced Wasserstein-2 distance (4) with n_proj random directions (same units as x).

    Samples of different sizes are compared through their quantile functions.
    """
    x = _as_points("x", x)
    y = _as_points("y", y, d=x.shape[1]).to(x.dtype)
    _validate.positive_int("n_proj", n_proj)
    _validate.generator("generator", generator)
    theta = torch.randn(x.shape[1], n_proj, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.dtype).to(x.device)
    n = max(x.shape[0], y.shape[0])
    px, py = _quantiles((x @ theta).T.contiguous(), n), _quantiles((y @ theta).T.contiguous(), n)
    return (px - py).pow(2).mean().sqrt().item()


# ============================================================================= Fréchet distance
# Images (lessons 06-08). Two sets of MNIST images are compared in the feature space phi of a
# classifier (the penultimate layer of diffedu.images.classifier's clean MNIST judge, 64 numbers
# per image). Fit a Gaussian to each set of features, N(mu_1, C_1) and N(mu_2, C_2), and take the
# Fréchet (= Wasserstein-2) distance between the two Gaussians (Heusel et al. 2017, "FID"):
#
#     FD = |mu_1 - mu_2|^2 + tr(C_1 + C_2 - 2 (C_1^{1/2} C_2 C_1^{1/2})^{1/2})              (5)
#
# FD is biased upwards at finite N, so only compare numbers computed at the same N; the floor
# is the FD between two sets of *real* digits (train vs test) of that N.

def _sqrtm_psd(c):
    """Symmetric square root of a positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance_gaussians(mu1, cov1, mu2, cov2):
    """Eq. (5) between N(mu1, cov1) and N(mu2, cov2), computed in float64."""
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    cov1, cov2 = torch.as_tensor(cov1, dtype=torch.float64), torch.as_tensor(cov2, dtype=torch.float64)
    d = mu1.shape[0]
    if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"need means of shape (D,) and covariances (D, D) with one D, got {tuple(mu1.shape)}, "
                         f"{tuple(cov1.shape)}, {tuple(mu2.shape)}, {tuple(cov2.shape)}.")
    s1 = _sqrtm_psd(cov1)
    cross = torch.linalg.eigvalsh(s1 @ cov2 @ s1).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross).item()


def gaussian_stats(features):
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    f = _as_points("features", features).double()
    return f.mean(0), torch.cov(f.T)


@torch.no_grad()
def mnist_features(x, classifier, batch_size=500):
    """phi(x): a classifier's penultimate features (N, D) of images x (N, 1, 28, 28) in [-1, 1].

    The course's classifier is the clean MNIST judge, ``diffedu.images.classifier.load("mnist_classifier")``.
    """
    _validate.image_batch("images", x, min_batch=2)
    _validate.positive_int("batch_size", batch_size)
    dev = next(classifier.parameters()).device
    return torch.cat([classifier.features(x[i:i + batch_size].float().to(dev)).cpu()
                      for i in range(0, len(x), batch_size)])


def frechet_distance(x, y, classifier):
    """FD (5) between two sets of MNIST images (N, 1, 28, 28) in [-1, 1], in the classifier's features."""
    _validate.image_batch("y", y, min_batch=2)
    mu1, c1 = gaussian_stats(mnist_features(x, classifier))
    mu2, c2 = gaussian_stats(mnist_features(y, classifier))
    return frechet_distance_gaussians(mu1, c1, mu2, c2)
