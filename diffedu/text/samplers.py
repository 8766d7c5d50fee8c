"""Samplers for the masked diffusion LM (the twin's left-to-right decoding is in autoregressive.py).

All diffusion samplers start from z_1 = [prompt, MASK, MASK, ..., MASK] and reveal characters
until none is masked. They differ only in *which* masked positions are revealed at each step:

ancestral (MDLM)   from time t to s < t, every masked position unmasks independently with
                   probability (alpha_s - alpha_t) / (1 - alpha_t) = (t - s) / t and takes a
                   character drawn from x_theta(z_t); this is the exact reverse posterior
                   q(z_s | z_t, x = x_theta) of lesson 09, equation (4).
low-confidence     (LLaDA) draw a character for every masked position, keep the n_k most
remasking          confident ones (highest probability of the drawn character), put the mask
                   back on the rest. n_k = (number masked) / steps per step.
semi-autoregressive the generation is cut into blocks of block_length characters, filled left
blocks             to right, each block with low-confidence remasking (steps / n_blocks steps).

The denoiser has no time input, so if a step reveals nothing its next output would be
identical: ancestral sampling reuses the cached prediction and skips the network call.

Categorical draws use Gumbel-max in float64: with float32 uniforms the largest Gumbel values
are truncated, which lowers the effective temperature of many-step samplers (Zheng et al. 2024).
"""
import torch

from diffedu import _validate

from .masked import subs_log_probs


def sample_categorical(log_probs: torch.Tensor, generator=None, temperature: float = 1.0) -> torch.Tensor:
    """argmax(log_probs / temperature + Gumbel noise), computed in float64. temperature 0: argmax."""
    _validate.nonnegative_float("temperature", temperature, " (0 means: always the most likely character)")
    _validate.generator("generator", generator)
    if temperature == 0:
        return log_probs.argmax(-1)
    u = torch.rand(log_probs.shape, generator=generator, dtype=torch.float64).to(log_probs.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    return (log_probs.double() / temperature + gumbel).argmax(-1)


def _check_steps(steps):
    _validate.positive_int("steps", steps)


def _record(frames, z):
    if frames is not None:
        frames.append(z.detach().cpu().clone())


@torch.no_grad()
def ancestral_sample(model, z: torch.Tensor, mask_id: int, steps: int, generator=None,
                     temperature: float = 1.0, trajectory: bool = False):
    """MDLM ancestral sampling on times 1 = t_0 > t_1 > ... > t_steps = 0. Returns z (or z, frames)."""
    _check_steps(steps)
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    frames = [] if trajectory else None
    _record(frames, z)
    log_x = None
    for k in range(steps):
        t, s = times[k].item(), times[k + 1].item()
        masked = z == mask_id
        if not masked.any():
            break
        if log_x is None:  # no time input: the prediction changes only when z changes
            log_x = subs_log_probs(model(z), z, mask_id)
        p_unmask = (t - s) / t
        reveal = masked & (torch.rand(z.shape, generator=generator, dtype=torch.float64).to(z.device) < p_unmask)
        if reveal.any():
            x = sample_categorical(log_x, generator, temperature)
            z = torch.where(reveal, x, z)
            log_x = None
        _record(frames, z)
    return (z, frames) if trajectory else z


def _transfer_counts(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps): how many characters to reveal at each step, as even as possible (LLaDA)."""
    base = n_masked[:, None] // steps
    extra = (torch.arange(steps, device=n_masked.device)[None, :] < (n_masked % steps)[:, None]).long()
    return base + extra


@torch.no_grad()
def _remask_region(model, z, mask_id, steps, region, generator, temperature, frames):
    """Low-confidence remasking restricted to the positions in region (B, L) bool."""
    counts = _transfer_counts(((z == mask_id) & region).sum(1), steps)
    for k in range(steps):
        masked = (z == mask_id) & region
        log_x = subs_log_probs(model(z), z, mask_id)
        x = sample_categorical(log_x, generator, temperature)
        confidence = log_x.gather(-1, x.unsqueeze(-1)).squeeze(-1).double()
        confidence = torch.where(masked, confidence, torch.full_like(confidence, -torch.inf))
        order = confidence.argsort(dim=1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(z.shape[1], device=z.device).expand_as(order))
        reveal = masked & (rank < counts[:, k:k + 1])
        z = torch.where(reveal, x, z)
        _record(frames, z)
    return z


@torch.no_grad()
def remasking_sample(model, z: torch.Tensor, mask_id: int, steps: int, generator=None,
                     temperature: float = 1.0, block_length=None, trajectory: bool = False):
    """LLaDA low-confidence remasking; with block_length, semi-autoregressive blocks left to right.

    Blocks tile the masked span of each row (all rows must share it, as in prompt continuation
    or infilling); block_length must divide its length and the number of blocks must divide steps.
    """
    _check_steps(steps)
    frames = [] if trajectory else None
    _record(frames, z)
    masked = z == mask_id
    if block_length is None:
        z = _remask_region(model, z, mask_id, steps, masked, generator, temperature, frames)
        return (z, frames) if trajectory else z
    cols = masked.any(0).nonzero().flatten()
    if not (masked == masked[:1]).all() or cols.numel() == 0 or cols[-1] - cols[0] + 1 != cols.numel():
        raise ValueError("Semi-autoregressive sampling needs one contiguous masked span shared by all rows.")
    gen_len = cols.numel()
    if isinstance(block_length, bool) or not isinstance(block_length, int) or block_length < 1:
        raise ValueError(f"block_length must be a positive int, got {block_length!r}.")
    if gen_len % block_length:
        raise ValueError(f"block_length={block_length} does not divide the generation length {gen_len}; "
                         f"choose a divisor of {gen_len}.")
    n_blocks = gen_len // block_length
    if steps % n_blocks:
        raise ValueError(f"steps={steps} must be a multiple of the number of blocks ({n_blocks}) "
                         "so that every block gets the same number of steps.")
    start = cols[0].item()
    for b in range(n_blocks):
        region = torch.zeros_like(masked)
        region[:, start + b * block_length: start + (b + 1) * block_length] = True
        z = _remask_region(model, z, mask_id, steps // n_blocks, region, generator, temperature, frames)
    return (z, frames) if trajectory else z


def masked_prompt(tok, prompt: str, length, context: int, n_samples: int = 1) -> torch.Tensor:
    """(n_samples, P + length) ids: the prompt's characters followed by `length` masks."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}.")
    ids = tok.encode(prompt)  # raises for characters outside the vocabulary
    if ids.numel() >= context:
        raise ValueError(f"The prompt has {ids.numel()} characters but the context is {context}: "
                         "it leaves no room to generate. Shorten the prompt.")
    if length is None:
        length = context - ids.numel()
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int (characters to generate), got {length!r}.")
    if ids.numel() + length > context:
        raise ValueError(f"prompt ({ids.numel()} characters) + length ({length}) exceeds the context of "
                         f"{context} characters; generate at most {context - ids.numel()}.")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}.")
    z = torch.cat([ids, torch.full((length,), tok.mask_id, dtype=torch.long)])
    return z.repeat(n_samples, 1)


METHODS = ("ancestral", "remask", "semi_ar")


def _run(model, z, tok, method, steps, generator, temperature, block_length, trajectory):
    _check_steps(steps)
    _validate.generator("generator", generator)
    _validate.nonnegative_float("temperature", temperature)
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {METHODS}.")
    if getattr(model, "causal", False):
        raise ValueError("Diffusion samplers need the bidirectional (causal=False) model; "
                         "use ar_generate for the causal twin.")
    device = next(model.parameters()).device
    z = z.to(device)
    if method == "ancestral":
        return ancestral_sample(model, z, tok.mask_id, steps, generator, temperature, trajectory)
    if method == "semi_ar" and block_length is None:
        raise ValueError("method='semi_ar' needs block_length (a divisor of the generation length).")
    if method == "remask":
        block_length = None
    return remasking_sample(model, z, tok.mask_id, steps, generator, temperature, block_length, trajectory)


def generate(model, tok, prompt: str = "", length=None, steps: int = 64, method: str = "ancestral",
             n_samples: int = 1, block_length=None, temperature: float = 1.0, generator=None,
             trajectory: bool = False):
    """Continue `prompt` with `length` characters (default: fill the context). Returns a list of str.

    With trajectory=True returns (texts, frames): frames are the (n_samples, L) id tensors after each step.
    """
    z = masked_prompt(tok, prompt, length, model.context, n_samples)
    out = _run(model, z, tok, method, steps, generator, temperature, block_length, trajectory)
    z, frames = out if trajectory else (out, None)
    texts = tok.decode_batch(z.cpu())
    return (texts, frames) if trajectory else texts


def infill(model, tok, text: str, start: int, end: int, steps: int = 32, method: str = "ancestral",
           n_samples: int = 1, block_length=None, temperature: float = 1.0, generator=None,
           trajectory: bool = False):
    """Mask text[start:end] and let the model fill it, using the context on BOTH sides."""
    ids = tok.encode(text)
    if ids.numel() > model.context:
        raise ValueError(f"The passage has {ids.numel()} characters, more than the context of "
                         f"{model.context}.")
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= ids.numel()):
        raise ValueError(f"Need 0 <= start < end <= len(text) = {ids.numel()}, got start={start!r}, end={end!r}.")
    z = ids.clone()
    z[start:end] = tok.mask_id
    z = z.repeat(n_samples, 1)
    out = _run(model, z, tok, method, steps, generator, temperature, block_length, trajectory)
    z, frames = out if trajectory else (out, None)
    texts = tok.decode_batch(z.cpu())
    return (texts, frames) if trajectory else texts


def reveal_order(frames, mask_id: int) -> torch.Tensor:
    """For each position, the step at which it was revealed (0 for positions never masked)."""
    order = torch.zeros_like(frames[0])
    for k in range(1, len(frames)):
        newly = (frames[k - 1] == mask_id) & (frames[k] != mask_id)
        order[newly] = k
    return order
