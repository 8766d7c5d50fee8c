"""Training tasks for the two Shakespeare language models (used by `python -m diffedu.train`).

    python -m diffedu.train configs/text_ar.json   --ship   # the autoregressive twin -> shakespeare_ar
    python -m diffedu.train configs/text_mdlm_adapt.json --init assets/checkpoints/shakespeare_ar.safetensors --ship
                                        # masked diffusion LM adapted from the twin -> shakespeare_mdlm
    python -m diffedu.train configs/text_mdlm_scratch.json --ship  # the same, from scratch -> lesson 11's control
    python -m diffedu.train configs/text_udlm.json --ship   # uniform-noise diffusion LM -> shakespeare_udlm
    python -m diffedu.train configs/text_gidd_pu050.json --init assets/checkpoints/shakespeare_mdlm_scratch.safetensors --ship
                                        # masking + uniform noise, p_u = 0.5 -> shakespeare_gidd_pu050 (also pu000/010/025)
    python -m diffedu.train configs/text_embed.json --ship  # Gaussian diffusion on embeddings -> shakespeare_embed

configs/text_ar.json and text_mdlm.json differ only in the task (and so model.causal). Both tasks:
    batches   random windows of `context` characters from the training plays;
    evaluate  bits per character on the validation plays (for the model card).
The masked task draws t and the mask in `batches` from the trainer's generator (re-seeded from
the step before every batch), so a batch fully determines its loss and a resumed run continues
with exactly the same random stream.
"""
import json

import torch

from diffedu import _validate

from . import autoregressive, gidd, masked, uniform
from .model import build_model
from .tokenizer import eval_windows, random_windows, shakespeare_ids, shakespeare_tokenizer

DEFAULT_EVAL = {"windows": None, "repeats": 4, "batch_size": 64}  # windows None: the whole split


class _TextTask:
    causal = None  # set by the subclasses
    unit = "characters"  # what the model card counts; units_per_example = context (set below)

    def __init__(self, config: dict, device):
        if not isinstance(config, dict) or "model" not in config:
            raise ValueError("A text task config needs a 'model' section (context, d_model, n_layers, n_heads).")
        model_cfg = dict(config["model"])
        if model_cfg.setdefault("causal", self.causal) != self.causal:
            raise ValueError(f"{type(self).__name__} needs model.causal={self.causal}, "
                             f"got {model_cfg['causal']}.")
        self.config, self.device = config, torch.device(device)
        self.tok = shakespeare_tokenizer()
        self.context = self.units_per_example = model_cfg["context"]
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
    """Masked diffusion LM (MDLM): bidirectional transformer, loss = continuous-time NELBO.

    Adaptation from the twin (Gong et al. 2024): with "adapt": {"anneal_steps": N} in the config and
    `--init` naming the causal twin's checkpoint, the model (with model.shift = true) starts from the
    twin's weights, and for the first N steps each query may attend to the keys on its left plus a
    random fraction (step + 1) / N of those on its right: the attention opens from causal to full.
    """

    causal = False
    init_tasks = ("diffedu.text.tasks:CausalLMTask",)  # --init may name the twin (with "adapt")
    init_may_differ = ("causal", "shift")
    step = 0

    def __init__(self, config: dict, device):
        super().__init__(config, device)
        self.adapt = config.get("adapt")
        if self.adapt is not None:
            n = self.adapt.get("anneal_steps") if isinstance(self.adapt, dict) else None
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"'adapt' must be {{\"anneal_steps\": int >= 0}}, got {self.adapt!r}.")
            if not self.model.shift:
                raise ValueError("'adapt' needs model.shift = true, to keep the twin's next-character head.")
        else:
            self.init_tasks = ()

    def set_step(self, step: int) -> None:
        """The trainer tells the task its step before each batch (the annealing depends on it)."""
        self.step = step

    def attention_mask(self, generator):
        """Causal plus a random fraction (step + 1) / anneal_steps of the future; None once fully open."""
        n = self.adapt["anneal_steps"] if self.adapt else 0
        if self.step >= n:
            return None
        L = self.context + 1  # the shifted input has BOS in front
        u = torch.rand(L, L, generator=generator)
        return torch.ones(L, L, dtype=torch.bool).tril() | (u < (self.step + 1) / n)

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        for x0 in self._windows(generator):
            t = masked.sample_t(x0.shape[0], generator)  # antithetic over the batch
            z_t = masked.forward_mask(x0, t, self.tok.mask_id, generator)
            mask = self.attention_mask(generator)
            yield tuple(v.to(self.device) for v in (x0, z_t, t)) + (mask if mask is None else mask.to(self.device),)

    def loss(self, model, batch):
        x0, z_t, t, attn_mask = batch if len(batch) == 4 else (*batch, None)
        net = model if attn_mask is None else (lambda z: model(z, attn_mask=attn_mask))
        nll = masked.masked_nll(net, x0, z_t, self.tok.mask_id)
        return (masked.loss_weight(t) * nll).mean() / x0.shape[1]

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        cfg = self.eval_cfg
        windows = eval_windows("val", self.context, cfg["windows"])
        gen = torch.Generator().manual_seed(0)
        r = masked.elbo_bits_per_char(ema_model, windows, self.tok.mask_id, cfg["repeats"],
                                      cfg["batch_size"], gen, progress=False)
        return {"val_bpc_elbo": r["bpc"], "val_bpc_mc_se": r["mc_se"], "val_chars": r["chars"]}

    @torch.no_grad()
    def validate(self, ema_model) -> dict:
        """A quick point of the learning curve: the bound on 64 validation windows (2 repeats)."""
        windows = eval_windows("val", self.context, 64)
        r = masked.elbo_bits_per_char(ema_model, windows, self.tok.mask_id, 2, 64,
                                      torch.Generator().manual_seed(0), progress=False)
        return {"val_bpc_64": r["bpc"]}

    def on_checkpoint(self, ema_model, step, out_dir):
        from .samplers import generate
        gen = torch.Generator().manual_seed(step)
        text = generate(ema_model, self.tok, "", length=min(self.context, 200), steps=64, generator=gen)[0]
        _write_sample(out_dir, step, text)


class GenreMaskedLMTask(MaskedLMTask):
    """The masked diffusion LM with a genre label (lesson 15), trained with label dropout.

    Windows come from the 32 training plays of the First Folio, a genre drawn uniformly for each
    (text.genre); with probability p_uncond the label is replaced by the null label, so one network
    learns p(x | genre) and p(x), the two halves of classifier-free guidance. --init may name the
    unlabelled model: the label embedding is new and starts at zero.
    """

    init_tasks = ("diffedu.text.tasks:MaskedLMTask",)
    init_may_differ = ("num_classes",)
    init_new = ("label_embed.",)  # parameters an unlabelled checkpoint lacks (they start at zero)

    def __init__(self, config: dict, device):
        from .genre import GENRES
        if config.get("model", {}).get("num_classes") != len(GENRES):
            raise ValueError(f"GenreMaskedLMTask needs model.num_classes = {len(GENRES)} {GENRES}.")
        super().__init__(config, device)
        if self.adapt is not None:
            raise ValueError("GenreMaskedLMTask starts from a masked diffusion LM; 'adapt' is for the twin.")
        self.init_tasks = type(self).init_tasks
        self.p_uncond = _validate.probability("p_uncond", config.get("p_uncond", 0.2))
        if self.p_uncond == 1:
            raise ValueError("p_uncond = 1 would drop every label: the model would never see a genre.")
        self.architecture += f", genre label (3 + null, dropout {self.p_uncond})"

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        from .genre import random_genre_windows
        while True:
            x0, y = random_genre_windows(self.batch_size, self.context, generator)
            drop = torch.rand(y.shape, generator=generator) < self.p_uncond
            y = torch.where(drop, self.model.num_classes, y)  # the null label
            t = masked.sample_t(x0.shape[0], generator)
            z_t = masked.forward_mask(x0, t, self.tok.mask_id, generator)
            yield tuple(v.to(self.device) for v in (x0, z_t, t, y))

    def loss(self, model, batch):
        x0, z_t, t, y = batch
        nll = masked.masked_nll(lambda z: model(z, y=y), x0, z_t, self.tok.mask_id)
        return (masked.loss_weight(t) * nll).mean() / x0.shape[1]

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        """The bound on the validation plays' windows, with their genre and without (null label)."""
        from .genre import genre_windows
        x, y = genre_windows("val", self.context, 128)
        out = {}
        for name, label in (("genre", y), ("null", None)):
            r = masked.elbo_bits_per_char(ema_model, x, self.tok.mask_id, self.eval_cfg["repeats"], 64,
                                          torch.Generator().manual_seed(0), progress=False, y=label)
            out[f"val_bpc_elbo_{name}"], out[f"val_bpc_mc_se_{name}"] = r["bpc"], r["mc_se"]
        return out

    @torch.no_grad()
    def validate(self, ema_model) -> dict:
        from .genre import genre_windows
        x, y = genre_windows("val", self.context, 22)
        r = masked.elbo_bits_per_char(ema_model, x, self.tok.mask_id, 2, 66,
                                      torch.Generator().manual_seed(0), progress=False, y=y)
        return {"val_bpc_64": r["bpc"]}


class UniformLMTask(_TextTask):
    """Uniform-noise diffusion LM (UDLM, text.uniform): the masked model's transformer, no mask token.

    Each character is redrawn uniformly among the K characters with probability t (eq. 1 of
    text.uniform); the loss is the continuous-time NELBO (3) there. The transformer keeps the
    tokenizer's vocabulary (K characters + mask) so its shape matches the masked model's, but the
    mask logit is never used.
    """

    causal = False

    def __init__(self, config: dict, device):
        super().__init__(config, device)
        self.K = self.tok.mask_id  # the characters are ids 0..K-1; the mask is id K
        self.architecture = self.architecture.replace("masked diffusion", "uniform-noise diffusion")

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        for x0 in self._windows(generator):
            t = masked.sample_t(x0.shape[0], generator).clamp(max=1.0 - masked.EPS_T)
            z_t = uniform.forward_uniform(x0, t, self.K, generator)
            yield tuple(v.to(self.device) for v in (x0, z_t, t))

    def loss(self, model, batch):
        x0, z_t, t = batch
        return uniform.nelbo_terms(x0, z_t, t, uniform.x_theta(model(z_t), self.K)).mean() / x0.shape[1]

    def _bound(self, model, windows, repeats):
        return uniform.elbo_bits_per_char(model, windows, self.K, repeats, 64, torch.Generator().manual_seed(0),
                                          progress=False)

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        cfg = self.eval_cfg
        r = self._bound(ema_model, eval_windows("val", self.context, cfg["windows"]), cfg["repeats"])
        return {"val_bpc_elbo": r["bpc"], "val_bpc_mc_se": r["mc_se"], "val_chars": r["chars"]}

    @torch.no_grad()
    def validate(self, ema_model) -> dict:
        """A quick point of the learning curve: the bound on 64 validation windows (2 repeats)."""
        return {"val_bpc_64": self._bound(ema_model, eval_windows("val", self.context, 64), 2)["bpc"]}

    def on_checkpoint(self, ema_model, step, out_dir):
        gen = torch.Generator().manual_seed(step)
        z, _ = uniform.sample(ema_model, (1, min(self.context, 200)), self.K, 64, gen, progress=False)
        _write_sample(out_dir, step, self.tok.decode(z[0]))


class GiddLMTask(UniformLMTask):
    """Masking and uniform noise mixed by one parameter p_u (text.gidd, eq. 1): p_u = 0 is the masked model.

    --init may name the masked or the uniform-noise model (same transformer): the settings of p_u are
    then trained briefly from the same start.
    """

    init_tasks = ("diffedu.text.tasks:MaskedLMTask", "diffedu.text.tasks:UniformLMTask")

    def __init__(self, config: dict, device):
        super().__init__(config, device)
        self.p_u = gidd.check_p_u(config.get("p_u", 0.5))
        self.architecture = self.architecture.replace("uniform-noise diffusion",
                                                      f"masked + uniform noise (p_u = {self.p_u:g}) diffusion")

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        for x0 in self._windows(generator):
            t = masked.sample_t(x0.shape[0], generator).clamp(max=1.0 - masked.EPS_T)
            z_t = gidd.forward_noise(x0, t, self.p_u, self.K, generator)
            yield tuple(v.to(self.device) for v in (x0, z_t, t))

    def loss(self, model, batch):
        x0, z_t, t = batch
        return gidd.nelbo_terms(x0, z_t, t, uniform.x_theta(model(z_t), self.K), self.p_u).mean() / x0.shape[1]

    def _bound(self, model, windows, repeats):
        return gidd.elbo_bits_per_char(model, windows, self.p_u, self.K, repeats, 64,
                                       torch.Generator().manual_seed(0), progress=False)

    def on_checkpoint(self, ema_model, step, out_dir):
        gen = torch.Generator().manual_seed(step)
        z, _ = gidd.sample(ema_model, (1, min(self.context, 200)), self.p_u, self.K, 64, gen, progress=False)
        _write_sample(out_dir, step, self.tok.decode(z[0]))


class EmbeddingLMTask(_TextTask):
    """Gaussian diffusion on learned character embeddings with rounding (text.embedding, Diffusion-LM).

    model: the masked model's sizes plus d_emb; self-conditioning on half of the batches (Chen et al. 2022).
    """

    causal = False

    def __init__(self, config: dict, device):
        from .embedding import EmbeddingDenoiser
        cfg = dict(config.get("model", {}))
        if cfg.pop("causal", False):
            raise ValueError("EmbeddingLMTask needs model.causal = false.")
        self.config, self.device = config, torch.device(device)
        self.tok = shakespeare_tokenizer()
        self.context = self.units_per_example = cfg["context"]
        self.batch_size = config.get("batch_size", 32)
        self.model = EmbeddingDenoiser(self.tok.vocab_size, **cfg).to(self.device)
        self.eval_cfg = {**DEFAULT_EVAL, **config.get("eval", {})}
        self.p_self_cond = _validate.probability("p_self_cond", config.get("p_self_cond", 0.5))
        self.architecture = (f"Gaussian diffusion on {cfg.get('d_emb', 16)}-d character embeddings (sqrt schedule, "
                             f"x0-prediction, self-conditioning, rounding), bidirectional pre-norm transformer with "
                             f"RoPE, {cfg['n_layers']} layers, d_model {cfg['d_model']}, context {self.context}")

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        for w in self._windows(generator):
            t = torch.rand(w.shape[0], generator=generator)
            self_cond = bool(torch.rand((), generator=generator) < self.p_self_cond)
            yield w.to(self.device), t.to(self.device), self_cond

    def loss(self, model, batch):
        from .embedding import loss
        w, t, self_cond = batch
        return loss(model, w, t, None, self_cond)[0]  # eps from torch's RNG, which the trainer re-seeds

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        from .embedding import rounding_accuracy
        windows = eval_windows("val", self.context, 64)
        acc = rounding_accuracy(ema_model, windows, (0.1, 0.3, 0.5, 0.7, 0.9), torch.Generator().manual_seed(0))
        return {f"val_rounding_acc_t{t:g}": a for t, a in acc.items()}

    validate = evaluate

    def on_checkpoint(self, ema_model, step, out_dir):
        from .embedding import sample
        ids = sample(ema_model, (1, min(self.context, 200)), 100, torch.Generator().manual_seed(step), progress=False)
        _write_sample(out_dir, step, self.tok.decode(ids[0]))


class CausalLMTask(_TextTask):
    """Autoregressive twin: the same transformer with a causal mask, loss = next-character NLL."""

    causal = True

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        for x0 in self._windows(generator):
            yield x0.to(self.device)

    def loss(self, model, batch):
        return autoregressive.ar_loss(model, batch, self.tok.mask_id)

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        cfg = self.eval_cfg
        windows = eval_windows("val", self.context, cfg["windows"])
        r = autoregressive.ar_bits_per_char(ema_model, windows, self.tok.mask_id, cfg["batch_size"], progress=False)
        return {"val_bpc": r["bpc"], "val_chars": r["chars"]}

    @torch.no_grad()
    def validate(self, ema_model) -> dict:
        """A quick point of the learning curve: exact bits/char on 64 validation windows."""
        windows = eval_windows("val", self.context, 64)
        return {"val_bpc_64": autoregressive.ar_bits_per_char(ema_model, windows, self.tok.mask_id, 64,
                                                              progress=False)["bpc"]}

    def on_checkpoint(self, ema_model, step, out_dir):
        gen = torch.Generator().manual_seed(step)
        _write_sample(out_dir, step, autoregressive.ar_generate(ema_model, self.tok, "", length=min(self.context, 200),
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
    if card["config"].get("task") == "diffedu.text.tasks:EmbeddingLMTask":
        from .embedding import EmbeddingDenoiser
        model = EmbeddingDenoiser(tok.vocab_size, **{k: v for k, v in card["config"]["model"].items() if k != "causal"})
    else:
        model = build_model(card["config"]["model"], tok.vocab_size)
    load_into(model, name)
    model = model.float().to(device or get_device()).eval()
    return model, tok, card


def configs_differ_only_in_task(a: dict, b: dict) -> bool:
    """True when two configs agree everywhere except name, task and model.causal (a fair comparison)."""
    strip = lambda c: json.loads(json.dumps({**c, "name": None, "task": None,
                                             "model": {**c.get("model", {}), "causal": None}}))
    return strip(a) == strip(b)
