"""The MNIST U-Net trained by flow matching (FlowMatchingTask) and its sampler (pipeline.flow_sample)."""
import json
from pathlib import Path

import pytest
import torch

from diffedu.images import pipeline, tasks
from diffedu.images.unet import UNet

ROOT = Path(__file__).resolve().parents[1]


def tiny():
    return UNet(ch=8, ch_mult=(1, 1, 2), attn_res=(), dropout=0.0, num_classes=10, T=1000)


def test_head_to_head_configs_differ_only_in_name_and_task():
    a, b = (json.loads((ROOT / f"configs/mnist_h2h_{k}.json").read_text()) for k in ("ddpm", "flow"))
    assert a["task"].endswith("DDPMTask") and b["task"].endswith("FlowMatchingTask")
    assert {k: v for k, v in a.items() if k not in ("name", "task")} == {k: v for k, v in b.items() if k not in ("name", "task")}


def test_the_loss_regresses_the_ot_velocity():
    """A 'network' that returns exactly x_1 - x_0 has zero loss; one that returns 0 pays E|x_1 - x_0|^2."""
    x1 = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1

    class Oracle(torch.nn.Module):
        T, null_class = 1000, 10

        def __init__(self, zero):
            super().__init__()
            self.zero, self.w = zero, torch.nn.Parameter(torch.zeros(()))

        def forward(self, x_t, t, y):
            s = (t / self.T)[:, None, None, None]
            x0 = (x_t - s * x1) / (1 - s)                     # invert x_t = s x1 + (1 - s) x0
            return torch.zeros_like(x_t) if self.zero else x1 - x0

    g = lambda: torch.Generator().manual_seed(1)
    assert tasks.flow_matching_loss(Oracle(False), x1, None, 0.0, g()).item() < 1e-8
    zero = tasks.flow_matching_loss(Oracle(True), x1, None, 0.0, g()).item()
    assert zero == pytest.approx((x1.pow(2).mean() + 1).item(), rel=0.02)      # E|x1|^2 + E|x0|^2 per pixel


def test_unet_takes_a_continuous_time_and_refuses_one_outside_0_T():
    net = tiny()
    x = torch.zeros(2, 1, 28, 28)
    assert net(x, torch.tensor([0.5, 999.5])).shape == x.shape
    with pytest.raises(ValueError, match="timesteps must be in 0..1000"):
        net(x, torch.tensor([-0.5, 3.0]))
    with pytest.raises(TypeError, match="one time per image"):
        net(x, torch.tensor([True, False]))


def test_flow_sample_shapes_steps_and_errors():
    net = tiny().eval()
    x = pipeline.flow_sample(net, 3, steps=2, method="heun", labels=[1, 2, 3], generator=torch.Generator().manual_seed(0),
                             progress=False)
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1
    with pytest.raises(ValueError, match="method"):
        pipeline.flow_sample(net, 2, steps=2, method="rk4", progress=False)
    with pytest.raises(ValueError, match="class labels must be in 0..9"):
        pipeline.flow_sample(net, 2, steps=2, labels=[1, 12], progress=False)


def test_flow_task_trains_a_few_steps(tmp_path):
    from diffedu.train import Trainer, load_config
    cfg = load_config("configs/mnist_h2h_flow.json")
    tiny_cfg = {**cfg, "model": {**cfg["model"], "ch": 8, "ch_mult": [1, 1, 2], "attn_res": []}, "batch_size": 8,
                "eval_fd_n": 0}
    trainer = Trainer(tiny_cfg, tmp_path / "a")
    batch = next(trainer.task.batches(torch.Generator().manual_seed(0)))
    assert torch.isfinite(trainer.task.loss(trainer.model, batch))
    assert set(trainer.task.evaluate(trainer.model)) == {"test_velocity_mse_n2000"}
