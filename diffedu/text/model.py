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

For fast autoregressive decoding the causal model can keep a key/value cache (`decode_step`).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def rope_tables(context: int, head_dim: int, base: float = 10000.0):
    """cos, sin tables of shape (context, head_dim // 2) for angles m * base^(-2i/head_dim)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(context, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x, cos, sin):
    """Rotate channel pairs (x1, x2) of x (B, H, L, D) by the angles of positions 0..L-1."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, causal: bool, dropout: float):
        super().__init__()
        self.n_heads, self.causal, self.dropout = n_heads, causal, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, cos, sin, cache=None):
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        causal = self.causal
        if cache is not None:  # decoding: append this step's keys/values to the cache
            if "k" in cache:
                if L > 1:
                    raise ValueError("decode_step: after the prompt, feed one token at a time.")
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                causal = False  # one new query attends to every cached key
            cache["k"], cache["v"] = k, v
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal and L > 1, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, L, C))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, causal: bool, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, causal, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model), nn.Dropout(dropout)
        )

    def forward(self, x, cos, sin, cache=None):
        x = x + self.attn(self.ln1(x), cos, sin, cache)
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Character transformer. forward(idx (B, L) int64) -> logits (B, L, vocab_size).

    causal=False gives the masked-diffusion denoiser, causal=True its autoregressive twin;
    every other hyper-parameter (and so the parameter count) is shared.
    """

    def __init__(self, vocab_size: int, context: int, d_model: int = 128, n_layers: int = 4,
                 n_heads: int = 4, causal: bool = False, dropout: float = 0.0):
        super().__init__()
        for name, v in dict(vocab_size=vocab_size, context=context, d_model=d_model,
                            n_layers=n_layers, n_heads=n_heads).items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Transformer: {name} must be a positive int, got {v!r}.")
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(f"Transformer: d_model={d_model} must split into n_heads={n_heads} heads "
                             "of even width (RoPE rotates pairs of channels).")
        self.vocab_size, self.context, self.causal = vocab_size, context, bool(causal)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, self.causal, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        cos, sin = rope_tables(context, d_model // n_heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, idx, start=0):
        if not torch.is_tensor(idx) or idx.dtype != torch.long or idx.dim() != 2:
            raise TypeError("Transformer expects token ids as an int64 tensor of shape (batch, length).")
        if start + idx.shape[1] > self.context:
            raise ValueError(f"Sequence of length {start + idx.shape[1]} is longer than the model's "
                             f"context of {self.context} characters.")

    def forward(self, idx):
        self._check(idx)
        L = idx.shape[1]
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        h = self.embed(idx)
        for block in self.blocks:
            h = block(h, cos, sin)
        return self.ln_f(h) @ self.embed.weight.T

    @torch.no_grad()
    def decode_step(self, idx, caches, start: int):
        """Causal decoding with a key/value cache: logits for idx (B, n) at positions start..start+n-1.

        caches is a list with one dict per layer (pass [{} ...] the first time); it is updated in place.
        """
        if not self.causal:
            raise ValueError("decode_step needs a causal model: a bidirectional model cannot reuse its cache.")
        self._check(idx, start)
        n = idx.shape[1]
        cos, sin = self.rope_cos[start:start + n], self.rope_sin[start:start + n]
        h = self.embed(idx)
        for block, cache in zip(self.blocks, caches):
            h = block(h, cos, sin, cache)
        return self.ln_f(h) @ self.embed.weight.T


def build_model(model_config: dict, vocab_size: int) -> Transformer:
    """Transformer from the "model" part of a config (keys: context, d_model, n_layers, n_heads, causal)."""
    if not isinstance(model_config, dict):
        raise TypeError(f"model config must be a dict, got {type(model_config).__name__}.")
    allowed = {"context", "d_model", "n_layers", "n_heads", "causal", "dropout"}
    unknown = set(model_config) - allowed
    if unknown:
        raise ValueError(f"Unknown model config keys {sorted(unknown)}; allowed: {sorted(allowed)}.")
    return Transformer(vocab_size=vocab_size, **model_config)
