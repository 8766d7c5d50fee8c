"""The MNIST training tasks of ``python -m diffedu.train configs/mnist_*.json``.

A task owns the model, the data and the loss; the trainer (diffedu.train) owns the rest.

* ``DDPMTask`` trains the U-Net with the "simple" DDPM loss (Ho et al., 2020)

      L(theta) = E_{x0, t ~ U{1..T}, eps ~ N(0, I)} || eps - eps_theta(x_t, t, y) ||^2,         (2)
      x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps                                    (1)

  and with probability ``p_uncond`` replaces the label y by the null class (label dropout),
  so that the one network also learns the unconditional model (classifier-free guidance).
  Config ``min_snr_gamma`` weights each term by min(SNR_t, gamma) / SNR_t, SNR_t =
  alpha_bar_t / (1 - alpha_bar_t) (min-SNR-gamma, Hang et al. 2023): the nearly clean steps,
  whose eps is hard to read and matters little, count less. ``channels_last: true`` stores the
  weights and batches in NHWC memory order (the same numbers; faster convolutions on many CPUs).
* ``FlowMatchingTask`` trains the same U-Net as a velocity field by conditional flow matching
  (``flow_matching_loss``, the OT path of diffedu.flow): same data, labels and label dropout.
* ``ClassifierTask``: cross-entropy of the clean judge on (randomly shifted) clean digits.
* ``NoisyClassifierTask``: cross-entropy of the noise-aware guide on x_t = q_sample(x0, t),
  t ~ U{0..T}, with the U-Net's schedule.

Every batch draws its random numbers from the trainer's generator, so a batch depends on the
step alone (the trainer's resumability contract).

``ddpm_loss`` takes x0 in [-1, 1], finite, in the network's dtype (float32: convert float64 or
uint8 images yourself, uint8 pixels with ``x.float() / 127.5 - 1``; nothing is converted here).
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from diffedu import data
from diffedu._validate import generator as check_generator, image_batch, probability
from diffedu.forward import q_sample
from diffedu.schedules import NoiseSchedule

from .classifier import accuracy_vs_t, build, load, predict
from .pipeline import eps_model, sample
from .unet import IMAGE_SHAPE, UNet

MNIST_INFO = {"file": "assets/data/mnist.npz", "sha256": data.SHA256["mnist.npz"], "split": "train"}


# ----------------------------------------------------------------------------- the DDPM loss
def ddpm_loss(model, x0, y, schedule: NoiseSchedule, p_uncond: float = 0.1, generator=None,
              min_snr_gamma: float | None = None, shape=IMAGE_SHAPE, value_range=(-1.0, 1.0)):
    """Eq. (2): draw t ~ U{1..T}, eps ~ N(0, I), build x_t by eq. (1), regress eps.

    With probability p_uncond a label is replaced by the null class (classifier-free guidance).
    With min_snr_gamma, sample i's squared error is weighted by min(SNR_t, gamma) / SNR_t.
    shape, value_range: what x0 must be (the latents of images.latent: (z_ch, 7, 7), no fixed range).
    """
    weight = next(model.parameters(), None)  # an oracle without weights has no dtype to match
    image_batch("images", x0, shape, value_range=value_range, dtype=None if weight is None else weight.dtype)
    check_generator("generator", generator)
    p_uncond = probability("p_uncond", p_uncond)
    B = x0.shape[0]
    t = torch.randint(1, schedule.T + 1, (B,), generator=generator, device="cpu").to(x0.device)
    x_t, eps = q_sample(x0, t, schedule, generator=generator)
    if y is not None:
        drop = torch.rand(B, device="cpu", generator=generator).to(x0.device) < p_uncond
        y = torch.where(drop, torch.full_like(y, null_class(model)), y)
    if min_snr_gamma is None:
        return F.mse_loss(model(x_t, t, y).float(), eps)
    if not min_snr_gamma > 0:
        raise ValueError(f"min_snr_gamma must be a positive number, got {min_snr_gamma!r}.")
    ab = schedule.alpha_bar.to(x0.device)[t]
    snr = ab / (1 - ab)
    weight = (snr.clamp(max=min_snr_gamma) / snr).float()
    return (weight * (model(x_t, t, y).float() - eps).pow(2).flatten(1).mean(1)).mean()


def null_class(model) -> int:
    """The "no label" index of a U-Net (also when the trainer wrapped it in DistributedDataParallel)."""
    return getattr(model, "module", model).null_class


class DDPMTask:
    """MNIST DDPM: config keys model {...}, schedule, T, p_uncond, batch_size (and sample_every, eval_fd_n)."""

    architecture = ("diffedu.images.unet.UNet (ResBlocks + adaptive GroupNorm, attention at 7x7, "
                    "class embedding + null class)")

    def __init__(self, config: dict, device):
        self.config, self.device = config, torch.device(device)
        self.T = config.get("T", 1000)
        self.schedule = NoiseSchedule.from_name(config.get("schedule", "linear"), self.T)
        self.p_uncond = probability("p_uncond", config.get("p_uncond", 0.1))
        self.min_snr_gamma = config.get("min_snr_gamma")
        self.memory_format = torch.channels_last if config.get("channels_last") else torch.contiguous_format
        self.model = UNet(**config.get("model", {}), T=self.T).to(self.device, memory_format=self.memory_format)
        images, labels = data.mnist_arrays("train")
        self.images = torch.as_tensor(images).to(self.device)  # uint8, converted per batch
        self.labels = torch.as_tensor(labels).long().to(self.device)
        self.data_info = {**MNIST_INFO, "n": len(labels)}

    def batches(self, generator: torch.Generator, rank: int = 0, world_size: int = 1):
        """Infinite stream of (x0 in [-1, 1], y): indices drawn with replacement from `generator`."""
        B, n = self.config["batch_size"], len(self.labels)
        while True:
            idx = torch.randint(0, n, (B,), generator=generator).to(self.device)
            x0 = self.images[idx, None].float() / 127.5 - 1.0
            yield x0.contiguous(memory_format=self.memory_format), self.labels[idx]

    def loss(self, model, batch):
        x0, y = batch
        return ddpm_loss(model, x0, y if self.model.num_classes else None, self.schedule, self.p_uncond,
                         min_snr_gamma=self.min_snr_gamma)

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
        x_test, y_test = data.mnist("test").tensors
        g = torch.Generator().manual_seed(1234)
        x0, y = x_test[:2000].to(self.device), y_test[:2000].to(self.device)
        t = torch.randint(1, self.T + 1, (len(y),), generator=g).to(self.device)
        eps = torch.randn(x0.shape, generator=g).to(self.device)
        x_t, _ = q_sample(x0, t, self.schedule, eps=eps)
        mse = sum(F.mse_loss(ema_model(x_t[i:i + 500], t[i:i + 500], y[i:i + 500]), eps[i:i + 500],
                             reduction="sum").item() for i in range(0, len(y), 500))
        out = {"test_eps_mse_n2000": round(mse / eps.numel(), 5)}
        draw = lambda n, lab: sample(ema_model, self.schedule, n, "ddim", steps=50, labels=lab,
                                     generator=torch.Generator().manual_seed(0), progress=False)
        return {**out, **fd_metrics(draw, self.config.get("eval_fd_n", 1000), x_test, g, "ddim50", self.model.num_classes)}


def fd_metrics(draw, n: int, x_test, g, tag: str, num_classes: int) -> dict:
    """For the model card: the Fréchet distance to n random test digits of n samples draw(n, labels),
    class-conditional (labels 0..9 in turn) and unconditional (None), and the floor, n train digits
    against the same test digits. n = 0 skips them. A network without classes gets one row."""
    if not n:
        return {}
    from diffedu import metrics
    judge = load("mnist_classifier")
    real_test = x_test[torch.randperm(len(x_test), generator=g)[:n]]
    real_train = data.mnist("train").tensors[0][torch.randperm(60000, generator=g)[:n]]
    out = {f"fd_floor_train_vs_test_n{n}": round(metrics.frechet_distance(real_train, real_test, judge), 3)}
    labels = torch.arange(n) % 10 if num_classes else None
    for name, lab in [("conditional", labels), ("unconditional", None)]:
        out[f"fd_{tag}_{name}_n{n}"] = round(metrics.frechet_distance(draw(n, lab), real_test, judge), 3)
        if lab is None:
            break
    return out


# ----------------------------------------------------------------------------- flow matching
def flow_matching_loss(model, x1, y, p_uncond: float = 0.1, generator=None):
    """Conditional flow matching on the OT path (diffedu.flow eqs. 1-3), for images:

        x_t = t x_1 + (1 - t) x_0,   x_0 ~ N(0, I),  x_1 a digit,  t ~ U[0, 1)
        L(theta) = E || v_theta(x_t, t, y) - (x_1 - x_0) ||^2        (the U-Net reads the time as T t)

    Label dropout as in ddpm_loss.
    """
    weight = next(model.parameters(), None)
    image_batch("images", x1, dtype=None if weight is None else weight.dtype)
    check_generator("generator", generator)
    p_uncond = probability("p_uncond", p_uncond)
    B = x1.shape[0]
    t = torch.rand(B, generator=generator, device="cpu").to(x1)
    x0 = torch.randn(x1.shape, generator=generator, device="cpu").to(x1)
    x_t = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0
    if y is not None:
        drop = torch.rand(B, device="cpu", generator=generator).to(x1.device) < p_uncond
        y = torch.where(drop, torch.full_like(y, null_class(model)), y)
    T = getattr(model, "module", model).T
    return F.mse_loss(model(x_t, t * T, y).float(), x1 - x0)


class FlowMatchingTask(DDPMTask):
    """The same U-Net, trained by flow matching instead of the DDPM loss (the course's head-to-head)."""

    architecture = DDPMTask.architecture + ", trained as a velocity field (flow matching, OT path)"

    def loss(self, model, batch):
        x1, y = batch
        return flow_matching_loss(model, x1, y if self.model.num_classes else None, self.p_uncond)

    @torch.no_grad()
    def on_checkpoint(self, ema_model, step: int, out_dir) -> None:
        """Every `sample_every` steps write out_dir/samples_STEP.png: 2 Euler-20 samples per digit (EMA)."""
        if step % self.config.get("sample_every", 1000):
            return
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from torchvision.utils import make_grid

        from .pipeline import flow_sample
        labels = torch.arange(10).repeat(2) if self.model.num_classes else None
        x = flow_sample(ema_model, 20, 20, "euler", labels, generator=torch.Generator().manual_seed(0), progress=False)
        plt.imsave(Path(out_dir) / f"samples_{step:06d}.png", make_grid(x * 0.5 + 0.5, nrow=10).permute(1, 2, 0).numpy())

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        """The held-out loss on 2,000 test digits (fixed t and noise) and, with eval_fd_n = n > 0, the FD of
        n Euler-50 samples (conditional, labels 0..9 in turn, and unconditional) and the floor at that n."""

        from .pipeline import flow_sample
        x_test, y_test = data.mnist("test").tensors
        g = torch.Generator().manual_seed(1234)
        mse = sum(flow_matching_loss(ema_model, x_test[i:i + 500].to(self.device), y_test[i:i + 500].to(self.device),
                                     0.0, g).item() for i in range(0, 2000, 500)) / 4
        out = {"test_velocity_mse_n2000": round(mse, 5)}
        draw = lambda n, lab: flow_sample(ema_model, n, 50, "euler", lab, generator=torch.Generator().manual_seed(0),
                                          progress=False)
        return {**out, **fd_metrics(draw, self.config.get("eval_fd_n", 1000), x_test, g, "euler50", self.model.num_classes)}


# ----------------------------------------------------------------------------- the classifiers
def random_shift(x: torch.Tensor, max_shift: int, generator=None) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (background value -1 fills in)."""
    check_generator("generator", generator)
    if max_shift == 0:
        return x
    B, _, H, W = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, B), generator=generator).tolist()
    return torch.stack([pad[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])


class ClassifierTask:
    """Cross-entropy on clean MNIST digits (random shifts of up to ``augment_shift`` pixels).

    Each batch draws its indices with replacement from the generator, so a batch depends on
    the trainer's step alone (the trainer's resumability contract).
    """

    architecture = ("diffedu.images.classifier.MnistClassifier (4 conv layers, 2 max-pools, "
                    "64-d penultimate features)")

    def __init__(self, config: dict, device):
        self.config, self.device = config, torch.device(device)
        self.model = build(config["model"]).to(self.device)
        self.x, self.y = data.mnist("train").tensors
        self.batch_size = int(config["batch_size"])
        self.shift = int(config.get("augment_shift", 0))
        self.data_info = {**MNIST_INFO, "n": len(self.y)}

    def _draw(self, generator):
        idx = torch.randint(0, len(self.x), (self.batch_size,), generator=generator)
        return random_shift(self.x[idx], self.shift, generator), self.y[idx]

    def batches(self, generator, rank=0, world_size=1):
        while True:
            x, y = self._draw(generator)
            yield x.to(self.device), y.to(self.device)

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def evaluate(self, model) -> dict:
        x, y = data.mnist("test").tensors
        was = model.training
        model.eval()
        acc = (predict(model, x) == y).float().mean().item()
        model.train(was)
        return {"test_accuracy": round(acc, 4)}


class NoisyClassifierTask(ClassifierTask):
    """Cross-entropy on noised digits x_t = q_sample(x0, t), t ~ U{0..T}, with the U-Net's schedule."""

    architecture = ("diffedu.images.classifier.NoisyMnistClassifier (3 conv blocks with a time-step shift, "
                    "sinusoidal time embedding, MLP head)")

    def __init__(self, config: dict, device):
        super().__init__(config, device)
        self.schedule = NoiseSchedule.from_name(config.get("schedule", "linear"), int(config.get("T", 1000)))
        if self.model.T != self.schedule.T:
            raise ValueError(f"model T={self.model.T} and schedule T={self.schedule.T} differ in the config.")

    def batches(self, generator, rank=0, world_size=1):
        while True:
            x0, y = self._draw(generator)
            t = torch.randint(0, self.schedule.T + 1, (len(y),), generator=generator)
            x_t, _ = q_sample(x0, t, self.schedule, generator=generator)
            yield x_t.to(self.device), t.to(self.device), y.to(self.device)

    def loss(self, model, batch):
        x_t, t, y = batch
        return F.cross_entropy(model(x_t, t), y)

    def evaluate(self, model) -> dict:
        x, y = data.mnist("test").tensors
        ts = self.config.get("eval_ts", [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])
        was = model.training
        model.eval()
        acc = accuracy_vs_t(model, x, y, self.schedule, ts, torch.Generator().manual_seed(0))
        model.train(was)
        return {"test_accuracy_t0": round(acc[0], 4) if 0 in acc else None,
                "mean_test_accuracy": round(sum(acc.values()) / len(acc), 4),
                "test_accuracy_vs_t": {str(k): round(v, 4) for k, v in acc.items()}}
