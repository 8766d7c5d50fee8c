"""A small U-Net for 28x28 MNIST diffusion: the network eps_theta(x_t, t, y) and nothing else.

The network predicts the noise that was added to an image (Ho et al., 2020),

    eps_hat = eps_theta(x_t, t, y),   x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps     (1)

(its loss is in diffedu.images.tasks, sampling with it in diffedu.images.pipeline).

Architecture (the lesson walks through it in this order):

    time t  -> sinusoidal features -> MLP ----------------------------+--> emb (one vector per image)
    class y -> embedding table (10 digits + 1 "null" class) ----------+
    x_t (B,1,28,28) -> conv -> [ResBlock] 28x28 -> down -> [ResBlock] 14x14 -> down
                    -> [ResBlock + Attention] 7x7 -> middle (ResBlock, Attention, ResBlock)
                    -> the mirror image going up, concatenating the skip connections
                    -> GroupNorm, SiLU, conv -> eps_hat (B,1,28,28)

The sinusoidal features are diffedu.nets.sinusoidal_embedding (eq. 1 there). Every ResBlock
receives emb through adaptive group norm: GroupNorm(h) * (1 + scale) + shift, with (scale,
shift) a linear function of emb. The null class (index ``num_classes``) means "no label":
training replaces the label by it with probability ``p_uncond``, so one network gives
unconditional, conditional and classifier-free-guided samples.

Input: x_t must be float32, the dtype of the network's weights; float64 or integer images are
refused with the fix (``x.float()``), never converted silently.

References: Ronneberger et al. (2015), U-Net; Ho et al. (2020), DDPM; Dhariwal & Nichol (2021),
adaptive group norm and attention resolutions.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffedu._validate import image_batch
from diffedu.nets import sinusoidal_embedding

IMAGE_SHAPE = (1, 28, 28)


# ----------------------------------------------------------------------------- blocks
def groups_for(ch: int) -> int:
    """Number of GroupNorm groups: 8 when it divides the channels (it does for our widths)."""
    return 8 if ch % 8 == 0 else 1


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))); h = conv(dropout(SiLU(GN(h) * (1 + scale) + shift))); return skip(x) + h."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups_for(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)  # -> (scale, shift)
        self.norm2 = nn.GroupNorm(groups_for(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # every block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift  # adaptive group norm
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Self-attention over the H*W pixels: x + proj(softmax(q k^T / sqrt(d)) v), with `heads` heads."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups_for(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, emb=None):
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # each (B, heads, HW, d)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv: 28 -> 14 -> 7."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 conv: 7 -> 14 -> 28."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# ----------------------------------------------------------------------------- the network
class UNet(nn.Module):
    """eps_theta(x_t, t, y) for 1x28x28 images; see the module docstring for the picture.

    ch: base width; ch_mult: width multiplier per resolution (28, 14, 7);
    attn_res: resolutions that get self-attention; num_classes: 0 for an unconditional
    network, else labels 0..num_classes-1 plus the null class ``num_classes``.
    """

    def __init__(self, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_res=(7,), heads=4,
                 dropout=0.1, num_classes=10, T=1000):
        super().__init__()
        if len(ch_mult) != 3:
            raise ValueError(f"ch_mult needs 3 entries (for 28x28, 14x14, 7x7), got {ch_mult!r}.")
        self.ch, self.num_classes, self.T = ch, num_classes, T
        self.null_class = num_classes
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

        self.conv_in = nn.Conv2d(1, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips, c, res = [ch], ch, 28
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                blocks = [ResBlock(c, ch * mult, emb_dim, dropout)]
                c = ch * mult
                if res in attn_res:
                    blocks.append(Attention(c, heads))
                self.down.append(nn.ModuleList(blocks))
                skips.append(c)
            if level < len(ch_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(c)]))
                skips.append(c)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, dropout), Attention(c, heads),
                                  ResBlock(c, c, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                blocks = [ResBlock(c + skips.pop(), ch * mult, emb_dim, dropout)]
                c = ch * mult
                if res in attn_res:
                    blocks.append(Attention(c, heads))
                self.up.append(nn.ModuleList(blocks))
            if level > 0:
                self.up.append(nn.ModuleList([Upsample(c)]))
                res *= 2
        self.norm_out = nn.GroupNorm(groups_for(c), c)
        self.conv_out = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def embed(self, t, y=None):
        """emb = MLP(sinusoid(t)) + E[y]  (y = None means the null class)."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.ch))
        if self.class_emb is not None:
            if y is None:
                y = torch.full(t.shape, self.null_class, dtype=torch.long, device=t.device)
            emb = emb + self.class_emb(y)
        return emb

    def forward(self, x, t, y=None):
        self._check_inputs(x, t, y)
        emb = self.embed(t, y)
        h = self.conv_in(x)
        hs = [h]
        for blocks in self.down:
            for block in blocks:
                h = block(h, emb)
            hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _check_inputs(self, x, t, y):
        # noisy images have no fixed range; x_t must have the network's dtype
        image_batch("x_t", x, IMAGE_SHAPE, value_range=None, dtype=self.conv_in.weight.dtype)
        if not torch.is_tensor(t) or t.shape != (x.shape[0],) or not (t.dtype == torch.long or t.is_floating_point()):
            raise TypeError(f"t must be a tensor of shape ({x.shape[0]},) with one time per image: integer "
                            f"timesteps 0..{self.T}, or (flow matching) a continuous time scaled to [0, {self.T}].")
        if bool(((t < 0) | (t > self.T)).any()) or bool(torch.isnan(t).any()):
            raise ValueError(f"timesteps must be in 0..{self.T}, got values in [{t.min().item():g}, {t.max().item():g}].")
        if y is None:
            return
        if self.class_emb is None:
            raise ValueError("this UNet was built with num_classes=0, so it takes no class label y.")
        if not torch.is_tensor(y) or y.dtype != torch.long or y.shape != (x.shape[0],):
            raise TypeError(f"y must be a LongTensor of shape ({x.shape[0]},) with one label per image.")
        if bool(((y < 0) | (y > self.null_class)).any()):
            raise ValueError(f"class labels must be in 0..{self.num_classes - 1} "
                             f"(or {self.null_class} for 'no label'), got {y.unique().tolist()}.")
