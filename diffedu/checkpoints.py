"""Checkpoints: safetensors weights plus a JSON model card beside them.

A shipped checkpoint ``assets/checkpoints/NAME`` is two files:

* ``NAME.safetensors`` - the tensors (never pickle: loading cannot run code);
* ``NAME.json`` - the model card: what the network is (``config``), what it was
  trained on, with which command, for how long, on what hardware, how well it does,
  and the sha256 of the weights file so a corrupted download is caught.

``save_checkpoint`` writes both atomically (temporary file, then rename), so a
run that is killed half-way never leaves a broken checkpoint behind.
"""
import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

# The command that (re)makes each shipped checkpoint; quoted in every "missing" error.
COMMANDS = {
    "mnist_unet": "python -m diffedu.train configs/mnist_unet.json --ship",
    "mnist_classifier": "python -m diffedu.train configs/mnist_classifier.json --ship",
    "mnist_noisy_classifier": "python -m diffedu.train configs/mnist_noisy_classifier.json --ship",
    "shakespeare_mdlm": "python -m diffedu.train configs/text_mdlm.json --ship",
    "shakespeare_ar": "python -m diffedu.train configs/text_ar.json --ship",
}


def assets_dir() -> Path:
    """The course's ``assets/`` folder (``$DIFFEDU_ASSETS`` overrides)."""
    env = os.environ.get("DIFFEDU_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "assets"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _resolve(name_or_stem) -> Path:
    """'mnist_unet' -> assets/checkpoints/mnist_unet; a path (with or without suffix) -> that stem."""
    p = Path(name_or_stem)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    if len(p.parts) == 1 and not p.exists() and not p.with_suffix(".safetensors").exists():
        p = assets_dir() / "checkpoints" / p
    return p


def _atomic_write(path: Path, write):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(stem, tensors: dict, card: dict) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; fill in sha256 and date."""
    stem = Path(stem).with_suffix("") if Path(stem).suffix == ".safetensors" else Path(stem)
    weights = stem.parent / (stem.name + ".safetensors")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp))
    card = dict(card)
    card["weights_sha256"] = sha256_file(weights)
    card.setdefault("date", _dt.date.today().isoformat())
    _atomic_write(stem.parent / (stem.name + ".json"),
                  lambda tmp: Path(tmp).write_text(json.dumps(card, indent=2, sort_keys=False) + "\n"))
    return weights


def _missing(stem: Path, what: str) -> FileNotFoundError:
    cmd = COMMANDS.get(stem.name, "the training script that made it")
    return FileNotFoundError(f"checkpoint {what} not found at {stem}.safetensors / .json. "
                             f"Make it with:  {cmd}")


def load_checkpoint(name_or_stem, expected_config: dict | None = None, verify: bool = True):
    """Load ``(tensors, card)``; check the sha256 and, if given, that the card's config matches."""
    stem = _resolve(name_or_stem)
    weights, card_path = stem.parent / (stem.name + ".safetensors"), stem.parent / (stem.name + ".json")
    if not weights.exists() or not card_path.exists():
        raise _missing(stem, repr(stem.name))
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"model card {card_path} is not valid JSON ({e}); rebuild it with: "
                         f"{COMMANDS.get(stem.name, 'its training script')}") from None
    if verify and card.get("weights_sha256") and sha256_file(weights) != card["weights_sha256"]:
        raise ValueError(f"{weights} does not match the sha256 in its model card: the file is corrupt or "
                         f"was changed. Rebuild it with: {COMMANDS.get(stem.name, 'its training script')}")
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is not a readable safetensors file ({e})") from None
    if expected_config is not None:
        check_config(card.get("config", {}), expected_config, stem.name)
    return tensors, card


def check_config(saved: dict, expected: dict, name: str = "checkpoint"):
    """Raise if any key of ``expected`` differs from the saved config (JSON-normalised)."""
    norm = lambda d: json.loads(json.dumps(d))
    saved, expected = norm(saved), norm(expected)
    diff = {k: (saved.get(k, "<missing>"), v) for k, v in expected.items() if saved.get(k, "<missing>") != v}
    if diff:
        lines = ", ".join(f"{k}: saved {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{name} was trained with a different config than this model ({lines})")


def load_into(model: torch.nn.Module, name_or_stem, config: dict | None = None) -> dict:
    """Load a checkpoint's weights into ``model`` (in the model's dtype); return the card."""
    tensors, card = load_checkpoint(name_or_stem, expected_config=config)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    shapes = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"checkpoint {card.get('name', name_or_stem)} does not fit this model: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})
    return card


def card_summary(card: dict) -> str:
    """A few lines to print when a lesson loads a checkpoint."""
    m = card.get("metrics", {})
    metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
    wall = card.get("wall_time_s")
    wall = f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else "?"
    params = card.get("parameter_count")
    return (f"{card.get('name', '?')}: {card.get('architecture', '?')}"
            f"{f', {params / 1e6:.2f}M params' if params else ''}\n"
            f"  trained {card.get('steps', '?')} steps x batch {card.get('batch_size', '?')} on "
            f"{card.get('hardware', '?')} in {wall} ({card.get('date', '?')})\n"
            f"  metrics: {metrics or '-'}\n  remake: {card.get('command', COMMANDS.get(card.get('name'), '?'))}")
