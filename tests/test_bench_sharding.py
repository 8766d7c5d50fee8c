"""benchmarks/bench_mnist_sampling.py --jobs N: the batches of a row, each in its own process, give the
very samples one process gives (the generator is fast-forwarded past the earlier batches)."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_mnist_sampling as bench  # noqa: E402

from diffedu import images  # noqa: E402
from diffedu.images import pipeline  # noqa: E402


@pytest.mark.parametrize("name", ["ddim10", "ddim50_eta1", "heun10"])
def test_batches_sampled_apart_equal_one_run(name, monkeypatch):
    monkeypatch.setitem(bench.SAMPLERS, "ddim50_eta1", ("ddim", 5, 5, 1.0))   # 5 noisy steps: cheap, same code path
    sampler, _, steps, eta = bench.SAMPLERS[name]
    model, schedule, _ = images.load_pretrained("mnist_unet")
    labels = torch.arange(6) % 10
    one = pipeline.sample(model, schedule, 6, sampler, steps=steps, labels=labels, generator=torch.Generator().manual_seed(0),
                          eta=eta, batch_size=2, progress=False)
    apart = [bench.sample_part(name, labels, a, a + 2, 0, 2)[0] for a in (4, 0, 2)]     # any order
    assert torch.equal(one, torch.cat([apart[1], apart[2], apart[0]]))


def test_fast_forward_leaves_the_network_as_it_was():
    model, schedule, _ = images.load_pretrained("mnist_unet")
    g = torch.Generator().manual_seed(0)
    bench.fast_forward(model, schedule, "ddim10", None, 2, g, 2)
    x, t = torch.zeros(1, 1, 28, 28), torch.tensor([500])
    assert "forward" not in vars(model) and model(x, t).abs().sum() > 0
