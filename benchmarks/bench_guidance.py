"""Guidance on MNIST: what each scale buys (class accuracy) and costs (FD, diversity).

    python benchmarks/bench_guidance.py                      # both sweeps, defaults below
    python benchmarks/bench_guidance.py --n-per-class 100 --steps 20 --cg 0,1,2,4,8 --cfg 0,1,2,3,5

Two sweeps with the shipped U-Net (one network: null class = unconditional, digit = conditional):

* classifier guidance (DDIM, eps form):  eps(x_t, t, null) - s sqrt(1 - alpha_bar_t) grad log p(y | x_t, t),
  gradient of the noise-aware classifier ``mnist_noisy_classifier``;
* classifier-free guidance:  eps(null) + w (eps(y) - eps(null))  (w = 1: plain conditional model;
  the course's one convention, diffedu.guidance eq. 4).

Every row is judged by the *clean* classifier ``mnist_classifier`` (a different network from the
guide): accuracy = fraction of samples it labels as the requested digit; FD = Fréchet distance
in its 64-d features to real test digits of the same class, averaged over the 10 classes;
diversity = mean pairwise feature distance within a class. A "real digits" row (train digits,
same n per class) gives the FD floor and the diversity of real data at this n.

Target: classifier-free guidance reaches >= 99% accuracy at some w while its FD stays <= 2x the FD
of the unguided conditional model (w = 1). Results go to benchmarks/results/guidance.{json,md,png}.
"""
import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import diffedu as dd  # noqa: E402
from diffedu import data, guidance, images, metrics  # noqa: E402
from diffedu.images import classifier  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def real_rows(judge, real_f, real_y, n_per_class, seed):
    """The reference: n real *train* digits per class against the real test digits."""
    x, y = data.mnist("train").tensors
    g = torch.Generator().manual_seed(seed)
    idx = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:n_per_class]]
                     for c in range(10)])
    return {"scale": None, **guidance.tradeoff_metrics(judge, x[idx], y[idx], real_f, real_y)}


def table(rows, name, key):
    lines = [f"| {name} | {key} | accuracy | FD (per class, mean) | diversity | time (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        scale = "real digits" if r["scale"] is None else f"{r['scale']:g}"
        lines.append(f"| {name if r['scale'] is not None else 'reference'} | {scale} | {r['accuracy']:.4f} | "
                     f"{r['fd']:.2f} | {r['diversity']:.2f} | {r.get('time_s', 0):.0f} |")
    return "\n".join(lines)


def plot(cg, cfg, real, path):
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for rows, label, marker in [(cg, "classifier guidance (s)", "o"), (cfg, "classifier-free (w)", "s")]:
        sc = [r["scale"] for r in rows]
        axes[0].plot(sc, [r["accuracy"] for r in rows], marker=marker, label=label)
        axes[1].plot(sc, [r["fd"] for r in rows], marker=marker, label=label)
        axes[2].plot(sc, [r["diversity"] for r in rows], marker=marker, label=label)
        axes[3].plot([r["fd"] for r in rows], [r["accuracy"] for r in rows], marker=marker, label=label)
        for r in rows:
            axes[3].annotate(f"{r['scale']:g}", (r["fd"], r["accuracy"]), fontsize=7, xytext=(3, 3),
                             textcoords="offset points")
    axes[1].axhline(real["fd"], color="k", ls=":", label="real digits (floor)")
    axes[2].axhline(real["diversity"], color="k", ls=":", label="real digits")
    axes[1].set_yscale("log")
    axes[3].set_xscale("log")
    axes[0].axhline(0.99, color="gray", ls="--", lw=0.8)
    for ax, t in zip(axes, ["class accuracy (clean judge)", "FD to real digits of the class",
                            "diversity (mean pairwise distance)", "trade-off: accuracy vs FD"]):
        ax.set_title(t)
        ax.set_xlabel("guidance scale" if t != "trade-off: accuracy vs FD" else "FD")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-per-class", type=int, default=100)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (a divisor of T)")
    p.add_argument("--cg", default="0,1,2,4,8", help="classifier-guidance scales s")
    p.add_argument("--cfg", default="0,1,2,3,5", help="classifier-free guidance scales w")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    cg_scales = [float(s) for s in args.cg.split(",")]
    cfg_scales = [float(s) for s in args.cfg.split(",")]
    for s in cg_scales + cfg_scales:
        guidance.check_scale(s)

    dd.seed_everything(args.seed)
    device = dd.get_device(args.device)
    print(dd.banner(device))
    net, schedule, card = images.load_pretrained(device=device)
    guide = classifier.load("mnist_noisy_classifier", device)
    judge = classifier.load("mnist_classifier", device)
    x_test, y_test = data.mnist("test").tensors
    real_f = metrics.mnist_features(x_test, judge).double()
    real = real_rows(judge, real_f, y_test, args.n_per_class, args.seed)

    uncond = lambda x_t, t: net(x_t, t, None)  # noqa: E731  (null class = unconditional)
    makers = {
        "classifier guidance": lambda s: (lambda y: guidance.classifier_guided_eps(uncond, guide, y, s, schedule)),
        "classifier-free guidance": lambda w: (lambda y: guidance.cfg_model(net, y, w)),
    }
    results = {}
    for (name, maker), scales in zip(makers.items(), [cg_scales, cfg_scales]):
        rows = []
        for s in scales:
            t0 = time.time()
            (row,) = guidance.sweep(maker, [s], judge, real_f, y_test, schedule, args.n_per_class,
                                    steps=args.steps, seed=args.seed, device=device, progress=False)
            row["time_s"] = time.time() - t0
            rows.append(row)
            print(f"{name:25s} scale {s:5g}: accuracy {row['accuracy']:.4f}  FD {row['fd']:7.2f}  "
                  f"diversity {row['diversity']:.2f}  ({row['time_s']:.0f} s)", flush=True)
        results[name] = rows

    cg, cfg = results["classifier guidance"], results["classifier-free guidance"]
    md = "\n\n".join([table(cg + [real], "classifier guidance", "s"), table(cfg + [real], "classifier-free", "w")])
    print("\n" + md + "\n")
    fd_cond = next((r["fd"] for r in cfg if r["scale"] == 1.0), None)
    hits = [r for r in cfg if r["accuracy"] >= 0.99 and fd_cond is not None and r["fd"] <= 2 * fd_cond]
    verdict = (f"TARGET MET: w = {hits[0]['scale']:g} gives accuracy {hits[0]['accuracy']:.4f} with FD "
               f"{hits[0]['fd']:.2f} <= 2 x {fd_cond:.2f} (the conditional model, w = 1)" if hits else
               "TARGET NOT MET: no w reaches accuracy >= 0.99 with FD <= 2x that of w = 1")
    print(verdict)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(n_per_class=args.n_per_class, ddim_steps=args.steps, seed=args.seed, device=str(device),
                torch_threads=torch.get_num_threads(), unet_weights_sha256=card.get("weights_sha256"),
                guide=guide.card.get("weights_sha256"), judge=judge.card.get("weights_sha256"))
    (out / "guidance.json").write_text(json.dumps(dict(meta=meta, classifier_guidance=cg,
                                                       classifier_free_guidance=cfg, real_digits=real,
                                                       verdict=verdict), indent=1) + "\n")
    (out / "guidance.md").write_text(f"# Guidance sweeps on MNIST\n\nSettings: {json.dumps(meta)}\n\n{md}\n\n"
                                     f"{verdict}\n")
    plot(cg, cfg, real, out / "guidance.png")
    print(f"wrote {out / 'guidance.json'}, guidance.md, guidance.png")


if __name__ == "__main__":
    main()
