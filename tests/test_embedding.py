"""Gaussian diffusion on character embeddings (diffedu.text.embedding)."""
import pytest
import torch

from diffedu.text import embedding as E

TINY = dict(vocab_size=10, context=16, d_emb=4, d_model=32, n_layers=1, n_heads=2)


def test_sqrt_schedule_adds_noise_fast_then_reaches_pure_noise():
    ab = E.alpha_bar(torch.tensor([0.0, 0.01, 0.1, 0.5, 1.0]))
    assert ab[0] == pytest.approx(0.99) and ab[-1] == 0 and (ab.diff() < 0).all()
    assert 1 - ab[1] > 0.1                                       # 1% of the time, already 10% noise power
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        E.alpha_bar(torch.tensor([1.5]))


def test_q_sample_has_the_marginal_of_eq1():
    x0 = torch.full((20000, 1, 1), 2.0)
    x_t, _ = E.q_sample(x0, torch.full((20000,), 0.3), torch.Generator().manual_seed(0))
    ab = E.alpha_bar(0.3).item()
    assert x_t.mean().item() == pytest.approx(2 * ab ** 0.5, abs=0.02)
    assert x_t.var().item() == pytest.approx(1 - ab, rel=0.03)


def test_a_few_steps_fit_one_batch_and_rounding_improves():
    torch.manual_seed(0)
    model = E.EmbeddingDenoiser(**TINY)
    w = torch.randint(0, 10, (8, 16), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t = torch.full((8,), 0.2)
    first = E.loss(model, w, t, torch.Generator().manual_seed(2))[0].item()
    for k in range(150):
        total, _, _ = E.loss(model, w, t, torch.Generator().manual_seed(3 + k), self_cond=k % 2 == 1)
        opt.zero_grad()
        total.backward()
        opt.step()
    last = E.loss(model, w, t, torch.Generator().manual_seed(2))[0].item()
    assert last < 0.5 * first
    acc = E.rounding_accuracy(model, w, (0.05, 0.2), torch.Generator().manual_seed(4))
    assert acc[0.05] > 0.5 and acc[0.2] > 0.3                    # chance is 0.1


def test_sampler_returns_character_ids():
    model = E.EmbeddingDenoiser(**TINY)
    ids = E.sample(model, (3, 16), steps=5, generator=torch.Generator().manual_seed(0), progress=False)
    assert ids.shape == (3, 16) and ids.dtype == torch.long and 0 <= ids.min() and ids.max() < 10


def test_wrong_embedding_size_or_length_is_one_clear_error():
    model = E.EmbeddingDenoiser(**TINY)
    with pytest.raises(ValueError, match="d_emb = 4"):
        model(torch.zeros(2, 16, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="outside 1..16"):
        model(torch.zeros(2, 17, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="even width"):
        E.EmbeddingDenoiser(**{**TINY, "d_model": 30, "n_heads": 2})


def test_the_embedding_task_trains_with_the_shared_trainer(tmp_path):
    from diffedu.train import Trainer, load_config
    cfg = load_config("configs/text_embed.json")
    tiny = {**cfg, "model": {**cfg["model"], "d_model": 32, "n_layers": 1, "n_heads": 2, "context": 32}, "batch_size": 4}
    trainer = Trainer(tiny, tmp_path / "a")
    b1, b2 = (next(trainer.task.batches(torch.Generator().manual_seed(3))) for _ in range(2))
    assert torch.equal(b1[0], b2[0]) and torch.equal(b1[1], b2[1]) and b1[2] == b2[2]
    assert torch.isfinite(trainer.task.loss(trainer.model, b1))
    metrics = trainer.task.evaluate(trainer.model)
    assert set(metrics) == {f"val_rounding_acc_t{t:g}" for t in (0.1, 0.3, 0.5, 0.7, 0.9)}
    full = Trainer(cfg, tmp_path / "b")
    assert 1.0e6 < full.model.num_parameters() < 2.5e6         # the masked model's size class


def test_the_shipped_embedding_model_loads_and_rounds_clean_embeddings():
    from diffedu.text import embedding, load_pretrained
    from diffedu.text.tokenizer import eval_windows
    model, tok, card = load_pretrained("shakespeare_embed", "cpu")
    assert isinstance(model, embedding.EmbeddingDenoiser) and model.d_emb == card["config"]["model"]["d_emb"]
    w = eval_windows("val", 256, 4)
    with torch.no_grad():
        assert (model.logits(model.embed(w)).argmax(-1) == w).double().mean() > 0.99   # the rounding term's job
    with pytest.raises(ValueError, match="embedding size that does not match"):
        model(torch.zeros(1, 8, model.d_emb + 1), torch.zeros(1))
