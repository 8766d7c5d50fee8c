r"""Classifier-free guidance for the masked diffusion LM, in logit space (lesson 15).

The denoiser gives, at every masked position l, a distribution over characters: x_theta(z_t)^l
without a label and x_theta(z_t, y)^l with the genre y. Bayes' rule, as for images (lesson 08),
but on log-probabilities instead of scores:

    log p(x | y) = log p(x) + log p(y | x) - log p(y)                                    (1)

Tilting by p(y | x)^w and replacing the classifier by the model's own two predictions gives
the guided distribution (renormalised over the characters, never the mask):

    log x_w^l = log x_theta(z_t, null)^l + w (log x_theta(z_t, y)^l - log x_theta(z_t, null)^l) - log Z   (2)

    w = 0  the unconditional model,   w = 1  the conditional model,   w > 1  guided (sharper)

the convention of lesson 08 and of diffedu.guidance. Guidance acts on each position's marginal:
the sampler draws the revealed characters independently from (2), as it draws them from
x_theta without guidance, so guidance changes only the distributions it samples from.

`GuidedDenoiser(model, y, w)` is a drop-in model for every sampler in text.samplers: its
forward(z_t) returns the guided log-probabilities (2), from one batched call that evaluates the
label and the null label together. Judging samples (text.genre has the judge):

    unigram entropy   H = -sum_c f_c log2 f_c over the pooled character frequencies f_c     (3)
    distinct-n        (number of distinct word n-grams) / (number of word n-grams), pooled    (4)

For digits (lesson 08) guidance traded diversity for the label; lesson 15 measures both against w
for text, together with the twin's bits per character of the samples.
"""
import math
from collections import Counter

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffedu import _validate

from .genre import GENRES, genre_id


WHY_W = " (0 = the unconditional model, 1 = conditional); a negative scale would push the text away from the genre"


def guided_log_probs(logits_cond: torch.Tensor, logits_null: torch.Tensor, w: float, mask_id: int):
    """Equation (2) at every position: (..., V) log-probabilities, zero mass on the mask."""
    w = _validate.nonnegative_float("w", w, WHY_W)
    if logits_cond.shape != logits_null.shape:
        raise ValueError(f"logits_cond {tuple(logits_cond.shape)} and logits_null {tuple(logits_null.shape)} "
                         "must have the same shape.")
    keep = torch.ones(logits_cond.shape[-1], dtype=torch.bool, device=logits_cond.device)
    keep[mask_id] = False
    lc, lu = (F.log_softmax(x.float()[..., keep], dim=-1) for x in (logits_cond, logits_null))
    guided = F.log_softmax(lu + w * (lc - lu), dim=-1)
    out = torch.full(logits_cond.shape, -torch.inf, device=logits_cond.device)
    out[..., keep] = guided
    return out


class GuidedDenoiser(nn.Module):
    """A labelled masked diffusion LM guided towards genre y with scale w; forward(z_t) -> log x_w (2)."""

    def __init__(self, model: nn.Module, y, w: float):
        super().__init__()
        if not getattr(model, "num_classes", 0) or getattr(model, "causal", True):
            raise ValueError("GuidedDenoiser needs the labelled masked diffusion LM (shakespeare_mdlm_genre: "
                             "causal=False, num_classes > 0).")
        if model.num_classes != len(GENRES):
            raise ValueError(f"GuidedDenoiser: the model has {model.num_classes} labels, the genres are {GENRES}.")
        self.model, self.y = model, genre_id(y)
        self.w = _validate.nonnegative_float("w", w, WHY_W)
        self.context, self.causal, self.calls = model.context, False, 0

    def forward(self, z_t: torch.Tensor) -> torch.Tensor:
        B = z_t.shape[0]
        self.calls += 1
        # w = 0 and w = 1 need one prediction only; their logits give (2) once the sampler normalises them
        if self.w == 0:  # exactly the unconditional model: one call on the null label
            return self.model(z_t, y=None)
        if self.w == 1:  # exactly the conditional model
            return self.model(z_t, y=self.y)
        y = torch.cat([torch.full((B,), self.y), torch.full((B,), self.model.num_classes)]).to(z_t.device)
        logits_cond, logits_null = self.model(torch.cat([z_t, z_t]), y=y).split(B)
        return guided_log_probs(logits_cond, logits_null, self.w, self.model.vocab_size - 1)


def unigram_entropy(texts) -> float:
    """Equation (3): entropy in bits of the character frequencies pooled over a list of strings."""
    counts = Counter("".join(_texts(texts)))
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def distinct_ngrams(texts, n: int = 2) -> float:
    """Equation (4): distinct word n-grams / all word n-grams, pooled over the strings (1 = no repeats)."""
    _validate.positive_int("n", n)
    grams = [tuple(words[i:i + n]) for t in _texts(texts) for words in [t.split()] for i in range(len(words) - n + 1)]
    if not grams:
        raise ValueError(f"distinct_ngrams: the texts have no word {n}-grams.")
    return len(set(grams)) / len(grams)


def _texts(texts):
    if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError("Expected a non-empty list of strings.")
    return texts
