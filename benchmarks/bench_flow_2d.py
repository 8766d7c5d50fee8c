"""Flow matching against diffusion samplers at equal network evaluations, on the exact 2D mixture.

    python benchmarks/bench_flow_2d.py                  # N = 5000, NFE 1..32, MLP trained 3000 steps
    python benchmarks/bench_flow_2d.py --quick          # N = 1000, 300 training steps: proves it runs

The data, metrics and schedule are lesson 04's (benchmarks/bench_2d_samplers.py): the
three-component mixture diffedu.toy.lesson_mixture, the linear schedule T = 1000, and its three
numbers (mode-weight error, MMD^2 with an RBF kernel of width 0.5, sliced Wasserstein-2) against N
exact samples. Every row starts from the same noise x ~ N(0, I) (one seed), at NFE = 1, 2, 4, ... 32:

* flow, exact: dx/dt = u_t(x), the exact marginal velocity of the mixture (diffedu.flow eqs. 7-8),
  on the "ot" path (rectified flow) and the "vp" path (the same marginals as the diffusion),
  Euler (NFE = steps) and Heun (NFE = 2 steps);
* flow, learned: an MLP velocity (flow.VelocityMLP) trained here by conditional flow matching
  (flow eq. 3, "ot" path), Euler and Heun;
* diffusion, exact eps*: DDIM (eta = 0, NFE = steps; grid T, ..., 0 rounded from linspace, which
  is samplers.ddim_timesteps when steps divides T) and the probability-flow ODE of diffedu.sde
  (Euler: NFE = steps + 1; Heun: NFE = 2 steps).

A blank cell: that sampler cannot spend exactly that many evaluations. The floor rows are N exact
samples (mean and max over a few draws): no sampler can be judged below them. With --quick the
results go to benchmarks/results/flow_2d_quick.{json,md}, else to flow_2d.{json,md}.
"""
import argparse
import json
import time
from pathlib import Path

import torch

import diffedu as dd
from diffedu import flow, samplers, sde, toy
from bench_2d_samplers import quality  # lesson 04's three numbers, unchanged

RESULTS = Path(__file__).resolve().parent / "results"
NFES = (1, 2, 4, 8, 16, 32)


def ddim(eps_model, sched, x, steps):
    """DDIM, eta = 0, from x at t = T to t = 0 in `steps` jumps on a rounded even grid (steps calls)."""
    ts = torch.linspace(sched.T, 0, steps + 1, dtype=torch.float64).round().long().tolist()
    for t, t_prev in zip(ts[:-1], ts[1:]):
        eps = eps_model(x, samplers.timestep_batch(t, x))
        x, _ = samplers.ddim_step(x, t, eps, sched, t_prev=t_prev)
    return x


def runs_at(nfe, mix, sched, net, exact_eps):
    """{(sampler, model): run(x_start) -> samples} for the samplers that spend exactly `nfe` calls."""
    exact = {p: (lambda x, t, p=p: flow.exact_velocity(mix, x, t, p)) for p in ("ot", "vp")}
    runs = {}
    for method, steps in (("Euler", nfe), ("Heun", nfe // 2 if nfe % 2 == 0 else None)):
        if steps:
            m = method.lower()
            runs[f"flow OT {method}", "exact u_t"] = lambda x, s=steps, m=m: flow.sample(exact["ot"], x, s, m)
            runs[f"flow OT {method}", "CFM MLP"] = lambda x, s=steps, m=m: flow.sample(net, x, s, m)
            runs[f"flow VP {method}", "exact u_t"] = lambda x, s=steps, m=m: flow.sample(exact["vp"], x, s, m)
    runs["DDIM eta=0", "exact eps*"] = lambda x: ddim(exact_eps, sched, x, nfe)
    for method, steps in (("euler", nfe - 1), ("heun", nfe // 2 if nfe % 2 == 0 else 0)):
        if steps >= 1:
            runs[f"PF-ODE {method.capitalize()}", "exact eps*"] = lambda x, s=steps, m=method: sde.probability_flow_sample(
                exact_eps, sched, x.shape, steps=s, method=m, x_T=x, progress=False)
    return runs


def pivot(rows, key, fmt):
    names = list(dict.fromkeys((r["sampler"], r["model"]) for r in rows))
    cell = {(r["sampler"], r["model"], r["nfe"]): r[key] for r in rows}
    lines = ["| sampler | model | " + " | ".join(f"NFE {n}" for n in NFES) + " |",
             "|---|---|" + "---:|" * len(NFES)]
    for s, m in names:
        vals = [fmt.format(cell[s, m, n]) if (s, m, n) in cell else "" for n in NFES]
        lines.append(f"| {s} | {m} | " + " | ".join(vals) + " |")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="samples per row (and exact reference samples)")
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="N = 1000, 300 training steps, 3 floor draws")
    args = ap.parse_args()
    if args.quick:
        args.n, args.train_steps = 1000, 300
    floor_draws = 3 if args.quick else 5
    torch.set_num_threads(1)  # tiny 2D tensors: threads only add overhead
    g = dd.seed_everything(args.seed)
    mix, sched = toy.lesson_mixture(), dd.NoiseSchedule.linear(1000)

    def exact_eps(x_t, t):
        return mix.eps_star(x_t, sched.alpha_bar[t[0]].item()).to(x_t.dtype)

    net = flow.VelocityMLP(hidden=64, depth=3)
    t0 = time.time()
    losses = flow.train_cfm(net, mix.sample, "ot", steps=args.train_steps, batch_size=512, lr=3e-3, generator=g)
    train_s = time.time() - t0
    net.requires_grad_(False)
    final_loss = sum(losses[-100:]) / len(losses[-100:])
    print(f"CFM: {dd.parameter_count(net)} parameters, {args.train_steps} steps in {train_s:.1f} s "
          f"(final loss {final_loss:.4f})")

    ref = mix.sample(args.n, generator=torch.Generator().manual_seed(10_000 + args.seed))
    x_start = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(args.seed + 1))  # = samplers.start_noise
    rows = []
    for nfe in NFES:
        for (name, model), run in runs_at(nfe, mix, sched, net, exact_eps).items():
            t0 = time.time()
            with torch.no_grad():
                x = run(x_start.clone())
            rows.append({"sampler": name, "model": model, "nfe": nfe, "time_s": time.time() - t0,
                         **quality(x, mix, ref)})
            r = rows[-1]
            print(f"NFE {nfe:3d}  {name:16s} {model:10s} mode err {r['mode_err']:.3f}  MMD^2 {r['mmd2']:9.5f}"
                  f"  SW2 {r['sw2']:.3f}  {r['time_s']:6.2f} s", flush=True)
    floor = [quality(mix.sample(args.n, generator=torch.Generator().manual_seed(20_000 + i)), mix, ref)
             for i in range(floor_draws)]
    floor_mean = {k: sum(f[k] for f in floor) / len(floor) for k in floor[0]}
    floor_max = {k: max(f[k] for f in floor) for k in floor[0]}

    head = (f"Flow matching vs diffusion samplers at equal NFE: lesson_mixture, N = {args.n}, seed {args.seed}; "
            f"CFM MLP ({dd.parameter_count(net)} parameters) trained {args.train_steps} steps in {train_s:.0f} s"
            + (" (QUICK run: proves the script runs, not a table to quote)" if args.quick else ""))
    floor_line = (f"Floor (N exact samples, mean / max of {floor_draws}): mode-weight error "
                  f"{floor_mean['mode_err']:.3f} / {floor_max['mode_err']:.3f}, MMD^2 {floor_mean['mmd2']:.5f} / "
                  f"{floor_max['mmd2']:.5f}, SW2 {floor_mean['sw2']:.3f} / {floor_max['sw2']:.3f}")
    lines = [head, "", "Mode-weight error (total variation of mode weights):", ""]
    lines += pivot(rows, "mode_err", "{:.3f}") + ["", "MMD^2 (RBF width 0.5, unbiased):", ""]
    lines += pivot(rows, "mmd2", "{:.5f}") + ["", "Sliced Wasserstein-2:", ""]
    lines += pivot(rows, "sw2", "{:.3f}") + ["", floor_line]
    print("\n".join(lines))

    stem = "flow_2d_quick" if args.quick else "flow_2d"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"quick": args.quick, "n": args.n, "seed": args.seed, "nfe": list(NFES),
         "net": {"class": "flow.VelocityMLP", "config": net.config, "parameters": dd.parameter_count(net),
                 "trained_here": True, "train_steps": args.train_steps, "batch_size": 512, "lr": 3e-3,
                 "path": "ot", "train_s": train_s, "final_loss": final_loss},
         "rows": rows, "floor_mean": floor_mean, "floor_max": floor_max}, indent=1))


if __name__ == "__main__":
    main()
