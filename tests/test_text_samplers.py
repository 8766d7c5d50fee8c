"""Samplers of the masked diffusion LM and of its autoregressive twin, and their bad inputs."""
import pytest
import torch
import torch.nn as nn

from diffedu.text import autoregressive, samplers as S
from diffedu.text.model import Transformer
from diffedu.text.tokenizer import shakespeare_tokenizer

TOK = shakespeare_tokenizer()
CTX = 32


def tiny(causal=False):
    torch.manual_seed(0)
    return Transformer(TOK.vocab_size, CTX, d_model=32, n_layers=1, n_heads=2, causal=causal).eval()


class Copycat(nn.Module):
    """A 'denoiser' that is certain every character is 'e': the samplers must write only e's."""

    context, causal = CTX, False

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, z):
        self.calls += 1
        out = torch.full((*z.shape, TOK.vocab_size), -30.0)
        out[..., TOK.stoi["e"]] = 30.0
        return out


def test_categorical_sampling_frequencies_and_argmax():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    draws = S.sample_categorical(p.log().expand(100_000, 4), g)
    freq = torch.bincount(draws, minlength=4).double() / draws.numel()
    assert torch.allclose(freq, p, atol=0.01)
    assert torch.equal(S.sample_categorical(p.log().expand(3, 4), g, temperature=0), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("method,kw", [("ancestral", {}), ("remask", {}), ("semi_ar", {"block_length": 8})])
def test_every_sampler_keeps_the_prompt_and_unmasks_everything(method, kw):
    model = Copycat()
    texts, frames = S.generate(model, TOK, "To be", length=16, steps=8, method=method, n_samples=2,
                               trajectory=True, **kw)
    assert texts == ["To be" + "e" * 16] * 2
    order = S.reveal_order(frames, TOK.mask_id)
    assert (order[:, :5] == 0).all() and (order[:, 5:] >= 1).all()
    if method == "semi_ar":  # blocks are filled left to right
        assert order[:, 5:13].max() < order[:, 13:].min()
    if method == "remask":  # two characters per step
        assert torch.equal(torch.bincount(order[0, 5:]), torch.tensor([0] + [2] * 8))


def test_ancestral_skips_network_calls_when_nothing_changes():
    model = Copycat()
    S.generate(model, TOK, "", length=4, steps=200, method="ancestral")
    assert model.calls <= 4  # at most one call per revealed character


def test_infill_keeps_both_sides_and_real_model_runs():
    text = "Now is the winter of our discontent"[:CTX]
    out = S.infill(Copycat(), TOK, text, 7, 13, steps=3)[0]
    assert out == text[:7] + "e" * 6 + text[13:]
    g = torch.Generator().manual_seed(0)
    out = S.infill(tiny(), TOK, text, 7, 13, steps=6, method="remask", generator=g)[0]
    assert out[:7] == text[:7] and out[13:] == text[13:]
    assert "\u2588" not in out and len(out) == len(text)


def test_ar_generate_is_seeded_and_keeps_prompt():
    model = tiny(causal=True)
    a = autoregressive.ar_generate(model, TOK, "ROMEO:", length=20, n_samples=2, generator=torch.Generator().manual_seed(3))
    b = autoregressive.ar_generate(model, TOK, "ROMEO:", length=20, n_samples=2, generator=torch.Generator().manual_seed(3))
    assert a == b and all(t.startswith("ROMEO:") and len(t) == 26 for t in a)
    assert len(autoregressive.ar_generate(model, TOK, "", n_samples=1)[0]) == CTX


def test_bad_inputs():
    model = tiny()
    with pytest.raises(ValueError, match=r"outside the vocabulary: \['ß'\]"):
        S.generate(model, TOK, "Straße", length=4)
    with pytest.raises(ValueError, match="no room"):
        S.generate(model, TOK, "x" * CTX)
    with pytest.raises(ValueError, match="exceeds the context"):
        S.generate(model, TOK, "x" * 20, length=20)
    with pytest.raises(ValueError, match="more than the context"):
        S.infill(model, TOK, "x" * (CTX + 1), 2, 5)
    for steps in (0, -3):
        with pytest.raises(ValueError, match="steps must be a positive int"):
            S.generate(model, TOK, "ab", length=8, steps=steps)
    with pytest.raises(ValueError, match="does not divide the generation length 10"):
        S.generate(model, TOK, "ab", length=10, steps=4, method="semi_ar", block_length=4)
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        S.generate(model, TOK, "ab", length=12, steps=4, method="semi_ar", block_length=4)
    with pytest.raises(ValueError, match="temperature"):
        S.generate(model, TOK, "ab", length=8, temperature=-1.0)
    with pytest.raises(ValueError, match="Unknown method"):
        S.generate(model, TOK, "ab", length=8, method="beam")
    with pytest.raises(ValueError, match="start < end"):
        S.infill(model, TOK, "hello world", 5, 5)
    with pytest.raises(ValueError, match="causal"):
        autoregressive.ar_generate(model, TOK, "ab")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        autoregressive.ar_generate(tiny(causal=True), TOK, "naïve")
    with pytest.raises(ValueError, match="no room"):
        autoregressive.ar_generate(tiny(causal=True), TOK, "y" * 40)


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -1.0, "1"])
def test_a_bad_temperature_is_refused_before_sampling(temperature):
    with pytest.raises((ValueError, TypeError), match="temperature"):
        S.generate(tiny(), TOK, "", length=8, steps=4, temperature=temperature)
    with pytest.raises((ValueError, TypeError), match="temperature"):
        autoregressive.ar_generate(tiny(causal=True), TOK, "", length=8, temperature=temperature)


def test_a_seed_is_not_a_generator():
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        S.generate(tiny(), TOK, "", length=8, steps=4, generator=0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        autoregressive.ar_generate(tiny(causal=True), TOK, "", length=8, generator=123)


def test_token_ids_outside_the_vocabulary_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match=r"token ids must be in 0\.\.84"):
        model(torch.full((1, 4), TOK.vocab_size))
    with pytest.raises(ValueError, match="token ids must be in"):
        model(torch.tensor([[-1, 2, 3]]))


def test_a_batch_size_of_zero_is_refused():
    from diffedu.text import masked
    w = torch.randint(0, TOK.vocab_size - 1, (4, CTX))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        masked.elbo_bits_per_char(tiny(), w, TOK.mask_id, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        autoregressive.ar_bits_per_char(tiny(causal=True), w, TOK.mask_id, batch_size=0)
