"""A small U-Net for 28x28 MNIST diffusion, and the DDPM training task.

The network predicts the noise that was added to an image:

    eps_hat = eps_theta(x_t, t, y),   x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps     (1)

and is trained with the "simple" DDPM loss (Ho et al., 2020)

    L(theta) = E_{x0, t ~ U{1..T}, eps ~ N(0, I)} || eps - eps_theta(x_t, t, y) ||^2.            (2)

Architecture (the lesson walks through it in this order):

    time t  -> sinusoidal features -> MLP ----------------------------+--> emb (one vector per image)
    class y -> embedding table (10 digits + 1 "null" class) ----------+
    x_t (B,1,28,28) -> conv -> [ResBlock] 28x28 -> down -> [ResBlock] 14x14 -> down
                    -> [ResBlock + Attention] 7x7 -> middle (ResBlock, Attention, ResBlock)
                    -> the mirror image going up, concatenating the skip connections
                    -> GroupNorm, SiLU, conv -> eps_hat (B,1,28,28)

Every ResBlock receives emb through adaptive group norm: GroupNorm(h) * (1 + scale) + shift,
with (scale, shift) a linear function of emb. The null class (index ``num_classes``) means
"no label": training replaces the label by it with probability ``p_uncond``, so one network
gives unconditional, conditional and classifier-free-guided samples.
"""
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffedu.schedules import NoiseSchedule
from diffedu.forward import q_sample

IMAGE_SHAPE = (1, 28, 28)


# ----------------------------------------------------------------------------- embeddings
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of the integer timestep t (Vaswani et al., 2017):

        emb[2i] = sin(t / max_period^(i/half)),   emb[2i+1 or half+i] = cos(...),   half = dim/2.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def groups_for(ch: int) -> int:
    """Number of GroupNorm groups: 8 when it divides the channels (it does for our widths)."""
    return 8 if ch % 8 == 0 else 1


# ----------------------------------------------------------------------------- blocks
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
        emb = self.time_mlp(timestep_embedding(t, self.ch))
        if self.class_emb is not None:
            if y is None:
                y = torch.full_like(t, self.null_class)
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
        if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"UNet expects images of shape (B, 1, 28, 28), got {got}.")
        if not torch.is_tensor(t) or t.dtype != torch.long or t.shape != (x.shape[0],):
            raise TypeError(f"t must be a LongTensor of shape ({x.shape[0]},) with one timestep per image.")
        if bool(((t < 0) | (t > self.T)).any()):
            raise ValueError(f"timesteps must be in 0..{self.T}, got values in [{int(t.min())}, {int(t.max())}].")
        if y is None:
            return
        if self.class_emb is None:
            raise ValueError("this UNet was built with num_classes=0, so it takes no class label y.")
        if not torch.is_tensor(y) or y.dtype != torch.long or y.shape != (x.shape[0],):
            raise TypeError(f"y must be a LongTensor of shape ({x.shape[0]},) with one label per image.")
        if bool(((y < 0) | (y > self.null_class)).any()):
            raise ValueError(f"class labels must be in 0..{self.num_classes - 1} "
                             f"(or {self.null_class} for 'no label'), got {y.unique().tolist()}.")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- conditioning
def check_labels(labels, num_classes: int = 10) -> None:
    """Public label check: digits 0..num_classes-1 only (the null class is internal)."""
    if labels is None:
        return
    t = torch.as_tensor(labels)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"class labels must be integers 0..{num_classes - 1}, got dtype {t.dtype}.")
    if bool(((t < 0) | (t >= num_classes)).any()):
        raise ValueError(f"class labels must be digits 0..{num_classes - 1}, got {t.unique().tolist()}.")


def eps_model(model: UNet, labels=None, guidance: float = 0.0):
    """Wrap the network as eps_model(x_t, t) for the samplers.

    labels=None: unconditional (null class). labels (B,) digits: conditional. guidance w > 0:
    classifier-free guidance  eps = (1 + w) eps(x_t, t, y) - w eps(x_t, t, null).
    """
    check_labels(labels, model.num_classes or 10)
    if labels is not None and not model.num_classes:
        raise ValueError("this UNet was trained without classes; call eps_model(model) without labels.")

    def fn(x_t, t):
        y = None if labels is None else torch.as_tensor(labels, device=x_t.device).long()
        if y is not None and y.dim() == 0:
            y = y.expand(x_t.shape[0])
        if y is not None and y.shape[0] != x_t.shape[0]:
            raise ValueError(f"got {y.shape[0]} labels for a batch of {x_t.shape[0]} images.")
        if guidance == 0.0 or y is None:
            return model(x_t, t, y)
        e_cond, e_null = model(torch.cat([x_t, x_t]), torch.cat([t, t]),
                               torch.cat([y, torch.full_like(y, model.null_class)])).chunk(2)
        return (1 + guidance) * e_cond - guidance * e_null

    return fn


# ----------------------------------------------------------------------------- the loss
def check_images(x0: torch.Tensor, tol: float = 1e-3) -> None:
    """Training/evaluation images must be (B, 1, 28, 28) floats in [-1, 1]."""
    if not torch.is_tensor(x0) or not x0.dtype.is_floating_point:
        raise TypeError("images must be a float tensor of shape (B, 1, 28, 28) with values in [-1, 1].")
    if x0.dim() != 4 or tuple(x0.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"images must have shape (B, 1, 28, 28), got {tuple(x0.shape)}.")
    lo, hi = float(x0.min()), float(x0.max())
    if lo < -1 - tol or hi > 1 + tol:
        raise ValueError(f"images must have values in [-1, 1] (as diffedu.data.mnist gives them), "
                         f"got values in [{lo:.3g}, {hi:.3g}]; rescale with x * 2 - 1 from [0, 1].")


def ddpm_loss(model, x0, y, schedule: NoiseSchedule, p_uncond: float = 0.1, generator=None):
    """Eq. (2): draw t ~ U{1..T}, eps ~ N(0, I), build x_t by eq. (1), regress eps.

    With probability p_uncond a label is replaced by the null class (classifier-free guidance).
    """
    check_images(x0)
    B = x0.shape[0]
    t = torch.randint(1, schedule.T + 1, (B,), generator=generator, device="cpu").to(x0.device)
    x_t, eps = q_sample(x0, t, schedule, generator=generator)
    if y is not None:
        drop = torch.rand(B, device="cpu", generator=generator).to(x0.device) < p_uncond
        y = torch.where(drop, torch.full_like(y, model_null_class(model)), y)
    return F.mse_loss(model(x_t, t, y).float(), eps)


def model_null_class(model) -> int:
    return getattr(model, "module", model).null_class


# ----------------------------------------------------------------------------- the training task
def make_schedule(name: str = "linear", T: int = 1000) -> NoiseSchedule:
    if name not in ("linear", "cosine"):
        raise ValueError(f"schedule must be 'linear' or 'cosine', got {name!r}.")
    return NoiseSchedule.linear(T) if name == "linear" else NoiseSchedule.cosine(T)


class DDPMTask:
    """MNIST DDPM for diffedu.train: config keys model {...}, schedule, T, p_uncond, batch_size."""

    architecture = "diffedu.unet.UNet (ResBlocks + adaptive GroupNorm, attention at 7x7, class embedding + null class)"

    def __init__(self, config: dict, device):
        from diffedu import data
        self.config, self.device = config, torch.device(device)
        self.T = config.get("T", 1000)
        self.schedule = make_schedule(config.get("schedule", "linear"), self.T)
        self.p_uncond = config.get("p_uncond", 0.1)
        self.model = UNet(**config.get("model", {}), T=self.T).to(self.device)
        images, labels = data.mnist_arrays("train")
        self.images = torch.as_tensor(images).to(self.device)  # uint8, converted per batch
        self.labels = torch.as_tensor(labels).long().to(self.device)
        self.data_info = {"file": "assets/data/mnist.npz", "sha256": data.SHA256["mnist.npz"],
                          "split": "train", "n": len(labels)}

    def batches(self, generator: torch.Generator, rank: int = 0, world_size: int = 1):
        """Infinite stream of (x0 in [-1, 1], y): indices drawn with replacement from `generator`."""
        B, n = self.config["batch_size"], len(self.labels)
        while True:
            idx = torch.randint(0, n, (B,), generator=generator).to(self.device)
            yield self.images[idx, None].float() / 127.5 - 1.0, self.labels[idx]

    def loss(self, model, batch):
        x0, y = batch
        return ddpm_loss(model, x0, y if self.model.num_classes else None, self.schedule, self.p_uncond)

    @torch.no_grad()
    def on_checkpoint(self, ema_model, step: int, out_dir) -> None:
        """Every `sample_every` steps write out_dir/samples_STEP.png: 2 DDIM-20 samples per digit (EMA)."""
        if step % self.config.get("sample_every", 1000):
            return
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from torchvision.utils import make_grid
        from diffedu.samplers import ddim_sample
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(10).repeat(2) if self.model.num_classes else None
        x = ddim_sample(eps_model(ema_model, None if labels is None else labels.to(self.device)),
                        self.schedule, (20, *IMAGE_SHAPE), steps=20, generator=g,
                        device=self.device, clip_x0=1.0, progress=False)
        grid = make_grid(x.float().cpu().clamp(-1, 1) * 0.5 + 0.5, nrow=10).permute(1, 2, 0).numpy()
        plt.imsave(Path(out_dir) / f"samples_{step:06d}.png", grid)

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        """Metrics for the model card: the held-out loss (eq. 2 on 2,000 test digits, fixed t and eps);
        the Fréchet distance to n test digits of n DDIM-50 samples, class-conditional (labels 0..9 in
        turn) and unconditional (null label); and the floor, n train digits vs the same test digits.
        n = config "eval_fd_n" (default 1000; 0 skips the Fréchet distances)."""
        from diffedu import metrics
        from diffedu.data import mnist
        x_test, y_test = mnist("test").tensors
        g = torch.Generator().manual_seed(1234)
        x0, y = x_test[:2000].to(self.device), y_test[:2000].to(self.device)
        t = torch.randint(1, self.T + 1, (len(y),), generator=g).to(self.device)
        eps = torch.randn(x0.shape, generator=g).to(self.device)
        x_t, _ = q_sample(x0, t, self.schedule, eps=eps)
        mse = sum(F.mse_loss(ema_model(x_t[i:i + 500], t[i:i + 500], y[i:i + 500]), eps[i:i + 500],
                             reduction="sum").item() for i in range(0, len(y), 500))
        out = {"test_eps_mse_n2000": round(mse / eps.numel(), 5)}
        n = self.config.get("eval_fd_n", 1000)
        if n:
            real_test = x_test[torch.randperm(len(x_test), generator=g)[:n]]
            real_train = mnist("train").tensors[0][torch.randperm(60000, generator=g)[:n]]
            out[f"fd_floor_train_vs_test_n{n}"] = round(metrics.frechet_distance(real_train, real_test), 3)
            labels = torch.arange(n) % 10 if self.model.num_classes else None
            for name, lab in [("conditional", labels), ("unconditional", None)]:
                x = sample(ema_model, self.schedule, n, "ddim", steps=50, labels=lab,
                           generator=torch.Generator().manual_seed(0), progress=False)
                out[f"fd_ddim50_{name}_n{n}"] = round(metrics.frechet_distance(x, real_test), 3)
                if lab is None:
                    break
        return out


# ----------------------------------------------------------------------------- shipped model
def load_unet(name: str = "mnist_unet", config: dict | None = None, device=None):
    """The shipped EMA U-Net: returns (model in eval mode, its NoiseSchedule, model card).

    config: optional dict of config entries the checkpoint must have been trained with
    (e.g. {"model": {...}, "T": 1000}); a mismatch raises ValueError.
    """
    from diffedu.checkpoints import load_checkpoint, load_into
    _, card = load_checkpoint(name, expected_config=config)
    cfg = card["config"]
    T = cfg.get("T", 1000)
    model = UNet(**cfg.get("model", {}), T=T)
    load_into(model, name, config)
    model.card = card
    model = model.eval().requires_grad_(False).to(device or "cpu")
    return model, make_schedule(cfg.get("schedule", "linear"), T), card


@torch.no_grad()
def sample(model: UNet, schedule: NoiseSchedule, n: int, sampler: str = "ddim", steps: int = 50,
           labels=None, guidance: float = 0.0, generator=None, clip_x0: float | None = 1.0,
           eta: float = 0.0, batch_size: int = 500, progress: bool = True) -> torch.Tensor:
    """n images in [-1, 1] from the network: sampler "ddpm" (all T steps) or "ddim" (`steps` steps).

    Samples are drawn in batches of `batch_size`; labels (n,) digits or None (unconditional).
    """
    from diffedu.samplers import ddim_sample, ddim_timesteps, ddpm_sample
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
    if sampler == "ddim":
        ddim_timesteps(schedule.T, steps)  # raises if steps does not divide T
    if model.T != schedule.T:
        raise ValueError(f"the model was trained with T={model.T} but the schedule has T={schedule.T}.")
    check_labels(labels, model.num_classes or 10)
    if labels is not None:
        labels = torch.as_tensor(labels).long().expand(n) if torch.as_tensor(labels).dim() == 0 \
            else torch.as_tensor(labels).long()
        if len(labels) != n:
            raise ValueError(f"got {len(labels)} labels for n={n} images.")
    device = next(model.parameters()).device
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        fn = eps_model(model, None if labels is None else labels[i:i + b].to(device), guidance)
        kw = dict(generator=generator, device=device, clip_x0=clip_x0, progress=progress)
        x = ddpm_sample(fn, schedule, (b, *IMAGE_SHAPE), **kw) if sampler == "ddpm" else \
            ddim_sample(fn, schedule, (b, *IMAGE_SHAPE), steps=steps, eta=eta, **kw)
        out.append(x.cpu())
    return torch.cat(out)
