"""Part 4 text benchmark: four ways to make text noisy, on the same transformer and corpus.

    python benchmarks/bench_text_noises.py           # writes benchmarks/results/text_noises.{md,json}
    python benchmarks/bench_text_noises.py --quick   # fewer samples and steps, prints only

Models (the same 1.55M-parameter bidirectional transformer, 256-character windows):
    shakespeare_mdlm_scratch   masking (lesson 10), 800 steps x 32 x 256 characters from random weights
    shakespeare_udlm           uniform noise (text.uniform), the same 800 steps from random weights
    shakespeare_embed          Gaussian noise on 16-d learned embeddings (text.embedding), the same 800 steps
    shakespeare_gidd_pu*       masking + uniform noise mixed by p_u (text.gidd), 200 more steps from the
                               masked model; p_u = 0 is the control: masking alone, the same 200 steps

1. Bits per character on the whole validation split: each card's bound, computed at the end of its
   training run by the task's `evaluate` (4 Monte Carlo repeats). The embedding model has no bound.
2. Samples (n x 256 characters, unconditional, 64 and 256 steps): the AR twin's bits/char of them
   and their unigram entropy (real text: about 2.19 and 4.82), and for the noises that can replace
   a character, how many characters a step rewrote after it was written.
3. Self-correction: greedy passes (text.uniform.self_correct) over the 64-step samples of the models
   that have seen uniform noise, each replacing one character per sequence; the twin's bits/char
   before and after.
4. Rounding accuracy of the embedding model against t (64 validation windows).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffedu.runtime import hardware, seed_everything  # noqa: E402
from diffedu.text import autoregressive, embedding, gidd, load_pretrained, samplers, uniform  # noqa: E402
from diffedu.text.guidance import unigram_entropy  # noqa: E402
from diffedu.text.tokenizer import eval_windows  # noqa: E402

MODELS = [("masking", "shakespeare_mdlm_scratch", "masked", None), ("uniform", "shakespeare_udlm", "uniform", None),
          ("Gaussian on embeddings", "shakespeare_embed", "embedding", None),
          ("masking, 200 more steps (p_u = 0)", "shakespeare_gidd_pu000", "gidd", 0.0),
          ("GIDD p_u = 0.1", "shakespeare_gidd_pu010", "gidd", 0.1),
          ("GIDD p_u = 0.25", "shakespeare_gidd_pu025", "gidd", 0.25),
          ("GIDD p_u = 0.5", "shakespeare_gidd_pu050", "gidd", 0.5)]


def twin_bpc(ar, tok, ids) -> float:
    return autoregressive.ar_bits_per_char(ar, ids, tok.mask_id, progress=False)["bpc"]


def draw(sampler, model, tok, n, L, steps, seed, p_u):
    """(ids (n, L), characters rewritten after they were written, per sequence) for one model."""
    g, K = torch.Generator().manual_seed(seed), tok.mask_id
    if sampler == "masked":
        return torch.stack([tok.encode(t) for t in samplers.generate(model, tok, length=L, steps=steps,
                                                                     n_samples=n, generator=g)]), 0.0
    if sampler == "uniform":
        z, changed = uniform.sample(model, (n, L), K, steps, g, progress=False)
        return z, changed[steps // 2:].sum().item() / n          # rewrites in the second half (t < 1/2)
    if sampler == "embedding":
        return embedding.sample(model, (n, L), steps, g, progress=False), None
    z, rewritten = gidd.sample(model, (n, L), p_u, K, steps, g, progress=False)
    return z, rewritten.sum().item() / n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4 samples, 16 steps, no files written")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--passes", type=int, default=32, help="self-correction passes")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "text_noises.md"))
    args = p.parse_args(argv)
    seed_everything(0)
    ar, tok, card_a = load_pretrained("shakespeare_ar", "cpu")
    n, steps_list = (4, (16,)) if args.quick else (args.samples, (64, 256))
    L = ar.context
    real = eval_windows("val", L)
    real = real[torch.linspace(0, real.shape[0] - 1, 64).long()]
    ref = {"twin_bpc": twin_bpc(ar, tok, real), "entropy": unigram_entropy(tok.decode_batch(real))}
    rows, t_start = [], time.perf_counter()
    for kind, name, sampler, p_u in MODELS:
        model, _, card = load_pretrained(name, "cpu")
        row = {"noise": kind, "model": name, "weights_sha256": card["weights_sha256"],
               "params": card["parameter_count"], "characters": card["totals"]["characters"],
               "cpu_hours": card["totals"]["hours"], "bpc": card["metrics"].get("val_bpc_elbo"),
               "bpc_se": card["metrics"].get("val_bpc_mc_se"), "samples": {}}
        for steps in steps_list:
            t0 = time.perf_counter()
            ids, rewrites = draw(sampler, model, tok, n, L, steps, seed=steps, p_u=p_u)
            texts = tok.decode_batch(ids)
            row["samples"][steps] = {"twin_bpc": twin_bpc(ar, tok, ids), "entropy": unigram_entropy(texts),
                                     "rewrites_per_seq": rewrites, "seconds": time.perf_counter() - t0,
                                     "example": texts[0][:100]}
            if steps == steps_list[0] and (sampler == "uniform" or (p_u or 0) > 0):
                fixed, changed = uniform.self_correct(model, ids, tok.mask_id, args.passes)
                row["self_correct"] = {"passes": args.passes, "changed_per_seq": changed.sum().item() / n,
                                       "before": row["samples"][steps]["twin_bpc"], "after": twin_bpc(ar, tok, fixed),
                                       "entropy_after": unigram_entropy(tok.decode_batch(fixed))}
        if sampler == "embedding":
            ts = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
            row["rounding_accuracy"] = embedding.rounding_accuracy(model, eval_windows("val", L, 64), ts,
                                                                   torch.Generator().manual_seed(0))
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "weights_sha256"}))

    S = steps_list[0]
    lines = ["# Part 4 text benchmark: masking, uniform noise, their mixture (GIDD) and Gaussian noise on embeddings",
             "", f"Every model: the same bidirectional transformer ({rows[0]['params']:,} parameters in the masked model), "
             f"256-character windows of the training plays. Samples scored by `shakespeare_ar` (the twin, "
             f"{card_a['totals']['characters']:,} training characters). {hardware()}; {n} samples x {L} characters.", "",
             "| noise | model | training characters | CPU-h | val bits/char (bound) | "
             + " | ".join(f"twin bpc / entropy, {s} steps" for s in steps_list) + " | rewrites per sample |",
             "|---|---|---|---|---|" + "---|" * len(steps_list) + "---|"]
    for r in rows:
        bpc = f"{r['bpc']:.3f} ± {r['bpc_se']:.3f}" if r["bpc"] is not None else "no bound"
        cells = [f"{r['samples'][s]['twin_bpc']:.3f} / {r['samples'][s]['entropy']:.3f}" for s in steps_list]
        rw = r["samples"][S]["rewrites_per_seq"]
        lines.append(f"| {r['noise']} | `{r['model']}` | {r['characters']:,} | {r['cpu_hours']:.2f} | {bpc} | "
                     + " | ".join(cells) + f" | {'-' if rw is None else f'{rw:.1f}'} |")
    lines += [f"| real validation text | - | - | - | - | " + " | ".join(
        f"{ref['twin_bpc']:.3f} / {ref['entropy']:.3f}" for _ in steps_list) + " | - |", "",
        f"Rewrites per sample ({S} steps): characters that a sampler step replaced by another character after it "
        "was written (uniform noise: in the second half of the steps, t < 1/2; GIDD: any step). Masking never "
        "rewrites.", "", f"## Self-correction ({args.passes} greedy passes over the {S}-step samples)", "",
        "| model | characters changed per sample | twin bpc before | after | entropy after |", "|---|---|---|---|---|"]
    for r in rows:
        if "self_correct" in r:
            c = r["self_correct"]
            lines.append(f"| `{r['model']}` | {c['changed_per_seq']:.1f} | {c['before']:.3f} | {c['after']:.3f} | "
                         f"{c['entropy_after']:.3f} |")
    emb = next(r for r in rows if r["noise"] == "Gaussian on embeddings")
    lines += ["", "## Rounding accuracy of the embedding model (64 validation windows)", "",
              "| t | " + " | ".join(f"{t:g}" for t in emb["rounding_accuracy"]) + " |",
              "|---|" + "---|" * len(emb["rounding_accuracy"]),
              "| accuracy | " + " | ".join(f"{a:.3f}" for a in emb["rounding_accuracy"].values()) + " |", "",
              f"First 100 characters of the first {S}-step sample of each model:", ""]
    lines += [f"* {r['noise']}: `{r['samples'][S]['example']!r}`" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text, f"\n{time.perf_counter() - t_start:.0f} s")
    if not args.quick:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"weights_sha256": {r["model"]: r["weights_sha256"] for r in rows}, "models": rows, "real_text": ref, "samples": n, "steps": list(steps_list), "hardware": hardware(),
             "ar_weights_sha256": card_a["weights_sha256"], "date": time.strftime("%Y-%m-%d %H:%M")}, indent=1) + "\n")
        print(f"wrote {args.out} and its .json")


if __name__ == "__main__":
    main()
