r"""Guidance: steer a diffusion model towards a class y with Bayes' rule.

Bayes' rule for the noisy marginal, p(x_t | y) = p(y | x_t) p(x_t) / p(y), and a gradient
in x_t (the evidence p(y) does not depend on x_t) give the conditional score

.. math::  \nabla\log p(x_t \mid y) = \nabla\log p(x_t) + \nabla\log p(y \mid x_t).        (1)

A guidance scale s >= 0 weights the classifier term, which is the score of the tilted
distribution :math:`p_s(x_t \mid y) \propto p(x_t)\,p(y \mid x_t)^s` (s = 1: exactly the
conditional; s > 1: sharper, more recognisable, less diverse):

.. math::  \nabla\log p_s(x_t \mid y) = \nabla\log p(x_t) + s\,\nabla\log p(y \mid x_t).    (2)

**Classifier guidance** (Dhariwal & Nichol, 2021) gets :math:`\nabla\log p(y \mid x_t)` from
a classifier trained on noised images, in two forms:

* DDPM, shift the mean of each ancestral step (their algorithm 1):
  :math:`x_{t-1} \sim \mathcal N(\mu + s\,\Sigma\,\nabla\log p(y \mid x_t),\ \Sigma)`;
* DDIM (algorithm 2), guide the noise prediction, since
  :math:`\varepsilon = -\sqrt{1-\bar\alpha_t}\,\nabla\log p(x_t)` turns (2) into

.. math::  \hat\varepsilon = \varepsilon_\theta(x_t, t) - s\sqrt{1-\bar\alpha_t}\,\nabla\log p(y \mid x_t).  (3)

**Classifier-free guidance** (Ho & Salimans, 2022) needs no classifier: Bayes' rule again,
:math:`\nabla\log p(y \mid x_t) = \nabla\log p(x_t \mid y) - \nabla\log p(x_t)`, so one network
trained with and without labels supplies both scores. Put into (2) with s = w:

.. math::  \hat\varepsilon = \varepsilon_\theta(x_t, t, \varnothing)
           + w\,\big(\varepsilon_\theta(x_t, t, y) - \varepsilon_\theta(x_t, t, \varnothing)\big).   (4)

**The one convention of the course** (lesson 08, and every function of diffedu): w = 0 is
the unconditional model, w = 1 the plain conditional model, w > 1 guided (GLIDE, Imagen and
diffusers' ``guidance_scale`` use this form too). Ho & Salimans (2022) write instead

.. math::  \hat\varepsilon = (1 + w_\text{theirs})\,\varepsilon_\theta(x_t, t, y)
           - w_\text{theirs}\,\varepsilon_\theta(x_t, t, \varnothing),

which is (4) with :math:`w_\text{theirs} = w - 1`: their 0 is our 1 (no guidance), their 3 our 4.
"""
import torch
from tqdm.auto import tqdm

from . import _validate, metrics
from .forward import q_posterior
from .samplers import check_clip, ddim_sample, ddim_timesteps, ddpm_step, start_noise, timestep_batch
from .schedules import NoiseSchedule


# ----------------------------------------------------------------------------- input checks
def check_scale(scale, name: str = "scale") -> float:
    """A guidance scale must be a finite number >= 0 (0 switches guidance off)."""
    return _validate.nonnegative_float(name, scale, " (0 = no guidance); a negative scale would push samples "
                                                    "away from the class")


def check_labels(y, num_classes: int, batch: int | None = None, device=None) -> torch.Tensor:
    """Class labels y in 0..num_classes-1 as a LongTensor: one int for every image, or one per image.

    With ``batch`` the result has shape (batch,) (an int is repeated); without it, y is only checked.
    """
    y = torch.as_tensor(y, device=device)
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"class labels must be integers 0..{num_classes - 1}, got dtype {y.dtype}.")
    if y.dim() > 1 or (batch is not None and y.dim() == 1 and y.shape[0] != batch):
        want = f"one label or {batch} labels (one per image)" if batch is not None else "one label or one per image"
        raise ValueError(f"need {want}, got shape {tuple(y.shape)}.")
    if bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(f"class labels must be in 0..{num_classes - 1}, got {sorted(set(y.flatten().tolist()))}.")
    if batch is not None and y.dim() == 0:
        y = y.expand(batch)
    return y.long()


def _check_classifier_input(classifier, x_t):
    shape = getattr(classifier, "input_shape", None)
    if shape is not None and tuple(x_t.shape[1:]) != tuple(shape):
        raise ValueError(f"the classifier takes inputs of shape (B, {', '.join(map(str, shape))}) but x_t "
                         f"has shape {tuple(x_t.shape)}: its input size does not match the diffusion model's.")


# ----------------------------------------------------------------------------- classifier guidance
def classifier_grad(classifier, x_t: torch.Tensor, t, y) -> torch.Tensor:
    r"""grad_{x_t} log p(y | x_t, t), one gradient per image, shape of x_t.

    ``classifier(x_t, t)`` returns logits (B, K); log p(y | x_t, t) = log_softmax(logits)[y].
    Works inside ``torch.no_grad()`` samplers (it switches gradients on locally).
    """
    _check_classifier_input(classifier, x_t)
    num_classes = getattr(classifier, "num_classes", None)
    if num_classes is not None:
        y = check_labels(y, num_classes, x_t.shape[0], x_t.device)
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        logits = classifier(x, t)
        if num_classes is None:
            y = check_labels(y, logits.shape[1], x_t.shape[0], x_t.device)
        log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()  # images are independent
        (grad,) = torch.autograd.grad(log_p, x)
    return grad.to(x_t.dtype)


def classifier_guided_eps(eps_model, classifier, y, scale: float, schedule: NoiseSchedule):
    r"""eps_model(x_t, t) for DDIM (eq. 3): eps - s sqrt(1 - alpha_bar_t) grad log p(y | x_t, t)."""
    scale = check_scale(scale)
    sigma = (1 - schedule.alpha_bar).sqrt()

    def guided(x_t, t):
        eps = eps_model(x_t, t)
        if scale == 0:
            return eps
        return eps - scale * schedule.at(sigma, t, x_t) * classifier_grad(classifier, x_t, t, y)

    return guided


def guided_ddpm_step(x_t, t: int, eps, schedule: NoiseSchedule, *, grad, scale: float, t_prev: int | None = None,
                     generator=None, clip_x0=None):
    r"""One ancestral step with its mean shifted towards y: the plain step + s Sigma grad log p(y | x_t).

    ``grad`` is ``classifier_grad(classifier, x_t, t, y)``; Sigma is the plain step's variance
    (:func:`diffedu.samplers.ddpm_step`, t' = t_prev, default t - 1). Returns ``(x_prev, x0_hat)``.
    """
    scale = check_scale(scale)
    _validate.generator("generator", generator)
    clip_x0 = check_clip(clip_x0)
    x_prev, x0_hat = ddpm_step(x_t, t, eps, schedule, t_prev, generator=generator, clip_x0=clip_x0)
    if scale == 0:
        return x_prev, x0_hat
    _, var = q_posterior(x0_hat, x_t, t, schedule, t_prev)  # Sigma, as in the plain step
    return x_prev + scale * var * grad, x0_hat


@torch.no_grad()
def guided_ddpm_sample(eps_model, classifier, y, scale: float, schedule: NoiseSchedule, shape,
                       generator=None, device=None, clip_x0=None, steps=None, progress=True):
    """Algorithm 1 of Dhariwal & Nichol: ancestral steps from x_T ~ N(0, I), each mean shifted to class y.

    steps=None visits all T steps; steps=k visits T, T - T/k, ..., T/k (a respaced chain).
    """
    scale = check_scale(scale)
    ts = ddim_timesteps(schedule.T, steps or schedule.T)
    _validate.generator("generator", generator)
    clip_x0 = check_clip(clip_x0)
    x = start_noise(shape, generator, device)
    for t, t_prev in tqdm(list(zip(ts, ts[1:] + [0])), desc=f"guided DDPM s={scale:g}",
                          disable=not progress, leave=False):
        tt = timestep_batch(t, x)
        eps = eps_model(x, tt)
        grad = classifier_grad(classifier, x, tt, y) if scale > 0 else None
        x, _ = guided_ddpm_step(x, t, eps, schedule, grad=grad, scale=scale, t_prev=t_prev,
                                generator=generator, clip_x0=clip_x0)
    return x


# ----------------------------------------------------------------------------- classifier-free guidance
def cfg_eps(model, x_t: torch.Tensor, t, y, w: float) -> torch.Tensor:
    r"""Eq. (4): eps(x_t, t, null) + w (eps(x_t, t, y) - eps(x_t, t, null)), the course's one CFG.

    ``model(x_t, t, y)`` predicts noise given labels y, and ``model(x_t, t, None)`` without
    a label (the null class). w = 0: unconditional; w = 1: conditional; w > 1: guided.
    (The "(1 + w') eps(y) - w' eps(null)" form of Ho & Salimans is w = 1 + w'.)
    """
    w = check_scale(w, "w")
    y = check_labels(y, getattr(model, "num_classes", None) or 10, x_t.shape[0], x_t.device)
    if w == 0:
        return model(x_t, t, None)
    eps_cond = model(x_t, t, y)
    if w == 1:
        return eps_cond
    eps_uncond = model(x_t, t, None)
    return eps_uncond + w * (eps_cond - eps_uncond)


def cfg_model(model, y, w: float):
    """Wrap eq. (4) as eps_model(x_t, t) for the samplers (labels y: an int or one per image)."""
    w = check_scale(w, "w")
    check_labels(y, getattr(model, "num_classes", None) or 10)
    return lambda x_t, t: cfg_eps(model, x_t, t, y, w)


# ----------------------------------------------------------------------------- exact 2D oracles
class MixtureClassifier:
    r"""The exact noise-aware classifier of a Gaussian mixture whose components are the classes.

    x_t's marginal is the noised mixture p_t = sum_k w_k N(sqrt(ab) mu_k, ab Sigma_k + (1 - ab) I),
    so by Bayes' rule p(y = k | x_t) is its responsibility r_k(x_t); the logits returned are
    log w_k + log N_k(x_t) (softmax of them = responsibilities).
    """

    def __init__(self, mixture, schedule: NoiseSchedule):
        self.mixture, self.schedule = mixture, schedule
        self.num_classes, self.input_shape = mixture.K, (mixture.D,)

    def __call__(self, x_t, t):
        return _per_timestep(x_t, t, self.schedule,
                             lambda x, ab: self.mixture.noised(ab).component_log_probs(x))


class MixtureDenoiser:
    r"""The exact noise prediction eps*(x_t, t, y) = -sqrt(1 - ab) grad log p_t(x_t | y) of a mixture.

    y = None: the whole mixture (unconditional); y = k: component k alone (conditional).
    """

    def __init__(self, mixture, schedule: NoiseSchedule):
        self.mixture, self.schedule, self.num_classes = mixture, schedule, mixture.K

    def component(self, k: int):
        m = self.mixture
        return type(m)(torch.ones(1, dtype=torch.float64), m.means[k:k + 1], m.covs[k:k + 1])

    def __call__(self, x_t, t, y=None):
        if y is None:
            return _per_timestep(x_t, t, self.schedule, lambda x, ab: self.mixture.eps_star(x, ab))
        y = check_labels(y, self.num_classes, x_t.shape[0], x_t.device)
        out = torch.empty_like(x_t)
        for k in y.unique().tolist():
            rows = y == k
            out[rows] = _per_timestep(x_t[rows], torch.as_tensor(t)[rows] if torch.as_tensor(t).dim() else t,
                                      self.schedule, lambda x, ab: self.component(k).eps_star(x, ab))
        return out


def _per_timestep(x_t, t, schedule, fn):
    """Apply fn(x, alpha_bar) to the rows of x_t that share a time step; results in x_t's dtype."""
    t = schedule.check_t(t)
    t = t.expand(x_t.shape[0]) if t.dim() == 0 else t
    out = None
    for tv in t.unique().tolist():
        rows = (t == tv).to(x_t.device)
        r = fn(x_t[rows].to(torch.float64), schedule.alpha_bar[tv].item()).to(x_t.dtype)
        out = x_t.new_empty((x_t.shape[0], r.shape[1])) if out is None else out
        out[rows] = r
    return out


# ----------------------------------------------------------------------------- measuring the trade-off
@torch.no_grad()
def sample_per_class(make_eps_model, schedule: NoiseSchedule, n_per_class: int, classes=tuple(range(10)),
                     steps: int = 20, generator=None, batch_size: int = 200, shape=(1, 28, 28), device=None,
                     progress=True):
    """``n_per_class`` DDIM samples of each class; ``make_eps_model(y)`` wraps labels y (B,) as eps_model.

    Returns (images on the CPU, labels). The same generator gives the same starting noise
    for every guidance scale, so a sweep compares scales on identical x_T.
    """
    _validate.positive_int("n_per_class", n_per_class)
    _validate.positive_int("batch_size", batch_size)
    _validate.generator("generator", generator)
    labels = torch.as_tensor(list(classes)).repeat_interleave(n_per_class)
    out = []
    for i in tqdm(range(0, len(labels), batch_size), desc="sampling", disable=not progress, leave=False):
        y = labels[i:i + batch_size].to(device or "cpu")
        x = ddim_sample(make_eps_model(y), schedule, (len(y), *shape), steps=steps, generator=generator,
                        device=device, clip_x0=1.0, progress=False)
        out.append(x.clamp(-1, 1).cpu())
    return torch.cat(out), labels


def mean_pairwise_distance(f: torch.Tensor) -> float:
    """Diversity of a set of feature vectors: the mean distance |f_i - f_j| over pairs i != j."""
    n = f.shape[0]
    if n < 2:
        raise ValueError(f"diversity needs at least 2 samples, got {n}.")
    return (torch.cdist(f.double(), f.double()).sum() / (n * (n - 1))).item()


@torch.no_grad()
def tradeoff_metrics(judge, images, labels, real_features, real_labels) -> dict:
    """What guidance buys and costs, judged by the clean classifier (never the guide):

    accuracy  = fraction of samples the judge labels as the class they were asked for;
    fd        = Fréchet distance (:mod:`diffedu.metrics`) to real digits of the same class,
                averaged over the classes;
    diversity = mean pairwise feature distance within a class, averaged over the classes.

    ``real_features`` are ``metrics.mnist_features(real_images, judge)`` of labelled real digits.
    """
    f = metrics.mnist_features(images, judge).double()
    pred = judge.head(f.float().to(next(judge.parameters()).device)).argmax(1).cpu()
    classes = labels.unique().tolist()
    fd = [metrics.frechet_distance_gaussians(*metrics.gaussian_stats(f[labels == c]),
                                             *metrics.gaussian_stats(real_features[real_labels == c]))
          for c in classes]
    div = [mean_pairwise_distance(f[labels == c]) for c in classes]
    return {"accuracy": (pred == labels).double().mean().item(), "fd": sum(fd) / len(fd),
            "diversity": sum(div) / len(div), "fd_per_class": fd}


def sweep(make_eps_model_at, scales, judge, real_features, real_labels, schedule, n_per_class,
          steps=20, seed=0, device=None, progress=True) -> list[dict]:
    """One row of tradeoff_metrics per scale; ``make_eps_model_at(scale)(y)`` is the guided eps_model."""
    rows = []
    for scale in tqdm(list(scales), desc="sweep", disable=not progress, leave=False):
        images, labels = sample_per_class(make_eps_model_at(scale), schedule, n_per_class, steps=steps,
                                          generator=torch.Generator().manual_seed(seed), device=device,
                                          progress=False)
        rows.append({"scale": scale, **tradeoff_metrics(judge, images, labels, real_features, real_labels)})
    return rows
