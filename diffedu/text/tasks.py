"""Training tasks for the two Shakespeare language models (used by `python -m diffedu.train`).

    python -m diffedu.train configs/text_mdlm.json --ship   # masked diffusion LM  -> shakespeare_mdlm
    python -m diffedu.train configs/text_ar.json   --ship   # its autoregressive twin -> shakespeare_ar

The two configs are identical except for the task (and so model.causal). Both tasks:
    batches   random windows of `context` characters from the training plays;
    evaluate  bits per character on the validation plays (for the model card).
The masked task draws t and the mask in `batches` from the trainer's generator (re-seeded from
the step before every batch), so a batch fully determines its loss and a resumed run continues
with exactly the same random stream.
"""
import json

import torch

from . import masked
from .model import build_model
from .tokenizer import eval_windows, random_windows, shakespeare_ids, shakespeare_tokenizer

DEFAULT_EVAL = {"windows": None, "repeats": 4, "batch_size": 64}  # windows None: the whole split


class _TextTask:
    causal = None  # set by the subclasses

    def __init__(self, config: dict, device):
        if not isinstance(config, dict) or "model" not in config:
            raise ValueError("A text task config needs a 'model' section (context, d_model, n_layers, n_heads).")
        model_cfg = dict(config["model"])
        if model_cfg.setdefault("causal", self.causal) != self.causal:
            raise ValueError(f"{type(self).__name__} needs model.causal={self.causal}, "
                             f"got {model_cfg['causal']}.")
        self.config, self.device = config, torch.device(device)
        self.tok = shakespeare_tokenizer()
        self.context = model_cfg["context"]
        self.batch_size = config.get("batch_size", 32)
        self.model = build_model(model_cfg, self.tok.vocab_size).to(self.device)
        self.eval_cfg = {**DEFAULT_EVAL, **config.get("eval", {})}
        kind = "causal (autoregressive)" if self.causal else "bidirectional (masked diffusion)"
        self.architecture = (f"{kind} pre-norm transformer with RoPE, {model_cfg['n_layers']} layers, "
                             f"d_model {model_cfg['d_model']}, {model_cfg['n_heads']} heads, "
                             f"context {self.context}, tied embeddings, vocab {self.tok.vocab_size}")

    def _windows(self, generator):
        """Random training windows; every random number comes from `generator` (the trainer reseeds it)."""
        ids = shakespeare_ids("train")
        while True:
            yield random_windows(ids, self.batch_size, self.context, generator)

    @property
    def data_info(self) -> dict:
        from diffedu.data import SHA256
        return {"file": "assets/data/shakespeare.json.gz", "sha256": SHA256["shakespeare.json.gz"],
                "train": "train plays", "validation": "val plays (macbeth, twelfth_night, richard_ii, "
                "winters_tale)", "vocab": self.tok.chars, "mask_id": self.tok.mask_id}


class MaskedLMTask(_TextTask):
    """Masked diffusion LM (MDLM): bidirectional transformer, loss = continuous-time NELBO."""

    causal = False

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        for x0 in self._windows(generator):
            t = masked.sample_t(x0.shape[0], generator)  # antithetic over the batch
            z_t = masked.forward_mask(x0, t, self.tok.mask_id, generator)
            yield tuple(v.to(self.device) for v in (x0, z_t, t))

    def loss(self, model, batch):
        x0, z_t, t = batch
        nll = masked.masked_nll(model, x0, z_t, self.tok.mask_id)
        return (masked.loss_weight(t) * nll).mean() / x0.shape[1]

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        cfg = self.eval_cfg
        windows = eval_windows("val", self.context, cfg["windows"])
        gen = torch.Generator().manual_seed(0)
        r = masked.elbo_bits_per_char(ema_model, windows, self.tok.mask_id, cfg["repeats"],
                                      cfg["batch_size"], gen, progress=False)
        return {"val_bpc_elbo": r["bpc"], "val_bpc_mc_se": r["mc_se"], "val_chars": r["chars"]}

    def on_checkpoint(self, ema_model, step, out_dir):
        from .samplers import generate
        gen = torch.Generator().manual_seed(step)
        text = generate(ema_model, self.tok, "", length=min(self.context, 200), steps=64, generator=gen)[0]
        _write_sample(out_dir, step, text)


class CausalLMTask(_TextTask):
    """Autoregressive twin: the same transformer with a causal mask, loss = next-character NLL."""

    causal = True

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        for x0 in self._windows(generator):
            yield x0.to(self.device)

    def loss(self, model, batch):
        return masked.ar_loss(model, batch, self.tok.mask_id)

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        cfg = self.eval_cfg
        windows = eval_windows("val", self.context, cfg["windows"])
        r = masked.ar_bits_per_char(ema_model, windows, self.tok.mask_id, cfg["batch_size"], progress=False)
        return {"val_bpc": r["bpc"], "val_chars": r["chars"]}

    def on_checkpoint(self, ema_model, step, out_dir):
        from .samplers import ar_generate
        gen = torch.Generator().manual_seed(step)
        _write_sample(out_dir, step, ar_generate(ema_model, self.tok, "", length=min(self.context, 200),
                                                 generator=gen)[0])


def _write_sample(out_dir, step, text):
    from pathlib import Path
    path = Path(out_dir) / "samples.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"--- step {step} ---\n{text}\n")


def load_text_model(name: str = "shakespeare_mdlm", device=None):
    """(model in eval mode, tokenizer, card) for a shipped (or any) text checkpoint."""
    from diffedu.checkpoints import load_checkpoint, load_into
    from diffedu.runtime import get_device
    _, card = load_checkpoint(name)
    tok = shakespeare_tokenizer()
    if card.get("data", {}).get("vocab", tok.chars) != tok.chars:
        raise ValueError(f"{name} was trained with a different vocabulary than the shipped corpus gives.")
    model = build_model(card["config"]["model"], tok.vocab_size)
    load_into(model, name)
    model = model.float().to(device or get_device()).eval()
    return model, tok, card


def configs_differ_only_in_task(a: dict, b: dict) -> bool:
    """True when two configs agree everywhere except name, task and model.causal (a fair comparison)."""
    strip = lambda c: json.loads(json.dumps({**c, "name": None, "task": None,
                                             "model": {**c.get("model", {}), "causal": None}}))
    return strip(a) == strip(b)
