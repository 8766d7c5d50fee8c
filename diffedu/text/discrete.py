"""Discrete diffusion with transition matrices (D3PM, Austin et al. 2021).

A token is a one-hot row vector x in {0,1}^K. One forward step multiplies by a K x K
row-stochastic matrix Q_t ([Q_t]_{ij} = q(x_t = j | x_{t-1} = i)):

    q(x_t | x_{t-1}) = Cat(x_t; p = x_{t-1} Q_t)                                          (1)
    q(x_t | x_0)     = Cat(x_t; p = x_0 Qbar_t),   Qbar_t = Q_1 Q_2 ... Q_t                (2)

Two choices of Q_t, each with a closed-form product (alpha_bar_t = prod_{s<=t} (1 - beta_s)):

    uniform:    Q_t = (1 - beta_t) I + beta_t 11^T / K     Qbar_t = alpha_bar_t I + (1 - alpha_bar_t) 11^T / K
    absorbing:  Q_t = (1 - beta_t) I + beta_t 1 e_m^T      Qbar_t = alpha_bar_t I + (1 - alpha_bar_t) 1 e_m^T

(e_m is the one-hot of the mask token m). The posterior used by the reverse process is

    q(x_{t-1} | x_t, x_0) = Cat(p ∝ (x_t Q_t^T) ⊙ (x_0 Qbar_{t-1}))                       (3)

For absorbing noise it has two cases only: an unmasked x_t stays as it is, and a masked x_t
    unmasks to x_0   with probability (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t)
    stays masked     with probability (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t).          (4)
"""
import torch


def _check_beta(beta):
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}.")
    return beta


def _check_K(K, mask_id=None):
    if not isinstance(K, int) or K < 2:
        raise ValueError(f"K (number of categories) must be an int >= 2, got {K!r}.")
    if mask_id is not None and not (isinstance(mask_id, int) and 0 <= mask_id < K):
        raise ValueError(f"mask_id must be an int in 0..{K - 1}, got {mask_id!r}.")


def one_hot(ids, K: int) -> torch.Tensor:
    """Rows of the K x K identity picked by ids: float64 one-hot vectors."""
    _check_K(K)
    return torch.nn.functional.one_hot(torch.as_tensor(ids, dtype=torch.long), K).double()


def uniform_Q(beta: float, K: int) -> torch.Tensor:
    """One step of uniform noise: keep with prob 1 - beta, else resample uniformly among K."""
    beta = _check_beta(beta)
    _check_K(K)
    return (1 - beta) * torch.eye(K, dtype=torch.float64) + beta / K * torch.ones(K, K, dtype=torch.float64)


def absorbing_Q(beta: float, K: int, mask_id: int) -> torch.Tensor:
    """One step of absorbing noise: keep with prob 1 - beta, else jump to the mask (and stay there)."""
    beta = _check_beta(beta)
    _check_K(K, mask_id)
    Q = (1 - beta) * torch.eye(K, dtype=torch.float64)
    Q[:, mask_id] += beta
    Q[mask_id] = 0.0
    Q[mask_id, mask_id] = 1.0
    return Q


def uniform_Qbar(alpha_bar: float, K: int) -> torch.Tensor:
    """Closed form of Q_1 ... Q_t for uniform noise, equation (2)."""
    return uniform_Q(1.0 - float(alpha_bar), K)


def absorbing_Qbar(alpha_bar: float, K: int, mask_id: int) -> torch.Tensor:
    """Closed form of Q_1 ... Q_t for absorbing noise, equation (2)."""
    return absorbing_Q(1.0 - float(alpha_bar), K, mask_id)


def linear_alpha_bar(T: int) -> torch.Tensor:
    """alpha_bar_t = 1 - t/T for t = 0..T (index 0 is clean data): beta_t = 1/(T - t + 1).

    The discrete-time version of the log-linear schedule alpha_t = 1 - t of lesson 10.
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}.")
    return 1.0 - torch.arange(T + 1, dtype=torch.float64) / T


def betas_from_alpha_bar(alpha_bar: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} for t = 1..T (returned with beta_0 = 0)."""
    betas = torch.zeros_like(alpha_bar)
    betas[1:] = 1 - alpha_bar[1:] / alpha_bar[:-1].clamp_min(1e-300)
    return betas


def sample_categorical_rows(probs: torch.Tensor, generator=None) -> torch.Tensor:
    """One draw from each row of probs (..., K), in float64."""
    flat = probs.reshape(-1, probs.shape[-1]).double()
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def q_sample(x0_ids, Qbar: torch.Tensor, generator=None) -> torch.Tensor:
    """Draw x_t ~ Cat(x_0 Qbar_t) for every token of x0_ids, equation (2)."""
    x0 = one_hot(x0_ids, Qbar.shape[0])
    return sample_categorical_rows(x0 @ Qbar, generator)


def q_step(x_prev_ids, Q: torch.Tensor, generator=None) -> torch.Tensor:
    """Draw x_t ~ Cat(x_{t-1} Q_t), equation (1)."""
    return q_sample(x_prev_ids, Q, generator)


def posterior(x_t_ids, x0_ids, Q_t: torch.Tensor, Qbar_prev: torch.Tensor) -> torch.Tensor:
    """q(x_{t-1} | x_t, x_0) as probabilities (..., K), equation (3)."""
    K = Q_t.shape[0]
    x_t, x0 = one_hot(x_t_ids, K), one_hot(x0_ids, K)
    unnorm = (x_t @ Q_t.T) * (x0 @ Qbar_prev)
    return unnorm / unnorm.sum(-1, keepdim=True)


def absorbing_posterior_closed_form(alpha_bar_t: float, alpha_bar_prev: float):
    """For a masked x_t: (probability to unmask to x_0, probability to stay masked), equation (4)."""
    a_t, a_prev = float(alpha_bar_t), float(alpha_bar_prev)
    if not 0.0 <= a_t < a_prev <= 1.0:
        raise ValueError(f"Need 0 <= alpha_bar_t < alpha_bar_prev <= 1, got {a_t} and {a_prev}.")
    return (a_prev - a_t) / (1 - a_t), (1 - a_prev) / (1 - a_t)
