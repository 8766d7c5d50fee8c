"""Training images per second of the MNIST U-Net under the CPU choices that do not change the math.

    python benchmarks/bench_unet_throughput.py                  # 20 rounds of 5 steps, one thread
    python benchmarks/bench_unet_throughput.py --compile        # also torch.compile (slow to start)

One training step of configs/mnist_unet.json (batch 64, the DDPM loss of diffedu.images.tasks,
forward + backward + AdamW) in each variant:

* default: the U-Net as the trainer builds it, fp32, contiguous (NCHW) tensors;
* channels_last: the model's weights and the input batch in torch.channels_last memory format
  (NHWC), which oneDNN's convolutions prefer on many CPUs;
* bf16 autocast: torch.autocast("cpu", torch.bfloat16); fast only where the CPU has native
  bf16 (AMX or AVX512-BF16, diffedu.runtime.native_bf16), emulated and slow elsewhere;
* compiled (with --compile): torch.compile of the default model; its compilation time is
  reported separately and excluded from the rate.

The variants are interleaved round by round (a busy machine slows all of them alike), each round
a few steps after a warm-up, and the median round is reported. Writes
benchmarks/results/unet_throughput.{json,md} with the hardware: the answer depends on the CPU.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from diffedu.images.tasks import ddpm_loss  # noqa: E402
from diffedu.images.unet import UNet  # noqa: E402
from diffedu.runtime import hardware, native_bf16  # noqa: E402
from diffedu.schedules import NoiseSchedule  # noqa: E402


def make(config, memory_format=torch.contiguous_format, compiled=False):
    torch.manual_seed(0)
    model = UNet(**config["model"], T=config["T"]).to(memory_format=memory_format)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.0)
    return (torch.compile(model) if compiled else model), opt


def step(model, opt, x0, y, schedule, generator, autocast=False, memory_format=torch.contiguous_format):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = ddpm_loss(model, x0.contiguous(memory_format=memory_format), y, schedule, generator=generator)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5, help="training steps per round and variant")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = json.loads((ROOT / "configs" / "mnist_unet.json").read_text())
    schedule = NoiseSchedule.from_name(config["schedule"], config["T"])
    B = config["batch_size"]
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(B, 1, 28, 28, generator=g) * 2 - 1
    y = torch.randint(0, 10, (B,), generator=g)
    cl = torch.channels_last
    variants = {"default": (make(config), {}),
                "channels_last": (make(config, cl), {"memory_format": cl}),
                "bf16 autocast": (make(config), {"autocast": True})}
    compile_s = None
    if args.compile:
        variants["compiled"] = (make(config, compiled=True), {})
        t0 = time.perf_counter()
        step(*variants["compiled"][0], x0, y, schedule, g)      # compiles
        compile_s = time.perf_counter() - t0
    for (model, opt), kw in variants.values():                  # warm-up
        step(model, opt, x0, y, schedule, g, **kw)
    times = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, ((model, opt), kw) in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, opt, x0, y, schedule, g, **kw)
            times[name].append((time.perf_counter() - t0) / args.steps)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {B / t[-1]:.1f}" for n, t in times.items())
              + " images/s", flush=True)
    rate = {n: B / statistics.median(t) for n, t in times.items()}
    result = {"hardware": hardware(), "native_bf16": native_bf16(torch.device("cpu")), "threads": args.threads,
              "batch_size": B, "rounds": args.rounds, "steps_per_round": args.steps, "images_per_s": rate,
              "relative_to_default": {n: r / rate["default"] for n, r in rate.items()},
              "compile_s": compile_s, "date": time.strftime("%Y-%m-%d %H:%M")}
    lines = [f"# MNIST U-Net training throughput ({hardware()}, native bf16: {result['native_bf16']})", "",
             f"One training step of configs/mnist_unet.json (batch {B}, forward + backward + AdamW); median of "
             f"{args.rounds} interleaved rounds of {args.steps} steps.", "",
             "| variant | images/s | vs default |", "|---|---:|---:|"]
    lines += [f"| {n} | {r:.1f} | {r / rate['default']:.2f}x |" for n, r in rate.items()]
    if compile_s is not None:
        lines += ["", f"torch.compile took {compile_s:.0f} s before its first step (not counted above)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "results" / "unet_throughput"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
