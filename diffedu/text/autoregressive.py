"""The autoregressive twin: an exact likelihood by the chain rule, and left-to-right decoding.

    -log p(x) = sum_l -log p(x^l | x^{<l}),   input [BOS, x^1 .. x^{L-1}], target x^1 .. x^L     (1)

[MASK] doubles as the BOS (start) symbol, so the twin and the masked diffusion LM score exactly
the same L characters of a window, and their bits per character compare directly (lesson 11).
Decoding keeps a key/value cache: each step feeds one character and samples the next.
"""
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from diffedu import _validate

from .masked import LN2, _batched
from .samplers import masked_prompt, sample_categorical


def ar_inputs(x0: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Shift right by one and put BOS first: the causal model predicts x0 from ar_inputs(x0)."""
    bos = torch.full_like(x0[:, :1], bos_id)
    return torch.cat([bos, x0[:, :-1]], dim=1)


def ar_nll(model, x0: torch.Tensor, bos_id: int) -> torch.Tensor:
    """-log p(x^l | x^{<l}) for every position (B, L), in nats, equation (1); BOS is never a target."""
    logits = model(ar_inputs(x0, bos_id)).float()
    logits = logits.index_fill(-1, torch.tensor([bos_id], device=logits.device), -torch.inf)
    return F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")


def ar_loss(model, x0: torch.Tensor, bos_id: int) -> torch.Tensor:
    """Training loss of the causal twin: nats per character."""
    if not torch.is_tensor(x0) or x0.dtype != torch.long or x0.dim() != 2:
        raise TypeError("ar_loss expects x0 as an int64 tensor (batch, length).")
    return ar_nll(model, x0, bos_id).mean()


@torch.no_grad()
def ar_bits_per_char(model, windows: torch.Tensor, bos_id: int, batch_size: int = 64,
                     progress: bool = True, score=None) -> dict:
    """Exact bits per character of the causal twin on windows (N, L). No Monte Carlo: mc_se = 0.

    score (L,) bool, optional: count only those positions (each still sees only its left context).
    """
    _validate.positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    score = torch.ones(windows.shape[1], dtype=torch.bool) if score is None else score.bool()
    total = 0.0
    for x0 in tqdm(list(_batched(windows, batch_size)), desc="AR NLL", disable=not progress):
        total += ar_nll(model, x0.to(device), bos_id)[:, score.to(device)].double().sum().item()
    model.train(was_training)
    chars = int(windows.shape[0] * score.sum())
    return {"bpc": total / (chars * LN2), "mc_se": 0.0, "chars": chars}


@torch.no_grad()
def ar_generate(model, tok, prompt: str = "", length=None, n_samples: int = 1, temperature: float = 1.0,
                generator=None) -> list:
    """Left-to-right decoding of the causal twin with a key/value cache. Returns a list of str.

    The start symbol is [MASK] (the twin's BOS); each step feeds one character and samples the next.
    """
    if not getattr(model, "causal", False):
        raise ValueError("ar_generate needs the causal (causal=True) model.")
    _validate.generator("generator", generator)
    _validate.nonnegative_float("temperature", temperature)
    z = masked_prompt(tok, prompt, length, model.context, n_samples)
    P, total = (z[0] != tok.mask_id).sum().item(), z.shape[1]
    device = next(model.parameters()).device
    bos = torch.full((n_samples, 1), tok.mask_id, dtype=torch.long)
    seq = torch.cat([bos, z[:, :P]], dim=1).to(device)
    caches = [{} for _ in model.blocks]
    logits = model.decode_step(seq, caches, start=0)[:, -1]
    for i in range(total - P):
        logits = logits.float()
        logits[:, tok.mask_id] = -torch.inf
        x = sample_categorical(torch.log_softmax(logits, -1), generator, temperature)
        seq = torch.cat([seq, x[:, None]], dim=1)
        if i < total - P - 1:
            logits = model.decode_step(x[:, None], caches, start=seq.shape[1] - 1)[:, -1]
    return tok.decode_batch(seq[:, 1:].cpu())
