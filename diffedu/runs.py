"""The run folder of a training run, and the config that names it.

    runs/NAME/state.safetensors   model, EMA, AdamW moments; metadata: step, wall time, config, lineage
    runs/NAME/state.json          the same metadata, readable
    runs/NAME/log.jsonl           one line per logged step
    runs/NAME/.lock               held by the trainer that uses the folder

This module reads and checks configs (one clear error per bad setting, before any step runs),
writes the state atomically, locks the folder, and keeps the lineage that model cards list.
`diffedu.train` is the loop that uses it.
"""
import fcntl
import importlib
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

DEFAULTS = dict(seed=0, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), warmup=100, grad_clip=1.0,
                ema_decay=0.999, log_every=50, ckpt_every=500, ship_dtype="float16", autocast=True,
                lr_decay="none", min_lr_ratio=0.1)
REQUIRED = ("name", "task", "steps", "batch_size")


# ----------------------------------------------------------------------------- config
def load_config(path) -> dict:
    """Read a config JSON, check the required keys, fill in the defaults."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found; configs live in configs/NAME.json.")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"config {path} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}.") from None
    if not isinstance(config, dict):
        raise ValueError(f"config {path} must be a JSON object {{...}}, got a {type(config).__name__}.")
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ValueError(f"config {path} lacks the keys {missing}; every config needs {list(REQUIRED)}.")
    config = {**DEFAULTS, **config}
    check_config(config, path)
    return config


def check_config(config: dict, where="config") -> None:
    """Refuse settings that would crash later or train silently wrong, before any step runs."""
    def bad(key, want):
        raise ValueError(f"{where}: '{key}' must be {want}, got {config[key]!r}.")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for key in ("batch_size", "log_every", "ckpt_every"):
        if not is_int(config[key]) or config[key] < 1:
            bad(key, "a positive int")
    if "eval_every" in config and (not is_int(config["eval_every"]) or config["eval_every"] < 0):
        bad("eval_every", "an int >= 0 (0: no learning curve)")
    for key in ("steps", "warmup"):
        if not is_int(config[key]) or config[key] < 0:
            bad(key, "an int >= 0")
    if not is_int(config["seed"]) or not 0 <= config["seed"] < 2**32:
        bad("seed", "an int in [0, 2**32)")
    if not is_num(config["lr"]) or config["lr"] <= 0:
        bad("lr", "a positive number")
    for key in ("weight_decay", "grad_clip"):
        if not is_num(config[key]) or config[key] < 0:
            bad(key, "a number >= 0 (grad_clip 0 turns clipping off)")
    if not is_num(config["ema_decay"]) or not 0 <= config["ema_decay"] < 1:
        bad("ema_decay", "a number in [0, 1)")
    betas = config["betas"]
    if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(is_num(b) and 0 <= b < 1 for b in betas):
        bad("betas", "two numbers in [0, 1)")
    if config["lr_decay"] not in ("none", "cosine"):
        bad("lr_decay", "'none' or 'cosine'")
    if not is_num(config["min_lr_ratio"]) or not 0 <= config["min_lr_ratio"] <= 1:
        bad("min_lr_ratio", "a number in [0, 1]")
    if "cpu_autocast" in config:
        raise ValueError(f"{where}: 'cpu_autocast' is no longer a setting: the trainer uses bf16 on a CPU only where "
                         f"it has native bf16 (AMX / AVX512-BF16). Remove the key ('autocast': false forces fp32).")
    if not isinstance(config["autocast"], bool):
        bad("autocast", "true or false")
    if config["ship_dtype"] not in ("float16", "bfloat16", "float32"):
        bad("ship_dtype", "'float16', 'bfloat16' or 'float32'")


def make_task(config: dict, device: torch.device):
    """Import "module:Class" from config["task"] and build Task(config, device)."""
    spec = config["task"]
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"config 'task' must look like 'package.module:Class', got {spec!r}.")
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)(config, device)


# Keys that do not change the training trajectory: a run may resume after they changed.
RUN_ONLY = ("steps", "log_every", "ckpt_every", "eval_every", "sample_every", "eval_fd_n", "ship_dtype", "notes", "autocast",
            "cpu_autocast")


def config_key(config: dict) -> dict:
    """The part of a config that must match to resume a run (JSON-normalised, defaults filled in,
    so a setting added to the trainer later, left at its default, does not block a resume)."""
    return json.loads(json.dumps({k: v for k, v in {**DEFAULTS, **config}.items() if k not in RUN_ONLY}))



# ----------------------------------------------------------------------------- the state on disk
def atomic_save(tensors: dict, path: Path, metadata: dict) -> None:
    """Write to path.tmpPID, then rename over path: a reader sees the old file or the new one."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={k: json.dumps(v) for k, v in metadata.items()})
        os.replace(tmp, path)
    except OSError as e:
        if tmp.exists():
            tmp.unlink()
        raise OSError(e.errno, f"could not write the training state to the folder {path.parent} "
                               f"({e.strerror or e}); free some space or make the folder writable. "
                               f"The last saved state in {path.name} is intact.") from None


def remove_leftovers(folder: Path) -> list:
    """Delete temporary files a killed save left in a run folder; return their names."""
    gone = []
    for p in sorted(folder.glob("*.tmp*")):
        if p.is_file():
            p.unlink()
            gone.append(p.name)
    return gone


class RunLock:
    """An exclusive lock on a run folder (fcntl.flock on runs/NAME/.lock), held while training.

    The kernel drops the lock when its process dies, so a lock left by a killed trainer is simply
    taken over; the pid it names is reported. A live trainer's lock makes a second one stop.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self.file = None

    def acquire(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        f.seek(0)
        previous = f.read().strip()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise RuntimeError(f"the run folder {self.path.parent} is in use by another trainer "
                               f"(pid {previous or '?'}); wait for it to finish, stop it, or use another --out.") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        return f"took over the lock of {self.path.parent} left by pid {previous}, which is no longer running" \
            if previous and previous != str(os.getpid()) else ""

    def release(self) -> None:
        if self.file:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict:
    """Flatten the AdamW state (moments and step per parameter) into named tensors."""
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = torch.as_tensor(v)
    return out


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict) -> None:
    sd = opt.state_dict()
    state = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


# ----------------------------------------------------------------------------- lineage of a checkpoint
def lineage(card: dict) -> list:
    """The runs a shipped checkpoint came from (older cards without "runs": one run from their fields)."""
    if card.get("runs"):
        return list(card["runs"])
    keep = ("command", "steps", "batch_size", "hardware", "wall_time_s", "date")
    return [{k: card[k] for k in keep if k in card}]


def learning_curve(card: dict, unit: str = "characters") -> list:
    """A checkpoint's validation curve over its whole lineage, run after run.

    Each point: the run it belongs to (0 = the first), its step within that run, the `unit`s
    (characters, images, ...) seen by then in all runs together, and the run's logged metrics.
    """
    seen, points = 0, []
    for k, run in enumerate(lineage(card)):
        for p in run.get("curve", []):
            points.append({**p, "run": k, unit: seen + p[unit]})
        seen += run.get(unit, 0)
    return points


def totals(runs: list) -> dict:
    """Sum steps, wall time and every counted unit (images, characters, ...) over a lineage."""
    out = {"runs": len(runs)}
    for run in runs:
        for k, v in run.items():
            if k in ("steps", "wall_time_s", "images", "characters", "examples") and isinstance(v, (int, float)):
                out[k] = out.get(k, 0) + v
    if "wall_time_s" in out:
        out["wall_time_s"] = round(out["wall_time_s"], 1)
        out["hours"] = round(out["wall_time_s"] / 3600, 2)
    return out
