"""DDPM, DDIM and the probability-flow ODE on the shipped MNIST U-Net: quality (Fréchet distance) and speed.

    python benchmarks/bench_mnist_sampling.py                 # N = 1000, both modes, all samplers
    python benchmarks/bench_mnist_sampling.py --modes conditional --samplers ddim10 ddim50

For each sampler we draw N samples from the same seed, class-conditional with the labels
0, 1, ..., 9 in turn and no guidance (w = 1), and unconditional with the null label, and report:

* FD: the Fréchet distance (diffedu.metrics, eq. 5) between the samples and N real test
  digits, in the features of the shipped MNIST classifier (the referee);
* the floor: the FD between N real *train* digits and the same N test digits. FD is biased
  upwards at finite N, so a sampler can only be judged against the floor at the same N;
* referee accuracy (conditional samples): the fraction the referee labels as the digit asked for;
* seconds per 1,000 samples: the wall time of the sampling run, scaled to 1,000 samples, and
  the CPU time of this process (with one thread on a busy machine the CPU time is the better
  estimate of the wall time on an idle one).

Samplers: DDPM-1000; DDIM with 10, 20, 50, 100 steps (eta = 0, and eta = 1 at 50 and 100);
Heun's method on the probability-flow ODE (diffedu.sde) with 10 and 25 steps (20 and 50 calls).
Unconditional DDPM-1000 (about an hour of one CPU thread) runs only when --samplers names it.

Targets, printed met or NOT met: conditional FD(DDIM-50) <= 1.5 x floor; unconditional FD(DDIM-50)
<= 3 x floor; FD(DDIM-50) <= 1.5 x FD(DDPM-1000); conditional referee accuracy of DDIM-50 >= 0.97.
Rows are cached in the --json file, which holds the sha256 of the weights they were measured on
(a lesson loads it with diffedu.checkpoints.load_results); a long run can be split over several
calls, and rows of other weights, N or seed are dropped. --force redoes them. --jobs 2 spreads the
batches of each row over two processes of one thread each (same samples as one process, see fast_forward).
"""
import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffedu import images, metrics  # noqa: E402
from diffedu.images import classifier, pipeline  # noqa: E402
from diffedu.data import mnist  # noqa: E402
from diffedu.train import hardware  # noqa: E402

# name: (sampler, network calls, steps, DDIM eta). eta = 0 is the deterministic DDIM of the targets;
# eta = 1 adds DDPM-like fresh noise at each of the (fewer) steps. Heun: 2 network calls per step.
SAMPLERS = {"ddpm1000": ("ddpm", 1000, 1000, 0.0), "ddim10": ("ddim", 10, 10, 0.0),
            "ddim20": ("ddim", 20, 20, 0.0), "ddim50": ("ddim", 50, 50, 0.0), "ddim100": ("ddim", 100, 100, 0.0),
            "heun10": ("heun", 20, 10, 0.0), "heun25": ("heun", 50, 25, 0.0),
            "ddim50_eta1": ("ddim", 50, 50, 1.0), "ddim100_eta1": ("ddim", 100, 100, 1.0)}
MODES = ("conditional", "unconditional")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="samples per sampler (and real digits for the floor)")
    p.add_argument("--samplers", nargs="+", default=None, choices=list(SAMPLERS),
                   help="default: all (unconditional: all but DDPM-1000)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--jobs", type=int, default=1, help="processes per row (one thread each when > 1)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "mnist_sampling.json"))
    p.add_argument("--force", action="store_true", help="recompute rows that are cached in --json")
    return p.parse_args(argv)


def real_digits(n: int, seed: int):
    """n random train digits and n random test digits (fixed by seed)."""
    g = torch.Generator().manual_seed(seed)
    train, test = mnist("train").tensors[0], mnist("test").tensors[0]
    return train[torch.randperm(len(train), generator=g)[:n]], test[torch.randperm(len(test), generator=g)[:n]]


def load_cache(path: Path, meta: dict) -> dict:
    """The rows stored for these weights, referee, N and seed; an empty table otherwise."""
    cache = json.loads(path.read_text()) if path.exists() else {}
    if cache.get("meta", {}).get("key") != meta["key"]:
        return {"meta": meta, **{mode: {} for mode in MODES}}
    cache["meta"].update({k: v for k, v in meta.items() if k != "notes"})
    return cache


def save(path: Path, cache: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cache, indent=1) + "\n")


def fast_forward(model, schedule, name, labels, n_skip, generator, batch_size) -> None:
    """Advance `generator` past the first n_skip samples of a row, exactly as pipeline.sample would.

    The samplers' random draws (the starting noise; the fresh noise of DDPM and of eta > 0) have shapes
    that do not depend on what the network returns, so a network that returns zeros consumes the very
    same random numbers at almost no cost. Batch k of a row can then run in a process of its own and
    still give the samples that one process running all batches in turn would give.
    """
    if n_skip == 0:
        return
    sampler, _, steps, eta = SAMPLERS[name]
    with mock.patch.object(model, "forward", lambda x_t, t, y=None: torch.zeros_like(x_t)):
        pipeline.sample(model, schedule, n_skip, sampler, steps=steps, labels=None if labels is None else labels[:n_skip],
                        generator=generator, eta=eta, batch_size=batch_size, progress=False)


def sample_part(name, labels, start, stop, seed, batch_size, threads=None):
    """Samples start..stop-1 of a row (a multiple of batch_size apart) and the CPU seconds they took."""
    if threads:
        torch.set_num_threads(threads)
    model, schedule, _ = images.load_pretrained("mnist_unet")
    sampler, _, steps, eta = SAMPLERS[name]
    g = torch.Generator().manual_seed(seed)
    fast_forward(model, schedule, name, labels, start, g, batch_size)
    c0 = time.process_time()
    x = pipeline.sample(model, schedule, stop - start, sampler, steps=steps, generator=g, eta=eta,
                        labels=None if labels is None else labels[start:stop], batch_size=batch_size,
                        progress=start == 0)
    return x, time.process_time() - c0


def run_row(name, labels, args, judge, stats_test) -> dict:
    calls = SAMPLERS[name][1]
    parts = [(name, labels, a, min(a + args.batch_size, args.n), args.seed, args.batch_size, args.threads)
             for a in range(0, args.n, args.batch_size)]
    t0 = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            done = pool.starmap(sample_part, parts)
    else:
        done = [sample_part(*part) for part in parts]
    wall, cpu = time.perf_counter() - t0, sum(c for _, c in done)
    x = torch.cat([x for x, _ in done])
    mu, cov = metrics.gaussian_stats(metrics.mnist_features(x, judge))
    row = {"fd": metrics.frechet_distance_gaussians(mu, cov, *stats_test), "calls": calls,
           "s_per_1000": wall * 1000 / args.n, "cpu_s_per_1000": cpu * 1000 / args.n,
           "threads": torch.get_num_threads(), "processes": args.jobs, "hardware": hardware(),
           "date": time.strftime("%Y-%m-%d %H:%M")}
    if labels is not None:
        row["acc"] = (classifier.predict(judge, x) == labels).float().mean().item()
    return row


def main(argv=None):
    args = parse(argv)
    if args.jobs > 1:
        args.threads = 1  # one thread per process: the processes are the parallelism
    if args.threads:
        torch.set_num_threads(args.threads)
    card = images.load_pretrained("mnist_unet")[2]
    judge = classifier.load("mnist_classifier")
    meta = {"unet_weights_sha256": card["weights_sha256"], "judge": judge.card["weights_sha256"],
            "n": args.n, "seed": args.seed, "unet_steps": card["steps"]}
    meta["key"] = f"{meta['unet_weights_sha256'][:16]}|{meta['judge'][:16]}|n={args.n}|seed={args.seed}"
    path = Path(args.json)
    cache = load_cache(path, meta)
    train_x, test_x = real_digits(args.n, args.seed)
    stats_test = metrics.gaussian_stats(metrics.mnist_features(test_x, judge))
    if "floor" not in cache["meta"] or args.force:
        cache["meta"]["floor"] = metrics.frechet_distance_gaussians(
            *metrics.gaussian_stats(metrics.mnist_features(train_x, judge)), *stats_test)
    for mode in args.modes:
        labels = torch.arange(args.n) % 10 if mode == "conditional" else None
        names = args.samplers or [s for s in SAMPLERS if mode == "conditional" or s != "ddpm1000"]
        for name in names:
            if name in cache[mode] and not args.force:
                continue
            cache[mode][name] = row = run_row(name, labels, args, judge, stats_test)
            save(path, cache)
            print(f"{mode} {name}: FD {row['fd']:.3f}, {row['s_per_1000']:.1f} s per 1000 samples", flush=True)
    save(path, cache)
    lines = table(cache, card)
    print("\n".join(lines))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def label(name: str) -> str:
    """ddim50_eta1 -> DDIM-50, eta=1; heun25 -> PF-ODE Heun-25."""
    return (name.upper().replace("DDPM", "DDPM-").replace("DDIM", "DDIM-").replace("HEUN", "PF-ODE Heun-")
            .replace("_ETA1", ", eta=1"))


def hosts(cache: dict) -> list:
    """The machines the rows were timed on, in order of first appearance (the table's last column)."""
    return list(dict.fromkeys(r["hardware"] for mode in MODES for r in cache[mode].values()))


def targets(cache: dict) -> list:
    """(name, value, bound, met) for each target that the rows allow to check."""
    floor, cond, uncond = cache["meta"]["floor"], cache["conditional"], cache["unconditional"]
    out = []
    if "ddim50" in cond:
        out.append(("conditional FD(DDIM-50) / floor", cond["ddim50"]["fd"] / floor, 1.5))
    if "ddim50" in uncond:
        out.append(("unconditional FD(DDIM-50) / floor", uncond["ddim50"]["fd"] / floor, 3.0))
    if "ddim50" in cond and "ddpm1000" in cond:
        out.append(("conditional FD(DDIM-50) / FD(DDPM-1000)", cond["ddim50"]["fd"] / cond["ddpm1000"]["fd"], 1.5))
    rows = [(n, v, b, v <= b) for n, v, b in out]
    if "acc" in cond.get("ddim50", {}):
        rows.append(("conditional referee accuracy of DDIM-50 (at least)", cond["ddim50"]["acc"], 0.97,
                     cond["ddim50"]["acc"] >= 0.97))
    return rows


def table(cache: dict, card: dict) -> list:
    """The results as Markdown lines (also written next to the --json file, as .md)."""
    meta = cache["meta"]
    n, floor = meta["n"], meta["floor"]
    out = [f"MNIST U-Net ({card['parameter_count'] / 1e6:.2f}M params, {meta['unet_steps']} training steps), "
           f"N = {n} samples per row; times on {'; '.join(f'({i + 1}) {h}' for i, h in enumerate(hosts(cache)))}\n",
           f"| mode | sampler | network calls | FD (N={n}) | FD / floor | FD / FD(DDPM-1000) | referee accuracy "
           f"| wall s per 1000 samples | CPU s per 1000 samples | machine |",
           "|---|---|---|---|---|---|---|---|---|---|",
           f"| real train vs test | (floor) | - | {floor:.3f} | 1.00 | - | - | - | - | - |"]
    for mode in MODES:
        ddpm = cache[mode].get("ddpm1000", {}).get("fd")
        for name in SAMPLERS:
            if name not in cache[mode]:
                continue
            r = cache[mode][name]
            rel = f"{r['fd'] / ddpm:.2f}" if ddpm else "-"
            acc = f"{r['acc']:.3f}" if "acc" in r else "-"
            out.append(f"| {mode} | {label(name)} | {r['calls']} | {r['fd']:.3f} | {r['fd'] / floor:.2f} | {rel} "
                       f"| {acc} | {r['s_per_1000']:.1f} ({r['threads']} thread(s) x {r.get('processes', 1)}) | {r['cpu_s_per_1000']:.1f} "
                       f"| {hosts(cache).index(r['hardware']) + 1} |")
    out.append("")
    for name, value, bound, met in targets(cache):
        op = ">=" if "at least" in name else "<="
        out.append(f"target {name.replace(' (at least)', '')} {op} {bound}: {value:.3f} -> {'met' if met else 'NOT met'}")
    return out


if __name__ == "__main__":
    main()
