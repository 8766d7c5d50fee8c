"""How much the MNIST U-Net learns per CPU-hour, under the training choices that matter on a CPU.

    python benchmarks/bench_unet_learning.py --jobs 2              # 20 CPU-minutes per arm, ~90 min on 2 cores
    python benchmarks/bench_unet_learning.py --arms baseline,min_snr5 --budget-s 600
    python benchmarks/bench_unet_learning.py --quick               # 15 s per arm, N = 50: a smoke test

Every arm trains configs/mnist_unet.json from the same seed (same initial weights, same data order)
with one change, for the same CPU time (one thread):

    baseline        the config as it is: bf16 autocast where the CPU has native bf16 (AMX or
                    AVX512-BF16), fp32 elsewhere; contiguous NCHW tensors
    fp32            autocast off: fp32 even where the CPU has native bf16 (the same as baseline elsewhere)
    channels_last   weights and batches in NHWC memory order: the same numbers, another speed
    min_snr5        min-SNR-gamma loss weighting, gamma = 5 (Hang et al. 2023)
    cosine          the cosine noise schedule instead of the linear one
    lr1e-3, lr4e-3  half and twice the learning rate
    ch24            a wider network (24 base channels instead of 16)

Fair in CPU time, not in steps: each arm first times 10 of its own steps, then sets its step count
(and so its cosine learning-rate decay) to fit the budget, and trains exactly that many steps with
the course's trainer. At the end: the Fréchet distance (the judge's features, diffedu.metrics) of
N = 500 class-conditional DDIM-20 samples of the EMA weights against 500 test digits, and the floor
(500 training digits against the same test digits). The arms run in separate one-thread processes
(--jobs 2: two at a time). Writes benchmarks/results/unet_learning.{json,md}: the answer depends on
the CPU, which the file names.
"""
import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = {"baseline": {}, "fp32": {"autocast": False}, "channels_last": {"channels_last": True}, "min_snr5": {"min_snr_gamma": 5.0},
        "cosine": {"schedule": "cosine"}, "lr1e-3": {"lr": 1e-3}, "lr4e-3": {"lr": 4e-3},
        "ch24": {"model": {"ch": 24}}}


def arm_config(base: dict, change: dict, name: str) -> dict:
    """The base config with one arm's change (a nested "model" change is merged, not replaced)."""
    cfg = {**base, **{k: v for k, v in change.items() if k != "model"}, "name": f"learning_{name}"}
    cfg["model"] = {**base["model"], **change.get("model", {})}
    cfg.update(eval_fd_n=0, sample_every=10 ** 9, ckpt_every=10 ** 9, eval_every=0)
    return cfg


def fit_steps(seconds_per_step: float, budget_s: float, warmup: int) -> int:
    """Steps that fill the CPU budget (at least the warm-up plus one)."""
    if not seconds_per_step > 0:
        raise ValueError(f"seconds_per_step must be positive, got {seconds_per_step}.")
    return max(warmup + 1, int(budget_s / seconds_per_step))


def run_arm(name: str, budget_s: float, n_fd: int, out_dir: str, warmup: int | None = None) -> dict:
    torch.set_num_threads(1)
    from diffedu import data, metrics
    from diffedu.images.classifier import load
    from diffedu.images.pipeline import sample
    from diffedu.runs import load_config
    from diffedu.train import Trainer
    cfg = arm_config(load_config(ROOT / "configs" / "mnist_unet.json"), ARMS[name], name)
    cfg["warmup"] = cfg["warmup"] if warmup is None else warmup
    probe = Trainer({**cfg, "steps": 10}, Path(out_dir) / f"{name}_probe")
    t0 = time.process_time()
    probe.train(10)
    steps = fit_steps((time.process_time() - t0) / 10, budget_s, cfg["warmup"])
    trainer = Trainer({**cfg, "steps": steps}, Path(out_dir) / name)
    c0, w0 = time.process_time(), time.time()
    trainer.train(steps)
    cpu_s, wall_s = time.process_time() - c0, time.time() - w0
    judge, g = load("mnist_classifier"), torch.Generator().manual_seed(1234)
    x_test = data.mnist("test").tensors[0]
    real = x_test[torch.randperm(len(x_test), generator=g)[:n_fd]]
    x = sample(trainer.ema, trainer.task.schedule, n_fd, "ddim", steps=20, labels=torch.arange(n_fd) % 10,
               generator=torch.Generator().manual_seed(0), progress=False)
    return {"arm": name, "change": ARMS[name], "steps": steps, "images": steps * cfg["batch_size"],
            "train_cpu_s": round(cpu_s, 1), "train_wall_s": round(wall_s, 1),
            "images_per_cpu_s": round(steps * cfg["batch_size"] / cpu_s, 2), "precision": trainer.precision,
            "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "fd_ddim20_conditional": round(metrics.frechet_distance(x, real, judge), 3)}


def floor(n_fd: int) -> float:
    from diffedu import data, metrics
    from diffedu.images.classifier import load
    g = torch.Generator().manual_seed(1234)
    x_test = data.mnist("test").tensors[0]
    real = x_test[torch.randperm(len(x_test), generator=g)[:n_fd]]
    train = data.mnist("train").tensors[0][torch.randperm(60000, generator=torch.Generator().manual_seed(99))[:n_fd]]
    return round(metrics.frechet_distance(train, real, load("mnist_classifier")), 3)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated, from: " + ", ".join(ARMS))
    p.add_argument("--budget-s", type=float, default=1200.0, help="CPU seconds of training per arm")
    p.add_argument("--n", type=int, default=500, help="samples (and real digits) for the Fréchet distance")
    p.add_argument("--jobs", type=int, default=1, help="arms run at once, one thread each")
    p.add_argument("--quick", action="store_true", help="15 CPU-seconds per arm (warm-up 5 steps), N = 50, no files")
    args = p.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    budget, n = (15.0, 50) if args.quick else (args.budget_s, args.n)
    torch.set_num_threads(1)
    from diffedu.runtime import hardware
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp, mp.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        rows = pool.starmap(run_arm, [(a, budget, n, tmp, 5 if args.quick else None) for a in arms])
    fl = floor(n)
    base = next((r for r in rows if r["arm"] == "baseline"), None)
    lines = [f"# MNIST U-Net: learning per CPU-hour ({budget / 60:g} CPU-minutes per arm, one thread)", "",
             f"{hardware()}; FD of N = {n} class-conditional DDIM-20 samples (EMA weights) against {n} test digits; "
             f"floor (train vs test digits at the same N): {fl:.2f}.", "",
             "| arm | change | steps | images / CPU-s | FD | FD / floor |" + (" FD / baseline |" if base else ""),
             "|---|---|---|---|---|---|" + ("---|" if base else "")]
    for r in rows:
        lines.append(f"| {r['arm']} | `{json.dumps(r['change'])}` | {r['steps']} | {r['images_per_cpu_s']:.1f} | "
                     f"{r['fd_ddim20_conditional']:.2f} | {r['fd_ddim20_conditional'] / fl:.2f} |"
                     + (f" {r['fd_ddim20_conditional'] / base['fd_ddim20_conditional']:.2f} |" if base else ""))
    text = "\n".join(lines) + f"\n\n{time.time() - t0:.0f} s of wall time with {args.jobs} job(s).\n"
    print(text)
    if not args.quick:
        out = ROOT / "benchmarks" / "results" / "unet_learning.md"
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"budget_cpu_s": budget, "n": n, "floor": fl, "hardware": hardware(),
                                                        "arms": rows, "date": time.strftime("%Y-%m-%d %H:%M")},
                                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
