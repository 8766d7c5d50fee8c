"""The two training tasks plug into the generic trainer and differ only in the causal flag."""
import json
from pathlib import Path

import pytest
import torch

from diffedu.text import autoregressive, masked
from diffedu.text.tasks import CausalLMTask, MaskedLMTask, configs_differ_only_in_task
from diffedu.text.tokenizer import eval_windows

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "model": {"context": 32, "d_model": 32, "n_layers": 1, "n_heads": 2},
        "batch_size": 4, "eval": {"windows": 4, "repeats": 2, "batch_size": 4}}


@pytest.mark.parametrize("size", ["", "_gpu"])
def test_shipped_configs_differ_only_in_mask_vs_causal(size):
    mdlm = json.loads((ROOT / f"configs/text_mdlm{size}.json").read_text())
    ar = json.loads((ROOT / f"configs/text_ar{size}.json").read_text())
    assert mdlm["model"]["causal"] is False and ar["model"]["causal"] is True
    assert configs_differ_only_in_task(mdlm, ar)
    for cfg in (mdlm, ar):
        task = {"MaskedLMTask": MaskedLMTask, "CausalLMTask": CausalLMTask}[cfg["task"].split(":")[1]]
        n = task(cfg, "cpu").model.num_parameters()
        assert (5e6 <= n <= 10e6) if size else (1e6 <= n <= 2.5e6), n


def test_batches_are_a_function_of_the_generator_and_losses_are_finite():
    for Task in (MaskedLMTask, CausalLMTask):
        task = Task(TINY, "cpu")
        b1 = next(task.batches(torch.Generator().manual_seed(5)))
        b2 = next(task.batches(torch.Generator().manual_seed(5)))
        for u, v in zip(b1 if isinstance(b1, tuple) else [b1], b2 if isinstance(b2, tuple) else [b2]):
            assert (u is None and v is None) or torch.equal(u, v)
        loss = task.loss(task.model, b1)
        assert loss.ndim == 0 and torch.isfinite(loss) and 3.0 < loss.item() < 6.0  # near ln(84) at init
        metrics = task.evaluate(task.model)
        assert all(v > 0 for v in metrics.values())


def test_wrong_causal_flag_is_refused():
    with pytest.raises(ValueError, match="causal"):
        MaskedLMTask({**TINY, "model": {**TINY["model"], "causal": True}}, "cpu")


def test_span_scores_count_only_the_span():
    task = CausalLMTask(TINY, "cpu")
    w = eval_windows("val", 32, 4)
    span = torch.zeros(32, dtype=torch.bool)
    span[10:20] = True
    full = autoregressive.ar_nll(task.model, w, 84).detach()
    got = autoregressive.ar_bits_per_char(task.model, w, 84, score=span, progress=False)
    assert got["chars"] == 40
    assert got["bpc"] == pytest.approx(full[:, 10:20].mean().item() / masked.LN2, rel=1e-5)
    z = masked.forward_mask(w, torch.ones(4), 84, torch.Generator().manual_seed(0), maskable=span)
    assert ((z == 84) == span.expand(4, 32)).all()  # at t = 1 exactly the span is masked


def test_adapted_model_starts_as_the_twin():
    """shift + a causal attention mask: the diffusion model's logits at l are the twin's at l (same weights)."""
    twin = CausalLMTask(TINY, "cpu").model.eval()
    cfg = {**TINY, "model": {**TINY["model"], "shift": True}, "adapt": {"anneal_steps": 10}}
    task = MaskedLMTask(cfg, "cpu")
    task.model.load_state_dict(twin.state_dict())
    task.model.eval()
    x = eval_windows("val", 32, 3)
    causal = torch.ones(33, 33, dtype=torch.bool).tril()
    with torch.no_grad():
        torch.testing.assert_close(task.model(x, attn_mask=causal), twin(autoregressive.ar_inputs(x, 84)))


def test_attention_opens_from_causal_to_full():
    cfg = {**TINY, "model": {**TINY["model"], "shift": True}, "adapt": {"anneal_steps": 4}}
    task = MaskedLMTask(cfg, "cpu")
    g = torch.Generator().manual_seed(0)
    allowed = []
    for step in range(5):
        task.set_step(step)
        mask = task.attention_mask(g)
        allowed.append(1.0 if mask is None else mask.float().mean().item())
        if mask is not None:
            assert mask[torch.ones(33, 33, dtype=torch.bool).tril()].all()  # the causal part is always open
    assert allowed == sorted(allowed) and allowed[-1] == 1.0 and allowed[0] < 0.7
    task.set_step(1)
    batch = next(task.batches(torch.Generator().manual_seed(1)))
    assert batch[3].shape == (33, 33) and torch.isfinite(task.loss(task.model, batch))


def test_adapt_settings_are_checked():
    with pytest.raises(ValueError, match="needs model.shift = true"):
        MaskedLMTask({**TINY, "adapt": {"anneal_steps": 4}}, "cpu")
    with pytest.raises(ValueError, match="'adapt' must be"):
        MaskedLMTask({**TINY, "model": {**TINY["model"], "shift": True}, "adapt": {"anneal_steps": -1}}, "cpu")
    with pytest.raises(ValueError, match="shift=True is for a bidirectional model"):
        CausalLMTask({**TINY, "model": {**TINY["model"], "shift": True}}, "cpu")


def test_a_text_run_logs_a_learning_curve_and_ships_it(tmp_path, monkeypatch):
    from diffedu import train
    (tmp_path / "assets" / "checkpoints").mkdir(parents=True)
    (tmp_path / "assets" / "data").symlink_to(ROOT / "assets" / "data")
    monkeypatch.setenv("DIFFEDU_ASSETS", str(tmp_path / "assets"))
    cfg = {**TINY, "name": "tiny_ar", "task": "diffedu.text.tasks:CausalLMTask", "steps": 4, "eval_every": 2,
           "log_every": 1, "ckpt_every": 4, "warmup": 1, "model": {**TINY["model"], "causal": True}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    train.main([str(path), "--out", str(tmp_path / "run"), "--device", "cpu", "--ship"])
    card = json.loads((tmp_path / "assets" / "checkpoints" / "tiny_ar.json").read_text())
    curve = card["runs"][-1]["curve"]
    assert [p["step"] for p in curve] == [2, 4] and [p["characters"] for p in curve] == [2 * 4 * 32, 4 * 4 * 32]
    assert all(2.0 < p["val_bpc_64"] < 8.0 for p in curve)
    assert card["totals"]["characters"] == 4 * 4 * 32
