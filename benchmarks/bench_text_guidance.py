"""Classifier-free guidance for the masked diffusion LM: genre accuracy and diversity against w.

    python benchmarks/bench_text_guidance.py            # w in {0, 1, 5, 10, 20, 40}, 32 samples per genre
    python benchmarks/bench_text_guidance.py --quick    # 2 samples per genre, 8 steps (a smoke test;
                                                        # writes nothing unless --out is given)

The labelled model (shakespeare_mdlm_genre) writes windows of 256 characters from nothing, with
the ancestral sampler, guided towards each genre with scale w (diffedu.text.guidance: w = 0 is the
unconditional model, w = 1 the conditional one). The judge is text.genre's classifier (tf-idf of
the words + logistic regression, trained on windows of the training plays); its accuracy on real
windows of the validation plays is the first row, so "accuracy" can be read against it.

Columns: accuracy = share of samples the judge calls the genre they were asked for (over all
three genres); p(genre) = the judge's mean probability of that genre; unigram entropy (bits) and
distinct word bigrams, pooled over all samples at that w (diversity); the twin's bits/char of the
samples (lower: more like what the twin expects of Shakespeare); seconds per sample. The real-text
row has the same measures on validation windows.

Writes benchmarks/results/text_guidance.json and .md with both checkpoints' weights_sha256.
"""
import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffedu.runtime import hardware, seed_everything  # noqa: E402
from diffedu.text import autoregressive, load_pretrained, samplers  # noqa: E402
from diffedu.text.genre import GENRES, genre_classifier, genre_windows  # noqa: E402
from diffedu.text.guidance import GuidedDenoiser, distinct_ngrams, unigram_entropy  # noqa: E402


def twin_bpc(ar, tok, texts) -> float:
    ids = torch.stack([tok.encode(t) for t in texts])
    return autoregressive.ar_bits_per_char(ar, ids, tok.mask_id, progress=False)["bpc"]


def measures(judge, ar, tok, texts, labels) -> dict:
    p = judge.predict_proba(texts)
    labels = torch.as_tensor(labels)
    return dict(accuracy=(p.argmax(-1) == labels).float().mean().item(),
                p_genre=p[torch.arange(len(texts)), labels].mean().item(),
                per_genre={g: (p.argmax(-1)[labels == i] == i).float().mean().item() for i, g in enumerate(GENRES)},
                entropy=unigram_entropy(texts), distinct2=distinct_ngrams(texts, 2), twin_bpc=twin_bpc(ar, tok, texts))


def guided_row(model, ar, tok, judge, w, n, length, steps, seed):
    texts, labels, t0 = [], [], time.perf_counter()
    for i, genre in enumerate(GENRES):
        g = torch.Generator().manual_seed(seed + i)
        texts += samplers.generate(GuidedDenoiser(model, genre, w), tok, length=length, steps=steps,
                                   n_samples=n, generator=g)
        labels += [i] * n
    dt = time.perf_counter() - t0
    return dict(w=w, **measures(judge, ar, tok, texts, labels), s_per_sample=dt / len(texts),
                examples={genre: texts[i * n][:160] for i, genre in enumerate(GENRES)})


def to_markdown(res) -> str:
    m = res["meta"]
    lines = [f"Classifier-free guidance for the masked diffusion LM: {m['n_per_genre']} samples per genre of "
             f"{m['length']} characters, ancestral sampler, {m['steps']} steps; judge: {m['judge']} "
             f"(accuracy on real validation windows {res['real']['accuracy']:.3f}). {m['hardware']}, {m['date']}.",
             "", "| w | accuracy | p(genre) | comedy | history | tragedy | unigram entropy (bits) | distinct bigrams "
             "| twin bits/char | s/sample |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in [dict(res["real"], w="real text", s_per_sample=None)] + res["rows"]:
        pg = r["per_genre"]
        s = "-" if r["s_per_sample"] is None else f"{r['s_per_sample']:.2f}"
        lines.append(f"| {r['w']} | {r['accuracy']:.3f} | {r['p_genre']:.3f} | {pg['comedy']:.2f} | {pg['history']:.2f} "
                     f"| {pg['tragedy']:.2f} | {r['entropy']:.3f} | {r['distinct2']:.3f} | {r['twin_bpc']:.3f} | {s} |")
    lines += ["", f"Validation bits/char bound of the labelled model: {m['val_bpc_genre']:.3f} with the genre, "
              f"{m['val_bpc_null']:.3f} without (null label)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--w", type=float, nargs="+", default=[0.0, 1.0, 5.0, 10.0, 20.0, 40.0])
    p.add_argument("--n", type=int, default=32, help="samples per genre and w")
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results; --quick: none)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.w = 2, 8, [0.0, 2.0]
    seed_everything(args.seed)
    torch.set_num_threads(1)
    model, tok, card = load_pretrained("shakespeare_mdlm_genre", "cpu")
    ar, _, card_ar = load_pretrained("shakespeare_ar", "cpu")
    judge = genre_classifier(args.length)
    x, y = genre_windows("val", args.length, 200)
    real = measures(judge, ar, tok, tok.decode_batch(x), y)
    rows = []
    for w in args.w:
        rows.append(guided_row(model, ar, tok, judge, w, args.n, args.length, args.steps, args.seed))
        print(f"w={w}: accuracy {rows[-1]['accuracy']:.3f}, entropy {rows[-1]['entropy']:.3f}, "
              f"distinct2 {rows[-1]['distinct2']:.3f}, twin {rows[-1]['twin_bpc']:.3f}", flush=True)
    meta = dict(genre_weights_sha256=card["weights_sha256"], ar_weights_sha256=card_ar["weights_sha256"],
                judge="text.genre.GenreClassifier(context=%d, seed=0): tf-idf words + logistic regression" % args.length,
                n_per_genre=args.n, length=args.length, steps=args.steps, seed=args.seed,
                val_bpc_genre=card["metrics"]["val_bpc_elbo_genre"], val_bpc_null=card["metrics"]["val_bpc_elbo_null"],
                hardware=hardware() + " x 1 process", date=datetime.date.today().isoformat())
    res = dict(meta=meta, real=real, rows=rows)
    md = to_markdown(res)
    print(md)
    out = Path(args.out) if args.out else (None if args.quick else ROOT / "benchmarks" / "results")
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "text_guidance.json").write_text(json.dumps(res, indent=1))
        (out / "text_guidance.md").write_text(md)


if __name__ == "__main__":
    main()
