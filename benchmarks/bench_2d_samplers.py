"""2D samplers against the exact answer: DDPM, DDIM, reverse SDE and probability-flow ODE.

    python benchmarks/bench_2d_samplers.py                     # N = 5000, all samplers
    python benchmarks/bench_2d_samplers.py --n 2000 --train-steps 1500 --samplers ddim ode

The data is the course's three-component Gaussian mixture (diffedu.toy.lesson_mixture) with the
linear schedule, T = 1000. Every sampler runs twice from the same seed:

* with the EXACT optimal noise prediction eps*(x_t, t) = -sqrt(1 - alpha_bar_t) grad log p_t(x_t),
  so whatever error remains is the sampler's own (discretization, too few steps);
* with a small MLP trained here by L_simple (nets.ScoreMLP, predict="eps"; about 20 s on a CPU).

Columns: NFE (network calls), mode-weight error (total variation between estimated and true
mode weights, diffedu.metrics eq. 2), MMD^2 (RBF kernel of width 0.5, unbiased, eq. 3) and
sliced Wasserstein-2 (eq. 4) to N exact samples, and wall time. The floor rows give the same
numbers for N *exact* samples (mean and max over 5 draws): a sampler cannot be judged below it.

Targets: with eps*, DDPM-1000, DDIM-50 (eta = 0), reverse SDE-200 and PF-ODE Heun-25 are within
5e-4 of the MMD^2 floor; DDIM eta = 0 beats eta = 1 at 10 steps. Results go to
benchmarks/results/samplers_2d.{json,md}.
"""
import argparse
import json
import time
from pathlib import Path

import torch

import diffedu as dd
from diffedu import metrics, nets, samplers, sde, toy

RESULTS = Path(__file__).resolve().parent / "results"


def sampler_table(sched, n, which):
    """{name: (nfe, run(eps_model, generator) -> samples)} for the requested sampler families."""
    runs = {}
    if "ddpm" in which:
        runs["DDPM"] = (sched.T, lambda m, g: samplers.ddpm_sample(m, sched, (n, 2), generator=g, progress=False))
    for eta in (0.0, 1.0):
        if "ddim" in which:
            for s in (10, 20, 50, 100):
                runs[f"DDIM eta={eta:g}, {s}"] = (s, lambda m, g, s=s, e=eta: samplers.ddim_sample(
                    m, sched, (n, 2), steps=s, eta=e, generator=g, progress=False))
    if "sde" in which:
        for s in (50, 100, 200, 500):
            runs[f"reverse SDE (EM), {s}"] = (s, lambda m, g, s=s: sde.reverse_sde_sample(
                m, sched, (n, 2), steps=s, generator=g, progress=False))
    if "ode" in which:
        for s in (5, 10, 25, 50):
            runs[f"PF-ODE Heun, {s}"] = (2 * s, lambda m, g, s=s: sde.probability_flow_sample(
                m, sched, (n, 2), steps=s, generator=g, progress=False))
        for s in (20, 50, 100):
            runs[f"PF-ODE Euler, {s}"] = (s + 1, lambda m, g, s=s: sde.probability_flow_sample(
                m, sched, (n, 2), steps=s, method="euler", generator=g, progress=False))
    return runs


def quality(x, mix, ref):
    return {"mode_err": metrics.mode_weight_error(x, mix), "mmd2": metrics.mmd(x, ref, bandwidth=0.5),
            "sw2": metrics.sliced_wasserstein(x, ref, generator=torch.Generator().manual_seed(0))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="samples per row (and exact reference samples)")
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samplers", nargs="+", default=["ddpm", "ddim", "sde", "ode"],
                    choices=["ddpm", "ddim", "sde", "ode"])
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny 2D tensors: threads only add overhead
    g = dd.seed_everything(args.seed)
    mix, sched = toy.lesson_mixture(), dd.NoiseSchedule.linear(1000)

    def exact_eps(x_t, t):
        return mix.eps_star(x_t, sched.alpha_bar[t[0]].item()).to(x_t.dtype)

    net = nets.ScoreMLP(hidden=64, depth=3, cond="t", predict="eps")
    t0 = time.time()
    losses = nets.train_ddpm_2d(net, mix.sample, sched, steps=args.train_steps, batch_size=512, lr=3e-3, generator=g)
    train_s = time.time() - t0
    net.requires_grad_(False)
    print(f"trained {dd.parameter_count(net)} parameters for {args.train_steps} steps in {train_s:.1f} s "
          f"(final loss {sum(losses[-100:]) / 100:.4f})")

    ref = mix.sample(args.n, generator=torch.Generator().manual_seed(10_000 + args.seed))
    rows = []
    for name, (nfe, run) in sampler_table(sched, args.n, args.samplers).items():
        for model_name, model in (("exact eps*", exact_eps), ("learned", net)):
            t0 = time.time()
            with torch.no_grad():
                x = run(model, torch.Generator().manual_seed(args.seed + 1))
            rows.append({"sampler": name, "model": model_name, "nfe": nfe, "time_s": time.time() - t0,
                         **quality(x, mix, ref)})
            r = rows[-1]
            print(f"{name:22s} {model_name:10s} NFE {nfe:5d}  mode err {r['mode_err']:.3f}  MMD^2 {r['mmd2']:9.5f}"
                  f"  SW2 {r['sw2']:.3f}  {r['time_s']:6.2f} s", flush=True)
    floor = [quality(mix.sample(args.n, generator=torch.Generator().manual_seed(20_000 + i)), mix, ref)
             for i in range(5)]
    floor_mean = {k: sum(f[k] for f in floor) / len(floor) for k in floor[0]}
    floor_max = {k: max(f[k] for f in floor) for k in floor[0]}

    lines = [f"2D samplers, lesson_mixture, linear schedule T = 1000, N = {args.n}, seed {args.seed}; "
             f"MLP trained {args.train_steps} steps in {train_s:.0f} s", "",
             "| sampler | model | NFE | mode-weight error | MMD^2 | SW2 | time (s) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['sampler']} | {r['model']} | {r['nfe']} | {r['mode_err']:.3f} | {r['mmd2']:.5f} | {r['sw2']:.3f} "
              f"| {r['time_s']:.2f} |" for r in rows]
    for label, f in (("mean", floor_mean), ("max", floor_max)):
        lines.append(f"| exact samples (floor, {label} of 5) | - | - | {f['mode_err']:.3f} | {f['mmd2']:.5f} "
                     f"| {f['sw2']:.3f} | - |")
    print("\n".join(lines))

    by = {(r["sampler"], r["model"]): r for r in rows}
    checks = []
    for name in ("DDPM", "DDIM eta=0, 50", "reverse SDE (EM), 200", "PF-ODE Heun, 25"):
        if (name, "exact eps*") in by:
            checks.append((f"{name} with eps* within 5e-4 of the MMD^2 floor",
                           by[name, "exact eps*"]["mmd2"] - floor_max["mmd2"] <= 5e-4))
    if ("DDIM eta=0, 10", "exact eps*") in by:
        checks.append(("DDIM eta=0 beats eta=1 at 10 steps (MMD^2, eps*)",
                       by["DDIM eta=0, 10", "exact eps*"]["mmd2"] < by["DDIM eta=1, 10", "exact eps*"]["mmd2"]))
    for text, ok in checks:
        print(f"target: {text}: {'met' if ok else 'NOT met'}")

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "samplers_2d.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "samplers_2d.json").write_text(json.dumps(
        {"n": args.n, "seed": args.seed, "train_steps": args.train_steps, "train_s": train_s, "rows": rows,
         "floor_mean": floor_mean, "floor_max": floor_max, "targets": dict(checks)}, indent=1))


if __name__ == "__main__":
    main()
