"""Part 4 on MNIST: flow matching against DDPM, progressive distillation, latent diffusion (lesson 17).

    python benchmarks/bench_mnist_part4.py flow --jobs 2       # mnist_h2h_ddpm vs mnist_h2h_flow
    python benchmarks/bench_mnist_part4.py distill --jobs 2    # the students 32 -> 4 vs DDIM at their steps
    python benchmarks/bench_mnist_part4.py latent --jobs 2     # mnist_latent vs the pixel U-Net

Every row draws N class-conditional samples (labels 0, 1, ..., 9 in turn, w = 1 unless the row says
otherwise) from its own seed, and reports, as benchmarks/bench_mnist_sampling.py does and against the
same N real test digits:

* FD: the Fréchet distance in the referee's features (diffedu.metrics) and FD / floor, where the
  floor is N real train digits against the same test digits;
* the referee's accuracy (the fraction of samples it labels as the digit asked for);
* CPU seconds per 1,000 samples (one thread, fp32; a busy machine barely changes CPU time).

flow: the two U-Nets of configs/mnist_h2h_{ddpm,flow}.json (the same network, data order and
steps, trained once with the DDPM loss and once by flow matching) at 4, 10, 20, 50 and 100 network
evaluations: DDIM and Heun on the probability-flow ODE for the first, Euler and Heun for the second
(Heun: two evaluations a step, up to 50); the two 10-call rows twice more with other seeds, to show how
far the FD of one row moves with the seed alone.
distill: each student mnist_distill_K with its K steps, and from the same noise plain DDIM with the
shipped mnist_unet on the same grid (diffedu.distill.time_grid), plus the 64-step first teacher.
latent: mnist_latent (DDIM-50 in the autoencoder's latent space, then the decoder; w = 1 and w = 2),
the autoencoder's reconstructions of the floor's N training digits (the floor of any latent model:
the floor plus what the autoencoder loses), and the
pixel U-Net trained for the same CPU time (mnist_h2h_ddpm, DDIM-50), with the training CPU hours
from the model cards.

Writes benchmarks/results/mnist_PART.{json,md}, with the sha256 of every checkpoint it measured
(lesson 17 loads them with diffedu.checkpoints.load_results). Rows run in separate one-thread
processes (--jobs); each row's samples depend on its seed alone, not on the number of processes.
"""
import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NFE = (4, 10, 20, 50, 100)
HEUN_NFE = (4, 10, 20, 50)
STUDENTS = (32, 16, 8, 4)


def rows_for(part: str) -> list:
    """(row name, model, method, steps, w): what each part measures."""
    if part == "flow":
        return ([(f"ddpm_ddim{k}", "mnist_h2h_ddpm", "ddim", k, 1.0) for k in NFE]
                + [(f"ddpm_heun{k // 2}", "mnist_h2h_ddpm", "heun", k // 2, 1.0) for k in HEUN_NFE]
                + [(f"flow_euler{k}", "mnist_h2h_flow", "euler", k, 1.0) for k in NFE]
                + [(f"flow_heun{k // 2}", "mnist_h2h_flow", "flow_heun", k // 2, 1.0) for k in HEUN_NFE]
                + [(f"{name}_rep{r}", model, method, 10, 1.0) for r in (2, 3)          # the same rows, other seeds:
                   for name, model, method in (("ddpm_ddim10", "mnist_h2h_ddpm", "ddim"),   # how far FD moves
                                               ("flow_euler10", "mnist_h2h_flow", "euler"))])
    if part == "distill":
        return ([("teacher_ddim64", "mnist_unet", "grid_eps", 64, 1.0)]
                + [(f"ddim{k}", "mnist_unet", "grid_eps", k, 1.0) for k in STUDENTS]
                + [(f"student{k}", f"mnist_distill_{k}", "grid_v", k, 1.0) for k in STUDENTS])
    if part == "latent":
        return [("latent_ddim50", "mnist_latent", "latent", 50, 1.0), ("latent_ddim50_w2", "mnist_latent", "latent", 50, 2.0),
                ("pixel_ddim50", "mnist_h2h_ddpm", "ddim", 50, 1.0), ("pixel_ddim50_w2", "mnist_h2h_ddpm", "ddim", 50, 2.0),
                ("reconstructions", "mnist_autoencoder", "reconstruct", 0, 1.0)]
    raise ValueError(f"unknown part {part!r}: flow, distill or latent")


def calls(method: str, steps: int) -> int:
    """Network evaluations per sample."""
    return 2 * steps if method in ("heun", "flow_heun") else steps


def draw(model: str, method: str, steps: int, w: float, n: int, seed: int, bench_seed: int = 0) -> torch.Tensor:
    """n conditional samples (labels 0..9 in turn) of one row, in [-1, 1]."""
    from diffedu.images import distill, latent, pipeline
    g, labels = torch.Generator().manual_seed(seed), torch.arange(n) % 10
    if method == "reconstruct":     # the floor's N training digits, encoded and decoded: floor + the autoencoder's cost
        from bench_mnist_sampling import real_digits
        ae, train_x = latent.load_autoencoder(model), real_digits(n, bench_seed)[0]
        return torch.cat([ae.decode(ae.encode(train_x[i:i + 500])[0]) for i in range(0, n, 500)]).clamp(-1, 1)
    if method == "latent":
        return latent.sample(*latent.load_latent(model), n, labels, steps, g, w)
    net, schedule, _ = pipeline.load_unet(model)
    if method in ("ddim", "heun"):
        return pipeline.sample(net, schedule, n, method, steps, labels, w, g, progress=False)
    if method in ("euler", "flow_heun"):
        return pipeline.flow_sample(net, n, steps, method.replace("flow_", ""), labels, w, g, progress=False)
    return distill.student_sample(net, schedule, n, steps, labels, method.split("_")[1], g)   # grid_eps, grid_v


def run_row(row, n: int, seed: int, bench_seed: int) -> dict:
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from diffedu import metrics
    from diffedu.images import classifier
    from diffedu.runtime import hardware
    name, model, method, steps, w = row
    c0 = time.process_time()
    x = draw(model, method, steps, w, n, seed, bench_seed)
    cpu = time.process_time() - c0
    judge = classifier.load("mnist_classifier")
    stats = metrics.gaussian_stats(metrics.mnist_features(x, judge))
    acc = (classifier.predict(judge, x) == torch.arange(n) % 10).float().mean().item() if method != "reconstruct" else None
    return {"name": name, "model": model, "method": method, "steps": steps, "calls": calls(method, steps), "w": w,
            "stats": stats, "acc": acc,
            "cpu_s_per_1000": round(cpu * 1000 / n, 1), "hardware": hardware()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("flow", "distill", "latent"))
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--rows", nargs="+", default=None, help="recompute only these rows and keep the others of the "
                                                           "results file (same part, N, seed and weights)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from bench_mnist_sampling import real_digits
    from diffedu import metrics
    from diffedu.checkpoints import assets_dir, read_card
    from diffedu.images import classifier
    judge = classifier.load("mnist_classifier")
    train_x, test_x = real_digits(args.n, args.seed)             # the real digits of the sampler table
    test_stats = metrics.gaussian_stats(metrics.mnist_features(test_x, judge))
    floor = metrics.frechet_distance_gaussians(*metrics.gaussian_stats(metrics.mnist_features(train_x, judge)), *test_stats)
    rows = rows_for(args.part)
    out = ROOT / "benchmarks" / "results" / f"mnist_{args.part}"
    cards = {m: read_card(assets_dir() / "checkpoints" / f"{m}.json") for m in dict.fromkeys(r[1] for r in rows)}
    sha = {m: c["weights_sha256"] for m, c in cards.items()}
    kept = {}
    if args.rows:
        unknown = sorted(set(args.rows) - {r[0] for r in rows})
        if unknown:
            raise SystemExit(f"unknown rows {unknown} for part {args.part}")
        old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
        if (old.get("n"), old.get("seed"), old.get("weights_sha256")) != (args.n, args.seed, sha):
            raise SystemExit(f"{out.name}.json is for another N, seed or weights: run the whole part")
        kept = {k: v for k, v in old["rows"].items() if k not in args.rows}
    todo = [(r, args.n, args.seed + 1 + i, args.seed) for i, r in enumerate(rows) if r[0] not in kept]   # seed: the row's index
    t0 = time.time()
    with mp.get_context("spawn").Pool(max(1, args.jobs)) as pool:
        done = pool.starmap(run_row, todo)
    for r in done:
        r["fd"] = round(metrics.frechet_distance_gaussians(*r.pop("stats"), *test_stats), 3)
        r["fd_over_floor"] = round(r["fd"] / floor, 3)
    new = {r["name"]: r for r in done}
    done = [kept[name] if name in kept else new[name] for name, *_ in rows]
    results = {"part": args.part, "n": args.n, "seed": args.seed, "floor": round(floor, 3),
               "weights_sha256": sha,
               "judge": judge.card["weights_sha256"],
               "training": {m: {**{k: c["totals"][k] for k in ("steps", "hours", "wall_time_s")},   # the whole lineage
                                "hardware": c["hardware"], "precision": c.get("precision")} for m, c in cards.items()},
               "rows": {r.pop("name", name): r for (name, *_), r in zip(rows, done)}, "wall_s": round(time.time() - t0, 1),
               "date": time.strftime("%Y-%m-%d %H:%M")}
    lines = table(results)
    print("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def table(results: dict) -> list:
    """The rows as Markdown."""
    n = results["n"]
    lines = [f"# MNIST, Part 4: {results['part']} (N = {n} conditional samples per row, labels 0-9 in turn)", "",
             f"Floor (N real train digits vs the same N test digits): FD {results['floor']:.3f}.", "",
             "| row | model | method | steps | network calls | w | FD | FD / floor | referee accuracy | CPU s / 1000 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["rows"].items():
        acc = "-" if r["acc"] is None else f"{r['acc']:.3f}"
        lines.append(f"| {name} | {r['model']} | {r['method']} | {r['steps']} | {r['calls']} | {r['w']:g} | {r['fd']:.2f} "
                     f"| {r['fd_over_floor']:.2f} | {acc} | {r['cpu_s_per_1000']:.1f} |")
    lines += ["", "| model | training steps | training hours | hardware | precision |", "|---|---|---|---|---|"]
    for m, t in results["training"].items():
        lines.append(f"| {m} | {t['steps']} | {t['hours']} | {t['hardware']} | {t['precision']} |")
    lines.append(f"\n{results['wall_s']:.0f} s of wall time.")
    return lines


if __name__ == "__main__":
    main()
