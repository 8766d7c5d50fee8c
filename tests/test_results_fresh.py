"""The benchmark results that lessons quote were measured on the weights that ship now.

A lesson that loads benchmarks/results/NAME.json prints a "stale" message instead of old numbers
(diffedu.checkpoints.load_results); this test makes such a mismatch fail CI, so the numbers are
regenerated (python benchmarks/bench_NAME.py) whenever a checkpoint changes.
"""
import json
from pathlib import Path

import pytest

from diffedu.checkpoints import assets_dir, read_card

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def shipped(name):
    return read_card(assets_dir() / "checkpoints" / f"{name}.json")["weights_sha256"]


@pytest.mark.parametrize("name, key, checkpoint", [
    ("text", "mdlm_weights_sha256", "shakespeare_mdlm"),
    ("text", "ar_weights_sha256", "shakespeare_ar"),
    ("text", "scratch_weights_sha256", "shakespeare_mdlm_scratch"),
    ("guidance", "meta.unet_weights_sha256", "mnist_unet"),
    ("guidance", "meta.guide", "mnist_noisy_classifier"),
    ("guidance", "meta.judge", "mnist_classifier"),
])
def test_results_match_the_shipped_weights(name, key, checkpoint):
    stored = json.loads((RESULTS / f"{name}.json").read_text())
    for part in key.split("."):
        stored = stored[part]
    assert stored == shipped(checkpoint), f"rerun python benchmarks/bench_{name}.py"


def test_mnist_sampling_table_matches_the_shipped_unet():
    keys = json.loads((RESULTS / "mnist_sampling.json").read_text())
    assert any(k.startswith(shipped("mnist_unet")[:16] + "|") for k in keys), \
        "rerun python benchmarks/bench_mnist_sampling.py"
