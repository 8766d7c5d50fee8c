r"""2D Gaussian mixtures: a data distribution with every answer in closed form.

.. math::  p(x) = \sum_k w_k\,\mathcal N(x;\ \mu_k, \Sigma_k)

Because the forward process only scales and adds Gaussian noise, the noised marginal
:math:`p_t(x_t) = \int q(x_t \mid x_0) p(x_0)\,dx_0` is again a mixture:

.. math::  p_t = \sum_k w_k\,\mathcal N\big(\sqrt{\bar\alpha_t}\,\mu_k,\
           \bar\alpha_t\Sigma_k + (1-\bar\alpha_t) I\big)

so we know the exact score at every noise level,

.. math::  \nabla_x \log p(x) = \sum_k r_k(x)\,\Sigma_k^{-1}(\mu_k - x),\qquad
           r_k(x) = \frac{w_k \mathcal N(x;\mu_k,\Sigma_k)}{p(x)}

and the exact optimal noise prediction
:math:`\varepsilon^*(x_t, t) = -\sqrt{1-\bar\alpha_t}\,\nabla\log p_t(x_t)`.
Everything a network learns in Part 1 can be compared with these.
"""
import math

import torch

from . import _validate


class GaussianMixture:
    """A mixture of K Gaussians in D dimensions with exact sampling, density and score."""

    def __init__(self, weights, means, covs):
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        cov = torch.as_tensor(covs, dtype=torch.float64)
        if w.ndim != 1 or mu.ndim != 2 or mu.shape[0] != w.shape[0]:
            raise ValueError(f"need weights (K,) and means (K, D); got {tuple(w.shape)} and {tuple(mu.shape)}")
        K, D = mu.shape
        if cov.shape != (K, D, D):
            raise ValueError(f"covs must have shape (K, D, D) = {(K, D, D)}, got {tuple(cov.shape)}")
        for name, v in (("weights", w), ("means", mu), ("covs", cov)):
            _validate.finite_tensor(name, v, " (a Gaussian mixture needs finite weights, means and covariances)")
        if (w <= 0).any() or abs(w.sum().item() - 1) > 1e-6:
            raise ValueError(f"weights must be positive and sum to 1, got {w.tolist()}")
        if not torch.allclose(cov, cov.transpose(1, 2)):
            raise ValueError("every covariance matrix must be symmetric")
        L, info = torch.linalg.cholesky_ex(cov)
        if (info != 0).any():
            bad = torch.nonzero(info).flatten().tolist()
            raise ValueError(f"covariance matrices {bad} are not positive definite")
        self.weights, self.means, self.covs, self._chol = w, mu, cov, L
        self.K, self.D = K, D

    def __repr__(self):
        return f"GaussianMixture(K={self.K}, D={self.D}, weights={[round(v, 3) for v in self.weights.tolist()]})"

    def _check_x(self, x):
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.D:
            raise ValueError(f"points must have shape (N, {self.D}), got {tuple(x.shape)}")
        return x

    def sample(self, n: int, generator=None, return_labels=False):
        """Exact samples: pick a component k ~ w, then x = mu_k + L_k z."""
        _validate.positive_int("n", n)
        _validate.generator("generator", generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.D, generator=generator, dtype=torch.float64)
        x = self.means[k] + (self._chol[k] @ z.unsqueeze(-1)).squeeze(-1)
        x = x.float()
        return (x, k) if return_labels else x

    def component_log_probs(self, x):
        """log w_k + log N(x; mu_k, Sigma_k), shape (N, K)."""
        x = self._check_x(x).to(torch.float64)
        diff = x[:, None, :] - self.means[None]                            # (N, K, D)
        sol = torch.linalg.solve_triangular(self._chol[None], diff.unsqueeze(-1), upper=False)
        maha = (sol.squeeze(-1) ** 2).sum(-1)                                # (N, K)
        logdet = 2 * torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)
        return torch.log(self.weights) - 0.5 * (maha + logdet + self.D * math.log(2 * math.pi))

    def log_prob(self, x):
        """log p(x), shape (N,)."""
        return torch.logsumexp(self.component_log_probs(x), dim=1).to(torch.as_tensor(x).dtype)

    def responsibilities(self, x):
        """r_k(x) = p(component k | x), shape (N, K): the exact 'classifier' of the mixture."""
        return torch.softmax(self.component_log_probs(x), dim=1)

    def score(self, x):
        """Exact score grad_x log p(x) = sum_k r_k(x) Sigma_k^{-1} (mu_k - x), shape (N, D)."""
        x = self._check_x(x)
        x64 = x.to(torch.float64)
        r = self.responsibilities(x64)                                       # (N, K)
        diff = (self.means[None] - x64[:, None, :]).unsqueeze(-1)          # (N, K, D, 1)
        prec_diff = torch.cholesky_solve(diff, self._chol[None]).squeeze(-1)  # Sigma_k^{-1}(mu_k - x)
        return (r.unsqueeze(-1) * prec_diff).sum(1).to(x.dtype)

    def noised(self, alpha_bar):
        """The exact marginal p_t of x_t = sqrt(ab) x0 + sqrt(1 - ab) eps, for x0 from this mixture."""
        ab = float(alpha_bar)
        if not 0 < ab <= 1:
            raise ValueError(f"alpha_bar must be in (0, 1], got {ab}")
        eye = torch.eye(self.D, dtype=torch.float64)
        return GaussianMixture(self.weights, math.sqrt(ab) * self.means, ab * self.covs + (1 - ab) * eye)

    def eps_star(self, x_t, alpha_bar):
        """The optimal noise prediction E[eps | x_t] = -sqrt(1 - ab) grad log p_t(x_t)."""
        p_t = self.noised(alpha_bar)  # checks 0 < alpha_bar <= 1
        return -math.sqrt(1 - float(alpha_bar)) * p_t.score(x_t)


def ring_mixture(k: int = 8, radius: float = 4.0, std: float = 0.35, weights=None) -> GaussianMixture:
    """k round Gaussians evenly spaced on a circle (the classic '8 Gaussians')."""
    angles = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    covs = (std**2) * torch.eye(2, dtype=torch.float64).repeat(k, 1, 1)
    w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else weights
    return GaussianMixture(w, means, covs)


def two_modes(separation: float = 8.0, std: float = 0.5, weights=(0.8, 0.2)) -> GaussianMixture:
    """Two well-separated round Gaussians at (-separation/2, 0) and (+separation/2, 0)."""
    means = torch.tensor([[-separation / 2, 0.0], [separation / 2, 0.0]], dtype=torch.float64)
    covs = (std**2) * torch.eye(2, dtype=torch.float64).repeat(2, 1, 1)
    return GaussianMixture(weights, means, covs)


def lesson_mixture() -> GaussianMixture:
    """The course's running example: three elongated, unequally weighted components."""
    means = [[-2.0, 1.5], [2.0, 2.0], [0.5, -2.0]]
    covs = [[[0.30, 0.20], [0.20, 0.40]], [[0.25, -0.15], [-0.15, 0.30]], [[0.60, 0.0], [0.0, 0.10]]]
    return GaussianMixture([0.5, 0.3, 0.2], means, covs)
