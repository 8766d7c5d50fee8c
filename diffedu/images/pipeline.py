"""From the shipped U-Net to digits: load it, wrap it for the samplers, sample in batches.

    model, schedule, card = load_unet("mnist_unet")
    eps = eps_model(model, labels, w)            # eps_model(x_t, t) for diffedu.samplers
    x = sample(model, schedule, n, "ddim", steps=50, labels=labels, w=1.0)
    x = sample(model, schedule, n, "heun", steps=25)   # the probability-flow ODE (diffedu.sde)
    x = flow_sample(model, n, steps=50, method="euler")  # a U-Net trained by flow matching (FlowMatchingTask)

Conditioning is a closure around the network (lesson 06):

* ``labels=None``: the unconditional model, eps_theta(x_t, t, null) (the null class);
* labels (one digit for all, or one per image) with the guidance weight w of
  :func:`diffedu.guidance.cfg_eps`, eq. (4) there: w = 1 is the plain conditional model
  eps_theta(x_t, t, y) (the default), w > 1 classifier-free guidance, w = 0 unconditional.

``sample`` checks every argument before the first network call: w as in diffedu.guidance (a
finite number >= 0, also without labels), clip_x0 None or > 0, eta >= 0, batch_size a positive
int, generator a torch.Generator, and the schedule: the same T as the model and, for a model
from ``load_unet`` (it has a ``card``), the same kind (linear or cosine) as its training config.
"""
import torch

from diffedu._validate import generator as check_generator, one_of, positive_int
from diffedu.checkpoints import load_checkpoint, load_into
from diffedu.guidance import cfg_model, check_labels, check_scale
from diffedu.samplers import check_clip, check_eta, ddim_sample, ddim_timesteps, ddpm_sample
from diffedu.schedules import NoiseSchedule
from diffedu.sde import probability_flow_sample, time_grid

from .unet import IMAGE_SHAPE, UNet


def load_unet(name: str = "mnist_unet", config: dict | None = None, device=None):
    """A shipped EMA U-Net: returns (model in eval mode, its NoiseSchedule, model card).

    config: optional dict of config entries the checkpoint must have been trained with
    (e.g. {"model": {...}, "T": 1000}); a mismatch raises ValueError.
    """
    _, card = load_checkpoint(name, expected_config=config)
    cfg = card["config"]
    T = cfg.get("T", 1000)
    model = UNet(**cfg.get("model", {}), T=T)
    load_into(model, name, config)
    model.card = card
    model = model.eval().requires_grad_(False).to(device or "cpu")
    return model, NoiseSchedule.from_name(cfg.get("schedule", "linear"), T), card


def eps_model(model: UNet, labels=None, w: float = 1.0):
    """The network as eps_model(x_t, t) for the samplers: unconditional (labels=None) or guided by eq. (4)."""
    w = check_scale(w, "w")
    if labels is None:
        return lambda x_t, t: model(x_t, t, None)
    if not model.num_classes:
        raise ValueError("this UNet was trained without classes; call eps_model(model) without labels.")
    return cfg_model(model, labels, w)


def check_schedule_kind(model, schedule: NoiseSchedule) -> None:
    """A model from load_unet knows its card: its schedule kind must be the one it was trained with."""
    card = getattr(model, "card", None)
    if card is None:  # a network built by hand: nothing to compare with
        return
    trained = card["config"].get("schedule", "linear")  # load_unet's default, too
    if schedule.name != trained:
        raise ValueError(f"the model was trained with the {trained!r} schedule (its card says so) but got the "
                         f"{schedule.name!r} schedule; use the schedule load_unet returns, "
                         f"NoiseSchedule.from_name({trained!r}, {model.T}).")


@torch.no_grad()
def sample(model: UNet, schedule: NoiseSchedule, n: int, sampler: str = "ddim", steps: int = 50,
           labels=None, w: float = 1.0, generator=None, clip_x0: float | None = 1.0,
           eta: float = 0.0, batch_size: int = 500, progress: bool = True) -> torch.Tensor:
    """n images in [-1, 1] from the network: sampler "ddpm" (all T steps), "ddim" (`steps` steps) or
    "heun" (`steps` Heun steps of the probability-flow ODE, 2 * steps network calls; the ODE has no
    x0_hat to clip, so clip_x0 and eta do not apply and the result is clamped to [-1, 1]).

    Samples are drawn in batches of `batch_size`; labels: one digit, n digits or None (unconditional);
    w: the classifier-free guidance weight (1 = the plain conditional model).
    """
    one_of("sampler", sampler, ("ddpm", "ddim", "heun"))
    positive_int("n", n)
    positive_int("batch_size", batch_size)
    w, eta, clip_x0 = check_scale(w, "w"), check_eta(eta), check_clip(clip_x0)
    check_generator("generator", generator)
    if sampler == "ddim":
        ddim_timesteps(schedule.T, steps)  # raises if steps does not divide T
    if sampler == "heun":
        time_grid(schedule.T, steps)  # raises unless 1 <= steps < T
    if model.T != schedule.T:
        raise ValueError(f"the model was trained with T={model.T} but the schedule has T={schedule.T}.")
    check_schedule_kind(model, schedule)
    if labels is not None:
        labels = check_labels(labels, model.num_classes or 10, batch=n)
    device = next(model.parameters()).device
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        fn = eps_model(model, None if labels is None else labels[i:i + b].to(device), w)
        kw = dict(generator=generator, device=device, clip_x0=clip_x0, progress=progress)
        if sampler == "ddpm":
            x = ddpm_sample(fn, schedule, (b, *IMAGE_SHAPE), **kw)
        elif sampler == "ddim":
            x = ddim_sample(fn, schedule, (b, *IMAGE_SHAPE), steps=steps, eta=eta, **kw)
        else:
            x = probability_flow_sample(fn, schedule, (b, *IMAGE_SHAPE), steps=steps, method="heun",
                                        generator=generator, device=device, progress=progress).clamp(-1, 1)
        out.append(x.cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------- a U-Net trained by flow matching
def velocity_model(model: UNet, labels=None, w: float = 1.0):
    """A flow-matching U-Net as velocity(x, t) for diffedu.flow.sample: x (N, 784) flat, t (N,) in [0, 1].

    The network reads the time as T t (its sinusoidal time embedding was made for 0..T); labels and
    w as in eps_model (classifier-free guidance mixes velocities exactly as it mixes noise predictions).
    """
    net = eps_model(model, labels, w)                                 # the same closure: inputs in, outputs out
    return lambda x, t: net(x.view(-1, *IMAGE_SHAPE), t * model.T).flatten(1)


@torch.no_grad()
def flow_sample(model: UNet, n: int, steps: int = 50, method: str = "euler", labels=None, w: float = 1.0,
                generator=None, batch_size: int = 500, progress: bool = True) -> torch.Tensor:
    """n images from a flow-matching U-Net: `steps` Euler or Heun steps of dx/dt = v(x, t) from noise at t = 0
    to data at t = 1 (diffedu.flow eq. 12, 13), in batches; clamped to [-1, 1]."""
    from diffedu import flow
    positive_int("n", n)
    positive_int("batch_size", batch_size)
    check_generator("generator", generator)
    flow.nfe(method, steps)                                           # checks method and steps
    if labels is not None:
        labels = check_labels(labels, model.num_classes or 10, batch=n)
    device = next(model.parameters()).device
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        v = velocity_model(model, None if labels is None else labels[i:i + b].to(device), w)
        x_0 = torch.randn(b, 28 * 28, generator=generator)                   # noise at t = 0
        out.append(flow.sample(v, x_0.to(device), steps, method, progress=progress).view(b, *IMAGE_SHAPE).cpu())
    return torch.cat(out).clamp(-1, 1)

