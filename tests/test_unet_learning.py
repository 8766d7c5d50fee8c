"""The training options that the learning-per-CPU-hour benchmark compares: min-SNR-gamma weighting,
channels_last memory order, and how the benchmark builds its arms."""
import importlib.util
from pathlib import Path

import pytest
import torch

from diffedu.images.tasks import ddpm_loss
from diffedu.images.unet import UNet
from diffedu.schedules import NoiseSchedule

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_unet_learning", ROOT / "benchmarks" / "bench_unet_learning.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def tiny_unet():
    torch.manual_seed(0)
    return UNet(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_res=(), heads=1, num_classes=10, T=100)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 28, 28, generator=g) * 2 - 1, torch.arange(6)


def test_min_snr_weights_are_min_snr_over_snr():
    sched, model = NoiseSchedule.from_name("linear", 100), tiny_unet()
    x0, y = batch()
    plain = ddpm_loss(model, x0, y, sched, 0.0, torch.Generator().manual_seed(2))
    huge = ddpm_loss(model, x0, y, sched, 0.0, torch.Generator().manual_seed(2), min_snr_gamma=1e12)
    assert torch.allclose(plain, huge, rtol=1e-5)                 # gamma above every SNR: no reweighting
    # by hand: the same t and eps as ddpm_loss draws, per-sample errors, weights min(SNR, 5) / SNR
    g = torch.Generator().manual_seed(2)
    t = torch.randint(1, 101, (6,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = sched.alpha_bar[t]
    x_t = (ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * eps).float()
    err = (model(x_t, t, y) - eps).pow(2).mean((1, 2, 3))
    snr = ab / (1 - ab)
    want = ((snr.clamp(max=5.0) / snr).float() * err).mean()
    got = ddpm_loss(model, x0, y, sched, 0.0, torch.Generator().manual_seed(2), min_snr_gamma=5.0)
    assert torch.allclose(got, want, rtol=1e-4) and got < plain
    with pytest.raises(ValueError, match="min_snr_gamma must be a positive"):
        ddpm_loss(model, x0, y, sched, 0.0, min_snr_gamma=-1.0)


def test_channels_last_gives_the_same_loss():
    sched, model = NoiseSchedule.from_name("linear", 100), tiny_unet()
    x0, y = batch()
    a = ddpm_loss(model, x0, y, sched, 0.0, torch.Generator().manual_seed(3))
    nhwc = model.to(memory_format=torch.channels_last)
    b = ddpm_loss(nhwc, x0.contiguous(memory_format=torch.channels_last), y, sched, 0.0, torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, rtol=1e-4)


def test_arms_change_one_thing_and_fill_the_budget():
    from diffedu.runs import load_config
    base = load_config(ROOT / "configs" / "mnist_unet.json")
    for name, change in bench.ARMS.items():
        cfg = bench.arm_config(base, change, name)
        differ = {k for k in set(cfg) | set(base) if cfg.get(k) != base.get(k)}
        assert differ - {"name", "eval_fd_n", "sample_every", "ckpt_every", "eval_every", "model"} == set(change) - {"model"}
        assert cfg["model"] == {**base["model"], **change.get("model", {})}
    assert bench.fit_steps(0.5, 1200, 200) == 2400 and bench.fit_steps(100.0, 1200, 200) == 201
    with pytest.raises(ValueError, match="positive"):
        bench.fit_steps(0.0, 1200, 200)


def test_part4_benchmark_rows_cover_4_to_100_network_calls():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_mnist_part4", ROOT / "benchmarks" / "bench_mnist_part4.py")
    part4 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(part4)
    flow = part4.rows_for("flow")
    by_method = {}
    for name, model, method, steps, w in flow:
        if "_rep" not in name:
            by_method.setdefault(method, []).append(part4.calls(method, steps))
    assert [name for name, *_ in flow if "_rep" in name] == ["ddpm_ddim10_rep2", "flow_euler10_rep2", "ddpm_ddim10_rep3",
                                                             "flow_euler10_rep3"]
    assert by_method == {"ddim": [4, 10, 20, 50, 100], "heun": [4, 10, 20, 50], "euler": [4, 10, 20, 50, 100],
                         "flow_heun": [4, 10, 20, 50]}
    assert {m for _, m, *_ in flow} == {"mnist_h2h_ddpm", "mnist_h2h_flow"}
    distill_rows = {name: steps for name, _, _, steps, _ in part4.rows_for("distill")}
    assert all(distill_rows[f"student{k}"] == distill_rows[f"ddim{k}"] == k for k in (32, 16, 8, 4))
    with pytest.raises(ValueError, match="unknown part"):
        part4.rows_for("pixels")
