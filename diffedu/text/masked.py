"""Masked (absorbing) diffusion in continuous time: schedule, forward masking, loss, ELBO (MDLM).

Schedule. alpha_t is the probability that a character is still visible at time t in [0, 1].
We use the log-linear schedule (its log-SNR-like sigma(t) = -log(1 - t) is linear in log(1 - t)):

    alpha_t = 1 - t          alpha_0 = 1 (clean text),   alpha_1 = 0 (all masks)          (1)

Forward process. Each character is masked independently:

    q(z_t | x) = prod_l [ alpha_t * 1{z_t^l = x^l} + (1 - alpha_t) * 1{z_t^l = m} ]          (2)

Denoiser ("SUBS" parameterization). The network outputs x_theta(z_t), a distribution over
characters at each position, with two rules built in:
    zero probability on the mask token  (a clean character is never [MASK]);
    carry-over: an unmasked position copies its character (it is already right).

Loss. The continuous-time negative ELBO (MDLM, Sahoo et al. 2024, eq. 10) is a weighted
cross-entropy on the masked positions only:

    NELBO(x) = E_{t ~ U(0,1)} E_{z_t} [ -alpha'_t / (1 - alpha_t) * sum_{l: z_t^l = m} -log x_theta(z_t)^l[x^l] ]
             = E_t E_{z_t} [ (1/t) * sum_{masked l} -log x_theta(z_t)^l[x^l] ]             (3)

t is drawn "antithetically" as in MDLM: one random offset u, then t_i = (u + i/B) mod 1 for the B
sequences of a batch, so every batch covers (0, 1) evenly. t is kept in [eps, 1] (eps = 1e-3):
the weight 1/t would give the estimator infinite variance near t = 0; the dropped sliver is
about eps of the integral (a 0.1% effect, below the Monte Carlo error we report).

Bits per character = NELBO / (L ln 2) for windows of L characters; it upper-bounds the model's
exact -log2 p(x) / L. The autoregressive twin's exact value is in `autoregressive.py`.
"""
import itertools
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffedu import _validate

EPS_T = 1e-3
LN2 = math.log(2.0)


def alpha(t):
    """Log-linear schedule, equation (1): probability that a character is still unmasked."""
    return 1.0 - t


def loss_weight(t):
    """-alpha'_t / (1 - alpha_t) = 1/t for alpha_t = 1 - t, equation (3)."""
    return 1.0 / t


def sample_t(batch_size: int, generator=None, eps: float = EPS_T, antithetic: bool = True, device=None):
    """Times t in [eps, 1] for a batch; antithetic: evenly spaced with one shared random offset."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if antithetic:
        u = (torch.rand(1, generator=generator) + torch.arange(batch_size) / batch_size) % 1.0
    else:
        u = torch.rand(batch_size, generator=generator)
    return (eps + (1.0 - eps) * u).to(device)


def forward_mask(x0: torch.Tensor, t: torch.Tensor, mask_id: int, generator=None, maskable=None,
                 hidden=None) -> torch.Tensor:
    """Draw z_t ~ q(z_t | x0), equation (2): each character becomes mask_id with probability 1 - alpha_t.

    maskable (L,) bool, optional: only these positions are ever masked (the rest is given context).
    hidden (L,) bool, optional: these positions are always masked (context the model does not get).
    """
    if x0.dim() != 2 or t.shape != (x0.shape[0],):
        raise ValueError(f"forward_mask expects x0 (B, L) and t (B,), got {tuple(x0.shape)} and {tuple(t.shape)}.")
    u = torch.rand(x0.shape, generator=generator).to(x0.device)
    masked = u < (1.0 - alpha(t.to(x0.device)))[:, None]
    if maskable is not None:
        masked &= maskable.to(x0.device)
    if hidden is not None:
        masked |= hidden.to(x0.device)
    return torch.where(masked, torch.full_like(x0, mask_id), x0)


def subs_log_probs(logits: torch.Tensor, z_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """log x_theta(z_t): log-softmax with zero mass on [MASK] and carry-over of unmasked characters."""
    logits = logits.float().clone()
    logits[..., mask_id] = -torch.inf
    logp = F.log_softmax(logits, dim=-1)
    visible = (z_t != mask_id).unsqueeze(-1)
    carry = torch.full_like(logp, -torch.inf).scatter_(-1, z_t.unsqueeze(-1), 0.0)
    return torch.where(visible, carry, logp)


def masked_nll(model, x0: torch.Tensor, z_t: torch.Tensor, mask_id: int, score=None) -> torch.Tensor:
    """sum over masked positions of -log x_theta(z_t)^l[x0^l], per sequence (nats), shape (B,).

    Only the masked positions are scored: a visible position carries its character over, so its
    term is exactly 0 (the SUBS rule), and we skip it instead of computing a zero.
    score (L,) bool, optional: sum only over these positions.
    """
    where = z_t == mask_id
    if score is not None:
        where = where & score.to(z_t.device)
    logits = model(z_t)[where].float()            # (N, V): the N masked positions of the batch
    logits[:, mask_id] = -torch.inf               # a clean character is never [MASK]
    nll = F.cross_entropy(logits, x0[where], reduction="none")
    rows = where.nonzero()[:, 0]                  # which sequence each masked position belongs to
    return torch.zeros(x0.shape[0], dtype=nll.dtype, device=nll.device).index_add_(0, rows, nll)


def nelbo_per_sequence(model, x0: torch.Tensor, mask_id: int, generator=None, eps: float = EPS_T,
                       antithetic: bool = True, maskable=None, hidden=None) -> torch.Tensor:
    """One Monte Carlo draw of equation (3) for each sequence of x0 (B, L): nats, shape (B,).

    With maskable, a bound on -log p(x[maskable] | x[visible]) where the visible context is every
    other position except the `hidden` ones (always masked: the model never sees them).
    """
    t = sample_t(x0.shape[0], generator, eps, antithetic, device=x0.device)
    z_t = forward_mask(x0, t, mask_id, generator, maskable, hidden)
    return loss_weight(t) * masked_nll(model, x0, z_t, mask_id, score=maskable)


def masked_diffusion_loss(model, x0: torch.Tensor, mask_id: int, generator=None,
                          eps: float = EPS_T, antithetic: bool = True) -> torch.Tensor:
    """Training loss: the NELBO estimate in nats per character, averaged over the batch."""
    if not torch.is_tensor(x0) or x0.dtype != torch.long or x0.dim() != 2:
        raise TypeError("masked_diffusion_loss expects x0 as an int64 tensor (batch, length).")
    if (x0 == mask_id).any():
        raise ValueError("Clean text x0 must not contain the mask token.")
    return nelbo_per_sequence(model, x0, mask_id, generator, eps, antithetic).mean() / x0.shape[1]


def _batched(windows, batch_size):
    for i in range(0, windows.shape[0], batch_size):
        yield windows[i:i + batch_size]


@torch.no_grad()
def elbo_bits_per_char(model, windows: torch.Tensor, mask_id: int, repeats: int = 4, batch_size: int = 64,
                       generator=None, progress: bool = True, maskable=None, hidden=None, y=None) -> dict:
    """Bits/char bound of a masked diffusion LM on windows (N, L), with its Monte Carlo error.

    Each repeat draws a fresh t and mask for every window and averages equation (3) over all
    windows; the repeats are independent, so the standard error of their mean is the Monte
    Carlo error of the reported number (the windows themselves are fixed).
    maskable (L,) bool: score only those positions, given all the others (e.g. a span to infill);
    hidden (L,) bool: positions kept masked throughout (e.g. the right side, to condition on the left only).
    y (N,) int64: the label of each window, for a labelled model (lesson 15); None: no label.
    Returns {"bpc", "mc_se", "repeats": [...], "chars"}.
    """
    if not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats must be an int >= 2 (needed for an error bar), got {repeats!r}.")
    _validate.positive_int("batch_size", batch_size)
    _validate.generator("generator", generator)
    if y is not None and (not torch.is_tensor(y) or y.shape != windows.shape[:1]):
        raise ValueError(f"y must hold one label per window, shape ({windows.shape[0]},).")
    if hidden is not None and (maskable is None or (hidden & maskable).any()):
        raise ValueError("hidden positions need a separate maskable span to score (and must not overlap it).")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    L = windows.shape[1] if maskable is None else int(maskable.sum())
    per_repeat = []
    bar = tqdm(total=repeats * math.ceil(windows.shape[0] / batch_size), desc="ELBO", disable=not progress)
    for _ in range(repeats):
        total = 0.0
        labels = _batched(y, batch_size) if y is not None else itertools.repeat(None)
        for x0, yb in zip(_batched(windows, batch_size), labels):
            net = model if yb is None else (lambda z, yb=yb.to(device): model(z, y=yb))
            nelbo = nelbo_per_sequence(net, x0.to(device), mask_id, generator, maskable=maskable, hidden=hidden)
            total += nelbo.double().sum().item()
            bar.update()
        per_repeat.append(total / (windows.shape[0] * L * LN2))
    bar.close()
    model.train(was_training)
    r = torch.tensor(per_repeat, dtype=torch.float64)
    return {"bpc": r.mean().item(), "mc_se": (r.std() / math.sqrt(repeats)).item(),
            "repeats": per_repeat, "chars": int(windows.shape[0] * L)}


@torch.no_grad()
def one_char_bits(model, windows: torch.Tensor, mask_id: int, position: int, hidden=None) -> float:
    """-log2 x_theta(z)[x^l] averaged over windows, with only position l masked (plus `hidden` ones).

    With a single maskable position, equation (3) has one possible z_t, so the bound is exact:
    this is the model's conditional p(x^l | visible characters), no Monte Carlo needed.
    """
    if not 0 <= position < windows.shape[1]:
        raise ValueError(f"position must be in 0..{windows.shape[1] - 1}, got {position}.")
    device = next(model.parameters()).device
    x0 = windows.to(device)
    z = x0.clone()
    z[:, position] = mask_id
    if hidden is not None:
        if hidden[position]:
            raise ValueError("the scored position cannot also be hidden.")
        z[:, hidden.to(device)] = mask_id
    logp = subs_log_probs(model(z), z, mask_id)[:, position]
    return (-logp.gather(-1, x0[:, position, None]).mean() / LN2).item()
