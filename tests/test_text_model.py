"""The bidirectional transformer and its causal twin come from the same code."""
import pytest
import torch

from diffedu.text.autoregressive import ar_inputs
from diffedu.text.model import Transformer

V, L = 12, 16


def twins():
    torch.manual_seed(0)
    a = Transformer(V, L, d_model=32, n_layers=2, n_heads=2, causal=False)
    b = Transformer(V, L, d_model=32, n_layers=2, n_heads=2, causal=True)
    b.load_state_dict(a.state_dict())
    return a.eval(), b.eval()


def test_same_parameters_different_attention():
    bi, causal = twins()
    assert bi.num_parameters() == causal.num_parameters()
    x = torch.randint(0, V, (2, L))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % V  # change only the last token
    with torch.no_grad():
        dc = (causal(x) - causal(y))[:, :-1].abs().max()
        db = (bi(x) - bi(y))[:, :-1].abs().max()
    assert dc < 1e-6  # the causal model cannot see the future
    assert db > 1e-4  # the bidirectional model can


def test_kv_cache_matches_full_forward():
    _, causal = twins()
    x = ar_inputs(torch.randint(0, V - 1, (3, L)), V - 1)
    with torch.no_grad():
        full = causal(x)
        caches = [{} for _ in causal.blocks]
        steps = [causal.decode_step(x[:, :4], caches, 0)]
        steps += [causal.decode_step(x[:, i:i + 1], caches, i) for i in range(4, L)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_rope_scores_depend_on_relative_position_only():
    from diffedu.text.model import apply_rope, rope_tables
    rot = rope_tables(32, 8)
    q, k = torch.randn(8), torch.randn(8)
    def score(m, n):
        qm = apply_rope(q.view(1, 1, 8).expand(1, 32, 8), rot)[0, m]
        kn = apply_rope(k.view(1, 1, 8).expand(1, 32, 8), rot)[0, n]
        return (qm * kn).sum()
    assert torch.allclose(score(3, 7), score(20, 24), atol=1e-5)


def test_bad_inputs():
    m = Transformer(V, L, d_model=32, n_layers=1, n_heads=2)
    with pytest.raises(ValueError, match="context"):
        m(torch.zeros(1, L + 1, dtype=torch.long))
    with pytest.raises(TypeError, match="int64"):
        m(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="heads"):
        Transformer(V, L, d_model=30, n_layers=1, n_heads=4)
