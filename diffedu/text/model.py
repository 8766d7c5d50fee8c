"""One small transformer for characters: bidirectional (masked diffusion) or causal (its twin).

The two language models of Part 3 are the *same* network; only one flag differs:

    causal=False   every position attends to every position   -> masked diffusion LM
    causal=True    position i attends to positions <= i         -> autoregressive LM

Architecture (nanoGPT-like, pre-norm):

    h_0 = E[x]                                   token embedding, no position embedding
    h   = h + Attn(LN(h))                        rotary position embedding (RoPE) inside Attn
    h   = h + MLP(LN(h))                         GELU, 4x width
    logits = LN(h) E^T                           output head tied to the embedding

There is no time input. For absorbing (masking) diffusion the noise level is visible in the
input itself: the fraction of mask tokens tells the network how noisy x_t is, and the best
prediction of a masked character given the visible ones does not depend on t at all
(lesson 10 shows this from the posterior).

RoPE rotates each query/key pair of channels by an angle proportional to its position, so
attention scores depend on relative offsets only:

    q_m = R(m theta) q,  k_n = R(n theta) k   =>   q_m . k_n = q . R((n - m) theta) k

A rotation of the pair (x1, x2) by an angle a is the complex product (x1 + i x2) e^{ia}, which
is how `apply_rope` computes it (one complex multiply instead of four real ones and a stack).

`shift=True` (for a diffusion LM adapted from the twin, Gong et al. 2024) keeps the twin's
next-character head: the input is [BOS, z_1 .. z_L] and the prediction for position l is read
at position l - 1, exactly where the twin predicted character l. BOS is the last id ([MASK]).
An optional `attn_mask` (L, L) bool (True: may attend) lets training anneal the attention from
causal to full.

`bias=False` drops the biases of the MLP and of the LayerNorms (as nanoGPT can, and as most
recent LMs do): slightly fewer parameters and a little faster, with no loss in quality.

`num_classes=K` (lesson 15) adds a label y in 0..K-1, or K for "no label" (the null class of
classifier-free guidance), as one learned vector added to every input embedding:

    h_0 = E[x] + C[y]

C starts at zero, so a labelled model warm-started from an unlabelled one begins as exactly that
model, and training with label dropout teaches it both p(x | y) and p(x).

For fast autoregressive decoding the causal model can keep a key/value cache (`decode_step`).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffedu.checkpoints import parameter_count


def rope_tables(context: int, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """e^{i m theta_j} as a complex tensor (context, head_dim // 2), theta_j = base^(-2j / head_dim)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(context, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x, rot):
    """Rotate channel pairs (x[..., 2j], x[..., 2j+1]) by the angles of their positions.

    x (B, L, ..., D) with the positions on dim 1 (e.g. queries and keys together, (B, L, 2, H, D));
    rot (L, D/2) from rope_tables.
    """
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    rot = rot.view(1, rot.shape[0], *([1] * (x.dim() - 3)), rot.shape[1])
    return torch.view_as_real(pairs * rot).flatten(-2).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, causal: bool, dropout: float):
        super().__init__()
        self.n_heads, self.causal, self.dropout = n_heads, causal, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, rot, cache=None, attn_mask=None):
        B, L, C = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.n_heads, C // self.n_heads)
        qk = apply_rope(qkv[:, :, :2], rot)  # queries and keys rotated in one multiply (8% faster training)
        q, k = qk.permute(2, 0, 3, 1, 4)     # (B, H, L, D) each
        v = qkv[:, :, 2].transpose(1, 2)
        causal = self.causal
        if cache is not None:  # decoding: append this step's keys/values to the cache
            if "k" in cache:
                if L > 1:
                    raise ValueError("decode_step: after the prompt, feed one token at a time.")
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                causal = False  # one new query attends to every cached key
            cache["k"], cache["v"] = k, v
        p = self.dropout if self.training else 0.0
        if attn_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal and L > 1, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, L, C))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, causal: bool, dropout: float, bias: bool = True):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = SelfAttention(d_model, n_heads, causal, dropout)
        self.ln2 = nn.LayerNorm(d_model, bias=bias)
        mlp = [nn.Linear(d_model, 4 * d_model, bias=bias), nn.GELU(), nn.Linear(4 * d_model, d_model, bias=bias)]
        self.mlp = nn.Sequential(*mlp, *([nn.Dropout(dropout)] if dropout > 0 else []))

    def forward(self, x, rot, cache=None, attn_mask=None):
        x = x + self.attn(self.ln1(x), rot, cache, attn_mask)
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Character transformer. forward(idx (B, L) int64) -> logits (B, L, vocab_size).

    causal=False gives the masked-diffusion denoiser, causal=True its autoregressive twin;
    every other hyper-parameter (and so the parameter count) is shared.
    """

    def __init__(self, vocab_size: int, context: int, d_model: int = 128, n_layers: int = 4,
                 n_heads: int = 4, causal: bool = False, dropout: float = 0.0, bias: bool = True,
                 shift: bool = False, num_classes: int = 0):
        super().__init__()
        for name, v in dict(vocab_size=vocab_size, context=context, d_model=d_model,
                            n_layers=n_layers, n_heads=n_heads).items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Transformer: {name} must be a positive int, got {v!r}.")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"Transformer: num_classes must be an int >= 0 (0: no labels), got {num_classes!r}.")
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"Transformer: d_model={d_model} must split into n_heads={n_heads} heads "
                             "of even width (RoPE rotates pairs of channels).")
        if shift and causal:
            raise ValueError("Transformer: shift=True is for a bidirectional model adapted from a causal one; "
                             "a causal model is shifted already (it reads [BOS, x_1 .. x_{L-1}]).")
        self.vocab_size, self.context, self.causal, self.shift = vocab_size, context, bool(causal), bool(shift)
        self.num_classes = num_classes
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, self.causal, dropout, bias) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
        self.register_buffer("rope", rope_tables(context + self.shift, d_model // n_heads), persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layers))
        if num_classes:  # labels 0..K-1 and the null label K; zero: the label changes nothing at first
            self.label_embed = nn.Embedding(num_classes + 1, d_model)
            nn.init.zeros_(self.label_embed.weight)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_parameters(self) -> int:
        return parameter_count(self)

    def _check(self, idx, start=0):
        if not torch.is_tensor(idx) or idx.dtype != torch.long or idx.dim() != 2:
            raise TypeError("Transformer expects token ids as an int64 tensor of shape (batch, length).")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.vocab_size):
            raise ValueError(f"token ids must be in 0..{self.vocab_size - 1} (the vocabulary), got ids from "
                             f"{int(idx.min())} to {int(idx.max())}; encode text with the model's tokenizer.")
        if start + idx.shape[1] > self.context:
            raise ValueError(f"Sequence of length {start + idx.shape[1]} is longer than the model's "
                             f"context of {self.context} characters.")

    def labels(self, y, batch: int, device) -> torch.Tensor:
        """y as (batch,) int64: None is the null label (num_classes); an int is repeated."""
        if not self.num_classes:
            if y is not None:
                raise ValueError("This model was trained without labels (num_classes=0); call it without y.")
            return None
        K = self.num_classes
        if y is None:
            return torch.full((batch,), K, dtype=torch.long, device=device)
        if isinstance(y, int) and not isinstance(y, bool):
            y = torch.full((batch,), y, dtype=torch.long, device=device)
        if not torch.is_tensor(y) or y.dtype != torch.long or y.shape != (batch,):
            raise TypeError(f"y must be None, an int or an int64 tensor of shape ({batch},), got {y!r}.")
        if int(y.min()) < 0 or int(y.max()) > K:
            raise ValueError(f"labels must be in 0..{K - 1} (or {K}, no label), got {y.tolist()}.")
        return y.to(device)

    def forward(self, idx, attn_mask=None, y=None):
        """logits (B, L, V) for idx (B, L); attn_mask (L', L') bool with L' = L (+1 with shift);
        y: the label(s) of a model with num_classes > 0 (None: no label)."""
        self._check(idx)
        y = self.labels(y, idx.shape[0], idx.device)
        if self.shift:  # [BOS, z_1 .. z_L]: position l's logits come from position l - 1
            idx = torch.cat([torch.full_like(idx[:, :1], self.vocab_size - 1), idx], dim=1)
        L = idx.shape[1]
        if attn_mask is not None and attn_mask.shape != (L, L):
            raise ValueError(f"attn_mask must have shape ({L}, {L}), got {tuple(attn_mask.shape)}.")
        h = self.embed(idx)
        if y is not None:
            h = h + self.label_embed(y)[:, None, :]
        for block in self.blocks:
            h = block(h, self.rope[:L], attn_mask=attn_mask)
        logits = self.ln_f(h) @ self.embed.weight.T
        return logits[:, :-1] if self.shift else logits

    @torch.no_grad()
    def decode_step(self, idx, caches, start: int):
        """Causal decoding with a key/value cache: logits for idx (B, n) at positions start..start+n-1.

        caches is a list with one dict per layer (pass [{} ...] the first time); it is updated in place.
        """
        if not self.causal:
            raise ValueError("decode_step needs a causal model: a bidirectional model cannot reuse its cache.")
        self._check(idx, start)
        n = idx.shape[1]
        h = self.embed(idx)
        for block, cache in zip(self.blocks, caches):
            h = block(h, self.rope[start:start + n], cache)
        return self.ln_f(h) @ self.embed.weight.T


def build_model(model_config: dict, vocab_size: int) -> Transformer:
    """Transformer from the "model" part of a config (keys: context, d_model, n_layers, n_heads, causal,
    dropout, bias, shift, num_classes)."""
    if not isinstance(model_config, dict):
        raise TypeError(f"model config must be a dict, got {type(model_config).__name__}.")
    allowed = {"context", "d_model", "n_layers", "n_heads", "causal", "dropout", "bias", "shift", "num_classes"}
    unknown = set(model_config) - allowed
    if unknown:
        raise ValueError(f"Unknown model config keys {sorted(unknown)}; allowed: {sorted(allowed)}.")
    return Transformer(vocab_size=vocab_size, **model_config)
