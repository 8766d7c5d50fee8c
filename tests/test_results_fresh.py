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
    ("speculative", "mdlm_weights_sha256", "shakespeare_mdlm"),
    ("speculative", "ar_weights_sha256", "shakespeare_ar"),
    ("text_guidance", "meta.genre_weights_sha256", "shakespeare_mdlm_genre"),
    ("text_guidance", "meta.ar_weights_sha256", "shakespeare_ar"),
    *[("text_noises", f"weights_sha256.{m}", m) for m in ("shakespeare_mdlm_scratch", "shakespeare_udlm",
      "shakespeare_embed", "shakespeare_gidd_pu000", "shakespeare_gidd_pu010", "shakespeare_gidd_pu025",
      "shakespeare_gidd_pu050")],
    ("text_noises", "ar_weights_sha256", "shakespeare_ar"),
    ("guidance", "meta.unet_weights_sha256", "mnist_unet"),
    ("guidance", "meta.guide", "mnist_noisy_classifier"),
    ("guidance", "meta.judge", "mnist_classifier"),
    *[("mnist_flow", f"weights_sha256.{m}", m) for m in ("mnist_h2h_ddpm", "mnist_h2h_flow")],
    *[("mnist_distill", f"weights_sha256.{m}", m) for m in ("mnist_unet", "mnist_distill_32", "mnist_distill_16",
                                                             "mnist_distill_8", "mnist_distill_4")],
    *[("mnist_latent", f"weights_sha256.{m}", m) for m in ("mnist_latent", "mnist_autoencoder", "mnist_h2h_ddpm")],
    *[(name, "judge", "mnist_classifier") for name in ("mnist_flow", "mnist_distill", "mnist_latent")],
])
def test_results_match_the_shipped_weights(name, key, checkpoint):
    stored = json.loads((RESULTS / f"{name}.json").read_text())
    for part in key.split("."):
        stored = stored[part]
    part4 = name.removeprefix("mnist_") if name in ("mnist_flow", "mnist_distill", "mnist_latent") else None
    assert stored == shipped(checkpoint), (f"rerun python benchmarks/bench_mnist_part4.py {part4}" if part4
                                           else f"rerun python benchmarks/bench_{name}.py")


def test_mnist_sampling_table_matches_the_shipped_unet():
    meta = json.loads((RESULTS / "mnist_sampling.json").read_text())["meta"]
    assert meta["unet_weights_sha256"] == shipped("mnist_unet"), "rerun python benchmarks/bench_mnist_sampling.py"
    assert meta["judge"] == shipped("mnist_classifier"), "rerun python benchmarks/bench_mnist_sampling.py"


def lesson_cells(lesson: str, first: str) -> list:
    """The code cells of a lesson from the one containing `first` on, while they read `results`."""
    nb = json.loads((ROOT / "lessons" / lesson).read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    start = next(i for i, c in enumerate(code) if first in c)
    cells = [code[start]]
    for c in code[start + 1:]:
        if not c.startswith("if results is not None"):
            break
        cells.append(c)
    return cells


@pytest.mark.parametrize("change", ["unet", "missing"])
def test_lesson_06_says_when_its_table_is_stale_and_shows_no_old_numbers(tmp_path, monkeypatch, capsys, change):
    import matplotlib
    matplotlib.use("Agg")
    import diffedu as dd
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "checkpoints").symlink_to(assets_dir() / "checkpoints")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    if change == "unet":
        results = json.loads((RESULTS / "mnist_sampling.json").read_text())
        results["meta"]["unet_weights_sha256"] = "0" * 64  # measured on other weights
        (tmp_path / "benchmarks" / "results" / "mnist_sampling.json").write_text(json.dumps(results))
        (tmp_path / "benchmarks" / "results" / "mnist_sampling.md").write_text("| stale numbers |")
    monkeypatch.setenv("DIFFEDU_ASSETS", str(tmp_path / "assets"))
    cells = lesson_cells("06_mnist_sampling.ipynb", 'dd.load_results("mnist_sampling"')
    assert len(cells) >= 3  # the table, its plot and the checks of what the text says
    namespace = {"dd": dd}
    for cell in cells:
        exec(cell, namespace)
    out = capsys.readouterr().out
    assert namespace["results"] is None and "stale numbers" not in out
    assert ("is stale" if change == "unet" else "is missing") in out and "bench_mnist_sampling.py" in out
