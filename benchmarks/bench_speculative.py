"""Speculative diffusion decoding: the shipped diffusion LM drafts, the shipped twin verifies.

    python benchmarks/bench_speculative.py            # k in {4, 8, 16} x draft_steps in {1, 2, 4}
    python benchmarks/bench_speculative.py --quick    # 2 samples of 16 characters (a smoke test; writes
                                                      # nothing unless --out is given)

Every sample is an exact sample of the twin (tests/test_text_speculative.py checks it), so the
table is about speed only. One CPU thread, one sample at a time (speculative decoding is a way to
cut the latency of one sequence). Each sample continues a prompt cut from the validation plays.

Columns: acceptance rate = drafted characters kept / drafted; characters per round = kept + 1
(the residual or bonus character); verifier and drafter calls per generated character; characters
per second against the twin's own ar_generate with its key/value cache. A verifier call is a plain
forward pass over the whole prefix + draft (no cache), a drafter call one over prefix + k positions,
while a cached twin call processes one new position: calls are not equally expensive.

Writes benchmarks/results/speculative.json and .md with both checkpoints' weights_sha256 and the
hardware, so that a lesson quoting the table can tell whether it is stale.
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
from diffedu.text import autoregressive, load_pretrained, speculative  # noqa: E402
from diffedu.text.tokenizer import eval_windows  # noqa: E402


def prompts(tok, n, prompt_len):
    """n prompts of prompt_len characters spread over the validation plays."""
    return tok.decode_batch(eval_windows("val", prompt_len, max_windows=n))


def speculative_row(mdlm, ar, tok, texts, length, k, steps, seed):
    g = torch.Generator().manual_seed(seed)
    kept = drafted = rounds = v_calls = d_calls = 0
    t0 = time.perf_counter()
    for prompt in texts:
        _, st = speculative.speculative_generate(mdlm, ar, tok, prompt, length, k, steps, g)
        kept, drafted, rounds = kept + st["kept"], drafted + st["drafted"], rounds + st["rounds"][0]
        v_calls, d_calls = v_calls + st["verifier_calls"], d_calls + st["drafter_calls"]
    dt = time.perf_counter() - t0
    chars = len(texts) * length
    return dict(k=k, draft_steps=steps, acceptance_rate=kept / drafted, chars_per_round=chars / rounds,
                verifier_calls_per_char=v_calls / chars, drafter_calls_per_char=d_calls / chars,
                chars_per_s=chars / dt, seconds=dt)


def ar_row(ar, tok, texts, length, seed):
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for prompt in texts:
        autoregressive.ar_generate(ar, tok, prompt, length, generator=g)
    dt = time.perf_counter() - t0
    return dict(chars_per_s=len(texts) * length / dt, seconds=dt, verifier_calls_per_char=1.0)


def markdown(result):
    r, a = result, result["ar_twin"]
    lines = ["# Speculative diffusion decoding: the diffusion LM drafts, the twin verifies", "",
             f"{r['hardware']}; drafter `shakespeare_mdlm` (weights sha256 `{r['mdlm_weights_sha256'][:12]}...`), "
             f"verifier `shakespeare_ar` (`{r['ar_weights_sha256'][:12]}...`). {r['samples']} samples, one at a time, "
             f"each a prompt of {r['prompt_length']} validation characters continued by {r['length']}.", "",
             "| k | draft steps | acceptance rate | chars per round | verifier calls / char | drafter calls / char "
             "| chars/s | vs AR twin |", "|---|---|---|---|---|---|---|---|"]
    for row in r["speculative"]:
        lines.append(f"| {row['k']} | {row['draft_steps']} | {row['acceptance_rate']:.3f} | {row['chars_per_round']:.2f} "
                     f"| {row['verifier_calls_per_char']:.3f} | {row['drafter_calls_per_char']:.3f} "
                     f"| {row['chars_per_s']:.1f} | {row['chars_per_s'] / a['chars_per_s']:.2f}x |")
    lines += [f"| AR twin, KV cache | - | - | 1 | 1 | 0 | {a['chars_per_s']:.1f} | 1x |", "",
              "Every speculative sample is an exact sample of the twin; only the speed differs.",
              "A verifier call here is a plain forward pass over prefix + draft (no cache); a cached twin",
              "call processes one new position, so the calls are not equally expensive."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 samples of 16 characters; writes only with --out")
    p.add_argument("--samples", type=int, default=8, help="samples (prompts) per setting")
    p.add_argument("--out", default=None, help="markdown path (default benchmarks/results/speculative.md)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seed_everything(0)
    mdlm, tok, card_d = load_pretrained("shakespeare_mdlm", "cpu")
    ar, _, card_a = load_pretrained("shakespeare_ar", "cpu")
    context = min(mdlm.context, ar.context)
    prompt_len = context // 4
    n, length = (2, 16) if args.quick else (args.samples, context - prompt_len)
    texts = prompts(tok, n, prompt_len)

    rows = []
    for k in (4, 8, 16):
        for steps in (1, 2, 4):
            rows.append(speculative_row(mdlm, ar, tok, texts, length, k, steps, seed=0))
            print(rows[-1])
    base = ar_row(ar, tok, texts, length, seed=0)
    result = {"mdlm_weights_sha256": card_d["weights_sha256"], "ar_weights_sha256": card_a["weights_sha256"],
              "hardware": hardware(), "threads": torch.get_num_threads(), "samples": n,
              "prompt_length": prompt_len, "length": length, "quick": args.quick,
              "speculative": rows, "ar_twin": base, "date": time.strftime("%Y-%m-%d %H:%M")}
    text = markdown(result)
    print(text)
    if args.out or not args.quick:
        out = Path(args.out or ROOT / "benchmarks" / "results" / "speculative.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
