"""The course's one training script: a generic, resumable trainer.

    python -m diffedu.train configs/NAME.json [--steps N] [--out runs/NAME] [--ship]
    python -m diffedu.train configs/NAME.json --init assets/checkpoints/NAME.safetensors --ship
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
SIGINT / SIGTERM finish the current step, save, and exit. A killed save leaves at most a
temporary file, which the next start removes. While a trainer runs, it holds a lock on its run
folder (runs/NAME/.lock): a second trainer on the same folder stops with an error, and a lock
left by a killed trainer is taken over (the operating system releases it with the process).

Warm starts. --init NAME loads shipped weights (checked by sha256 and by their stored config)
into the model and its EMA, with a fresh optimizer and the config's warm-up. The model card of
the shipped result lists every run of its lineage (steps, examples, wall time, hardware,
precision) and their totals, so quality accumulates across runs and machines.

Precision is decided by the hardware, never by a flag: bf16 autocast where the device has
native bf16 matrix units (CUDA, or a CPU with AMX / AVX512-BF16), fp32 elsewhere (on an
AVX2-only CPU emulated bf16 was measured ~10x slower). `"autocast": false` forces fp32.

With "eval_every": N, the trainer logs task.validate(ema_model) (a quick validation metric) every N
steps to log.jsonl, with the number of examples (or characters) seen: a learning curve.

One update (what the lessons show by hand):
    loss = task.loss(model, batch); loss.backward(); clip_grad_norm_; AdamW step;
    ema <- decay * ema + (1 - decay) * theta,  decay = min(ema_decay, (1 + step) / (10 + step)).
"""
import argparse
import copy
import datetime
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from tqdm.auto import tqdm

from diffedu.runs import (DEFAULTS, RunLock, atomic_save, config_key, lineage, load_config, load_optimizer,
                          make_task, optimizer_tensors, remove_leftovers, totals)
from diffedu.runtime import get_device, hardware, native_bf16

# ----------------------------------------------------------------------------- small pieces
def lr_at(step: int, config: dict) -> float:
    """Linear warm-up over `warmup` steps, then constant, or (lr_decay "cosine") a cosine from lr
    down to min_lr_ratio * lr at the config's `steps`, and flat after it:

        lr_s = lr * [r + (1 - r) * (1 + cos(pi * min(s, S) / S)) / 2],   r = min_lr_ratio, S = steps
    """
    lr = config["lr"] * min(1.0, (step + 1) / max(1, config["warmup"]))
    if config.get("lr_decay", "none") == "cosine" and config["steps"] > 0:
        r, frac = config["min_lr_ratio"], min(step, config["steps"]) / config["steps"]
        lr *= r + (1 - r) * 0.5 * (1 + math.cos(math.pi * frac))
    return lr


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
        self.init = None  # {"checkpoint", "weights_sha256", "runs"}: the lineage this run continues
        self.precision = "bf16" if config["autocast"] and native_bf16(self.device) else "fp32"
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

    # -- warm start ----------------------------------------------------------
    def warm_start(self, name_or_path) -> None:
        """Load shipped weights into the model and the EMA (fresh optimizer): --init."""
        from diffedu.checkpoints import load_checkpoint, load_into
        _, card = load_checkpoint(name_or_path)
        theirs, mine = card["config"], self.config
        adapt_from = getattr(self.task, "init_tasks", ())  # tasks whose weights this task may adapt
        if theirs.get("task") != mine["task"] and theirs.get("task") not in adapt_from:
            raise ValueError(f"--init {name_or_path}: it was trained by task {theirs.get('task')!r}, this config "
                             f"trains {mine['task']!r}; warm-start from a checkpoint of the same task.")
        may_differ = getattr(self.task, "init_may_differ", ()) if theirs.get("task") != mine["task"] else ()
        a, b = theirs.get("model", {}), mine.get("model", {})
        diff = sorted(k for k in set(a) | set(b) if k not in may_differ and a.get(k) != b.get(k))
        if diff:
            raise ValueError(f"--init {name_or_path}: its model differs from this config's in {diff} "
                             f"({', '.join(f'{k}: {a.get(k)!r} vs {b.get(k)!r}' for k in diff)}); "
                             f"use a config with the same model, or train from scratch without --init.")
        new = getattr(self.task, "init_new", ()) if theirs.get("task") != mine["task"] else ()
        load_into(self.model, name_or_path, new=new)  # one clear error if the tensors do not fit
        self.ema.load_state_dict(self.model.state_dict())
        self.init = dict(checkpoint=card.get("name", str(name_or_path)), weights_sha256=card["weights_sha256"],
                         runs=lineage(card))

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
                    world_size=self.world, init=self.init, precision=self.precision)
        atomic_save(tensors, self.state_path, meta)
        self._write_state_json(meta)

    def _write_state_json(self, meta: dict) -> None:
        """state.json mirrors the metadata of state.safetensors, which is the one that counts."""
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
        self.step, self.wall_time, self.init = meta["step"], meta["wall_time_s"], meta.get("init")
        if self.rank == 0:  # a kill between the two writes of save() leaves state.json one save behind
            self._write_state_json(meta)
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
        autocast = self.precision == "bf16"
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        log = open(self.out / "log.jsonl", "a") if self.rank == 0 else None
        bar = tqdm(total=steps, initial=self.step, desc=cfg["name"], disable=self.rank != 0,
                   dynamic_ncols=True)
        t0, running = time.time(), None
        self.model.train()
        while self.step < steps and not self._should_stop():
            reseed(generator, cfg["seed"], self.step, self.rank)
            if hasattr(self.task, "set_step"):  # for tasks whose batches depend on the step
                self.task.set_step(self.step)
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
            if log and cfg.get("eval_every") and self.step % cfg["eval_every"] == 0 and hasattr(self.task, "validate"):
                self.wall_time += time.time() - t0  # a learning curve: not counted as training time
                seen = self.step * cfg["batch_size"] * getattr(self.task, "units_per_example", 1)
                log.write(json.dumps({"step": self.step, getattr(self.task, "unit", "examples"): seen,
                                      **self.task.validate(self.ema)}) + "\n")
                log.flush()
                t0 = time.time()
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
    def curve(self) -> list:
        """The learning-curve points of this run (log lines with a validation metric)."""
        log = self.out / "log.jsonl"
        lines = [json.loads(l) for l in log.read_text().splitlines() if l] if log.exists() else []
        return [l for l in lines if any(k.startswith("val_") for k in l)]

    def this_run(self) -> dict:
        """The record of this run for the model card's lineage (with its learning curve, if any)."""
        per = getattr(self.task, "units_per_example", 1)
        return dict(steps=self.step, batch_size=self.config["batch_size"],
                    **{getattr(self.task, "unit", "examples"): self.step * self.config["batch_size"] * per},
                    hardware=f"{hardware()} x {self.world} process(es)", precision=self.precision,
                    wall_time_s=round(self.wall_time, 1), init=self.init and self.init["checkpoint"],
                    date=datetime.date.today().isoformat(), **({"curve": c} if (c := self.curve()) else {}))

    def ship(self, command: str) -> Path:
        """Evaluate the EMA model and write assets/checkpoints/NAME.{safetensors,json}."""
        from diffedu.checkpoints import assets_dir, parameter_count, save_checkpoint
        cfg = self.config
        metrics = self.task.evaluate(self.ema)
        dtype = getattr(torch, cfg["ship_dtype"])
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in self.ema.state_dict().items()}
        runs = (self.init["runs"] if self.init else []) + [dict(command=command, **self.this_run())]
        card = dict(name=cfg["name"], architecture=getattr(self.task, "architecture", type(self.model).__name__),
                    config=cfg, parameter_count=parameter_count(self.model),
                    data=getattr(self.task, "data_info", {}), command=command, steps=self.step,
                    batch_size=cfg["batch_size"], hardware=runs[-1]["hardware"], precision=self.precision,
                    wall_time_s=round(self.wall_time, 1), runs=runs, totals=totals(runs), metrics=metrics,
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
    p.add_argument("--init", default=None, help="warm-start from these weights (a shipped checkpoint name or "
                                                "path); fresh optimizer, the config's warm-up")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in this process on the CPU (default 1: on a shared machine two threads in "
                        "one process train slower than one; give the second core a second run instead)")
    args = p.parse_args(argv)
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}.")
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _main(args)
    finally:
        torch.set_num_threads(before)


def _main(args) -> None:
    config = load_config(args.config)
    steps = args.steps if args.steps is not None else config["steps"]
    if steps < 0:
        raise ValueError(f"--steps must be >= 0, got {steps}.")
    trainer = Trainer(config, args.out or Path("runs") / config["name"], args.device)
    lock = RunLock(trainer.out) if trainer.rank == 0 else None
    if lock and (note := lock.acquire()):
        print(note, flush=True)
    try:
        if trainer.rank == 0 and (gone := remove_leftovers(trainer.out)):
            print(f"removed temporary files left by an interrupted save: {gone}", flush=True)
        _run(trainer, args, steps)
    finally:
        if lock:
            lock.release()


def _run(trainer: Trainer, args, steps: int) -> None:
    if trainer.resume():
        recorded = trainer.init and trainer.init["checkpoint"]
        if args.init and Path(args.init).stem != recorded:
            raise ValueError(f"{trainer.state_path} continues a run started from {recorded!r}, not from "
                             f"{args.init!r}; drop --init to resume it, or use another --out.")
        if trainer.rank == 0:
            print(f"resumed {trainer.state_path} at step {trainer.step}", flush=True)
    elif args.init:
        trainer.warm_start(args.init)
        if trainer.rank == 0:
            print(f"warm start from {args.init} ({len(trainer.init['runs'])} earlier run(s))", flush=True)
    if trainer.rank == 0:
        print(f"precision: {trainer.precision} on {hardware()}"
              + ("" if trainer.precision == "bf16" or trainer.device.type != "cpu" or not trainer.config["autocast"]
                 else " (no native bf16 on this CPU: bf16 would be emulated and slower)"), flush=True)
    handlers = {s: signal.signal(s, trainer.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.train(steps)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    if trainer._stop:
        print(f"stopped at step {trainer.step}; state saved, run the same command to continue.", flush=True)
    elif args.ship and trainer.rank == 0:
        init = f" --init {args.init}" if args.init else ""
        path = trainer.ship(f"python -m diffedu.train {args.config}{init} --ship")
        print(f"shipped {path}", flush=True)
    if trainer.world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
