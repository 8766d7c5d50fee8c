"""The course's one training script: a generic, resumable trainer.

    python -m diffedu.train configs/NAME.json [--steps N] [--out runs/NAME] [--ship]
    torchrun --nproc_per_node 2 -m diffedu.train configs/NAME.json          # same, data-parallel

A config JSON names a *task* by a dotted path ("package.module:Class"); the task owns the
model, the data and the loss, the trainer owns everything else:

    task = Task(config, device)
    task.model                                  nn.Module to train
    task.batches(generator, rank, world_size)   infinite iterator of batches (on `device`)
    task.loss(model, batch)                     scalar tensor
    task.evaluate(ema_model)                    dict of final metrics for the model card
    task.on_checkpoint(ema_model, step, out)    optional: e.g. write a sample grid PNG

Resumability. Before every batch the trainer re-seeds `generator` and torch's global RNG from
(seed, step, rank). So `batches` must draw every random number from `generator` while it makes
one batch and keep no other state between batches (e.g. draw indices with replacement), and
`loss` may use torch's global RNG. Then the stream of batches and noise is a function of the
step alone, and a run that is killed and restarted ends bit-for-bit where an uninterrupted run
ends (on CPU). The state (model, EMA, AdamW moments, step) lives in ONE safetensors file,
runs/NAME/state.safetensors, replaced atomically (write to a temporary file, then os.replace).
SIGINT / SIGTERM finish the current step, save, and exit.

One update (what the lessons show by hand):
    loss = task.loss(model, batch); loss.backward(); clip_grad_norm_; AdamW step;
    ema <- decay * ema + (1 - decay) * theta,  decay = min(ema_decay, (1 + step) / (10 + step)).
"""
import argparse
import copy
import importlib
import json
import math
import os
import platform
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from diffedu.runtime import get_device

DEFAULTS = dict(seed=0, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), warmup=100, grad_clip=1.0,
                ema_decay=0.999, log_every=50, ckpt_every=500, ship_dtype="float16", autocast=True,
                cpu_autocast=False)
REQUIRED = ("name", "task", "steps", "batch_size")


# ----------------------------------------------------------------------------- config
def load_config(path) -> dict:
    """Read a config JSON, check the required keys, fill in the defaults."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found; configs live in configs/NAME.json.")
    config = json.loads(path.read_text())
    missing = [k for k in REQUIRED if k not in config]
    if missing:
        raise ValueError(f"config {path} lacks the keys {missing}; every config needs {list(REQUIRED)}.")
    return {**DEFAULTS, **config}


def make_task(config: dict, device: torch.device):
    """Import "module:Class" from config["task"] and build Task(config, device)."""
    spec = config["task"]
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"config 'task' must look like 'package.module:Class', got {spec!r}.")
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)(config, device)


# Keys that do not change the training trajectory: a run may resume after they changed.
RUN_ONLY = ("steps", "log_every", "ckpt_every", "sample_every", "eval_fd_n", "ship_dtype", "notes")


def config_key(config: dict) -> dict:
    """The part of a config that must match to resume a run (JSON-normalised)."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in RUN_ONLY}))


# ----------------------------------------------------------------------------- small pieces
def lr_at(step: int, config: dict) -> float:
    """Linear warm-up over `warmup` steps, then constant."""
    return config["lr"] * min(1.0, (step + 1) / max(1, config["warmup"]))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, ema_decay: float) -> None:
    """ema <- d ema + (1 - d) theta with d = min(ema_decay, (1 + step) / (10 + step))."""
    d = min(ema_decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def reseed(generator: torch.Generator, seed: int, step: int, rank: int) -> None:
    """Seed the data generator and torch's global RNG from (seed, step, rank) alone."""
    s = (seed * 1_000_003 + step) * 4099 + rank
    generator.manual_seed(s)
    torch.manual_seed(s + 7919)


def atomic_save(tensors: dict, path: Path, metadata: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={k: json.dumps(v) for k, v in metadata.items()})
    os.replace(tmp, path)


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


def hardware() -> str:
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    name = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        models = [l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")]
        name = models[0] if models else name
    return f"CPU: {name} ({os.cpu_count()} cores), {torch.get_num_threads()} torch threads"


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    def __init__(self, config: dict, out_dir, device=None):
        self.config, self.out = config, Path(out_dir)
        self.rank, self.world = 0, 1
        if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
            self._init_distributed(device)
        else:
            self.device = get_device(device)
        if config["batch_size"] % self.world:
            raise ValueError(f"batch_size {config['batch_size']} must be divisible by the {self.world} "
                             f"processes (each takes batch_size / world_size).")
        torch.manual_seed(config["seed"])  # same initial weights on every rank
        self.task = make_task({**config, "batch_size": config["batch_size"] // self.world}, self.device)
        self.model = self.task.model.to(self.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config["lr"],
                                     betas=tuple(config["betas"]), weight_decay=config["weight_decay"])
        self.step, self.wall_time = 0, 0.0
        self.ddp = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DDP(self.model, device_ids=ids)
        self._stop = False

    def _init_distributed(self, device):
        cuda = torch.cuda.is_available() and device != "cpu"
        dist.init_process_group("nccl" if cuda else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", 0))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")

    # -- state ---------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / "state.safetensors"

    def save(self) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        tensors.update(optimizer_tensors(self.opt))
        meta = dict(step=self.step, wall_time_s=self.wall_time, config=config_key(self.config),
                    world_size=self.world)
        atomic_save(tensors, self.state_path, meta)
        tmp = self.out / "state.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, self.out / "state.json")

    def resume(self) -> bool:
        """Load runs/NAME/state.safetensors if it exists; False when starting fresh."""
        if not self.state_path.exists():
            return False
        from safetensors import safe_open
        with safe_open(str(self.state_path), "pt") as f:
            meta = {k: json.loads(v) for k, v in f.metadata().items()}
        saved, now = config_key(meta["config"]), config_key(self.config)
        if saved != now:
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise ValueError(f"{self.state_path} was written with a different config (keys {diff} differ); "
                             f"use another --out folder, or delete it to start over.")
        tensors = load_file(str(self.state_path), device=str(self.device))
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        load_optimizer(self.opt, tensors)
        self.step, self.wall_time = meta["step"], meta["wall_time_s"]
        log = self.out / "log.jsonl"
        if self.rank == 0 and log.exists():  # drop log lines of steps that were not saved
            lines = [l for l in log.read_text().splitlines() if l and json.loads(l)["step"] <= self.step]
            log.write_text("".join(l + "\n" for l in lines))
        return True

    # -- the loop ------------------------------------------------------------
    def train(self, steps: int) -> None:
        cfg = self.config
        generator = torch.Generator()
        batches = self.task.batches(generator, self.rank, self.world)
        autocast = cfg["autocast"] and (self.device.type == "cuda"
                                        or (self.device.type == "cpu" and cfg["cpu_autocast"]))
        log = open(self.out / "log.jsonl", "a") if self.rank == 0 else None
        bar = tqdm(total=steps, initial=self.step, desc=cfg["name"], disable=self.rank != 0,
                   dynamic_ncols=True)
        t0, running = time.time(), None
        self.model.train()
        while self.step < steps and not self._should_stop():
            reseed(generator, cfg["seed"], self.step, self.rank)
            batch = next(batches)
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.step, cfg)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = self.task.loss(self.ddp, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; "
                                         f"lower lr in the config or check the data.")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg["grad_clip"])
            self.opt.step()
            ema_update(self.ema, self.model, self.step, cfg["ema_decay"])
            self.step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if log and (self.step % cfg["log_every"] == 0 or self.step == 1):
                log.write(json.dumps(dict(step=self.step, loss=loss.item(), loss_smooth=running,
                                          time_s=self.wall_time + time.time() - t0)) + "\n")
                log.flush()
            if self.step % cfg["ckpt_every"] == 0 or self.step == steps or self._stop:
                self.wall_time += time.time() - t0
                t0 = time.time()
                self.save()
                if self.rank == 0 and hasattr(self.task, "on_checkpoint"):
                    self.task.on_checkpoint(self.ema, self.step, self.out)
                t0 = time.time()
        bar.close()
        if log:
            log.close()

    def _should_stop(self) -> bool:
        if self.world == 1:
            return self._stop
        flag = torch.tensor([float(self._stop)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def request_stop(self, *_):
        self._stop = True

    # -- shipping ------------------------------------------------------------
    def ship(self, command: str) -> Path:
        """Evaluate the EMA model and write assets/checkpoints/NAME.{safetensors,json}."""
        from diffedu.checkpoints import save_checkpoint, assets_dir
        cfg = self.config
        metrics = self.task.evaluate(self.ema)
        dtype = getattr(torch, cfg["ship_dtype"])
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in self.ema.state_dict().items()}
        card = dict(name=cfg["name"], architecture=getattr(self.task, "architecture", type(self.model).__name__),
                    config=cfg, parameter_count=sum(p.numel() for p in self.model.parameters()),
                    data=getattr(self.task, "data_info", {}), command=command, steps=self.step,
                    batch_size=cfg["batch_size"], hardware=f"{hardware()} x {self.world} process(es)",
                    wall_time_s=round(self.wall_time, 1), metrics=metrics,
                    notes=cfg.get("notes", "") + f" Weights stored as {cfg['ship_dtype']} (EMA).")
        return save_checkpoint(assets_dir() / "checkpoints" / cfg["name"], tensors, card)


# ----------------------------------------------------------------------------- CLI
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Train a diffedu task from a config JSON (resumable).")
    p.add_argument("config", help="configs/NAME.json")
    p.add_argument("--steps", type=int, default=None, help="train until this step (default: config)")
    p.add_argument("--out", default=None, help="run folder (default: runs/NAME)")
    p.add_argument("--ship", action="store_true", help="write the EMA weights + model card to assets/")
    p.add_argument("--device", default=None, help="cpu / cuda / mps (default: automatic)")
    args = p.parse_args(argv)

    config = load_config(args.config)
    steps = args.steps if args.steps is not None else config["steps"]
    if steps < 0:
        raise ValueError(f"--steps must be >= 0, got {steps}.")
    trainer = Trainer(config, args.out or Path("runs") / config["name"], args.device)
    trainer.out.mkdir(parents=True, exist_ok=True)
    if trainer.resume() and trainer.rank == 0:
        print(f"resumed {trainer.state_path} at step {trainer.step}", flush=True)
    handlers = {s: signal.signal(s, trainer.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.train(steps)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    if trainer._stop:
        print(f"stopped at step {trainer.step}; state saved, run the same command to continue.", flush=True)
    elif args.ship and trainer.rank == 0:
        path = trainer.ship(f"python -m diffedu.train {args.config} --ship")
        print(f"shipped {path}", flush=True)
    if trainer.world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
