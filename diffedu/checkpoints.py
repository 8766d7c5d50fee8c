"""Checkpoints: safetensors weights plus a JSON model card beside them.

A shipped checkpoint ``assets/checkpoints/NAME`` is two files:

* ``NAME.safetensors`` - the tensors (never pickle: loading cannot run code);
* ``NAME.json`` - the model card: what the network is (``config``), what it was
  trained on, with which command, for how long, on what hardware, how well it does,
  and the sha256 of the weights file so a corrupted download is caught.

``save_checkpoint`` writes both atomically (temporary file, then rename), so a
run that is killed half-way never leaves a broken checkpoint behind.

Cards are checked, not trusted. ``load_checkpoint`` refuses a card that is not a JSON object,
has no ``config`` or no ``weights_sha256``, whose hash does not match the weights, or whose
config differs from the one stored inside the safetensors metadata when the weights were
saved (so editing ``heads``, ``schedule`` or ``causal`` in a card cannot silently change
what a network computes).
"""
import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

# The command that (re)makes each shipped checkpoint; quoted in every "missing" error.
COMMANDS = {
    "mnist_unet": "python -m diffedu.train configs/mnist_unet.json --ship, then python -m diffedu.train "
                  "configs/mnist_unet_more.json --init assets/checkpoints/mnist_unet.safetensors --ship",
    "mnist_classifier": "python -m diffedu.train configs/mnist_classifier.json --ship",
    "mnist_noisy_classifier": "python -m diffedu.train configs/mnist_noisy_classifier.json --ship",
    "shakespeare_mdlm": "python -m diffedu.train configs/text_mdlm_adapt.json --init "
                        "assets/checkpoints/shakespeare_ar.safetensors --ship (from the twin of configs/text_ar.json "
                        "alone), then python -m diffedu.train configs/text_mdlm_more.json --init "
                        "assets/checkpoints/shakespeare_mdlm.safetensors --ship",
    "shakespeare_ar": "python -m diffedu.train configs/text_ar.json --ship, then python -m diffedu.train "
                      "configs/text_ar_more.json --init assets/checkpoints/shakespeare_ar.safetensors --ship",
    "shakespeare_mdlm_genre": "python -m diffedu.train configs/text_mdlm_genre.json "
                              "--init assets/checkpoints/shakespeare_mdlm.safetensors --ship",
    "shakespeare_mdlm_scratch": "python -m diffedu.train configs/text_mdlm_scratch.json --ship",
    "shakespeare_udlm": "python -m diffedu.train configs/text_udlm.json --ship",
    "shakespeare_embed": "python -m diffedu.train configs/text_embed.json --ship",
    **{f"shakespeare_gidd_{tag}": f"python -m diffedu.train configs/text_gidd_{tag}.json "
                                  "--init assets/checkpoints/shakespeare_mdlm_scratch.safetensors --ship"
       for tag in ("pu000", "pu010", "pu025", "pu050")},
    "mnist_h2h_ddpm": "python -m diffedu.train configs/mnist_h2h_ddpm.json --ship",
    "mnist_h2h_flow": "python -m diffedu.train configs/mnist_h2h_flow.json --ship",
    "mnist_autoencoder": "python -m diffedu.train configs/mnist_autoencoder.json --ship",
    "mnist_latent": "python -m diffedu.train configs/mnist_latent.json --ship (after mnist_autoencoder)",
    **{f"mnist_distill_{k}": f"python -m diffedu.train configs/mnist_distill_{k}.json --init {teacher} --ship"
       for k, teacher in ((32, "mnist_unet"), (16, "mnist_distill_32"), (8, "mnist_distill_16"), (4, "mnist_distill_8"))},
}


def assets_dir() -> Path:
    """The course's ``assets/`` folder (``$DIFFEDU_ASSETS`` overrides)."""
    env = os.environ.get("DIFFEDU_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "assets"


def parameter_count(model: torch.nn.Module) -> int:
    """The number of trainable numbers in a network (every parameter tensor's numel, summed)."""
    return sum(p.numel() for p in model.parameters())


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
    if not isinstance(card, dict) or not isinstance(card.get("config"), dict):
        raise ValueError("save_checkpoint: the card must be a dict with a 'config' dict (what the network is).")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"config": json.dumps(card["config"], sort_keys=True)}
    _atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata=meta))
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


def _remake(stem: Path) -> str:
    return COMMANDS.get(stem.name, "the training script that made it")


def read_card(card_path: Path) -> dict:
    """The model card at card_path, checked: a JSON object with a 'config' object."""
    try:
        card = json.loads(Path(card_path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"model card {card_path} is not valid JSON ({e}); rebuild it with: "
                         f"{_remake(Path(card_path).with_suffix(''))}") from None
    if not isinstance(card, dict):
        raise ValueError(f"model card {card_path} must be a JSON object {{...}}, got a {type(card).__name__}.")
    if not isinstance(card.get("config"), dict):
        raise ValueError(f"model card {card_path} has no 'config' object, so it does not say what the network "
                         f"is; rebuild it with: {_remake(Path(card_path).with_suffix(''))}")
    return card


def stored_config(weights: Path):
    """The config saved inside the safetensors metadata (None if the file has none)."""
    try:
        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is not a readable safetensors file ({e})") from None
    return json.loads(meta["config"]) if "config" in meta else None


# Config keys that do not change what the network computes: free text and the code path of the task.
DOCUMENTARY = ("notes", "name", "task")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_checkpoint(name_or_stem, expected_config: dict | None = None, verify: bool = True):
    """Load ``(tensors, card)``, after checking the card (see the module docstring).

    verify=False skips only the sha256 (to inspect a file you changed on purpose).
    """
    stem = _resolve(name_or_stem)
    weights, card_path = stem.parent / (stem.name + ".safetensors"), stem.parent / (stem.name + ".json")
    if not weights.exists() or not card_path.exists():
        raise _missing(stem, repr(stem.name))
    card = read_card(card_path)
    if verify:
        sha = card.get("weights_sha256")
        if not isinstance(sha, str) or not sha:
            raise ValueError(f"model card {card_path} has no weights_sha256, so its weights cannot be checked; "
                             f"rebuild it with: {_remake(stem)}")
        if sha256_file(weights) != sha:
            raise ValueError(f"{weights} does not match the sha256 in its model card: the file is corrupt or "
                             f"was changed. Rebuild it with: {_remake(stem)}")
    saved = stored_config(weights)
    if saved is None:
        raise ValueError(f"{weights} has no config stored in its metadata, so its card cannot be checked "
                         f"against it; rebuild it with: {_remake(stem)}")
    a, b = (_flat({k: v for k, v in json.loads(json.dumps(c)).items() if k not in DOCUMENTARY})
            for c in (saved, card["config"]))
    diff = sorted(k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>"))
    if diff:
        pairs = ", ".join(f"{k}: weights {a.get(k, '<missing>')!r} vs card {b.get(k, '<missing>')!r}"
                          for k in diff[:6])
        raise ValueError(f"model card {card_path} describes another network than its weights were saved with "
                         f"({pairs}); restore the card or rebuild with: {_remake(stem)}")
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is not a readable safetensors file ({e})") from None
    if expected_config is not None:
        check_config(card["config"], expected_config, stem.name)
    return tensors, card


def check_config(saved: dict, expected: dict, name: str = "checkpoint"):
    """Raise if any key of ``expected`` differs from the saved config (JSON-normalised)."""
    norm = lambda d: json.loads(json.dumps(d))
    saved, expected = norm(saved), norm(expected)
    diff = {k: (saved.get(k, "<missing>"), v) for k, v in expected.items() if saved.get(k, "<missing>") != v}
    if diff:
        lines = ", ".join(f"{k}: saved {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{name} was trained with a different config than this model ({lines})")


def load_into(model: torch.nn.Module, name_or_stem, config: dict | None = None, new=()) -> dict:
    """Load a checkpoint's weights into ``model`` (in the model's dtype); return the card.

    new: name prefixes of parameters the checkpoint may lack (a warm start that adds a part, such as
    a label embedding); they keep the model's own initial values.
    """
    tensors, card = load_checkpoint(name_or_stem, expected_config=config)
    own = model.state_dict()
    missing = sorted(k for k in set(own) - set(tensors) if not k.startswith(tuple(new)))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [f"{k}: {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"checkpoint {card.get('name', name_or_stem)} does not fit this model: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}")
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in tensors.items()}})
    return card


def card_summary(card: dict) -> str:
    """A few lines to print when a lesson loads a checkpoint (any card that loads)."""
    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "?"
    m = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
    metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
    totals = card.get("totals") if isinstance(card.get("totals"), dict) else {}
    wall = totals.get("wall_time_s", card.get("wall_time_s"))
    wall = f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) and not isinstance(wall, bool) else "?"
    params = card.get("parameter_count")
    params = f", {params / 1e6:.2f}M params" if isinstance(params, int) and params > 0 else ""
    runs = totals.get("runs", 1)
    seen = next((f", {num(totals[k], ',')} {k}" for k in ("characters", "images") if k in totals), "")
    return (f"{card.get('name', '?')}: {card.get('architecture', '?')}{params}\n"
            f"  trained {totals.get('steps', card.get('steps', '?'))} steps{seen} in {runs} run(s), last on "
            f"{card.get('hardware', '?')}, {wall} in all ({card.get('date', '?')})\n"
            f"  metrics: {metrics or '-'}\n  remake: {card.get('command', COMMANDS.get(card.get('name'), '?'))}")


def load_results(name: str, measured_on: dict, command: str | None = None) -> dict | None:
    """benchmarks/results/NAME.json, if it was measured on the weights that ship now; else None.

    measured_on maps a key of the results file (dotted for nested keys, e.g. "meta.unet_weights_sha256")
    to the name of a shipped checkpoint. When a stored sha256 differs from that checkpoint's card, the
    numbers describe other weights: we say so, and return None instead of stale numbers.
    command: what remakes the file (default: python benchmarks/bench_NAME.py).
    """
    command = command or f"python benchmarks/bench_{name}.py"
    path = assets_dir().parent / "benchmarks" / "results" / f"{name}.json"
    if not path.exists():
        print(f"{path.name} is missing: run  {command}  to make it.")
        return None
    results = json.loads(path.read_text())
    for key, checkpoint in measured_on.items():
        stored = results
        for part in key.split("."):
            stored = stored.get(part) if isinstance(stored, dict) else None
        shipped = read_card(_resolve(checkpoint).with_suffix(".json")).get("weights_sha256")
        if stored != shipped:
            print(f"{path.name} is stale: it was measured on other {checkpoint} weights than the shipped ones "
                  f"({str(stored)[:12]}... vs {str(shipped)[:12]}...). Rerun  {command}.")
            return None
    return results
