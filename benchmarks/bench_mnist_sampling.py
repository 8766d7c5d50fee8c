"""DDPM vs DDIM on the shipped MNIST U-Net: sample quality (Fréchet distance) and speed.

    python benchmarks/bench_mnist_sampling.py                 # N = 1000, all samplers
    python benchmarks/bench_mnist_sampling.py --n 2000 --samplers ddim10 ddim50

For each sampler we draw N samples from the same seed, class-conditional with the labels
0, 1, ..., 9 in turn and no guidance (--mode conditional, the default), or unconditional with
the null label (--mode unconditional), and report:

* FD: the Fréchet distance (diffedu.metrics, eq. 5) between the samples and N real test
  digits, in the features of the shipped MNIST classifier;
* the floor: the FD between N real *train* digits and the same N test digits. FD is biased
  upwards at finite N, so a sampler can only be judged against the floor at the same N;
* seconds per 1,000 samples: the wall time of the sampling run, scaled to 1,000 samples, and
  the CPU time of this process (with one thread on a busy machine the CPU time is the better
  estimate of the wall time on an idle one).

Targets: FD(DDIM-50) <= 1.5 x FD(DDPM-1000), and FD(DDPM-1000) <= 3 x the floor. The script
prints the table whether or not they are met. Rows are cached in the --json file (keyed by the
checkpoint's sha256, N and seed), so a long run can be split over several calls; --force redoes them.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffedu import images, metrics  # noqa: E402
from diffedu.images import classifier, pipeline  # noqa: E402
from diffedu.data import mnist  # noqa: E402
from diffedu.train import hardware  # noqa: E402

# name: (sampler, network calls, DDIM eta). eta = 0 is the deterministic DDIM of the targets;
# eta = 1 adds DDPM-like fresh noise at each of the (fewer) steps.
SAMPLERS = {"ddpm1000": ("ddpm", 1000, 0.0), "ddim10": ("ddim", 10, 0.0), "ddim20": ("ddim", 20, 0.0),
            "ddim50": ("ddim", 50, 0.0), "ddim100": ("ddim", 100, 0.0),
            "ddim50_eta1": ("ddim", 50, 1.0), "ddim100_eta1": ("ddim", 100, 1.0)}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="samples per sampler (and real digits for the floor)")
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--mode", choices=["conditional", "unconditional"], default="conditional")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "mnist_sampling.json"))
    p.add_argument("--force", action="store_true", help="recompute rows that are cached in --json")
    return p.parse_args(argv)


def real_digits(n: int, seed: int):
    """n random train digits and n random test digits (fixed by seed)."""
    g = torch.Generator().manual_seed(seed)
    train, test = mnist("train").tensors[0], mnist("test").tensors[0]
    return train[torch.randperm(len(train), generator=g)[:n]], test[torch.randperm(len(test), generator=g)[:n]]


def main(argv=None):
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, schedule, card = images.load_pretrained("mnist_unet")
    key = f"{card['weights_sha256'][:16]}|{args.mode}|n={args.n}|seed={args.seed}"
    labels = torch.arange(args.n) % 10 if args.mode == "conditional" else None
    path = Path(args.json)
    cache = json.loads(path.read_text()) if path.exists() else {}
    rows = cache.get(key, {})
    judge = classifier.load("mnist_classifier")
    train_x, test_x = real_digits(args.n, args.seed)
    mu_test, cov_test = metrics.gaussian_stats(metrics.mnist_features(test_x, judge))
    if "floor" not in rows or args.force:
        mu, cov = metrics.gaussian_stats(metrics.mnist_features(train_x, judge))
        rows["floor"] = {"fd": metrics.frechet_distance_gaussians(mu, cov, mu_test, cov_test)}

    for name in args.samplers:
        if name in rows and not args.force:
            continue
        sampler, steps, eta = SAMPLERS[name]
        g = torch.Generator().manual_seed(args.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        x = pipeline.sample(model, schedule, args.n, sampler, steps=steps, labels=labels, generator=g,
                        eta=eta, batch_size=args.batch_size)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        mu, cov = metrics.gaussian_stats(metrics.mnist_features(x, judge))
        rows[name] = {"fd": metrics.frechet_distance_gaussians(mu, cov, mu_test, cov_test), "calls": steps,
                      "s_per_1000": wall * 1000 / args.n, "cpu_s_per_1000": cpu * 1000 / args.n,
                      "threads": torch.get_num_threads(),
                      "date": time.strftime("%Y-%m-%d %H:%M")}
        cache[key] = rows
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cache, indent=1) + "\n")
        print(f"{name}: FD {rows[name]['fd']:.3f}, {rows[name]['s_per_1000']:.1f} s per 1000 samples", flush=True)
    cache[key] = rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cache, indent=1) + "\n")
    lines = table(rows, args.n, card, args.mode)
    print("\n".join(lines))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def table(rows: dict, n: int, card: dict, mode: str) -> list:
    """The results as Markdown lines (also written next to the --json file, as .md)."""
    out = []
    add = out.append
    floor = rows["floor"]["fd"]
    ddpm = rows.get("ddpm1000", {}).get("fd")
    add(f"MNIST U-Net ({card['parameter_count'] / 1e6:.2f}M params, {card['steps']} training steps), "
          f"{mode} samples, N = {n}, {hardware()}\n")
    add(f"| sampler | network calls | FD (N={n}) | FD / floor | FD / FD(DDPM-1000) "
          f"| wall s per 1000 samples | CPU s per 1000 samples |")
    add("|---|---|---|---|---|---|---|")
    add(f"| real train vs test (floor) | - | {floor:.3f} | 1.00 | - | - | - |")
    for name in SAMPLERS:
        if name not in rows:
            continue
        r = rows[name]
        rel = f"{r['fd'] / ddpm:.2f}" if ddpm else "-"
        cpu = f"{r['cpu_s_per_1000']:.1f}" if "cpu_s_per_1000" in r else "-"
        label = name.upper().replace("DDPM", "DDPM-").replace("DDIM", "DDIM-").replace("_ETA1", ", eta=1")
        add(f"| {label} | {r['calls']} | {r['fd']:.3f} "
              f"| {r['fd'] / floor:.2f} | {rel} | {r['s_per_1000']:.1f} ({r['threads']} thread(s)) | {cpu} |")
    add("")
    if ddpm and "ddim50" in rows:
        ok = rows["ddim50"]["fd"] <= 1.5 * ddpm
        add(f"target FD(DDIM-50) <= 1.5 x FD(DDPM-1000): {rows['ddim50']['fd'] / ddpm:.2f} x -> "
              f"{'met' if ok else 'NOT met'}")
    if ddpm:
        add(f"target FD(DDPM-1000) <= 3 x floor: {ddpm / floor:.2f} x -> {'met' if ddpm <= 3 * floor else 'NOT met'}")
    return out


if __name__ == "__main__":
    main()
