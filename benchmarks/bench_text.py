"""Part 3 benchmark: the masked diffusion LM against its autoregressive twin.

    python benchmarks/bench_text.py            # full validation split, writes benchmarks/results/text.md
    python benchmarks/bench_text.py --quick    # a subset, for a smoke test

Writes benchmarks/results/text.md (tables) and text.json (the numbers, with the sha256 of both
checkpoints, which lessons 10 and 11 load and check against the shipped weights).

1. Validation bits per character of both shipped models on the held-out plays:
   the diffusion model's ELBO (an upper bound; Monte Carlo standard error from independent
   repeats) and the twin's exact chain-rule likelihood, and their ratio.
2. Infilling: bits/char of a masked span in the middle of each window, the diffusion model
   seeing both sides (a bound) vs the twin seeing only the left side (exact).
3. Sampler table: steps / quality / speed. Quality = the AR twin's bits/char on the samples
   (lower = more likely under an independent model; too low means repetitive) and the unigram
   entropy of the samples' characters (compare with real text; a collapse reveals repetition).
   Speed = characters per second on this CPU, batch of n samples, including every network call.
4. Adaptation vs from scratch: the diffusion model adapted from the twin against one of the same
   size trained from random weights for the same extra characters (configs/text_mdlm_scratch.json):
   both cards' learning curves at equal extra characters, and the scratch model's full-validation ELBO.
5. Learning curves of both shipped models over their whole lineage (validation bits/char against
   characters seen, from the cards), in text.json and the figure text_learning_curves.png.
6. The targets: the twin at most 2.10 bits/char; the diffusion bound at most 1.20x the twin (1.15x
   stretch); 64-step ancestral samples scored by the twin at most 1.30x real text's bits/char, with
   a unigram entropy of at least 4.5 bits. Each printed as met or missed.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffedu.runs import learning_curve  # noqa: E402
from diffedu.runtime import hardware, seed_everything  # noqa: E402
from diffedu.text import autoregressive, load_pretrained, masked, samplers  # noqa: E402
from diffedu.text.guidance import unigram_entropy  # noqa: E402
from diffedu.text.tokenizer import eval_windows  # noqa: E402


def count_calls(model):
    calls = {"n": 0}
    model.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    return calls


def score_with_twin(ar, tok, texts) -> float:
    ids = torch.stack([tok.encode(t) for t in texts])
    return autoregressive.ar_bits_per_char(ar, ids, tok.mask_id, progress=False)["bpc"]


def sampler_rows(mdlm, ar, tok, n, length, configs, seed):
    rows, mdlm_calls = [], count_calls(mdlm)
    for method, steps, kw in configs:
        g = torch.Generator().manual_seed(seed)
        mdlm_calls["n"] = 0
        t0 = time.perf_counter()
        texts = samplers.generate(mdlm, tok, length=length, steps=steps, method=method, n_samples=n,
                                  generator=g, **kw)
        dt = time.perf_counter() - t0
        name = method + (f" (block {kw['block_length']})" if kw else "")
        rows.append(dict(sampler=name, steps=steps, nfe=mdlm_calls["n"], twin_bpc=score_with_twin(ar, tok, texts),
                         entropy=unigram_entropy(texts), chars_per_s=n * length / dt, example=texts[0][:80]))
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    texts = autoregressive.ar_generate(ar, tok, length=length, n_samples=n, generator=g)
    dt = time.perf_counter() - t0
    rows.append(dict(sampler="AR twin (KV cache)", steps=length, nfe=length, twin_bpc=score_with_twin(ar, tok, texts),
                     entropy=unigram_entropy(texts), chars_per_s=n * length / dt, example=texts[0][:80]))
    return rows


def adaptation_rows(card_d, card_s) -> list:
    """Validation bits/char (64 windows, from the cards) of the adaptation run and the from-scratch run
    at the same number of extra characters."""
    adapt = next(r for r in card_d["runs"] if r.get("init") == "shakespeare_ar")
    scratch = {p["step"]: p for p in card_s["runs"][0]["curve"]}
    return [{"step": p["step"], "characters": p["characters"], "adapted": p["val_bpc_64"],
             "scratch": scratch[p["step"]]["val_bpc_64"]} for p in adapt["curve"] if p["step"] in scratch]


def plot_curves(curves: dict, path: Path) -> None:
    """Validation bits/char against characters seen, both models' whole lineage (runs marked). The diffusion
    model's first run is the twin's first run (it was adapted from it), drawn once, in black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = {"shakespeare_ar": "AR twin (exact)", "shakespeare_mdlm": "diffusion LM (bound), adapted from the twin"}
    for (name, points), color in zip(curves.items(), ("k", "C0")):
        points = [p for p in points if name == "shakespeare_ar" or p["run"] > 0]
        ax.plot([p["characters"] / 1e6 for p in points], [p["val_bpc_64"] for p in points], ".-", color=color, ms=3,
                label=labels[name])
        for prev, p in zip(points, points[1:]):
            if p["run"] != prev["run"]:
                ax.axvline(prev["characters"] / 1e6, color=color, lw=0.6, ls=":")
    ax.set_xlabel("characters seen in all runs (millions)")
    ax.set_ylabel("validation bits/char (64 windows)")
    ax.set_ylim(top=min(5, ax.get_ylim()[1]))
    ax.legend(title="dotted: a run warm-started from the previous one", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def target_rows(ar_bpc, ratio, anc64, real_bpc) -> list:
    """(target, value, met) for each of the Part 3 targets."""
    q = anc64["twin_bpc"] / real_bpc
    return [("AR twin, validation bits/char <= 2.10", f"{ar_bpc:.3f}", ar_bpc <= 2.10),
            ("MDLM bound / twin <= 1.20", f"{ratio:.3f}", ratio <= 1.20),
            ("MDLM bound / twin <= 1.15 (stretch)", f"{ratio:.3f}", ratio <= 1.15),
            ("64-step ancestral samples: twin bits/char <= 1.30x real text's", f"{q:.2f}x", q <= 1.30),
            ("64-step ancestral samples: unigram entropy >= 4.5 bits", f"{anc64['entropy']:.3f}", anc64["entropy"] >= 4.5)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small subsets (smoke test)")
    p.add_argument("--repeats", type=int, default=4, help="Monte Carlo repeats of the ELBO")
    p.add_argument("--samples", type=int, default=16, help="samples per sampler setting")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "text.md"))
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    seed_everything(0)
    mdlm, tok, card_d = load_pretrained("shakespeare_mdlm", "cpu")
    ar, _, card_a = load_pretrained("shakespeare_ar", "cpu")
    scratch, _, card_s = load_pretrained("shakespeare_mdlm_scratch", "cpu")
    L = mdlm.context
    windows = eval_windows("val", L, max_windows=64 if args.quick else None)
    repeats = 2 if args.quick else args.repeats
    n = 4 if args.quick else args.samples

    t0 = time.perf_counter()
    d = masked.elbo_bits_per_char(mdlm, windows, tok.mask_id, repeats, generator=torch.Generator().manual_seed(0))
    a = autoregressive.ar_bits_per_char(ar, windows, tok.mask_id)
    ratio, ratio_se = d["bpc"] / a["bpc"], d["mc_se"] / a["bpc"]
    eval_s = time.perf_counter() - t0
    d_s = masked.elbo_bits_per_char(scratch, windows, tok.mask_id, repeats, generator=torch.Generator().manual_seed(0))
    adapt_rows = adaptation_rows(card_d, card_s)
    print(f"from scratch, same size: ELBO {d_s['bpc']:.4f} ± {d_s['mc_se']:.4f} bits/char after "
          f"{card_s['totals']['characters']:,} characters")
    print(f"validation ({d['chars']:,} chars): MDLM ELBO {d['bpc']:.4f} ± {d['mc_se']:.4f} bits/char, "
          f"AR {a['bpc']:.4f} bits/char (exact), ratio {ratio:.3f} ± {ratio_se:.3f}")

    span = torch.zeros(L, dtype=torch.bool)
    span[L // 2 - 16: L // 2 + 16] = True  # 32 characters in the middle of each window
    fw = windows[:: max(1, windows.shape[0] // 512)]
    d_span = masked.elbo_bits_per_char(mdlm, fw, tok.mask_id, repeats, generator=torch.Generator().manual_seed(1),
                                       maskable=span, progress=False)
    a_span = autoregressive.ar_bits_per_char(ar, fw, tok.mask_id, score=span, progress=False)
    right = torch.zeros(L, dtype=torch.bool)
    right[L // 2 + 16:] = True
    d_left = masked.elbo_bits_per_char(mdlm, fw, tok.mask_id, repeats, generator=torch.Generator().manual_seed(2),
                                       maskable=span, hidden=right, progress=False)
    pos = L // 2
    one = {"both": masked.one_char_bits(mdlm, fw, tok.mask_id, pos),
           "left": masked.one_char_bits(mdlm, fw, tok.mask_id, pos, hidden=torch.arange(L) > pos),
           "ar": autoregressive.ar_bits_per_char(ar, fw, tok.mask_id, progress=False, score=torch.arange(L) == pos)["bpc"]}
    print(f"infill span (32 chars, {fw.shape[0]} windows): MDLM both sides {d_span['bpc']:.4f} ± "
          f"{d_span['mc_se']:.4f}, MDLM left side {d_left['bpc']:.4f} ± {d_left['mc_se']:.4f}, "
          f"AR left side {a_span['bpc']:.4f}; one character: {one}")

    configs = [("ancestral", s, {}) for s in (16, 64, 256)] + [("remask", s, {}) for s in (16, 64, 256)] + \
              [("semi_ar", s, {"block_length": 64}) for s in (16, 64, 256)]
    if args.quick:
        configs = [("ancestral", 16, {}), ("remask", 16, {}), ("semi_ar", 16, {"block_length": 64})]
    rows = sampler_rows(mdlm, ar, tok, n, L, configs, seed=0)
    real = windows[torch.linspace(0, windows.shape[0] - 1, n * 4).long()]  # spread over the plays
    ref_bpc = autoregressive.ar_bits_per_char(ar, real, tok.mask_id, progress=False)["bpc"]
    ref_ent = unigram_entropy(tok.decode_batch(real))

    lines = ["# Part 3 benchmark: masked diffusion LM vs autoregressive twin", "",
             f"CPU, {threads} torch thread(s); models: `shakespeare_mdlm` ({card_d['parameter_count']:,} params, "
             f"{card_d['totals']['characters']:,} characters and {card_d['totals']['hours']:.2f} CPU-hours of training in all, "
             f"the twin's included) and `shakespeare_ar` ({card_a['parameter_count']:,} params, "
             f"{card_a['totals']['characters']:,} characters, {card_a['totals']['hours']:.2f} CPU-hours). "
             f"Measured on {hardware()}.",
             "", "## Validation bits per character (held-out plays)", "",
             "| model | bits/char | Monte Carlo s.e. | kind |", "|---|---|---|---|",
             f"| masked diffusion (MDLM) | {d['bpc']:.4f} | {d['mc_se']:.4f} | upper bound (ELBO), {repeats} repeats |",
             f"| autoregressive twin | {a['bpc']:.4f} | 0 | exact |",
             f"| ratio MDLM / AR | {ratio:.3f} | {ratio_se:.3f} | published at scale: 1.11-1.18 |", "",
             f"{d['chars']:,} validation characters in {windows.shape[0]} windows of {L}; evaluation took {eval_s:.0f} s.",
             "", f"## Infilling the middle of a window ({fw.shape[0]} validation windows)", "",
             "| model | context used | one character (exact) | 32-character span |", "|---|---|---|---|",
             f"| masked diffusion | both sides | {one['both']:.4f} | {d_span['bpc']:.4f} ± {d_span['mc_se']:.4f} (bound) |",
             f"| masked diffusion | left side only (right hidden) | {one['left']:.4f} | {d_left['bpc']:.4f} ± "
             f"{d_left['mc_se']:.4f} (bound) |",
             f"| autoregressive twin | left side only | {one['ar']:.4f} | {a_span['bpc']:.4f} (exact) |", "",
             "## Adaptation from the twin vs training from scratch (same size, same extra characters)", "",
             f"Full validation ELBO: from scratch {d_s['bpc']:.4f} ± {d_s['mc_se']:.4f} bits/char after "
             f"{card_s['totals']['characters']:,} characters ({card_s['totals']['hours']:.2f} CPU-hours); the shipped "
             f"adapted model {d['bpc']:.4f} after {card_d['totals']['characters']:,} characters, the twin's included "
             f"({card_d['totals']['hours']:.2f} CPU-hours).", "",
             "| step | extra characters | adapted from the twin | from scratch |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['characters']:,} | {r['adapted']:.3f} | {r['scratch']:.3f} |" for r in adapt_rows]
    lines += ["", "Both columns: the trainer's validation ELBO (64 held-out windows, EMA weights) during each run.", "",
             f"## Samplers: steps / quality / speed ({n} samples x {L} characters, unconditional)", "",
             "| sampler | steps | network calls | AR-twin bits/char of samples | unigram entropy (bits) | chars/s (CPU) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['twin_bpc']:.3f} | {r['entropy']:.3f} | "
                     f"{r['chars_per_s']:.0f} |")
    lines += [f"| real validation text | - | - | {ref_bpc:.3f} | {ref_ent:.3f} | - |", "",
              "AR-twin bits/char of the twin's own samples is its sampling entropy (it scores its own text).",
              "Network calls of the AR twin: one per character, each on one new position (key/value cache);",
              "a diffusion call processes the whole window, so calls are not equally expensive.", "",
              "First 80 characters of the first sample of each setting:", ""]
    lines += [f"* {r['sampler']}, {r['steps']} steps: `{r['example']!r}`" for r in rows]
    curves = {name: learning_curve(card) for name, card in (("shakespeare_ar", card_a), ("shakespeare_mdlm", card_d))}
    lines += ["", "## Learning curves (model cards, every run of each lineage)", "",
              "| model | run | init | steps | characters in all after it | validation bits/char (64 windows) at its end |",
              "|---|---|---|---|---|---|"]
    for name, card in (("shakespeare_ar", card_a), ("shakespeare_mdlm", card_d)):
        for k, run in enumerate(card["runs"]):
            end = [p for p in curves[name] if p["run"] == k][-1]
            lines.append(f"| {name} | {k + 1} | {run.get('init') or '-'} | {run['steps']:,} | {end['characters']:,} | "
                         f"{end['val_bpc_64']:.3f} |")
    lines += ["", "Figure: `benchmarks/results/text_learning_curves.png`. The diffusion model's lineage begins with "
              "the twin's first run, the one it was adapted from.", ""]
    anc64 = next(r for r in rows if r["sampler"] == "ancestral" and r["steps"] == 64) if not args.quick else rows[0]
    targets = target_rows(a["bpc"], ratio, anc64, ref_bpc)
    lines += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {'met' if ok else 'missed'} |" for t, v, ok in targets]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        result = {"mdlm_weights_sha256": card_d["weights_sha256"], "ar_weights_sha256": card_a["weights_sha256"],
                  "threads": threads, "repeats": repeats, "samples": n,
                  "validation": {"mdlm_bpc": d["bpc"], "mdlm_mc_se": d["mc_se"], "ar_bpc": a["bpc"],
                                 "ratio": ratio, "ratio_se": ratio_se, "chars": d["chars"]},
                  "infill": {"windows": fw.shape[0], "span_both": d_span["bpc"], "span_both_se": d_span["mc_se"],
                             "span_left": d_left["bpc"], "span_left_se": d_left["mc_se"], "span_ar_left": a_span["bpc"],
                             "one_both": one["both"], "one_left": one["left"], "one_ar": one["ar"]},
                  "scratch_weights_sha256": card_s["weights_sha256"],
                  "adaptation": {"scratch_bpc": d_s["bpc"], "scratch_mc_se": d_s["mc_se"],
                                 "scratch_characters": card_s["totals"]["characters"],
                                 "mdlm_characters": card_d["totals"]["characters"], "curves": adapt_rows},
                  "samplers": rows, "real_text": {"twin_bpc": ref_bpc, "entropy": ref_ent},
                  "learning_curves": curves, "targets": [dict(target=t, value=v, met=ok) for t, v, ok in targets],
                  "measured_on": hardware(),
                  "date": time.strftime("%Y-%m-%d %H:%M")}
        json_path = Path(args.out).with_suffix(".json")
        json_path.write_text(json.dumps(result, indent=1) + "\n")
        plot_curves(curves, Path(args.out).with_name("text_learning_curves.png"))
        print(f"wrote {args.out}, {json_path} and {Path(args.out).with_name('text_learning_curves.png')}")


if __name__ == "__main__":
    main()
