"""Uniform-noise discrete diffusion in continuous time (UDLM, Schiff et al. 2024).

Where masking hides a character, uniform noise *replaces* it: with probability 1 - alpha_t a
character is redrawn uniformly from the K characters of the alphabet (it may come back as itself).
There is no [MASK] token, so a noisy sequence looks like text with typos, and the reverse process
may change any character at any step, including one it wrote itself.

Forward process (x a one-hot row over the K characters, alpha_t = 1 - t as in masked.py):

    q(z_t | x) = Cat(z_t; alpha_t x + (1 - alpha_t) 1/K)                                    (1)

From s to t > s the same kernel with alpha_{t|s} = alpha_t / alpha_s. The posterior (lesson 9,
eq. 3, with the uniform Q of discrete.py) is, for z_t = i and every candidate character j,

    q(z_s = j | z_t = i, x) ∝ [alpha_{t|s} 1{j = i} + (1 - alpha_{t|s}) / K] [alpha_s x_j + (1 - alpha_s) / K]   (2)

The model replaces x by x_theta(z_t), a probability vector over the K characters, and so defines
p_theta(z_s | z_t) by the same formula: the ancestral sampler is equation (2) with x_theta.

The bound. Write xbar = K alpha_t x + (1 - alpha_t) 1 (K times the marginal (1)) and xbar_theta
the same with x_theta, and the ratios r_j = xbar_j / xbar_i, r_theta_j = xbar_theta_j / xbar_theta_i
for z_t = i. For a short step (s -> t), eq. (2) puts mass ~ (1 - alpha_{t|s}) r_j / K on each
j != i; the KL between two such near point masses is sum_j [r_j log(r_j / r_theta_j) - r_j + r_theta_j]
times that small factor, and 1 - alpha_{t|s} ~ -alpha'_t dt / alpha_t. Summing the KL terms of T
steps and letting T -> infinity gives the continuous-time negative ELBO (Schiff et al. 2024, eq. 18
in another arrangement; with alpha_0 = 1 and alpha_1 = 0 the reconstruction and prior terms vanish):

    NELBO(x) = E_{t ~ U(0,1)} E_{z_t} [ -alpha'_t / (K alpha_t) * sum_l sum_j ( r_j log(r_j / r_theta_j) - r_j + r_theta_j ) ]   (3)

Each inner term is >= 0 and is 0 when x_theta = x, so (3) is a weighted sum of divergences, and
for alpha_t = 1 - t the weight is 1 / (K (1 - t)). As with masking, bits per character is
NELBO / (L ln 2). The unit tests check (3) against the sum of T discrete KL terms computed with
discrete.py, and check that the exact denoiser of a known distribution gives exactly its entropy.
"""
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffedu import _validate

from .masked import EPS_T, LN2, _batched, alpha, sample_t


def _check_ids(name: str, z: torch.Tensor, K: int) -> torch.Tensor:
    if not torch.is_tensor(z) or z.dtype != torch.long:
        raise TypeError(f"{name} must be an int64 tensor of character ids.")
    if z.numel() and (z.min() < 0 or z.max() >= K):
        raise ValueError(f"{name} holds ids outside the K = {K} characters 0..{K - 1} "
                         "(uniform noise has no mask token).")
    return z


def _check_t(t: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    if torch.isnan(t).any() or (t < lo).any() or (t > hi).any():
        raise ValueError(f"t must lie in [{lo}, {hi}], got values from {t.min().item()} to {t.max().item()}.")
    return t


def forward_uniform(x0: torch.Tensor, t: torch.Tensor, K: int, generator=None) -> torch.Tensor:
    """Draw z_t ~ q(z_t | x0), equation (1): each character is redrawn uniformly with probability 1 - alpha_t.

    x0 (B, L) int64 ids in 0..K-1, t (B,) in [0, 1].
    """
    K = _validate.positive_int("K", K)
    _check_ids("x0", x0, K)
    if x0.dim() != 2 or torch.as_tensor(t).shape != (x0.shape[0],):
        raise ValueError(f"forward_uniform expects x0 (B, L) and t (B,), got {tuple(x0.shape)} and "
                         f"{tuple(torch.as_tensor(t).shape)}.")
    t = _check_t(t).to(x0.device)
    u = torch.rand(x0.shape, generator=generator).to(x0.device)
    fresh = torch.randint(0, K, x0.shape, generator=generator).to(x0.device)
    return torch.where(u < (1.0 - alpha(t))[:, None], fresh, x0)


def x_theta(logits: torch.Tensor, K: int) -> torch.Tensor:
    """The denoiser's distribution over the K characters: softmax of the first K logits (float32).

    The transformer's vocabulary has one more entry, the mask of lesson 10, which uniform noise never uses.
    """
    if logits.shape[-1] < K:
        raise ValueError(f"logits have {logits.shape[-1]} entries, fewer than the K = {K} characters.")
    return F.softmax(logits[..., :K].float(), dim=-1)


def _xbar(probs: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """K alpha_t x + (1 - alpha_t): K times the marginal (1), for a probability vector x (..., K)."""
    K = probs.shape[-1]
    a = a.reshape(a.shape + (1,) * (probs.dim() - a.dim())).to(probs)
    return K * a * probs + (1 - a)


def nelbo_terms(x0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """The integrand of equation (3) for each sequence, summed over positions: nats, shape (B,).

    x0, z_t (B, L) ids; t (B,) in (0, 1); probs (B, L, K) = x_theta(z_t).
    """
    K = probs.shape[-1]
    t = _check_t(t, 0.0, 1.0 - 1e-9).to(probs.device)
    a = alpha(t)
    xbar = _xbar(F.one_hot(x0, K).to(probs), a)                 # (B, L, K)
    xbar_th = _xbar(probs, a)
    i = z_t.unsqueeze(-1)
    r = xbar / xbar.gather(-1, i)                                # r_j = xbar_j / xbar_i
    r_th = xbar_th / xbar_th.gather(-1, i)
    div = torch.special.xlogy(r, r) - r * torch.log(r_th) - r + r_th   # r log(r / r_th) - r + r_th, >= 0
    weight = 1.0 / (K * a)                                       # -alpha'_t / (K alpha_t), alpha_t = 1 - t
    return weight * div.sum((-1, -2))


def nelbo_per_sequence(model, x0: torch.Tensor, K: int, generator=None, eps: float = EPS_T,
                       antithetic: bool = True) -> torch.Tensor:
    """One Monte Carlo draw of equation (3) for each sequence of x0 (B, L): nats, shape (B,).

    t is kept in [eps, 1 - eps]: near t = 1 both xbar are nearly flat and the integrand vanishes.
    """
    t = sample_t(x0.shape[0], generator, eps, antithetic, device=x0.device).clamp(max=1.0 - eps)
    z_t = forward_uniform(x0, t, K, generator)
    return nelbo_terms(x0, z_t, t, x_theta(model(z_t), K))


def uniform_diffusion_loss(model, x0: torch.Tensor, K: int, generator=None) -> torch.Tensor:
    """Training loss: the NELBO estimate (3) in nats per character, averaged over the batch."""
    if not torch.is_tensor(x0) or x0.dtype != torch.long or x0.dim() != 2:
        raise TypeError("uniform_diffusion_loss expects x0 as an int64 tensor (batch, length).")
    return nelbo_per_sequence(model, x0, K, generator).mean() / x0.shape[1]


@torch.no_grad()
def mc_bits_per_char(nelbo, model, windows: torch.Tensor, repeats: int = 4, batch_size: int = 64,
                     progress: bool = True) -> dict:
    """Bits/char of a Monte Carlo bound, nelbo(model, x0) -> nats (B,), with its Monte Carlo error.

    Same protocol as masked.elbo_bits_per_char: each repeat averages a fresh draw over all windows;
    the repeats are independent, so the standard error of their mean is the reported error.
    Returns {"bpc", "mc_se", "repeats": [...], "chars"}.
    """
    if not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats must be an int >= 2 (needed for an error bar), got {repeats!r}.")
    _validate.positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_repeat = []
    bar = tqdm(total=repeats * math.ceil(windows.shape[0] / batch_size), desc="ELBO", disable=not progress)
    for _ in range(repeats):
        total = 0.0
        for x0 in _batched(windows, batch_size):
            total += nelbo(model, x0.to(device)).double().sum().item()
            bar.update()
        per_repeat.append(total / (windows.numel() * LN2))
    bar.close()
    model.train(was_training)
    r = torch.tensor(per_repeat, dtype=torch.float64)
    return {"bpc": r.mean().item(), "mc_se": (r.std() / math.sqrt(repeats)).item(),
            "repeats": per_repeat, "chars": int(windows.numel())}


def elbo_bits_per_char(model, windows: torch.Tensor, K: int, repeats: int = 4, batch_size: int = 64,
                       generator=None, progress: bool = True) -> dict:
    """Bits/char bound (3) of a uniform-noise LM on windows (N, L), with its Monte Carlo error."""
    _validate.generator("generator", generator)
    _check_ids("windows", windows, K)
    return mc_bits_per_char(lambda m, x0: nelbo_per_sequence(m, x0, K, generator), model, windows, repeats,
                            batch_size, progress)


def posterior_probs(z_t: torch.Tensor, probs: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """Equation (2): p(z_s = j | z_t, x) for x given as probabilities (..., K) (one-hot: the true posterior)."""
    t, s = float(t), float(s)
    if not 0.0 <= s < t <= 1.0:
        raise ValueError(f"Need 0 <= s < t <= 1, got s = {s} and t = {t}.")
    K = probs.shape[-1]
    a_t, a_s = alpha(t), alpha(s)
    a_ts = a_t / a_s
    keep = F.one_hot(z_t, K).to(probs)
    unnorm = (a_ts * keep + (1 - a_ts) / K) * (a_s * probs + (1 - a_s) / K)
    return unnorm / unnorm.sum(-1, keepdim=True)


def step(z_t: torch.Tensor, probs: torch.Tensor, t: float, s: float, generator=None) -> torch.Tensor:
    """One ancestral step t -> s: draw z_s from equation (2) with x = x_theta(z_t) (probs (B, L, K))."""
    p = posterior_probs(z_t, probs, t, s)
    flat = torch.multinomial(p.reshape(-1, p.shape[-1]).cpu().double(), 1, generator=generator)
    return flat.view(z_t.shape).to(z_t.device)


@torch.no_grad()
def sample(model, shape, K: int, steps: int, generator=None, progress: bool = True):
    """Ancestral sampling: z_1 uniform random characters, then `steps` steps of eq. (2) down to t = 0.

    Returns (z_0, changed): changed[k] is how many characters step k rewrote, shape (steps,). The last
    step (s = 0) is the posterior with alpha_s = 1, i.e. a draw from x_theta at every position.
    """
    steps = _validate.positive_int("steps", steps)
    B, L = shape
    device = next(model.parameters()).device
    z = torch.randint(0, K, (B, L), generator=generator).to(device)
    times = torch.linspace(1.0, 0.0, steps + 1).tolist()
    changed = torch.zeros(steps, dtype=torch.long)
    for k in tqdm(range(steps), desc="uniform diffusion", disable=not progress):
        probs = x_theta(model(z), K)                                  # x_theta(z_t)
        z_next = step(z, probs, times[k], times[k + 1], generator)   # one step of eq. (2)
        changed[k] = (z_next != z).sum()
        z = z_next
    return z, changed


@torch.no_grad()
def self_correct(model, z: torch.Tensor, K: int, steps: int, progress: bool = False):
    """Greedy self-correction of finished text z (B, L) by a model that has seen uniform noise (UDLM, GIDD).

    The model reads z as a nearly clean sequence and gives x_theta(z). In each of `steps` passes, every
    sequence replaces the one character whose replacement the model prefers most,

        l* = argmax_l [ max_j x_theta(z)^l_j - x_theta(z)^l_{z^l} ],     z^{l*} <- argmax_j x_theta(z)^{l*}_j,

    and only if that gain is positive. A masked model cannot do this: it never learned to doubt a
    character it can see. Returns (z, changed): changed[k] = characters replaced in pass k, shape (steps,).
    """
    steps = _validate.positive_int("steps", steps)
    z = _check_ids("z", z, K).clone()
    rows = torch.arange(z.shape[0], device=z.device)
    changed = torch.zeros(steps, dtype=torch.long)
    for k in tqdm(range(steps), desc="self-correction", disable=not progress):
        probs = x_theta(model(z), K)
        best_p, best = probs.max(-1)
        gain = best_p - probs.gather(-1, z[..., None])[..., 0]           # 0 where z is already the argmax
        g, pos = gain.max(-1)
        fix = g > 0
        z[rows[fix], pos[fix]] = best[rows[fix], pos[fix]]
        changed[k] = fix.sum()
    return z, changed
