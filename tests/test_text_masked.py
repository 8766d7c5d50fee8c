"""Masked diffusion: schedule, forward masking, the SUBS loss and the ELBO in bits per character."""
import math

import pytest
import torch
import torch.nn as nn

from diffedu.text import autoregressive, masked
from diffedu.text.tokenizer import eval_windows, shakespeare_ids, shakespeare_tokenizer

TOK = shakespeare_tokenizer()
M = TOK.mask_id


class ContextFree(nn.Module):
    """Predicts the same distribution (logits) at every position, whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits.clone().float())

    def forward(self, z):
        return self.logits.expand(*z.shape, -1)


def unigram_logits():
    counts = torch.bincount(shakespeare_ids("train"), minlength=TOK.vocab_size).double() + 1.0
    counts[M] = 0.0
    return counts.log().float()


def test_antithetic_times_are_evenly_spaced():
    t = masked.sample_t(8, torch.Generator().manual_seed(0))
    gaps = torch.diff(torch.sort(t).values)
    assert torch.allclose(gaps, torch.full_like(gaps, (1 - masked.EPS_T) / 8), atol=1e-6)
    assert t.min() >= masked.EPS_T and t.max() <= 1.0


def test_forward_mask_rate_is_one_minus_alpha():
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(4, 20_000, dtype=torch.long)
    t = torch.tensor([0.1, 0.4, 0.7, 1.0])
    z = masked.forward_mask(x0, t, M, g)
    rate = (z == M).double().mean(1)
    assert torch.allclose(rate, 1 - masked.alpha(t).double(), atol=0.01)
    assert ((z == M) | (z == x0)).all()


def test_subs_zero_mass_on_mask_and_carry_over():
    g = torch.Generator().manual_seed(0)
    z = torch.randint(0, M, (2, 10), generator=g)
    z[:, ::3] = M
    logp = masked.subs_log_probs(torch.randn(2, 10, TOK.vocab_size, generator=g), z, M)
    p = logp.exp()
    assert torch.all(p[..., M] == 0)
    assert torch.allclose(p.sum(-1), torch.ones(2, 10))
    visible = z != M
    assert torch.equal(p[visible].argmax(-1), z[visible]) and torch.all(p[visible].max(-1).values == 1)


def test_loss_ignores_unmasked_positions_and_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    x0 = eval_windows("val", 32, 4)
    z = x0.clone()
    z[:, 5:20] = M
    logits = torch.randn(4, 32, TOK.vocab_size, generator=g)
    model = lambda inp: logits
    nll = masked.masked_nll(model, x0, z, M)
    lp = torch.log_softmax(logits[..., :M], -1)  # mask column removed = zero probability on it
    hand = -lp[:, 5:20].gather(-1, x0[:, 5:20, None]).squeeze(-1).sum(1)
    assert torch.allclose(nll, hand, atol=1e-5)
    logits2 = logits.clone()
    logits2[:, :5] = torch.randn(4, 5, TOK.vocab_size, generator=g)  # change visible positions only
    assert torch.allclose(masked.masked_nll(lambda inp: logits2, x0, z, M), nll)


def test_elbo_is_exact_for_a_context_free_model_and_decreases_for_a_better_one():
    """A model that ignores its input has NELBO = its exact NLL (E[1{masked}/t] = 1 per position)."""
    windows = eval_windows("val", 64, 64)
    results = {}
    for name, logits in [("uniform", torch.zeros(TOK.vocab_size)), ("unigram", unigram_logits())]:
        model = ContextFree(logits)
        r = masked.elbo_bits_per_char(model, windows, M, repeats=8, generator=torch.Generator().manual_seed(1),
                                      progress=False)
        lp = torch.log_softmax(logits.double()[:M], -1)
        exact = -lp[windows].mean().item() / math.log(2)
        assert abs(r["bpc"] - exact) < 5 * r["mc_se"] + 0.01 * exact, (name, r, exact)
        results[name] = r["bpc"]
    assert results["uniform"] == pytest.approx(math.log2(M), rel=0.05)
    assert results["unigram"] < results["uniform"] - 1.0


def test_training_loss_decreases_with_a_few_steps():
    torch.manual_seed(0)
    model = ContextFree(torch.zeros(TOK.vocab_size))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    x0 = eval_windows("val", 64, 32)
    first = masked.masked_diffusion_loss(model, x0, M, g).item()
    for _ in range(30):
        loss = masked.masked_diffusion_loss(model, x0, M, g)
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < first - 0.3


def test_ar_bpc_of_context_free_model_is_exact():
    windows = eval_windows("val", 64, 16)
    logits = unigram_logits()
    r = autoregressive.ar_bits_per_char(ContextFree(logits), windows, M, progress=False)
    exact = -torch.log_softmax(logits.double()[:M], -1)[windows].mean().item() / math.log(2)
    assert r["bpc"] == pytest.approx(exact, rel=1e-5)


def test_bad_inputs():
    x0 = eval_windows("val", 16, 2)
    with pytest.raises(ValueError, match="mask token"):
        masked.masked_diffusion_loss(lambda z: None, torch.full_like(x0, M), M)
    with pytest.raises(ValueError, match="repeats"):
        masked.elbo_bits_per_char(ContextFree(torch.zeros(TOK.vocab_size)), x0, M, repeats=1)


def test_span_bound_with_hidden_context_is_exact_for_context_free_model():
    windows = eval_windows("val", 64, 32)
    span = torch.zeros(64, dtype=torch.bool)
    span[20:36] = True
    hidden = torch.zeros(64, dtype=torch.bool)
    hidden[36:] = True
    logits = unigram_logits()
    r = masked.elbo_bits_per_char(ContextFree(logits), windows, M, repeats=8, progress=False,
                                  generator=torch.Generator().manual_seed(2), maskable=span, hidden=hidden)
    exact = -torch.log_softmax(logits.double()[:M], -1)[windows[:, 20:36]].mean().item() / math.log(2)
    assert r["chars"] == 32 * 16 and abs(r["bpc"] - exact) < 5 * r["mc_se"] + 0.01
    z = masked.forward_mask(windows, torch.full((32,), 0.5), M, torch.Generator().manual_seed(0), span, hidden)
    assert (z[:, 36:] == M).all() and (z[:, :20] == windows[:, :20]).all()
    with pytest.raises(ValueError, match="hidden"):
        masked.elbo_bits_per_char(ContextFree(logits), windows, M, maskable=span, hidden=span)


def test_one_char_bits_equals_single_position_elbo():
    torch.manual_seed(0)
    from diffedu.text.model import Transformer
    model = Transformer(TOK.vocab_size, 32, d_model=32, n_layers=1, n_heads=2).eval()
    windows = eval_windows("val", 32, 16)
    span = torch.zeros(32, dtype=torch.bool)
    span[10] = True
    exact = masked.one_char_bits(model, windows, M, 10)
    r = masked.elbo_bits_per_char(model, windows, M, repeats=64, batch_size=16, progress=False,
                                  generator=torch.Generator().manual_seed(0), maskable=span)
    assert abs(r["bpc"] - exact) < 5 * r["mc_se"]
    with pytest.raises(ValueError, match="position"):
        masked.one_char_bits(model, windows, M, 32)
