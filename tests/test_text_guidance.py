"""Guidance for the masked diffusion LM (lesson 15): labels, equation (2), the genre data, bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from diffedu.text import genre, guidance, samplers
from diffedu.text.model import Transformer
from diffedu.text.tokenizer import shakespeare_tokenizer


def labelled(seed=0, **kw):
    torch.manual_seed(seed)
    return Transformer(vocab_size=7, context=12, d_model=16, n_layers=1, n_heads=2, num_classes=3, **kw).eval()


def test_a_zero_label_embedding_leaves_the_model_unchanged_and_a_trained_one_changes_it():
    m = labelled()
    z = torch.randint(0, 7, (2, 12))
    plain = Transformer(vocab_size=7, context=12, d_model=16, n_layers=1, n_heads=2).eval()
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("label_embed")})
    assert torch.equal(m(z, y=torch.tensor([0, 3])), plain(z))
    with torch.no_grad():
        m.label_embed.weight.normal_()
    assert not torch.allclose(m(z, y=0), m(z, y=None))
    assert torch.equal(m(z, y=None), m(z, y=3))  # None is the null label


@pytest.mark.parametrize("y, error", [(4, ValueError), (-1, ValueError), (torch.tensor([0]), TypeError),
                                      (1.0, TypeError), (torch.tensor([0.0, 1.0]), TypeError)])
def test_bad_labels_raise_one_clear_error(y, error):
    with pytest.raises(error, match="label|y must"):
        labelled()(torch.zeros(2, 12, dtype=torch.long), y=y)


def test_an_unlabelled_model_refuses_a_label():
    m = Transformer(vocab_size=7, context=12, d_model=16, n_layers=1, n_heads=2)
    with pytest.raises(ValueError, match="without labels"):
        m(torch.zeros(1, 12, dtype=torch.long), y=0)
    with pytest.raises(ValueError, match="num_classes"):
        Transformer(vocab_size=7, context=12, d_model=16, n_layers=1, n_heads=2, num_classes=-1)


def test_guided_log_probs_follow_equation_2():
    g = torch.Generator().manual_seed(0)
    lc, lu = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    mask = 6
    for w in (0.0, 1.0, 2.5):
        out = guidance.guided_log_probs(lc, lu, w, mask)
        pc, pu = F.softmax(lc[..., :6], -1), F.softmax(lu[..., :6], -1)
        expect = pu ** (1 - w) * pc ** w
        expect = expect / expect.sum(-1, keepdim=True)
        assert torch.allclose(out[..., :6].exp(), expect, atol=1e-6)
        assert torch.isneginf(out[..., mask]).all()


def test_the_guided_distribution_of_a_three_letter_example_by_hand():
    # p(x) = (1/2, 1/4, 1/4), p(x | y) = (1/4, 1/4, 1/2), w = 2: p_w ~ p(x|y)^2 / p(x) = (1/8, 1/4, 1)
    lu = torch.tensor([0.5, 0.25, 0.25, 0.0]).log()
    lc = torch.tensor([0.25, 0.25, 0.5, 0.0]).log()
    out = guidance.guided_log_probs(lc, lu, 2.0, mask_id=3).exp()
    assert torch.allclose(out, torch.tensor([1 / 8, 1 / 4, 1, 0]) / (11 / 8), atol=1e-7)


def test_guided_denoiser_calls_the_model_once_per_step_and_w_0_and_1_are_the_plain_models():
    m = labelled()
    with torch.no_grad():
        m.label_embed.weight.normal_()
    z = torch.randint(0, 7, (3, 12))
    assert torch.equal(guidance.GuidedDenoiser(m, "history", 0)(z), m(z))
    assert torch.equal(guidance.GuidedDenoiser(m, 1, 1)(z), m(z, y=1))
    d = guidance.GuidedDenoiser(m, "tragedy", 3.0)
    both = m(torch.cat([z, z]), y=torch.tensor([2, 2, 2, 3, 3, 3]))
    assert torch.allclose(d(z), guidance.guided_log_probs(both[:3], both[3:], 3.0, 6), atol=1e-6)
    assert d.calls == 1


def test_guided_sampling_is_seeded_and_fills_every_mask():
    class Tok:
        mask_id, vocab_size = 6, 7
        def encode(self, s): return torch.tensor([int(c) for c in s])
        def decode_batch(self, ids): return ["".join(str(int(i)) for i in row) for row in ids]
    d = guidance.GuidedDenoiser(labelled(), "comedy", 2.0)
    a, b = (samplers.generate(d, Tok(), "01", length=8, steps=4, n_samples=2,
                              generator=torch.Generator().manual_seed(1)) for _ in range(2))
    assert a == b and all("6" not in t and len(t) == 10 for t in a)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(y="romance"), ValueError, "Unknown genre"), (dict(y=3), ValueError, "Unknown genre"),
    (dict(w=-0.5), ValueError, "negative"), (dict(w=float("nan")), TypeError, "finite")])
def test_guided_denoiser_bad_input(kwargs, error, match):
    args = {"y": "comedy", "w": 1.0, **kwargs}
    with pytest.raises(error, match=match):
        guidance.GuidedDenoiser(labelled(), args["y"], args["w"])


def test_guided_denoiser_needs_a_labelled_bidirectional_model():
    with pytest.raises(ValueError, match="labelled"):
        guidance.GuidedDenoiser(Transformer(vocab_size=7, context=12, d_model=16, n_layers=1, n_heads=2), 0, 1.0)
    with pytest.raises(ValueError, match="labels"):
        guidance.GuidedDenoiser(Transformer(vocab_size=7, context=12, d_model=16, n_layers=1, n_heads=2,
                                            num_classes=5), 0, 1.0)


def test_diversity_measures_on_exact_examples():
    assert guidance.unigram_entropy(["abab"]) == pytest.approx(1.0)
    assert guidance.unigram_entropy(["aaaa", "bbcc"]) == pytest.approx(1.5)
    assert guidance.distinct_ngrams(["a b a b", "a b"], 2) == pytest.approx(2 / 4)  # ab ba ab | ab
    assert guidance.distinct_ngrams(["to be or not to be"], 1) == pytest.approx(4 / 6)
    with pytest.raises(TypeError):
        guidance.unigram_entropy("not a list")
    with pytest.raises(ValueError, match="no word 3-grams"):
        guidance.distinct_ngrams(["two words"], 3)


def test_the_folio_labels_36_plays_and_the_split_has_every_genre():
    from diffedu import data
    assert len(genre.PLAY_GENRE) == 36
    assert [sum(g == k for g in genre.PLAY_GENRE.values()) for k in genre.GENRES] == [14, 10, 12]
    plays = set(data.shakespeare_plays("train")) | set(data.shakespeare_plays("val"))
    assert set(genre.PLAY_GENRE) <= plays
    assert plays - set(genre.PLAY_GENRE) == {"pericles", "sonnets", "lovers_complaint", "passionate_pilgrim",
                                              "phoenix_and_the_turtle", "rape_of_lucrece"}
    val = {genre.PLAY_GENRE[p] for p in data.shakespeare_plays("val")}
    assert val == set(genre.GENRES)


def test_genre_windows_come_from_plays_of_their_genre():
    from diffedu import data
    tok = shakespeare_tokenizer()
    x, y = genre.random_genre_windows(6, 40, torch.Generator().manual_seed(0))
    x2, y2 = genre.random_genre_windows(6, 40, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    texts = {g: "\n\n".join(t for p, t in data.shakespeare_plays("train").items() if genre.PLAY_GENRE.get(p) == g)
             for g in genre.GENRES}
    for row, label in zip(tok.decode_batch(x), y.tolist()):
        assert row in texts[genre.GENRES[label]]
    xv, yv = genre.genre_windows("val", 64, 5)
    assert xv.shape == (15, 64) and yv.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    with pytest.raises(ValueError, match="only"):
        genre.genre_windows("val", 64, 10 ** 6)


def test_genre_ids_accept_names_and_valid_ints_only():
    assert [genre.genre_id(g) for g in ("comedy", "history", "tragedy", 2)] == [0, 1, 2, 2]
    for bad in ("Comedy", 3, True, None):
        with pytest.raises(ValueError, match="Unknown genre"):
            genre.genre_id(bad)


def test_the_elbo_of_a_labelled_model_takes_one_label_per_window():
    from diffedu.text import masked
    m = labelled()
    x = torch.randint(0, 6, (4, 12))
    with pytest.raises(ValueError, match="one label per window"):
        masked.elbo_bits_per_char(m, x, 6, y=torch.tensor([0, 1]))
    r = masked.elbo_bits_per_char(m, x, 6, 2, 2, torch.Generator().manual_seed(0), progress=False,
                                  y=torch.tensor([0, 1, 2, 3]))
    assert math.isfinite(r["bpc"])


def test_the_genre_task_warm_starts_from_the_unlabelled_model_and_drops_labels(tmp_path):
    from diffedu.text.tasks import load_text_model
    from diffedu.train import Trainer, load_config
    trainer = Trainer(load_config("configs/text_mdlm_genre.json"), tmp_path / "run")
    trainer.warm_start("shakespeare_mdlm")
    plain, tok, _ = load_text_model("shakespeare_mdlm", "cpu")
    z = genre.genre_windows("val", 256, 1)[0]
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model(z, y=torch.tensor([0, 1, 2])), plain(z))
    x0, z_t, t, y = next(trainer.task.batches(torch.Generator().manual_seed(0)))
    assert y.min() >= 0 and y.max() == 3 and z_t.shape == x0.shape == (32, 256)
    labels = torch.cat([next(trainer.task.batches(torch.Generator().manual_seed(s)))[3] for s in range(20)])
    assert 0.1 < (labels == 3).float().mean() < 0.3  # p_uncond = 0.2
    assert math.isfinite(trainer.task.loss(trainer.model, (x0, z_t, t, y)).item())


def test_the_genre_task_needs_three_labels_and_an_unlabelled_task_no_label_embedding(tmp_path):
    from diffedu.train import Trainer, load_config
    cfg = load_config("configs/text_mdlm_genre.json")
    with pytest.raises(ValueError, match="num_classes = 3"):
        Trainer({**cfg, "model": {**cfg["model"], "num_classes": 2}}, tmp_path / "a")
    with pytest.raises(ValueError, match="p_uncond"):
        Trainer({**cfg, "p_uncond": 1.0}, tmp_path / "b")
    plain = Trainer({**cfg, "task": "diffedu.text.tasks:MaskedLMTask"}, tmp_path / "c")
    with pytest.raises(ValueError, match="num_classes"):  # same task: the model must match exactly
        plain.warm_start("shakespeare_mdlm")
