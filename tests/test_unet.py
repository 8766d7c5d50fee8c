"""The MNIST U-Net (diffedu.images), its loss, the sampling pipeline, the Fréchet distance, and their input checks."""
import json
from pathlib import Path

import pytest
import torch

import diffedu as dd
from diffedu import metrics, nets, sde
from diffedu.images import pipeline, tasks, unet
from diffedu.checkpoints import save_checkpoint
from diffedu.schedules import NoiseSchedule

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = NoiseSchedule.linear(1000)


class Features(torch.nn.Module):
    """A stand-in for the judge's feature map: the mean and the spread of the pixels."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def features(self, x):
        return self.scale * torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], dim=1)


FEATURES = Features()


def tiny(**kw):
    torch.manual_seed(0)
    m = unet.UNet(**{"ch": 8, "ch_mult": (1, 2, 2), "heads": 2, "dropout": 0.0, **kw})
    for p in m.parameters():  # output convs start at zero (identity blocks); wake them up
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.1)
    return m.eval()


def test_shapes_through_the_levels():
    m = tiny()
    seen = []
    hooks = [b.register_forward_hook(lambda mod, i, o: seen.append(tuple(o.shape[1:])))
             for blocks in list(m.down) + list(m.up) for b in blocks]
    x = torch.randn(3, 1, 28, 28)
    out = m(x, torch.tensor([1, 500, 1000]), torch.tensor([0, 5, 10]))
    assert out.shape == x.shape
    assert {s[1] for s in seen} == {28, 14, 7}
    assert (16, 7, 7) in seen and (8, 28, 28) in seen
    for h in hooks:
        h.remove()


def test_shipped_config_is_small_enough():
    cfg = json.loads((ROOT / "configs" / "mnist_unet.json").read_text())
    n = dd.parameter_count(unet.UNet(**cfg["model"]))
    assert 1e5 < n <= 10_000_000


def test_the_time_embedding_keeps_the_layout_the_weights_were_trained_with():
    """First the sines, then the cosines, frequencies 10000^(-i/half) (values by hand)."""
    emb = nets.sinusoidal_embedding(torch.tensor([0, 1, 100]), 4)  # half = 2: frequencies 1 and 0.01
    want = torch.tensor([[0.0, 0.0, 1.0, 1.0],
                         [0.8414710, 0.0099998, 0.5403023, 0.9999500],      # sin 1, sin 0.01, cos 1, cos 0.01
                         [-0.5063656, 0.8414710, 0.8623189, 0.5403023]])    # sin 100, sin 1, cos 100, cos 1
    torch.testing.assert_close(emb, want, atol=1e-6, rtol=0)
    m = tiny()
    features = {}
    m.time_mlp.register_forward_hook(lambda mod, inp, out: features.update(x=inp[0]))
    m(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]))
    assert torch.equal(features["x"], nets.sinusoidal_embedding(torch.tensor([0, 1]), 8))  # what the U-Net feeds its MLP


def test_images_do_not_talk_to_each_other():
    m = tiny()
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([10, 20, 30, 40]), torch.tensor([1, 2, 3, 10])
    full = m(x, t, y)
    one = m(x[2:3], t[2:3], y[2:3])
    torch.testing.assert_close(full[2:3], one, atol=1e-5, rtol=1e-4)


def test_time_and_class_change_the_output():
    m = tiny()
    x = torch.randn(2, 1, 28, 28)
    a = m(x, torch.tensor([5, 5]), torch.tensor([3, 3]))
    assert not torch.allclose(a, m(x, torch.tensor([900, 900]), torch.tensor([3, 3])))
    assert not torch.allclose(a, m(x, torch.tensor([5, 5]), torch.tensor([7, 7])))
    torch.testing.assert_close(m(x, torch.tensor([5, 5])), m(x, torch.tensor([5, 5]), torch.tensor([10, 10])))


class Oracle(torch.nn.Module):
    """Knows x0, so it can return the exact noise: eps = (x_t - sqrt(ab) x0) / sqrt(1 - ab)."""
    null_class = 10

    def __init__(self, x0):
        super().__init__()
        self.x0, self.ys = x0, []

    def forward(self, x_t, t, y=None):
        self.ys.append(y)
        ab = SCHEDULE.at(SCHEDULE.alpha_bar, t, x_t)
        return (x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt()


def test_loss_is_zero_for_the_oracle_and_one_for_zero():
    torch.manual_seed(0)
    x0 = torch.rand(256, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (256,))
    assert tasks.ddpm_loss(Oracle(x0), x0, y, SCHEDULE).item() < 1e-8
    zero = Oracle(x0)
    zero.forward = lambda x_t, t, y=None: torch.zeros_like(x_t)
    assert abs(tasks.ddpm_loss(zero, x0, y, SCHEDULE).item() - 1.0) < 0.01  # E[eps^2] = 1


def test_label_dropout_uses_the_null_class():
    x0, y = torch.zeros(2000, 1, 28, 28), torch.randint(0, 10, (2000,))
    o = Oracle(x0)
    tasks.ddpm_loss(o, x0, y, SCHEDULE, p_uncond=1.0)
    assert (o.ys[-1] == 10).all()
    tasks.ddpm_loss(o, x0, y, SCHEDULE, p_uncond=0.25)
    frac = (o.ys[-1] == 10).float().mean().item()
    assert 0.2 < frac < 0.3


class ConstantEps(torch.nn.Module):
    """A fake U-Net whose noise prediction is 3 given a label and 1 without one (the null class)."""
    num_classes, null_class = 10, 10

    def forward(self, x_t, t, y=None):
        return torch.full_like(x_t, 1.0 if y is None else 3.0)


def test_eps_model_is_classifier_free_guidance_with_weight_w():
    """eps = e_null + w (e_y - e_null) with e_null = 1, e_y = 3: 1 + 2w (w = 1: conditional, by hand)."""
    x, t, y = torch.zeros(2, 1, 28, 28), torch.tensor([7, 7]), torch.tensor([1, 4])
    for w, want in [(0.0, 1.0), (1.0, 3.0), (2.5, 6.0)]:
        assert torch.equal(pipeline.eps_model(ConstantEps(), y, w)(x, t), torch.full_like(x, want))
    assert torch.equal(pipeline.eps_model(ConstantEps())(x, t), torch.ones_like(x))  # no labels: unconditional
    m = tiny()
    torch.testing.assert_close(pipeline.eps_model(m, y)(x, t), m(x, t, y))  # the default w = 1 is the network


def test_sample_runs_and_is_deterministic():
    m = tiny()
    s = NoiseSchedule.linear(20)
    m.T = 20
    a = pipeline.sample(m, s, 3, "ddim", steps=5, generator=torch.Generator().manual_seed(1), progress=False)
    b = pipeline.sample(m, s, 3, "ddim", steps=5, generator=torch.Generator().manual_seed(1), progress=False)
    assert a.shape == (3, 1, 28, 28) and torch.equal(a, b) and a.abs().max() <= 1.0 + 1e-5
    c = pipeline.sample(m, s, 2, "ddpm", labels=[3, 4], generator=torch.Generator().manual_seed(1), progress=False)
    assert c.shape == (2, 1, 28, 28) and torch.isfinite(c).all()
    d = pipeline.sample(m, s, 2, "heun", steps=4, labels=[3, 4], generator=torch.Generator().manual_seed(1),
                        progress=False)
    x_T = torch.randn((2, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    want = sde.probability_flow_sample(pipeline.eps_model(m, torch.tensor([3, 4])), s, (2, 1, 28, 28), steps=4,
                                       x_T=x_T, progress=False).clamp(-1, 1)
    torch.testing.assert_close(d, want)  # "heun" is the probability-flow ODE of diffedu.sde, clamped to [-1, 1]
    with pytest.raises(ValueError, match="steps"):
        pipeline.sample(m, s, 2, "heun", steps=20, progress=False)


# --- Fréchet distance ----------------------------------------------------------------------------
def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    v1, v2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    want = ((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum()
    got = metrics.frechet_distance_gaussians(mu1, torch.diag(v1), mu2, torch.diag(v2))
    assert abs(got - want.item()) < 1e-9


def test_frechet_distance_is_rotation_invariant_and_zero_on_itself():
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    c1, c2 = a @ a.T + torch.eye(4), torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    mu1, mu2 = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    d = metrics.frechet_distance_gaussians(mu1, c1, mu2, c2)
    dq = metrics.frechet_distance_gaussians(q @ mu1, q @ c1 @ q.T, q @ mu2, q @ c2 @ q.T)
    assert abs(d - dq) < 1e-8 and d > 0
    assert abs(metrics.frechet_distance_gaussians(mu1, c1, mu1, c1)) < 1e-8


def test_frechet_distance_on_images_with_a_feature_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 6))
    net.features = net.forward
    x = torch.rand(400, 1, 28, 28) * 2 - 1
    assert abs(metrics.frechet_distance(x, x, net)) < 1e-6
    assert metrics.frechet_distance(x, x * 0.5, net) > 1e-3


# --- bad input -----------------------------------------------------------------------------------
def test_wrong_image_size_is_rejected():
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\)"):
        tiny()(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\)"):
        tasks.ddpm_loss(tiny(), torch.zeros(2, 3, 28, 28), None, SCHEDULE)
    with pytest.raises(ValueError, match=r"timesteps must be in 0..1000"):
        tiny()(torch.zeros(1, 1, 28, 28), torch.tensor([1001]))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        metrics.frechet_distance(torch.zeros(5, 28, 28), torch.zeros(5, 1, 28, 28), FEATURES)


def test_wrong_image_range_is_rejected():
    pixels = torch.randint(0, 256, (4, 1, 28, 28)).float()
    with pytest.raises(ValueError, match=r"values in \[-1, 1\]"):
        tasks.ddpm_loss(tiny(), pixels, None, SCHEDULE)
    with pytest.raises(ValueError, match=r"values in \[-1, 1\]"):
        metrics.frechet_distance(pixels, pixels, FEATURES)


def test_class_label_outside_0_to_9_is_rejected():
    m = tiny()
    with pytest.raises(ValueError, match=r"class labels must be in 0..9"):
        pipeline.eps_model(m, torch.tensor([3, 10]))
    with pytest.raises(ValueError, match=r"class labels must be in 0..9"):
        pipeline.sample(m, SCHEDULE, 2, labels=[-1, 2], progress=False)
    with pytest.raises(ValueError, match=r"class labels must be in 0..9"):
        m(torch.zeros(1, 1, 28, 28), torch.tensor([5]), torch.tensor([11]))
    with pytest.raises(TypeError, match="integers"):
        pipeline.eps_model(m, torch.tensor([1.5]))
    with pytest.raises(ValueError, match="need one label or 3 labels"):
        pipeline.sample(m, SCHEDULE, 3, labels=[1, 2], progress=False)
    with pytest.raises(ValueError, match="p_uncond must be a probability"):
        tasks.ddpm_loss(m, torch.zeros(2, 1, 28, 28), torch.tensor([1, 2]), SCHEDULE, p_uncond=1.5)


def test_step_count_must_divide_the_schedule():
    with pytest.raises(ValueError, match="does not divide"):
        pipeline.sample(tiny(), SCHEDULE, 2, "ddim", steps=30, progress=False)
    with pytest.raises(ValueError, match="sampler must be"):
        pipeline.sample(tiny(), SCHEDULE, 2, "euler", progress=False)


def test_checkpoint_from_another_config_is_rejected(tmp_path):
    m = tiny()
    cfg = {"model": {"ch": 8, "ch_mult": [1, 2, 2], "heads": 2, "dropout": 0.0}, "T": 1000, "schedule": "linear"}
    save_checkpoint(tmp_path / "tiny_unet", m.state_dict(), {"name": "tiny_unet", "config": cfg})
    loaded, schedule, card = pipeline.load_unet(tmp_path / "tiny_unet", config={"model": cfg["model"]})
    x = torch.randn(1, 1, 28, 28)
    torch.testing.assert_close(loaded(x, torch.tensor([3])), m(x, torch.tensor([3])))
    other = {**cfg["model"], "ch": 16}
    with pytest.raises(ValueError, match="different config"):
        pipeline.load_unet(tmp_path / "tiny_unet", config={"model": other})
    with pytest.raises(ValueError, match="schedule must be"):
        dd.NoiseSchedule.from_name("quadratic")
