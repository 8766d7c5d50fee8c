"""Speculative diffusion decoding: the rule by enumeration, exactness end to end, bad inputs."""
import itertools

import pytest
import torch
import torch.nn as nn
from scipy.stats import chisquare

from diffedu.text import autoregressive, speculative as S
from diffedu.text.masked import subs_log_probs
from diffedu.text.model import Transformer
from diffedu.text.tokenizer import CharTokenizer, shakespeare_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

ABC = CharTokenizer("abc")  # 3 characters + [MASK] (id 3)
D = lambda *v: torch.tensor(v, dtype=torch.float64)
PAIRS = [  # (p, q) over 4 ids, the last one [MASK] with probability 0
    (D(0.5, 0.3, 0.2, 0), D(0.2, 0.3, 0.5, 0)),
    (D(0.6, 0.4, 0.0, 0), D(0.0, 0.5, 0.5, 0)),   # q = 0 where p > 0, and p = 0 where q > 0
    (D(0.0, 0.0, 1.0, 0), D(0.9, 0.05, 0.05, 0)),  # p one-hot (greedy target)
    (D(0.25, 0.25, 0.5, 0), D(0.25, 0.25, 0.5, 0)),  # p = q: nothing is rejected
]


def output_law(p, q):
    """P(y = v) by enumeration: sum_x q(x) [a(x) 1{v = x} + (1 - a(x)) r(v)], with the module's a and r."""
    law = torch.zeros_like(p)
    for x in range(p.numel()):
        if q[x] > 0:
            a = S.acceptance_probability(p, q, torch.tensor(x)).item()
            law[x] += q[x] * a
            law += q[x] * (1 - a) * S.residual(p, q)
    return law


@pytest.mark.parametrize("p, q", PAIRS)
def test_the_rule_outputs_exactly_p(p, q):
    """Equation (3): min(p, q) + (p - q)_+ = p."""
    assert torch.allclose(output_law(p, q), p, rtol=0, atol=1e-12)


def test_the_rule_by_monte_carlo():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    for p, q in PAIRS:
        x = S.sample_categorical(q.log().expand(n, 4), g)
        y, accepted = S.accept_reject(p.expand(n, 4), q.expand(n, 4), x, g)
        freq = torch.bincount(y, minlength=4).double() / n
        assert (freq - p).abs().max() < 4e-3  # 4 standard errors of a frequency near 1/2 at n = 200k
        assert abs(accepted.double().mean() - torch.minimum(p, q).sum()) < 4e-3


def test_left_to_right_drafts_are_exact_and_any_order_drafts_are_not():
    """Two drafted characters, enumerated. The recorded q must be the law of x_j given x_{<j} (docstring (4)).
    Left to right: q_1, then q_2(. | x_1): the output law is p_1(y_1) p_2(y_2 | y_1).
    x_2 first: q_2 is x_2's marginal, and once x_1 is kept it is not x_2's law any more: inexact."""
    p1 = D(0.5, 0.5)
    p2 = torch.stack([D(0.7, 0.3), D(0.2, 0.8)])          # p_2(. | y_1)
    cond = torch.stack([D(0.9, 0.1), D(0.1, 0.9)])        # the drafter's second draw given its first

    def law(joint, rec_q1, rec_q2):
        out = torch.zeros(2, 2, dtype=torch.float64)
        for x1, x2 in itertools.product(range(2), repeat=2):
            w, q1, q2 = joint[x1, x2], rec_q1(x1, x2), rec_q2(x1, x2)
            a1 = S.acceptance_probability(p1, q1, torch.tensor(x1)).item()
            out += w * (1 - a1) * S.residual(p1, q1)[:, None] * p2      # rejected: the next round draws y_2 ~ p_2
            a2 = S.acceptance_probability(p2[x1], q2, torch.tensor(x2)).item()
            out[x1, x2] += w * a1 * a2
            out[x1] += w * a1 * (1 - a2) * S.residual(p2[x1], q2)
        return out

    target = p1[:, None] * p2
    q1 = D(0.3, 0.7)
    ltr = law(q1[:, None] * cond, lambda x1, x2: q1, lambda x1, x2: cond[x1])
    assert torch.allclose(ltr, target, rtol=0, atol=1e-12)
    q2 = D(0.3, 0.7)  # x_2 drawn first, then x_1 ~ cond[x_2]
    any_order = law((q2[:, None] * cond).T, lambda x1, x2: cond[x2], lambda x1, x2: q2)
    assert (any_order - target).abs().max() > 0.05


# --- end to end on tiny random models -------------------------------------------------------------

def tiny(causal, seed, layers=1):
    """A random Transformer over 'abc' + [MASK], context 6, with weights scaled up (attention x3) so that
    its distributions are far from uniform and depend on the context."""
    model = Transformer(ABC.vocab_size, 6, d_model=16, n_layers=layers, n_heads=2, causal=causal).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, w in model.named_parameters():
            scale = (3.0 if "attn" in name else 1.0) / (w.shape[-1] ** 0.5 if w.dim() > 1 else 1.0)
            w.copy_(torch.randn(w.shape, generator=g) * scale)
    return model


VERIFIER, DRAFTER = tiny(True, 2), tiny(False, 103)
PREFIX, N = "ab", 20_000
ALL = torch.tensor(list(itertools.product(range(3), repeat=3)))  # the 27 continuations, in base-3 order


def exact_law():
    """The twin's probability of each length-3 continuation of PREFIX, by the chain rule."""
    c = ABC.encode(PREFIX).repeat(len(ALL), 1)
    p = S.verify(VERIFIER, c, ALL, ABC.mask_id, bonus=False)        # (27, 3, V)
    return p.gather(-1, ALL[..., None])[..., 0].prod(1)


def chi_square_pvalue(texts, law):
    ids = torch.tensor([[ABC.stoi[ch] for ch in t[len(PREFIX):]] for t in texts])
    counts = torch.bincount(ids @ torch.tensor([9, 3, 1]), minlength=27).double()
    return chisquare(counts.numpy(), (law * len(texts)).numpy()).pvalue


def test_the_exact_law_is_far_from_uniform_and_the_drafter_disagrees():
    law = exact_law()
    assert abs(law.sum().item() - 1) < 1e-9 and law.min() > 5 / N  # every cell has > 5 expected counts
    assert law.max() > 3 * law.min()
    c = ABC.encode(PREFIX)[None]
    x, q, _ = S.draft(DRAFTER, c, 3, 1, ABC.mask_id, torch.Generator().manual_seed(0))
    p = S.verify(VERIFIER, c, x, ABC.mask_id, bonus=False)
    assert 0.5 * (p[0, 0] - q[0, 0]).abs().sum() > 0.2  # total variation: drafts are often rejected


@pytest.mark.parametrize("k, steps", [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)])
def test_speculative_samples_are_exact_samples_of_the_twin(k, steps):
    g = torch.Generator().manual_seed(k * 10 + steps)
    texts, stats = S.speculative_generate(DRAFTER, VERIFIER, ABC, PREFIX, 3, k, steps, g, n_samples=N)
    assert chi_square_pvalue(texts, exact_law()) > 1e-3
    assert 0.05 < stats["acceptance_rate"] < 0.95  # both branches of the rule are exercised


def test_a_wrong_rule_is_detected(monkeypatch):
    """Accept with min(1, p(x) / u(x)), u uniform, instead of q(x): the same test must fail."""
    right = S.accept_reject

    def wrong(p, q, x, generator=None):
        return right(p, torch.full_like(p, 1.0 / p.shape[-1]), x, generator)

    monkeypatch.setattr(S, "accept_reject", wrong)
    texts, _ = S.speculative_generate(DRAFTER, VERIFIER, ABC, PREFIX, 3, 2, 1, torch.Generator().manual_seed(0),
                                      n_samples=N)
    assert chi_square_pvalue(texts, exact_law()) < 1e-6


class Recorder(nn.Module):
    """The drafter, remembering every input it was called on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.vocab_size, self.seen = model, model.vocab_size, []

    def forward(self, z):
        self.seen.append(z.clone())
        return self.model(z)


def test_draft_reveals_left_to_right_and_records_what_it_drew_from():
    c = ABC.encode("a")[None].repeat(50, 1)
    recorder = Recorder(DRAFTER)
    x, q, calls = S.draft(recorder, c, 4, 3, ABC.mask_id, torch.Generator().manual_seed(1))
    seen = recorder.seen
    assert calls == len(seen) <= 3 and (x != ABC.mask_id).all()
    after = seen[1:] + [torch.cat([c, x], 1)]
    for z, z_next in zip(seen, after):
        masked = (z == ABC.mask_id).long()
        assert torch.equal(masked, masked.cummax(1).values)  # masks form a suffix: each draw sees its left only
        revealed = ((z == ABC.mask_id) & (z_next != ABC.mask_id))[:, 1:]
        want = S.tempered(subs_log_probs(DRAFTER(z), z, ABC.mask_id), 1.0)[:, 1:]
        assert torch.allclose(q[revealed], want[revealed], rtol=0, atol=1e-12)  # q_j = x_theta(z_t)^j


# --- bookkeeping with models that are certain ----------------------------------------------------

class Certain(nn.Module):
    """Puts (almost) all probability on one character, at every position."""

    def __init__(self, char, causal, tok, context=32):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.id, self.causal, self.vocab_size, self.context = tok.stoi[char], causal, tok.vocab_size, context

    def forward(self, z):
        out = torch.full((*z.shape, self.vocab_size), -40.0)
        out[..., self.id] = 40.0
        return out


def test_every_draft_kept_when_drafter_and_twin_agree():
    """length 10, k = 4: each round keeps 4 and adds a bonus, so 2 rounds of 5 characters."""
    tok = shakespeare_tokenizer()
    texts, st = S.speculative_generate(Certain("e", False, tok), Certain("e", True, tok), tok, "To", 10, 4, 1,
                                       n_samples=2)
    assert texts == ["To" + "e" * 10] * 2
    assert st["accepted"] == [[4, 4], [4, 4]] and st["rounds"] == [2, 2] and st["acceptance_rate"] == 1.0
    assert st["verifier_calls"] == 2 and st["drafter_calls"] == 2  # the two samples share each call


def test_every_draft_rejected_when_they_disagree():
    tok = shakespeare_tokenizer()
    texts, st = S.speculative_generate(Certain("e", False, tok), Certain("a", True, tok), tok, "", 5, 3, 2)
    assert texts == ["a" * 5] and st["accepted"] == [[0] * 5] and st["acceptance_rate"] == 0.0
    assert st["drafted"] == 3 + 3 + 3 + 2 + 1  # the draft never runs past the end


@pytest.mark.parametrize("shift", [False, True])
def test_greedy_speculative_decoding_is_greedy_decoding_of_the_twin(shift):
    tok = shakespeare_tokenizer()
    torch.manual_seed(0)
    ar = Transformer(tok.vocab_size, 32, d_model=32, n_layers=1, n_heads=2, causal=True).eval()
    mdlm = Transformer(tok.vocab_size, 32, d_model=32, n_layers=1, n_heads=2, shift=shift).eval()
    want = autoregressive.ar_generate(ar, tok, "ROMEO:", 20, temperature=0)
    for k, steps in [(1, 1), (4, 2), (8, 4)]:
        got, _ = S.speculative_generate(mdlm, ar, tok, "ROMEO:", 20, k, steps, temperature=0)
        assert got == want


# --- bad inputs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, err, words", [
    ({"k": 0}, ValueError, "k must be an int in 1..6"),
    ({"k": 7}, ValueError, "k must be an int in 1..6"),
    ({"k": 2.0}, ValueError, "k must be an int"),
    ({"draft_steps": 0}, ValueError, "draft_steps must be a positive int"),
    ({"temperature": -0.5}, ValueError, "temperature must be >= 0"),
    ({"temperature": float("nan")}, TypeError, "temperature must be a finite number"),
    ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
    ({"drafter_model": VERIFIER}, ValueError, "drafter must be the bidirectional"),
    ({"verifier_model": DRAFTER}, ValueError, "verifier must be the causal"),
    ({"drafter_model": Transformer(5, 6, d_model=16, n_heads=2)}, ValueError, "share one vocabulary"),
    ({"drafter_model": Transformer(4, 8, d_model=16, n_heads=2)}, ValueError, "share the context"),
    ({"tok": CharTokenizer("abcd")}, ValueError, "share one vocabulary"),
    ({"length": 5}, ValueError, "exceeds the context"),
])
def test_bad_inputs_get_one_clear_error(kw, err, words):
    args = dict(drafter_model=DRAFTER, verifier_model=VERIFIER, tok=ABC, prompt=PREFIX, length=3, k=2,
                draft_steps=1, generator=None)
    with pytest.raises(err, match=words):
        S.speculative_generate(**{**args, **kw})


def test_the_rule_refuses_bad_distributions_and_undrawable_drafts():
    p, q = PAIRS[1]
    with pytest.raises(ValueError, match="probability vectors"):
        S.accept_reject(p * 2, q, torch.tensor(1))
    with pytest.raises(ValueError, match="one shape"):
        S.accept_reject(p[:3], q, torch.tensor(1))
    with pytest.raises(ValueError, match="probability 0 under q"):
        S.accept_reject(p, q, torch.tensor(0))
