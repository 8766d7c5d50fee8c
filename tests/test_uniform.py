"""Uniform-noise diffusion (diffedu.text.uniform) against discrete.py and exact answers."""
import math

import pytest
import torch

from diffedu.text import discrete, uniform

K = 3
P = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)       # a one-character "language"
ENTROPY = -(P * P.log()).sum().item()                        # nats


class Constant(torch.nn.Module):
    """A 'network' whose logits do not depend on its input: x_theta = softmax(logits) everywhere."""

    def __init__(self, probs):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.cat([probs.log(), torch.tensor([-1e9], dtype=probs.dtype)]))

    def forward(self, z):
        return self.logits.expand(*z.shape, K + 1)


def table_model(z_t):
    """A fixed, deliberately imperfect x_theta for each z_t: rows of a 3 x 3 table."""
    table = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]], dtype=torch.float64)
    return table[z_t]


def continuous_nelbo(x_theta_of, n_t=40000):
    """E_x E_t E_{z_t} of eq. (3) for one character, t by the midpoint rule, x and z_t enumerated."""
    t = (torch.arange(n_t, dtype=torch.float64) + 0.5) / n_t
    x, i = torch.cartesian_prod(torch.arange(K), torch.arange(K)).T            # the 9 pairs (x, z_t)
    tt, xx, ii = t.repeat_interleave(9), x.repeat(n_t), i.repeat(n_t)
    a = 1 - tt
    q_i = a * (ii == xx) + (1 - a) / K                                          # q(z_t = i | x), eq. (1)
    f = uniform.nelbo_terms(xx[:, None], ii[:, None], tt, x_theta_of(ii)[:, None, :])
    return (P[xx] * q_i * f).sum().item() / n_t


def discrete_nelbo(x_theta_of, T):
    """E_x of the T-step bound: sum_k E_{z_t} KL(q(z_s | z_t, x) || p_theta(z_s | z_t)) with discrete.py."""
    total = 0.0
    for k in range(1, T + 1):
        t, s = k / T, (k - 1) / T
        a_t, a_s = 1 - t, 1 - s
        Q_ts, Qbar_s = discrete.uniform_Q(1 - a_t / a_s, K), discrete.uniform_Qbar(a_s, K)
        for x in range(K):
            q_t = discrete.one_hot(x, K) @ discrete.uniform_Qbar(a_t, K)
            for i in range(K):
                q = discrete.posterior(i, x, Q_ts, Qbar_s)
                p = (discrete.one_hot(i, K) @ Q_ts.T) * (x_theta_of(torch.tensor(i)) @ Qbar_s)
                p = p / p.sum()
                kl = torch.special.xlogy(q, q).sum() - torch.special.xlogy(q, p).sum()
                total += P[x].item() * q_t[i].item() * kl.item()
    return total


def test_forward_marginal_matches_eq1():
    x0 = torch.zeros(4, 20000, dtype=torch.long)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0])
    z = uniform.forward_uniform(x0, t, K, torch.Generator().manual_seed(0))
    for row, tt in zip(z, t):
        want = (1 - tt) * torch.tensor([1.0, 0, 0]) + tt / K
        got = torch.bincount(row, minlength=K).double() / row.numel()
        assert torch.allclose(got, want.double(), atol=0.015)


def test_posterior_matches_discrete_py():
    t, s = 0.6, 0.35
    Q_ts, Qbar_s = discrete.uniform_Q(1 - (1 - t) / (1 - s), K), discrete.uniform_Qbar(1 - s, K)
    for x in range(K):
        for i in range(K):
            got = uniform.posterior_probs(torch.tensor(i), discrete.one_hot(x, K), t, s)
            assert torch.allclose(got, discrete.posterior(i, x, Q_ts, Qbar_s), atol=1e-12)


def test_exact_denoiser_bound_is_the_entropy():
    """With x_theta = p the plug-in reverse step is the exact reverse, so the bound is tight: H(p)."""
    const = lambda i: P.expand(*i.shape, K)
    assert continuous_nelbo(const) == pytest.approx(ENTROPY, rel=2e-3)
    assert discrete_nelbo(const, T=50) == pytest.approx(ENTROPY, rel=1e-9)


def test_continuous_bound_is_the_limit_of_discrete_steps():
    cont = continuous_nelbo(table_model)
    d_200, d_1000 = discrete_nelbo(table_model, 200), discrete_nelbo(table_model, 1000)
    assert cont > ENTROPY + 0.05                                 # an imperfect model pays for it
    assert abs(d_1000 - cont) < abs(d_200 - cont)                # converges with T
    assert d_1000 == pytest.approx(cont, rel=5e-3)


def test_nelbo_terms_vanish_for_a_perfect_prediction():
    x0 = torch.tensor([[0, 1, 2]])
    z_t = torch.tensor([[1, 1, 0]])
    perfect = torch.nn.functional.one_hot(x0, K).double()
    assert uniform.nelbo_terms(x0, z_t, torch.tensor([0.4]), perfect).abs().max() < 1e-12
    assert uniform.nelbo_terms(x0, z_t, torch.tensor([0.4]), torch.full((1, 3, K), 1 / K).double()) > 0


def test_sampler_with_exact_denoiser_draws_p_at_any_step_count():
    z, changed = uniform.sample(Constant(P), (20000, 1), K, steps=4, generator=torch.Generator().manual_seed(1),
                                progress=False)
    freq = torch.bincount(z.flatten(), minlength=K).double() / z.numel()
    assert torch.allclose(freq, P, atol=4 * math.sqrt(0.25 / 20000))
    assert changed.shape == (4,) and changed[-1] > 0              # later steps still rewrite characters


def test_loss_and_bits_per_char_run_on_a_model():
    model = Constant(P.float())
    x0 = torch.randint(0, K, (8, 16), generator=torch.Generator().manual_seed(2))
    loss = uniform.uniform_diffusion_loss(model, x0, K, torch.Generator().manual_seed(3))
    assert torch.isfinite(loss) and loss > 0
    r = uniform.elbo_bits_per_char(model, x0, K, repeats=3, batch_size=4,
                                   generator=torch.Generator().manual_seed(4), progress=False)
    assert r["chars"] == 128 and r["bpc"] > 0 and r["mc_se"] >= 0


@pytest.mark.parametrize("call, err", [
    (lambda: uniform.forward_uniform(torch.tensor([[0, 3]]), torch.tensor([0.5]), K), "outside the K = 3"),
    (lambda: uniform.forward_uniform(torch.tensor([[0, 1]]), torch.tensor([1.5]), K), r"t must lie in \[0"),
    (lambda: uniform.forward_uniform(torch.tensor([[0.0, 1]]), torch.tensor([0.5]), K), "int64"),
    (lambda: uniform.posterior_probs(torch.tensor(0), P, 0.3, 0.5), "Need 0 <= s < t <= 1"),
    (lambda: uniform.x_theta(torch.zeros(2, 2), K), "fewer than the K = 3"),
    (lambda: uniform.sample(Constant(P), (2, 2), K, steps=0), "steps"),
])
def test_bad_input_raises_one_clear_error(call, err):
    with pytest.raises((ValueError, TypeError), match=err):
        call()


def test_the_uniform_task_trains_with_the_shared_trainer(tmp_path):
    import json
    from pathlib import Path

    from diffedu import train
    from diffedu.text.tasks import UniformLMTask

    tiny = {"name": "tiny_udlm", "task": "diffedu.text.tasks:UniformLMTask",
            "model": {"context": 32, "d_model": 32, "n_layers": 1, "n_heads": 2}, "steps": 3, "batch_size": 4,
            "lr": 1e-3, "warmup": 1, "log_every": 1, "ckpt_every": 3, "eval": {"windows": 4, "repeats": 2, "batch_size": 4}}
    task = UniformLMTask(tiny, "cpu")
    assert task.K == 84 and "uniform-noise" in task.architecture
    b1, b2 = (next(task.batches(torch.Generator().manual_seed(5))) for _ in range(2))
    assert all(torch.equal(u, v) for u, v in zip(b1, b2))            # a batch is a function of the generator
    _, z_t, t = b1
    assert z_t.max() < 84 and (t <= 1 - 1e-3).all()                  # no mask token, t away from 1
    loss = task.loss(task.model, b1).item()
    assert 0.5 < loss < 6.0                                           # finite, of the order of ln 84 at init
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny))
    train.main([str(cfg), "--out", str(tmp_path / "run"), "--device", "cpu"])
    steps = [json.loads(l)["step"] for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    root = Path(__file__).resolve().parents[1]
    udlm, scratch = (json.loads((root / f"configs/{n}.json").read_text()) for n in ("text_udlm", "text_mdlm_scratch"))
    assert {k: v for k, v in udlm.items() if k not in ("name", "task", "notes")} == \
           {k: v for k, v in scratch.items() if k not in ("name", "task", "notes")}   # the same budget


class Prefers(torch.nn.Module):
    """x_theta puts 0.9 on target[l] at position l, whatever it reads: the 'right' text is `target`."""

    def __init__(self, target):
        super().__init__()
        self.target = target
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z):
        logits = torch.full((*z.shape, K + 1), -1e9)
        logits[..., :K] = math.log(0.05)
        return logits.scatter(-1, self.target.expand_as(z)[..., None], math.log(0.9))


def test_self_correction_fixes_one_character_per_pass_then_stops():
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    z = torch.stack([target.clone(), target.clone()])
    z[0, [1, 4]] = 0                                    # two typos in the first sequence, one in the second
    z[1, 2] = 1
    fixed, changed = uniform.self_correct(Prefers(target), z, K, steps=4)
    assert torch.equal(fixed, torch.stack([target, target]))
    assert changed.tolist() == [2, 1, 0, 0]
    assert z[0, 1] == 0                                 # the input is left alone
    with pytest.raises(ValueError, match="outside the K = 3"):
        uniform.self_correct(Prefers(target), torch.full((1, 6), K), K, steps=1)
