"""Masking and uniform noise in one process: interpolating discrete diffusion (after GIDD, von Rütte et al. 2025).

The vocabulary is the K characters plus the mask m (id K): vectors of length K + 1. A noisy
character is still itself with probability alpha_t = 1 - t; otherwise it is noise, drawn from a
mixing distribution pi_t that puts a share u_t on a uniformly random character and 1 - u_t on the mask:

    q_t(z | x) = alpha_t x + (1 - alpha_t) pi_t,    pi_t = (1 - u_t) e_m + u_t 1_K / K,    u_t = p_u (1 - t)   (1)

One mixing parameter p_u in [0, 1]: p_u = 0 is the masked diffusion of lesson 10; p_u > 0 makes
early noise (small t) look like typos and late noise like masks; at t = 1 every character is masked,
so sampling still starts from an all-mask sequence. (GIDD's own mixing peaks in the middle of
[0, 1]; this linear one keeps every rate below non-negative for any p_u, see eq. 2.)

The forward process as a Markov chain. From (1), over a short time dt, a character keeps its value
or jumps to a state j drawn independently of where it is, at the rate (for alpha_t = 1 - t)

    r_t(j) = d/dt[(1 - alpha_t) pi_t(j)] - (alpha'_t / alpha_t) (1 - alpha_t) pi_t(j)
           = p_u (1 - t) / K  for a character j,      1 / (1 - t) - p_u (1 - t)  for the mask.        (2)

Both are >= 0 for p_u in [0, 1]; they sum to -alpha'_t / alpha_t = 1 / (1 - t), the rate at which
the character leaves its clean value.

The bound. Reversing a jump chain: the rate from i back to j, given x, is r_t(i) q_t(j | x) / q_t(i | x);
the model replaces x by x_theta(z_t) (a distribution over the K characters), so q_t(. | x_theta) is
(1) with x_theta in place of x. The negative ELBO of a jump process is the time integral of
sum_{j != i} [Rhat_theta - Rhat + Rhat log(Rhat / Rhat_theta)] (Campbell et al. 2022); with
rho_j = q_t(j | x) / q_t(i | x) and rho_theta_j the same with x_theta, at z_t = i:

    NELBO(x) = E_{t ~ U(0,1)} E_{z_t} [ sum_l r_t(i) sum_{j != i} ( rho_theta_j - rho_j + rho_j log(rho_j / rho_theta_j) ) ]   (3)

Special cases, checked in the tests: p_u = 0 gives MDLM's (1/t) x cross-entropy on the masked
positions (visible characters have r_t(i) = 0: nothing ever jumps *to* them); with pi_t uniform
the same formula is eq. (3) of uniform.py. The reverse step t -> s (s < t) is Bayes' rule with the
transition of (1) from s to t, q(z_t = i | z_s = j) = (alpha_t / alpha_s) 1{i = j} + [(1 - alpha_t) pi_t
- (alpha_t / alpha_s)(1 - alpha_s) pi_s]_i, and x_theta in place of x (eq. 4 in `posterior_probs`).
"""

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffedu import _validate

from .masked import EPS_T, sample_t
from .uniform import _check_t, mc_bits_per_char, x_theta


def check_p_u(p_u) -> float:
    """The mixing parameter: the share of uniform noise at t -> 0, in [0, 1]."""
    if isinstance(p_u, bool) or not isinstance(p_u, (int, float)) or not 0.0 <= float(p_u) <= 1.0:
        raise ValueError(f"the mixing parameter p_u must be a number in [0, 1] (0: masking only), got {p_u!r}.")
    return float(p_u)


def _clean_ids(name: str, x: torch.Tensor, K: int) -> torch.Tensor:
    """Clean text: int64 ids of the K characters (the mask, id K, is noise, never data)."""
    if not torch.is_tensor(x) or x.dtype != torch.long:
        raise TypeError(f"{name} must be an int64 tensor of character ids.")
    if x.numel() and (x.min() < 0 or x.max() >= K):
        raise ValueError(f"{name} holds ids outside the K = {K} characters 0..{K - 1} (clean text has no mask).")
    return x


def noise(t: torch.Tensor, p_u: float, K: int) -> torch.Tensor:
    """(1 - alpha_t) pi_t of eq. (1) as vectors over the K + 1 states, shape t.shape + (K + 1,)."""
    t = torch.as_tensor(t, dtype=torch.float64)[..., None]
    u = p_u * (1 - t)
    return torch.cat([(t * u / K).expand(*t.shape[:-1], K), t * (1 - u)], -1)


def marginal(probs: torch.Tensor, t: torch.Tensor, p_u: float) -> torch.Tensor:
    """q_t(. | x) of eq. (1) for x given as probabilities over the K characters (..., K) -> (..., K + 1)."""
    K = probs.shape[-1]
    t = torch.as_tensor(t, dtype=torch.float64).to(probs.device)
    t = t.reshape(t.shape + (1,) * (probs.dim() - 1 - t.dim()))
    clean = torch.cat([probs, torch.zeros_like(probs[..., :1])], -1)
    return (1 - t[..., None]).to(probs) * clean + noise(t, p_u, K).to(probs)


def jump_rates(t, p_u: float, K: int) -> torch.Tensor:
    """r_t(j) of eq. (2), shape t.shape + (K + 1,): the rate of jumping to character j, or to the mask."""
    t = torch.as_tensor(t, dtype=torch.float64)[..., None]
    chars = (p_u * (1 - t) / K).expand(*t.shape[:-1], K)
    return torch.cat([chars, 1 / (1 - t) - p_u * (1 - t)], -1)


def forward_noise(x0: torch.Tensor, t: torch.Tensor, p_u: float, K: int, generator=None) -> torch.Tensor:
    """Draw z_t ~ q_t(. | x0), eq. (1): kept with probability 1 - t, else a uniform character (share u_t) or the mask."""
    p_u, K = check_p_u(p_u), _validate.positive_int("K", K)
    _clean_ids("x0", x0, K)
    if x0.dim() != 2 or torch.as_tensor(t).shape != (x0.shape[0],):
        raise ValueError(f"forward_noise expects x0 (B, L) and t (B,), got {tuple(x0.shape)} and "
                         f"{tuple(torch.as_tensor(t).shape)}.")
    t = _check_t(t).to(x0.device)[:, None]
    u = torch.rand(x0.shape, generator=generator).to(x0.device)
    fresh = torch.randint(0, K, x0.shape, generator=generator).to(x0.device)
    v = torch.rand(x0.shape, generator=generator).to(x0.device)
    noisy = u < t
    z = torch.where(noisy & (v < p_u * (1 - t)), fresh, x0)
    return torch.where(noisy & (v >= p_u * (1 - t)), torch.full_like(x0, K), z)


def nelbo_terms(x0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, probs: torch.Tensor, p_u: float) -> torch.Tensor:
    """The integrand of eq. (3) for each sequence, summed over positions: nats, shape (B,).

    x0 (B, L) character ids, z_t (B, L) ids including the mask K, t (B,) in (0, 1), probs (B, L, K) = x_theta(z_t).
    """
    K = probs.shape[-1]
    t = _check_t(t, 0.0, 1.0 - 1e-9).to(probs.device)
    q = marginal(F.one_hot(x0, K).to(probs), t, p_u)                    # (B, L, K + 1)
    q_th = marginal(probs, t, p_u)
    i = z_t.unsqueeze(-1)
    rho, rho_th = q / q.gather(-1, i), q_th / q_th.gather(-1, i)
    div = rho_th - rho + torch.special.xlogy(rho, rho) - rho * torch.log(rho_th)   # j = i gives 0
    rate = jump_rates(t, p_u, K).to(probs)[:, None, :].expand_as(q).gather(-1, i).squeeze(-1)   # r_t(z_t)
    return (rate * div.sum(-1)).sum(-1)


def nelbo_per_sequence(model, x0: torch.Tensor, p_u: float, K: int, generator=None, eps: float = EPS_T) -> torch.Tensor:
    """One Monte Carlo draw of eq. (3) for each sequence of x0 (B, L): nats, shape (B,)."""
    t = sample_t(x0.shape[0], generator, eps, device=x0.device).clamp(max=1.0 - eps)
    z_t = forward_noise(x0, t, p_u, K, generator)
    return nelbo_terms(x0, z_t, t, x_theta(model(z_t), K), p_u)


def elbo_bits_per_char(model, windows: torch.Tensor, p_u: float, K: int, repeats: int = 4, batch_size: int = 64,
                       generator=None, progress: bool = True) -> dict:
    """Bits/char bound (3) on windows (N, L) with its Monte Carlo error (protocol of masked.elbo_bits_per_char)."""
    p_u = check_p_u(p_u)
    _validate.generator("generator", generator)
    _clean_ids("windows", windows, K)
    return mc_bits_per_char(lambda m, x0: nelbo_per_sequence(m, x0, p_u, K, generator), model, windows, repeats,
                            batch_size, progress)


def posterior_probs(z_t: torch.Tensor, probs: torch.Tensor, t: float, s: float, p_u: float) -> torch.Tensor:
    """p(z_s = j | z_t, x) over the K + 1 states for x given as probabilities (..., K) (eq. 4):

        q(z_s = j | z_t = i, x) ∝ q(z_t = i | z_s = j) q_s(j | x),
        q(z_t = i | z_s = j) = (alpha_t / alpha_s) 1{i = j} + [(1 - alpha_t) pi_t - (alpha_t / alpha_s)(1 - alpha_s) pi_s]_i
    """
    t, s, p_u = float(t), float(s), check_p_u(p_u)
    if not 0.0 <= s < t <= 1.0:
        raise ValueError(f"Need 0 <= s < t <= 1, got s = {s} and t = {t}.")
    K = probs.shape[-1]
    a_ts = (1 - t) / (1 - s)
    arrive = (noise(t, p_u, K) - a_ts * noise(s, p_u, K)).to(probs)            # jumps that land on i, from any j
    like = a_ts * F.one_hot(z_t, K + 1).to(probs) + arrive.gather(-1, z_t.reshape(-1)).reshape(z_t.shape)[..., None]
    unnorm = like * marginal(probs, torch.tensor(s), p_u)
    return unnorm / unnorm.sum(-1, keepdim=True)


@torch.no_grad()
def sample(model, shape, p_u: float, K: int, steps: int, generator=None, progress: bool = True):
    """Ancestral sampling from all masks at t = 1 down to t = 0 with eq. (4) and x_theta = model's softmax.

    Returns (z_0, rewritten): rewritten[k] counts the characters (not masks) that step k replaced by
    another character, the self-correction that uniform noise allows and masking does not.
    """
    steps, p_u = _validate.positive_int("steps", steps), check_p_u(p_u)
    device = next(model.parameters()).device
    z = torch.full(shape, K, dtype=torch.long, device=device)
    times = torch.linspace(1.0, 0.0, steps + 1).tolist()
    rewritten = torch.zeros(steps, dtype=torch.long)
    for k in tqdm(range(steps), desc="interpolating diffusion", disable=not progress):
        probs = x_theta(model(z), K)                                       # x_theta(z_t)
        p = posterior_probs(z, probs, times[k], times[k + 1], p_u)        # eq. (4)
        z_next = torch.multinomial(p.reshape(-1, K + 1).cpu().double(), 1, generator=generator).view(shape).to(device)
        rewritten[k] = ((z < K) & (z_next != z)).sum()
        z = z_next
    return z, rewritten
