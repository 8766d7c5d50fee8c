"""Latent diffusion pieces (diffedu.images.latent) against exact answers."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from diffedu.images import latent


def test_kl_and_nelbo_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, log_var = torch.randn(3, 4, 7, 7, generator=g), torch.randn(3, 4, 7, 7, generator=g)
    want = kl_divergence(Normal(mu, (0.5 * log_var).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(latent.kl_to_standard_normal(mu, log_var), want, rtol=1e-5)
    x, x_hat = torch.rand(3, 1, 28, 28, generator=g), torch.rand(3, 1, 28, 28, generator=g)
    nll = -Normal(x_hat, 0.3).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(latent.gaussian_nelbo(x, x_hat, mu, log_var, 0.3), nll + want, rtol=1e-5)


def test_autoencoder_shapes_training_and_bad_latents():
    torch.manual_seed(0)
    ae = latent.Autoencoder(ch=8, z_ch=4)
    from diffedu import data
    x = data.mnist("test").tensors[0][:16]                          # real digits in [-1, 1]
    mu, log_var = ae.encode(x)
    assert mu.shape == log_var.shape == (16, 4, 7, 7) and ae.decode(mu).shape == (16, 1, 28, 28)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss, rec, kl = latent.autoencoder_loss(ae, x, 1e-3, torch.Generator().manual_seed(2))
        first = first if first is not None else rec.item()
        opt.zero_grad(); loss.backward(); opt.step()
    assert rec.item() < 0.5 * first
    assert abs(latent.latent_scale(ae, x) * ae.encode(x)[0].std().item() - 1.0) < 1e-5
    with pytest.raises(ValueError, match=r"shape \(B, 4, 7, 7\)"):
        ae.decode(torch.zeros(2, 3, 7, 7))
    with pytest.raises((ValueError, TypeError)):
        ae.encode(torch.zeros(2, 1, 14, 14))


def test_vector_quantizer_picks_the_nearest_code_with_a_straight_through_gradient():
    vq = latent.VectorQuantizer(K=3, d=2)
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    z = torch.tensor([[0.9, 0.1], [0.1, 0.8], [0.1, -0.1], [0.8, 0.3]]).T.reshape(1, 2, 2, 2).requires_grad_()
    z_q, codes, loss = vq(z)
    assert codes.flatten().tolist() == [1, 2, 0, 1]
    assert torch.allclose(z_q, vq.codebook.weight[codes.flatten()].T.reshape(1, 2, 2, 2))
    z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))                 # straight through
    use = latent.codebook_usage(codes, 3)
    assert use["used"] == 1.0 and math.isclose(use["perplexity"], math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    assert latent.codebook_usage(torch.zeros(10, dtype=torch.long), 4) == {"used": 0.25, "perplexity": 1.0}
    with pytest.raises(ValueError, match="shape"):
        vq(torch.zeros(1, 3, 2, 2))


def test_latent_denoiser_shapes_and_errors():
    torch.manual_seed(0)
    net = latent.LatentDenoiser(z_ch=4, ch=16, n_blocks=2, heads=2, T=1000)
    z = torch.randn(5, 4, 7, 7)
    t = torch.tensor([0, 10, 500, 999, 1000])
    assert torch.equal(net(z, t, torch.arange(5)), torch.zeros(5, 4, 7, 7))   # zero-initialised output
    with pytest.raises(ValueError, match="z_t must have shape"):
        net(torch.randn(5, 1, 28, 28), t)
    with pytest.raises(ValueError, match="one time in 0..1000"):
        net(z, torch.full((5,), 2000))


def test_the_latent_tasks_train_with_the_shared_trainer(tmp_path, monkeypatch):
    """A tiny autoencoder trained and shipped to a temporary assets folder, then a latent DDPM on its latents."""
    from diffedu import checkpoints, data
    from diffedu.train import Trainer, load_config
    real = checkpoints.assets_dir()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "data").symlink_to(real / "data")
    monkeypatch.setenv("DIFFEDU_ASSETS", str(tmp_path))
    data._verify.cache_clear()
    cfg = load_config("configs/mnist_autoencoder.json")
    tiny = {**cfg, "name": "tiny_ae", "model": {"ch": 8, "z_ch": 4}, "eval_fd_n": 0, "batch_size": 8}
    trainer = Trainer(tiny, tmp_path / "run_ae")
    trainer.train(2)
    trainer.ship("test")
    ae = latent.load_autoencoder("tiny_ae")
    assert ae.card["metrics"]["latent_scale"] > 0 and ae.scale.item() == pytest.approx(ae.card["metrics"]["latent_scale"], rel=1e-4)
    lcfg = load_config("configs/mnist_latent.json")
    tiny_l = {**lcfg, "autoencoder": "tiny_ae", "model": {"ch": 16, "n_blocks": 2, "heads": 2, "num_classes": 10},
              "batch_size": 8, "eval_fd_n": 0}
    lt = Trainer(tiny_l, tmp_path / "run_latent")
    z0, y = next(lt.task.batches(torch.Generator().manual_seed(0)))
    assert z0.shape == (8, 4, 7, 7) and torch.isfinite(lt.task.loss(lt.model, (z0, y)))
    x = lt.task.sample(lt.ema, 3, torch.tensor([1, 2, 3]), steps=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1
    lt.train(1)
    lt.ship("test")
    denoiser, ae2, schedule = latent.load_latent("mnist_latent")       # the config's name; its autoencoder tiny_ae
    assert ae2.card["weights_sha256"] == ae.card["weights_sha256"] and schedule.T == 1000
    again = latent.sample(denoiser, ae2, schedule, 3, [1, 2, 3], 2, torch.Generator().manual_seed(0), batch_size=2)
    assert again.shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="class labels must be in 0..9"):
        latent.sample(denoiser, ae2, schedule, 2, [1, 12], 2)
    with pytest.raises(ValueError, match="decodes 2"):
        latent.sample(denoiser, latent.Autoencoder(ch=8, z_ch=2), schedule, 2, None, 2)
    trainer.train(3)                                                    # another autoencoder under the same name
    trainer.ship("test")
    with pytest.raises(ValueError, match="latents of another tiny_ae"):
        latent.load_latent("mnist_latent")
    data._verify.cache_clear()
