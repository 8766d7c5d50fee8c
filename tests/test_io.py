"""Checkpoints, data files, exercise checks and widgets: the error paths a learner can hit."""
import json
import shutil

import numpy as np
import pytest
import torch

import diffedu as dd
from diffedu import checkpoints, data, widgets


@pytest.fixture
def tmp_assets(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEDU_ASSETS", str(tmp_path))
    data._verify.cache_clear()
    data._shakespeare_corpus.cache_clear()
    yield tmp_path
    data._verify.cache_clear()
    data._shakespeare_corpus.cache_clear()


def test_checkpoint_roundtrip_and_card(tmp_path):
    model = torch.nn.Linear(3, 2)
    card = {"name": "tiny", "architecture": "Linear", "config": {"in": 3, "out": 2}, "steps": 1}
    path = dd.save_checkpoint(tmp_path / "tiny", model.state_dict(), card)
    assert path.name == "tiny.safetensors" and (tmp_path / "tiny.json").exists()
    saved = json.loads((tmp_path / "tiny.json").read_text())
    assert saved["weights_sha256"] == checkpoints.sha256_file(path)
    other = torch.nn.Linear(3, 2)
    card2 = dd.load_into(other, tmp_path / "tiny", config={"in": 3, "out": 2})
    assert torch.equal(other.weight, model.weight) and card2["name"] == "tiny"
    assert "tiny: Linear" in dd.card_summary(card2)
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave nothing behind


def test_checkpoint_errors(tmp_path, tmp_assets):
    with pytest.raises(FileNotFoundError, match="python -m diffedu.train configs/mnist_unet.json"):
        dd.load_checkpoint("mnist_unet")
    model = torch.nn.Linear(3, 2)
    dd.save_checkpoint(tmp_path / "m", model.state_dict(), {"name": "m", "config": {"width": 3}})
    with pytest.raises(ValueError, match="different config.*width: saved 3 vs model 4"):
        dd.load_checkpoint(tmp_path / "m", expected_config={"width": 4})
    with pytest.raises(ValueError, match="does not fit this model"):
        dd.load_into(torch.nn.Linear(5, 2), tmp_path / "m")
    w = tmp_path / "m.safetensors"
    w.write_bytes(b"garbage!" + w.read_bytes()[8:])  # break the header
    with pytest.raises(ValueError, match="does not match the sha256"):
        dd.load_checkpoint(tmp_path / "m")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        dd.load_checkpoint(tmp_path / "m", verify=False)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        dd.load_checkpoint(tmp_path / "m")


def _copy_shipped(name, tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(checkpoints.assets_dir() / "checkpoints" / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    return tmp_path / name


def _edit_card(stem, edit):
    path = stem.with_suffix(".json")
    card = json.loads(path.read_text())
    edit(card)
    path.write_text(json.dumps(card))


@pytest.mark.parametrize("name, key, value", [("mnist_unet", ("model", "heads"), 2),
                                              ("mnist_unet", ("schedule",), "cosine"),
                                              ("shakespeare_mdlm", ("model", "causal"), True)])
def test_a_card_that_lies_about_the_network_is_refused(tmp_path, name, key, value):
    stem = _copy_shipped(name, tmp_path)
    dd.load_checkpoint(stem)  # the shipped card matches the config stored with the weights

    def edit(card):
        d = card["config"]
        for k in key[:-1]:
            d = d[k]
        d[key[-1]] = value
    _edit_card(stem, edit)
    with pytest.raises(ValueError, match=f"describes another network.*{key[-1]}"):
        dd.load_checkpoint(stem)


def test_cards_are_checked_not_trusted(tmp_path):
    dd.save_checkpoint(tmp_path / "m", torch.nn.Linear(3, 2).state_dict(), {"name": "m", "config": {"width": 3}})
    stem = tmp_path / "m"
    good = (tmp_path / "m.json").read_text()
    for edit, message in [(lambda c: c.pop("weights_sha256"), "has no weights_sha256"),
                          (lambda c: c.update(weights_sha256=""), "has no weights_sha256"),
                          (lambda c: c.pop("config"), "has no 'config' object"),
                          (lambda c: c.update(config=[1, 2]), "has no 'config' object")]:
        (tmp_path / "m.json").write_text(good)
        _edit_card(stem, edit)
        with pytest.raises(ValueError, match=message):
            dd.load_checkpoint(stem)
    (tmp_path / "m.json").write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match=r"m\.json must be a JSON object"):
        dd.load_checkpoint(stem)
    # weights saved without their config (an older or foreign file) cannot be checked, so they are refused
    from safetensors.torch import save_file
    save_file(torch.nn.Linear(3, 2).state_dict(), str(tmp_path / "m.safetensors"))
    card = json.loads(good)
    card["weights_sha256"] = checkpoints.sha256_file(tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="no config stored in its metadata"):
        dd.load_checkpoint(stem)
    with pytest.raises(ValueError, match="card must be a dict with a 'config'"):
        dd.save_checkpoint(tmp_path / "x", {}, {"name": "x"})


@pytest.mark.parametrize("card", [{"config": {}}, {"config": {}, "metrics": None, "wall_time_s": "long",
                                                   "parameter_count": "many", "totals": [1]},
                                  {"config": {}, "totals": {"runs": 3, "steps": 10, "characters": 5000}}])
def test_card_summary_copes_with_any_card_that_loads(card):
    text = dd.card_summary(card)
    assert "trained" in text and "remake" in text


def test_every_shipped_checkpoint_loads_with_a_checked_card():
    for card_path in sorted((checkpoints.assets_dir() / "checkpoints").glob("*.json")):
        _, card = dd.load_checkpoint(card_path.with_suffix(""))
        assert card["weights_sha256"] and isinstance(card["config"], dict)


def test_mnist_shipped_file():
    x, y = data.mnist_arrays("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8 and y.shape == (10000,)
    ds = data.mnist("train", limit=100)
    img, label = ds[0]
    assert img.shape == (1, 28, 28) and img.min() >= -1 and img.max() <= 1 and label.dtype == torch.long
    assert set(np.unique(data.mnist_arrays("train")[1])) == set(range(10))
    with pytest.raises(ValueError, match="split must be one of"):
        data.mnist("validation")


def test_mnist_corrupt_and_missing(tmp_assets, monkeypatch):
    (tmp_assets / "data").mkdir()
    (tmp_assets / "data" / "mnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="sha256.*python scripts/build_assets.py"):
        data.mnist_arrays("test")
    # a file with the right checksum but broken contents is reported as an invalid .npz
    data._verify.cache_clear()
    monkeypatch.setitem(data.SHA256, "mnist.npz", checkpoints.sha256_file(tmp_assets / "data" / "mnist.npz"))
    with pytest.raises(ValueError, match="not a valid MNIST .npz"):
        data.mnist_arrays("test")
    (tmp_assets / "data" / "mnist.npz").unlink()
    # offline and no file: torchvision's download fails and the error names the rebuild command
    import torchvision.datasets
    def offline(*a, **k):
        raise RuntimeError("no network")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(FileNotFoundError, match="python scripts/build_assets.py"):
        data.mnist_arrays("test")


def test_mnist_online_fallback_checks_what_it_downloaded(tmp_assets, monkeypatch):
    """No shipped file: torchvision's download is used only if its digits are the original ones."""
    with np.load(checkpoints.Path(__file__).parents[1] / "assets/data/mnist.npz") as f:
        x, y = f["x_test"], f["y_test"]       # the shipped digits
    assert data.mnist_arrays_sha256(x, y) == data.MNIST_ARRAYS_SHA256["test"]
    import torchvision.datasets

    class FakeMNIST:
        def __init__(self, root, train, download):
            self.root = root
            self.data, self.targets = torch.as_tensor(images), torch.as_tensor(y.astype(np.int64))

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)  # tmp_assets has no mnist.npz
    images = x
    got, labels = data.mnist_arrays("test")
    assert np.array_equal(got, x) and np.array_equal(labels, y)
    images = x.copy()
    images[0, 0, 0] ^= 1                        # one pixel off: a corrupt or different download
    with pytest.raises(ValueError, match="not the original ones: their sha256 differs"):
        data.mnist_arrays("test")


def test_shakespeare_split_by_play():
    train, val = data.shakespeare_plays("train"), data.shakespeare_plays("val")
    assert set(train).isdisjoint(val) and "macbeth" in val and "hamlet" in train
    text = data.shakespeare("val")
    assert 0.05 < len(text) / (len(text) + len(data.shakespeare("train"))) < 0.15
    assert "Macbeth" in text or "MACBETH" in text


def test_shakespeare_wrong_checksum(tmp_assets):
    (tmp_assets / "data").mkdir()
    shutil.copy(checkpoints.Path(__file__).parents[1] / "assets/data/shakespeare.json.gz", tmp_assets / "data")
    with open(tmp_assets / "data" / "shakespeare.json.gz", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="sha256"):
        data.shakespeare("train")


def test_check_and_expect(capsys):
    assert dd.check_answer("x", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
    assert not dd.check_answer("x", None, torch.tensor([1.0]))
    assert "not attempted" in capsys.readouterr().out
    assert not dd.check_answer("x", torch.ones(3), torch.ones(2))
    assert "wrong shape" in capsys.readouterr().out
    assert not dd.check_answer("x", torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0]))
    assert "at index (1,)" in capsys.readouterr().out
    assert not dd.check_answer("x", torch.tensor([float("nan")]), torch.tensor([1.0]))
    assert dd.expect("v", 0.5, 0, 1) == 0.5
    with pytest.raises(AssertionError, match="outside the expected band"):
        dd.expect("v", 2.0, 0, 1)


def test_explore_static_fallback(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    monkeypatch.setenv("DIFFEDU_WIDGETS", "static")
    seen = []
    widgets.explore(lambda ax, a: seen.append(a), controls={"a": [1, 2, 3]}, static=[{"a": 1}, {"a": 3}])
    assert seen == [1, 3]
    with pytest.raises(ValueError, match="unknown controls"):
        widgets.explore(lambda ax, a: None, controls={"a": [1]}, static=[{"b": 1}])
    monkeypatch.delenv("DIFFEDU_WIDGETS")
    assert not widgets.live_frontend()  # plain pytest: no kernel, no frontend


def test_image_grid_and_animation():
    import matplotlib
    matplotlib.use("Agg")
    ax = dd.plot.image_grid(torch.rand(10, 1, 28, 28) * 2 - 1, nrow=5)
    assert ax.images[0].get_array().shape[:2] == (2 * 30 + 2, 5 * 30 + 2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dd.plot.image_grid(torch.rand(28, 28))
    html = dd.plot.animate(range(3), lambda ax, i: ax.plot([0, i]))
    assert "<script" in html.data


def test_results_are_used_only_for_the_weights_they_measured(tmp_path, monkeypatch, capsys):
    (tmp_path / "assets" / "checkpoints").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    monkeypatch.setenv("DIFFEDU_ASSETS", str(tmp_path / "assets"))
    dd.save_checkpoint(tmp_path / "assets" / "checkpoints" / "m", torch.nn.Linear(2, 1).state_dict(),
                       {"name": "m", "config": {}})
    sha = json.loads((tmp_path / "assets" / "checkpoints" / "m.json").read_text())["weights_sha256"]
    results = tmp_path / "benchmarks" / "results" / "r.json"
    assert dd.load_results("r", {"meta.sha": "m"}) is None and "r.json is missing" in capsys.readouterr().out
    results.write_text(json.dumps({"meta": {"sha": sha}, "fd": 1.5}))
    assert dd.load_results("r", {"meta.sha": "m"})["fd"] == 1.5
    results.write_text(json.dumps({"meta": {"sha": "0" * 64}, "fd": 1.5}))
    assert dd.load_results("r", {"meta.sha": "m"}) is None
    out = capsys.readouterr().out
    assert "r.json is stale" in out and "python benchmarks/bench_r.py" in out
    assert dd.load_results("r", {"meta.sha": "m"}, "python benchmarks/bench_all.py r") is None
    assert "Rerun  python benchmarks/bench_all.py r." in capsys.readouterr().out
