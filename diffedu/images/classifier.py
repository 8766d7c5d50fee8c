r"""Two MNIST classifiers: the clean judge p(y | x) and the noise-aware guide p(y | x_t, t).

1. ``MnistClassifier``: a small CNN for *clean* digits, p(y | x). It is the judge of the
   course: its test accuracy is above 99%, so "the judge says this sample is a 7" is a
   good proxy for "a person would say so", and its penultimate activations

   .. math::  \phi(x) = \mathrm{ReLU}(W h(x) + b) \in \mathbb R^{64}

   (``.features(x)``) are the feature space in which the Fréchet distance between two
   sets of images is measured (:mod:`diffedu.metrics`).

2. ``NoisyMnistClassifier``: p(y | x_t, t), trained on *noised* digits
   :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon` with t drawn
   uniformly from 0..T. Classifier guidance needs the gradient
   :math:`\nabla_{x_t}\log p(y \mid x_t, t)` at every noise level the sampler visits, and
   a clean-data classifier has never seen x_t (Dhariwal & Nichol, 2021, sec. 4). The time
   step enters like it does in the U-Net: sinusoidal features (diffedu.nets.sinusoidal_embedding)
   -> MLP -> a per-channel shift in every block.

Both take float32 images, the dtype of their weights; float64 or integer images are refused
with the fix (``x.float()``), never converted silently.

The judge and the guide are different networks on purpose: a sampler guided by a
classifier can learn to fool that very classifier, so we never let it grade its own work.

Both are trained by the generic trainer with the tasks of :mod:`diffedu.images.tasks`:
``python -m diffedu.train configs/mnist_classifier.json --ship`` and
``python -m diffedu.train configs/mnist_noisy_classifier.json --ship``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from diffedu._validate import generator as check_generator, image_batch, one_of, positive_int
from diffedu.checkpoints import load_checkpoint, load_into
from diffedu.forward import q_sample
from diffedu.nets import sinusoidal_embedding

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


# ----------------------------------------------------------------------------- the clean judge
class MnistClassifier(nn.Module):
    """p(y | x) for clean 28x28 digits in [-1, 1]:

    [conv3x3 -> ReLU] x 2 -> maxpool -> [conv3x3 -> ReLU] x 2 -> maxpool     (28 -> 14 -> 7)
    -> flatten -> dropout -> Linear -> ReLU  = features(x) (``feature_dim`` numbers)
    -> Linear -> 10 logits
    """

    input_shape = INPUT_SHAPE

    def __init__(self, channels=(16, 32), feature_dim=64, dropout=0.25, num_classes=NUM_CLASSES):
        super().__init__()
        c1, c2 = channels
        self.num_classes, self.feature_dim = num_classes, feature_dim
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout))
        self.fc = nn.Linear(c2 * 7 * 7, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations phi(x), shape (B, feature_dim): the Fréchet-distance space."""
        image_batch("x", x, self.input_shape, value_range=None, dtype=self.fc.weight.dtype)
        return F.relu(self.fc(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 10); softmax gives p(y | x)."""
        return self.head(self.features(x))


# ----------------------------------------------------------------------------- the noise-aware guide
class TimeBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + shift(emb);  return skip(x) + conv(SiLU(GN(h)))."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(8, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.shift = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x))) + self.shift(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class NoisyMnistClassifier(nn.Module):
    """p(y | x_t, t) for noised digits, t in 0..T (t = 0 is a clean image):

    t -> sinusoid -> MLP = emb;  x_t -> conv -> TimeBlock (28) -> avgpool -> TimeBlock (14)
    -> avgpool -> TimeBlock (7) -> GN, SiLU -> flatten -> Linear -> SiLU -> Linear -> 10 logits
    """

    input_shape = INPUT_SHAPE

    def __init__(self, ch=16, ch_mult=(1, 2, 2), hidden=128, T=1000, num_classes=NUM_CLASSES):
        super().__init__()
        self.ch, self.T, self.num_classes = ch, T, num_classes
        emb = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(1, ch, 3, padding=1)
        widths = [ch] + [ch * m for m in ch_mult]
        self.blocks = nn.ModuleList([TimeBlock(a, b, emb) for a, b in zip(widths, widths[1:])])
        self.norm_out = nn.GroupNorm(8, widths[-1])
        self.head = nn.Sequential(nn.Linear(widths[-1] * 7 * 7, hidden), nn.SiLU(), nn.Linear(hidden, num_classes))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits (B, 10) of p(y | x_t, t)."""
        image_batch("x_t", x_t, self.input_shape, value_range=None, dtype=self.conv_in.weight.dtype)
        t = torch.as_tensor(t, device=x_t.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer time steps 0..{self.T}, got dtype {t.dtype}.")
        t = t.long().expand(x_t.shape[0]) if t.dim() == 0 else t.long()
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t must be an int or have shape ({x_t.shape[0]},), got {tuple(t.shape)}.")
        if bool(((t < 0) | (t > self.T)).any()):
            raise ValueError(f"time steps must be in 0..{self.T}, got values in [{int(t.min())}, {int(t.max())}].")
        emb = self.time_mlp(sinusoidal_embedding(t, self.ch))
        h = self.conv_in(x_t)
        for i, block in enumerate(self.blocks):
            h = block(F.avg_pool2d(h, 2) if i else h, emb)
        return self.head(F.silu(self.norm_out(h)).flatten(1))


# ----------------------------------------------------------------------------- configs and loading
MODELS = {"MnistClassifier": MnistClassifier, "NoisyMnistClassifier": NoisyMnistClassifier}


def build(model_config: dict) -> nn.Module:
    """A classifier from the "model" entry of a config: {"kind": ..., other keyword arguments}."""
    cfg = dict(model_config)
    kind = one_of("model kind", cfg.pop("kind", None), tuple(MODELS))
    return MODELS[kind](**cfg)


def load(name: str = "mnist_classifier", device=None) -> nn.Module:
    """A shipped classifier ('mnist_classifier' or 'mnist_noisy_classifier'), in eval mode, no grads."""
    _, card = load_checkpoint(name)
    model = build(card["config"]["model"])
    load_into(model, name, {"model": card["config"]["model"]})  # a clear error if the weights do not fit
    model.card = card
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval().to(device or "cpu")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, t=None, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels argmax_y p(y | x) (or p(y | x_t, t) when ``t`` is given), in batches."""
    positive_int("batch_size", batch_size)
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(dev)
        logits = model(xb) if t is None else model(xb, torch.full((len(xb),), int(t), device=dev))
        out.append(logits.argmax(1).cpu())
    return torch.cat(out)


@torch.no_grad()
def accuracy_vs_t(model, x0, y, schedule, ts, generator=None) -> dict:
    """{t: accuracy of argmax p(y | x_t, t) on x_t = q_sample(x0, t)} for each t in ``ts``."""
    check_generator("generator", generator)
    acc = {}
    for t in ts:
        x_t, _ = q_sample(x0, int(t), schedule, generator=generator)
        acc[int(t)] = (predict(model, x_t, t) == y).float().mean().item()
    return acc
