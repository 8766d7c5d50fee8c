"""Latent diffusion on MNIST: an autoencoder 1x28x28 -> 4x7x7, and diffusion in its latent space.

Stable Diffusion (Rombach et al. 2022) does not diffuse pixels. An autoencoder is trained first;
the diffusion model then learns the distribution of its *latents*, which are smaller (here 196
numbers instead of 784) and hold less imperceptible detail; a sample is a latent, decoded.

The autoencoder (a VAE with a light KL term, as in Rombach et al.):

    encoder  x (1, 28, 28) -> conv 28x28 -> down 14x14 -> down 7x7 -> (mu, log_var), each (z_ch, 7, 7)
    z = mu + exp(log_var / 2) * eps,  eps ~ N(0, I)                      (the reparameterisation)
    decoder  z -> conv 7x7 -> up 14x14 -> up 28x28 -> x_hat in [-1, 1]

With a Gaussian decoder p(x | z) = N(x_hat(z), s^2 I) over the D = 784 pixels and the prior
p(z) = N(0, I), the negative ELBO of one image is

    -ELBO(x) = E_q [ ||x - x_hat(z)||^2 / (2 s^2) ] + (D / 2) log(2 pi s^2) + KL(q(z | x) || N(0, I)),   (1)
    KL = 1/2 sum_i (mu_i^2 + exp(log_var_i) - 1 - log_var_i).                                           (2)

Training minimises ||x - x_hat||^2 + beta KL per image; a small beta (1e-3 or less) keeps the latents
nearly deterministic and the reconstructions sharp, and only stops them drifting to huge values.
The diffusion model sees scale * mu, with scale = 1 / std(mu) over training digits (computed once
and stored with the weights), so that its inputs have unit variance like the pixels of Part 2.

The latent denoiser eps_theta(z_t, t, y) is the U-Net's ResBlocks and attention at the one 7x7
resolution (unet.py), with the same time and class embedding and the null class for guidance.

The discrete alternative (VQ-VAE, van den Oord et al. 2017): replace each latent vector by its
nearest entry of a codebook of K vectors; the decoder sees only codes, and an autoregressive prior
over the 49 code indices (like lesson 11's twin over characters) generates. `VectorQuantizer` is
that layer, with the straight-through gradient and the codebook and commitment losses.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from diffedu._validate import image_batch
from diffedu.nets import sinusoidal_embedding

from .unet import IMAGE_SHAPE, Attention, ResBlock, groups_for

LATENT_HW = 7


# ----------------------------------------------------------------------------- the autoencoder
def kl_to_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Eq. (2) per image: KL(N(mu, exp(log_var)) || N(0, I)), summed over the latent, shape (B,)."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).flatten(1).sum(1)


def gaussian_nelbo(x, x_hat, mu, log_var, s: float) -> torch.Tensor:
    """Eq. (1) per image in nats, with one draw of z (the x_hat given) and decoder std s."""
    D = x[0].numel()
    rec = (x - x_hat).pow(2).flatten(1).sum(1) / (2 * s ** 2)
    return rec + 0.5 * D * math.log(2 * math.pi * s ** 2) + kl_to_standard_normal(mu, log_var)


class Autoencoder(nn.Module):
    """x (B, 1, 28, 28) in [-1, 1] <-> z (B, z_ch, 7, 7). encode -> (mu, log_var); decode -> x_hat."""

    def __init__(self, ch: int = 32, z_ch: int = 4):
        super().__init__()
        self.z_ch = z_ch
        act = nn.SiLU
        self.encoder = nn.Sequential(
            nn.Conv2d(1, ch, 3, padding=1), act(),
            nn.Conv2d(ch, ch, 3, stride=2, padding=1), act(),                       # 14x14
            nn.Conv2d(ch, 2 * ch, 3, padding=1), act(),
            nn.Conv2d(2 * ch, 2 * ch, 3, stride=2, padding=1), act(),               # 7x7
            nn.Conv2d(2 * ch, 2 * z_ch, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(z_ch, 2 * ch, 3, padding=1), act(),
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(2 * ch, ch, 3, padding=1), act(),  # 14x14
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1), act(),      # 28x28
            nn.Conv2d(ch, 1, 3, padding=1), nn.Tanh())
        self.register_buffer("scale", torch.ones(()))   # 1 / std of mu over training digits (set after training)

    def encode(self, x):
        image_batch("x", x, IMAGE_SHAPE, dtype=self.encoder[0].weight.dtype)
        mu, log_var = self.encoder(x).chunk(2, dim=1)
        return mu, log_var.clamp(-30.0, 20.0)

    def decode(self, z):
        shape = (self.z_ch, LATENT_HW, LATENT_HW)
        if not torch.is_tensor(z) or z.dim() != 4 or tuple(z.shape[1:]) != shape:
            raise ValueError(f"latents for this decoder must have shape (B, {self.z_ch}, {LATENT_HW}, {LATENT_HW}), "
                             f"got {tuple(z.shape) if torch.is_tensor(z) else type(z).__name__}.")
        return self.decoder(z)

    def forward(self, x, generator=None):
        """(x_hat, mu, log_var) with one reparameterised draw of z."""
        mu, log_var = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator).to(mu)
        return self.decode(mu + (0.5 * log_var).exp() * eps), mu, log_var


def autoencoder_loss(ae: Autoencoder, x, beta: float, generator=None):
    """(total, reconstruction, kl): per image, ||x - x_hat||^2 + beta KL, averaged over the batch."""
    x_hat, mu, log_var = ae(x, generator)
    rec = (x - x_hat).pow(2).flatten(1).sum(1).mean()
    kl = kl_to_standard_normal(mu, log_var).mean()
    return rec + beta * kl, rec, kl


@torch.no_grad()
def latent_scale(ae: Autoencoder, x, batch_size: int = 1000) -> float:
    """1 / std of the encoder means mu over images x: the factor that gives the latents unit variance."""
    mus = torch.cat([ae.encode(x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)])
    return 1.0 / mus.std().item()


# ----------------------------------------------------------------------------- VQ: the discrete alternative
class VectorQuantizer(nn.Module):
    """z (B, d, H, W) -> nearest of K codebook vectors at each position (van den Oord et al. 2017).

    forward returns (z_q, codes, loss): z_q with the straight-through gradient z + (z_q - z).detach(),
    codes (B, H, W) in 0..K-1, and loss = ||sg[z] - z_q||^2 (moves the codebook) + commitment *
    ||z - sg[z_q]||^2 (keeps the encoder near its codes).
    """

    def __init__(self, K: int = 64, d: int = 4, commitment: float = 0.25):
        super().__init__()
        self.codebook = nn.Embedding(K, d)
        nn.init.uniform_(self.codebook.weight, -1.0 / K, 1.0 / K)
        self.commitment = commitment

    def forward(self, z):
        if z.dim() != 4 or z.shape[1] != self.codebook.embedding_dim:
            raise ValueError(f"z must have shape (B, {self.codebook.embedding_dim}, H, W), got {tuple(z.shape)}.")
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        codes = torch.cdist(flat, self.codebook.weight).argmin(1)
        z_q = self.codebook(codes).view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        loss = F.mse_loss(z_q, z.detach()) + self.commitment * F.mse_loss(z, z_q.detach())
        return z + (z_q - z).detach(), codes.view(z.shape[0], z.shape[2], z.shape[3]), loss


def codebook_usage(codes: torch.Tensor, K: int) -> dict:
    """How much of a codebook is used: the fraction of codes ever chosen and the perplexity exp(H)."""
    p = torch.bincount(codes.flatten(), minlength=K).double()
    p = p / p.sum()
    H = -(p[p > 0] * p[p > 0].log()).sum().item()
    return {"used": (p > 0).double().mean().item(), "perplexity": math.exp(H)}


# ----------------------------------------------------------------------------- the latent denoiser
class LatentDenoiser(nn.Module):
    """eps_theta(z_t, t, y) for latents (B, z_ch, 7, 7): conv in, ResBlocks with attention, conv out.

    The time and class embedding is the U-Net's (sinusoids + MLP, an embedding table with a null class).
    """

    def __init__(self, z_ch: int = 4, ch: int = 64, n_blocks: int = 4, heads: int = 4, num_classes: int = 10,
                 T: int = 1000):
        super().__init__()
        self.z_ch, self.ch, self.num_classes, self.null_class, self.T = z_ch, ch, num_classes, num_classes, T
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(z_ch, ch, 3, padding=1)
        self.blocks = nn.ModuleList()
        for k in range(n_blocks):
            self.blocks.append(ResBlock(ch, ch, emb_dim))
            if k % 2 == 1:
                self.blocks.append(Attention(ch, heads))
        self.norm_out = nn.GroupNorm(groups_for(ch), ch)
        self.conv_out = nn.Conv2d(ch, z_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z_t, t, y=None):
        shape = (self.z_ch, LATENT_HW, LATENT_HW)
        if z_t.dim() != 4 or tuple(z_t.shape[1:]) != shape:
            raise ValueError(f"z_t must have shape (B, {self.z_ch}, {LATENT_HW}, {LATENT_HW}), got {tuple(z_t.shape)}.")
        if t.shape != (z_t.shape[0],) or bool(((t < 0) | (t > self.T)).any()):
            raise ValueError(f"t must hold one time in 0..{self.T} per latent, shape ({z_t.shape[0]},).")
        emb = self.time_mlp(sinusoidal_embedding(t, self.ch))
        if self.class_emb is not None:
            y = torch.full(t.shape, self.null_class, dtype=torch.long, device=t.device) if y is None else y
            emb = emb + self.class_emb(y)
        h = self.conv_in(z_t)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------- training tasks
class AutoencoderTask:
    """python -m diffedu.train configs/mnist_autoencoder.json: the autoencoder on training digits.

    Config: model {ch, z_ch}, beta (the KL weight), batch_size, eval_fd_n. Before shipping, evaluate
    stores the latent scale 1 / std(mu) (10,000 training digits) in the weights' `scale` buffer.
    """

    architecture = "diffedu.images.latent.Autoencoder (conv encoder 28 -> 14 -> 7, Gaussian latent, conv decoder)"

    def __init__(self, config: dict, device):
        from diffedu import data
        from .tasks import MNIST_INFO
        self.config, self.device = config, torch.device(device)
        self.beta = float(config.get("beta", 1e-3))
        self.model = Autoencoder(**config.get("model", {})).to(self.device)
        images, _ = data.mnist_arrays("train")
        self.images = torch.as_tensor(images).to(self.device)
        self.data_info = {**MNIST_INFO, "n": len(images)}

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        while True:
            idx = torch.randint(0, len(self.images), (self.config["batch_size"],), generator=generator)
            yield self.images[idx.to(self.device), None].float() / 127.5 - 1.0

    def loss(self, model, batch):
        return autoencoder_loss(model, batch, self.beta)[0]

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        """Reconstruction MSE per pixel and KL on 2,000 test digits; the latent scale; with eval_fd_n = n,
        the FD of n reconstructed test digits against n other test digits (the latent model's floor)."""
        from diffedu import data, metrics
        from .classifier import load
        x_test = data.mnist("test").tensors[0]
        ema_model.scale.fill_(latent_scale(ema_model, data.mnist("train").tensors[0][:10000].to(self.device)))
        mu, log_var = ema_model.encode(x_test[:2000].to(self.device))
        rec = (ema_model.decode(mu) - x_test[:2000].to(self.device)).pow(2).mean().item()
        out = {"test_mse_per_pixel_n2000": round(rec, 5), "test_kl_n2000": round(kl_to_standard_normal(mu, log_var).mean().item(), 2),
               "latent_scale": round(ema_model.scale.item(), 5)}
        n = self.config.get("eval_fd_n", 1000)
        if n:
            g = torch.Generator().manual_seed(1234)
            perm = torch.randperm(len(x_test), generator=g)
            real, other = x_test[perm[:n]], x_test[perm[n:2 * n]].to(self.device)
            recon = torch.cat([ema_model.decode(ema_model.encode(other[i:i + 500])[0]) for i in range(0, n, 500)])
            judge = load("mnist_classifier")
            out[f"fd_reconstructions_vs_test_n{n}"] = round(metrics.frechet_distance(recon.cpu(), real, judge), 3)
            out[f"fd_test_vs_test_n{n}"] = round(metrics.frechet_distance(other.cpu(), real, judge), 3)
        return out


@torch.no_grad()
def sample(denoiser: LatentDenoiser, ae: Autoencoder, schedule, n: int, labels=None, steps: int = 50,
           generator=None, w: float = 1.0, batch_size: int = 500) -> torch.Tensor:
    """n digits in [-1, 1]: DDIM-`steps` in latent space (labels and guidance w as pipeline.eps_model),
    then the decoder, after dividing by the latent scale. In batches of batch_size."""
    from diffedu._validate import positive_int
    from diffedu.guidance import check_labels
    from diffedu.samplers import ddim_sample
    from .pipeline import eps_model
    positive_int("n", n)
    if ae.z_ch != denoiser.z_ch:
        raise ValueError(f"the denoiser makes {denoiser.z_ch}-channel latents, the autoencoder decodes {ae.z_ch}.")
    labels = None if labels is None else check_labels(labels, denoiser.num_classes or 10, batch=n)
    device, out = next(denoiser.parameters()).device, []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        z = ddim_sample(eps_model(denoiser, None if labels is None else labels[i:i + b].to(device), w), schedule,
                        (b, ae.z_ch, LATENT_HW, LATENT_HW), steps, generator=generator, device=device, progress=False)
        out.append(ae.decode(z / ae.scale).clamp(-1, 1).cpu())
    return torch.cat(out)


def load_latent(name: str = "mnist_latent", device=None):
    """A shipped latent denoiser with its autoencoder and schedule: (denoiser, ae, schedule), eval mode.
    The autoencoder must be the one the denoiser was trained on (its card names its sha256)."""
    from diffedu.checkpoints import load_checkpoint, load_into
    from diffedu.schedules import NoiseSchedule
    _, card = load_checkpoint(name)
    cfg = card["config"]
    ae = load_autoencoder(cfg.get("autoencoder", "mnist_autoencoder"), device)
    if card["data"].get("autoencoder") != ae.card["weights_sha256"]:
        raise ValueError(f"{name} was trained on the latents of another {cfg.get('autoencoder')} than the shipped one; "
                         f"retrain it: python -m diffedu.train configs/{name}.json --ship")
    denoiser = LatentDenoiser(z_ch=ae.z_ch, **cfg.get("model", {}), T=cfg.get("T", 1000))
    load_into(denoiser, name)
    denoiser.card = card
    schedule = NoiseSchedule.from_name(cfg.get("schedule", "linear"), cfg.get("T", 1000))
    return denoiser.eval().requires_grad_(False).to(device or "cpu"), ae, schedule


def load_autoencoder(name: str = "mnist_autoencoder", device=None) -> Autoencoder:
    """A shipped autoencoder in eval mode, without gradients (its card as .card)."""
    from diffedu.checkpoints import load_checkpoint, load_into
    _, card = load_checkpoint(name)
    ae = Autoencoder(**card["config"].get("model", {}))
    load_into(ae, name)
    ae.card = card
    return ae.eval().requires_grad_(False).to(device or "cpu")


class LatentDDPMTask:
    """python -m diffedu.train configs/mnist_latent.json: DDPM on scale * mu of the shipped autoencoder.

    Config: autoencoder (a shipped name), model {LatentDenoiser}, schedule, T, p_uncond, batch_size, eval_fd_n.
    """

    architecture = "diffedu.images.latent.LatentDenoiser (ResBlocks + attention at 7x7, class embedding + null class)"

    def __init__(self, config: dict, device):
        from diffedu import data
        from diffedu.schedules import NoiseSchedule
        from .tasks import MNIST_INFO
        self.config, self.device = config, torch.device(device)
        self.T = config.get("T", 1000)
        self.schedule = NoiseSchedule.from_name(config.get("schedule", "linear"), self.T)
        self.p_uncond = float(config.get("p_uncond", 0.1))
        self.ae = load_autoencoder(config.get("autoencoder", "mnist_autoencoder"), self.device)
        self.model = LatentDenoiser(z_ch=self.ae.z_ch, **config.get("model", {}), T=self.T).to(self.device)
        images, labels = data.mnist_arrays("train")
        x = torch.as_tensor(images)[:, None].float() / 127.5 - 1.0
        with torch.no_grad():                                     # every training digit's latent, once
            self.z0 = torch.cat([self.ae.encode(x[i:i + 1000].to(self.device))[0] for i in range(0, len(x), 1000)])
        self.z0 = self.z0 * self.ae.scale
        self.labels = torch.as_tensor(labels).long().to(self.device)
        self.data_info = {**MNIST_INFO, "n": len(labels), "autoencoder": self.ae.card["weights_sha256"]}

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        while True:
            idx = torch.randint(0, len(self.labels), (self.config["batch_size"],), generator=generator).to(self.device)
            yield self.z0[idx], self.labels[idx]

    def loss(self, model, batch):
        from .tasks import ddpm_loss
        z0, y = batch
        return ddpm_loss(model, z0, y, self.schedule, self.p_uncond, shape=tuple(z0.shape[1:]), value_range=None)

    def sample(self, model, n: int, labels=None, steps: int = 50, generator=None, w: float = 1.0) -> torch.Tensor:
        return sample(model, self.ae, self.schedule, n, labels, steps, generator, w)

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        """With eval_fd_n = n: the FD of n conditional DDIM-50 samples (labels 0..9 in turn) and the floor."""
        from diffedu import data
        from .tasks import fd_metrics
        x_test = data.mnist("test").tensors[0]
        draw = lambda n, lab: self.sample(ema_model, n, lab, 50, torch.Generator().manual_seed(0))
        return fd_metrics(draw, self.config.get("eval_fd_n", 1000), x_test, torch.Generator().manual_seed(1234),
                          "ddim50", ema_model.num_classes)
