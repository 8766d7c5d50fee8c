"""Training throughput of the course's character transformer against a nanoGPT-style GPT.

    python benchmarks/bench_train_throughput.py                 # the CPU shape, one thread
    python benchmarks/bench_train_throughput.py --shape gpu     # the GPU configs' shape

Measures training tokens per second (forward + backward + AdamW step) of
  * the autoregressive twin   (diffedu.text.model.Transformer, causal, next-character loss),
  * the masked diffusion LM   (the same Transformer, bidirectional, the MDLM loss),
  * a nanoGPT-style GPT of the same shape, written here from its published design (pre-norm,
    fused QKV, F.scaled_dot_product_attention, no biases, tied embeddings, learned positions),
interleaved round by round so that a busy machine slows all of them alike, plus the GFLOP/s of a
large fp32 matmul on the same thread(s) as the ceiling. Writes benchmarks/results/train_throughput.json.

The reference of each model has its attention pattern and its loss: the twin is compared with the
causal nanoGPT-style model (next-character loss), the bidirectional diffusion LM with the same
nanoGPT-style model with full attention ("nanogpt_bidir", on the same masked inputs with the MDLM
loss); the ratio to the causal model is reported for both as well. Runs on a shared machine vary
by a few percent: compare ratios from one run, never across runs.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from diffedu.runtime import hardware  # noqa: E402
from diffedu.text import masked, model as text_model  # noqa: E402
from diffedu.text.autoregressive import ar_loss  # noqa: E402

VOCAB = 86


def read_config(name):
    return json.loads((ROOT / "configs" / name).read_text())


SHAPES = {"cpu": ("text_ar.json", "text_mdlm.json"), "gpu": ("text_ar_gpu.json", "text_mdlm_gpu.json")}


class GPTBlock(nn.Module):
    def __init__(self, d, heads, causal=True):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, L, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.proj(y.transpose(1, 2).reshape(B, L, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class NanoGPT(nn.Module):
    def __init__(self, vocab, context, d_model, n_layers, n_heads, causal=True, **_):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d_model), nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(GPTBlock(d_model, n_heads, causal) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model, bias=False)

    def forward(self, idx):
        h = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            h = b(h)
        return self.ln_f(h) @ self.wte.weight.T


def matmul_gflops(n=2048, reps=5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=SHAPES, default="cpu")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="timed steps per model per round")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ar_cfg, md_cfg = (read_config(n) for n in SHAPES[args.shape])
    shape = {k: v for k, v in ar_cfg["model"].items() if k != "causal"}
    B, L = args.batch_size or ar_cfg["batch_size"], shape["context"]
    mask_id = VOCAB - 1
    models = {"twin": text_model.build_model(ar_cfg["model"], VOCAB),
              "mdlm": text_model.build_model(md_cfg["model"], VOCAB),
              "nanogpt": NanoGPT(VOCAB, **shape),
              "nanogpt_bidir": NanoGPT(VOCAB, **shape, causal=False)}
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, VOCAB - 1, (B, L), generator=g)
    t = masked.sample_t(B, g)
    z_t = masked.forward_mask(x0, t, mask_id, g)
    losses = {"twin": lambda m: ar_loss(m, x0, mask_id),
              "mdlm": lambda m: (masked.loss_weight(t) * masked.masked_nll(m, x0, z_t, mask_id)).mean() / L,
              "nanogpt": lambda m: F.cross_entropy(m(x0[:, :-1]).transpose(1, 2), x0[:, 1:]),
              "nanogpt_bidir": lambda m: (masked.loss_weight(t) * masked.masked_nll(m, x0, z_t, mask_id)).mean() / L}
    reference = {"twin": "nanogpt", "mdlm": "nanogpt_bidir", "nanogpt": "nanogpt", "nanogpt_bidir": "nanogpt_bidir"}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}

    def step(name):
        loss = losses[name](models[name])
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    for name in models:  # warm-up
        step(name)
    seconds = {k: 0.0 for k in models}
    ceiling = []
    for _ in range(args.rounds):
        for name in models:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            seconds[name] += time.perf_counter() - t0
        ceiling.append(matmul_gflops())
    tokens = args.rounds * args.steps * B * L
    rows = {k: {"tokens_per_s": tokens / s, "params": sum(p.numel() for p in models[k].parameters())}
            for k, s in seconds.items()}
    for k, r in rows.items():
        r["reference"] = reference[k]
        r["ratio_to_nanogpt"] = r["tokens_per_s"] / rows[reference[k]]["tokens_per_s"]
        r["ratio_to_causal_nanogpt"] = r["tokens_per_s"] / rows["nanogpt"]["tokens_per_s"]
        # 6 N FLOPs per token for the weights, plus 12 n_layers L d for attention scores and values
        flops = 6 * r["params"] + 12 * shape["n_layers"] * L * shape["d_model"]
        r["gflops"] = r["tokens_per_s"] * flops / 1e9
    result = {"shape": args.shape, "model": shape, "batch_size": B, "threads": args.threads,
              "hardware": hardware(), "matmul_gflops": max(ceiling), "rows": rows,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"{args.shape} shape {shape}, batch {B} x {L}, {hardware()}")
    print(f"fp32 matmul ceiling: {max(ceiling):.1f} GFLOP/s")
    print("| model | params | tokens/s | reference | ratio to its reference | ratio to causal nanoGPT | GFLOP/s |\n"
          "|---|---:|---:|---|---:|---:|---:|")
    for k, r in rows.items():
        print(f"| {k} | {r['params']:,} | {r['tokens_per_s']:,.0f} | {r['reference']} | {r['ratio_to_nanogpt']:.3f} "
              f"| {r['ratio_to_causal_nanogpt']:.3f} | {r['gflops']:.1f} |")
    out = ROOT / "benchmarks" / "results" / "train_throughput.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old[f"{args.shape}|threads={args.threads}"] = result
    out.write_text(json.dumps(old, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
