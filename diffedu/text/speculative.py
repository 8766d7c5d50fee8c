"""Speculative diffusion decoding: the masked diffusion LM drafts, the causal twin verifies.

The twin writes one character per network call. A drafter proposes k characters at once; the
twin scores all k in ONE forward pass and keeps a prefix of them, and the kept text is still an
exact sample of the twin (Leviathan et al. 2023; Christopher et al. 2024 use a diffusion drafter).

The rule. A drafted character x was drawn from q; the target is p (the twin's next-character
distribution). Keep x with probability

    a(x) = min(1, p(x) / q(x))                                                            (1)

and otherwise replace it with a draw from the residual

    r(v) = (p(v) - q(v))_+ / sum_w (p(w) - q(w))_+                                        (2)

Why the output y has law p. Keeping v has probability q(v) a(v) = min(p(v), q(v)); the total
rejection mass is 1 - sum_w min(p(w), q(w)) = sum_w (p(w) - q(w))_+ (as sum p = 1). So

    P(y = v) = min(p(v), q(v)) + sum_w (p(w) - q(w))_+ r(v)
             = min(p(v), q(v)) + (p(v) - q(v))_+ = p(v).                                  (3)

(When p = q nothing is ever rejected and r is not needed.) q(v) = 0 < p(v) is fine: v is never
drafted and comes only from r; p(v) = 0 < q(v) is fine too: a(v) = 0, v is always rejected.

The drafter. The diffusion model starts from z = [prefix c, MASK x k] and runs `draft_steps`
ancestral steps on 1 = t_0 > ... > t_S = 0. From t to s each masked position would unmask with
probability (t - s) / t, the ancestral update of samplers.py (lesson 09, equation (4)); here that
draw decides only HOW MANY characters a step reveals, and they are the leftmost masked ones. Each
revealed character j is drawn from x_theta(z_t)^j at that step's z_t (tempered), and that full
vector is recorded as its draft distribution q_j. With draft_steps = 1 all k are drawn at once;
the drafter sees nothing to the right of its k masks (z ends there, as in `generate`).

Why left to right. The rule is applied position by position along the accepted prefix, so for
character j it needs q_j = the law of x_j given everything the verifier has already seen:

    q_j(v) = P(x_j = v | c, x_1 .. x_{j-1}, counts)                                       (4)

(counts: how many each step revealed, drawn independently of the characters). Then (3) holds
given (c, x_{<j}, counts) and the result p(v | c, x_{<j}) does not depend on the counts, so each
kept character has the twin's conditional law and, by the chain rule, so has the whole text.
With the left-to-right reveal, z_t at the step that reveals j holds c and characters LEFT of j
only, and characters revealed at the same step are drawn independently given z_t; so (4) is
exactly x_theta(z_t)^j, the recorded vector. That is why the drafter reveals left to right:
exactness then holds by construction, whatever the network and the number of steps.

Any other order breaks (4). Say x_2 is revealed first, from q_2 = x_theta(c, M, M)^2, and then
x_1 from q_1(. | x_2). Position 1 is exact, but once x_1 = v is kept, x_2 has the law
P(x_2 | x_1 = v kept) ∝ q_2(x_2) min(q_1(v | x_2), p_1(v)), not q_2: the recorded vector is the
wrong q, and the text is no longer a sample of the twin (the tests show it by enumeration). The
right q_j would be the draft's law of x_j given x_{<j} with every later-revealed character summed
out, which the drafter cannot compute.

The round. Draft n = min(k, characters left); the twin reads [BOS, c, x_1 .. x_n] once and gives
p_1 .. p_{n+1}; apply (1)-(2) left to right, stop at the first rejection (its residual draw is
kept); if all n are kept, draw one bonus character from p_{n+1}. Every round adds >= 1 character.

Glossary: c prefix (prompt + kept text), k draft length, x_j drafted character, q_j its draft
distribution, p_j the twin's distribution for that position, a acceptance probability, r residual.
"""
import torch

from diffedu import _validate

from .masked import subs_log_probs
from .samplers import masked_prompt, sample_categorical


def _distribution(name, d):
    if not torch.is_tensor(d) or not d.dtype.is_floating_point or d.dim() < 1:
        raise TypeError(f"{name} must be a float tensor of probabilities (..., V).")
    d = d.double()
    if bool((d < 0).any()) or not bool(torch.isfinite(d).all()) or bool(((d.sum(-1) - 1).abs() > 1e-6).any()):
        raise ValueError(f"{name} must be probability vectors: entries >= 0 that sum to 1 over the last axis.")
    return d


def acceptance_probability(p, q, x):
    """a(x) = min(1, p(x) / q(x)), equation (1); p, q (..., V), x (...) drawn from q (so q(x) > 0)."""
    p, q = _distribution("p", p), _distribution("q", q)
    if p.shape != q.shape or not torch.is_tensor(x) or x.dtype != torch.long or x.shape != p.shape[:-1]:
        raise ValueError(f"accept_reject needs p and q of one shape (..., V) and x (...) int64, got "
                         f"{tuple(p.shape)}, {tuple(q.shape)} and {tuple(getattr(x, 'shape', ()))}.")
    p_x, q_x = p.gather(-1, x[..., None])[..., 0], q.gather(-1, x[..., None])[..., 0]
    if bool((q_x <= 0).any()):
        raise ValueError("x has probability 0 under q: a drafted character must be drawn from q.")
    return (p_x / q_x).clamp(max=1.0)


def residual(p, q):
    """r = normalize((p - q)_+), equation (2). Where p = q there is no mass left, and r = p is returned
    (it is never used then: equation (1) accepts every draft)."""
    p, q = _distribution("p", p), _distribution("q", q)
    left = (p - q).clamp(min=0.0)
    mass = left.sum(-1, keepdim=True)
    return torch.where(mass > 0, left / mass.clamp(min=1e-300), p)


def accept_reject(p, q, x, generator=None):
    """One speculative decision per drafted character: (y, accepted), both of x's shape (...).

    y = x with probability a(x) of (1), else a draw from r of (2); y ~ p exactly, equation (3).
    Vectorised: each entry of the batch gets its own coin and its own residual draw.
    """
    _validate.generator("generator", generator)
    a = acceptance_probability(p, q, x)
    u = torch.rand(a.shape, generator=generator, dtype=torch.float64).to(a.device)
    accepted = u < a
    from_residual = sample_categorical(residual(p, q).log(), generator)
    return torch.where(accepted, x, from_residual), accepted


def tempered(log_probs, temperature):
    """The distribution that sample_categorical(log_probs, temperature=T) draws from, float64 (..., V):
    softmax(log_probs / T), or one-hot on the argmax for T = 0."""
    log_probs = log_probs.double()
    if temperature == 0:
        return torch.zeros_like(log_probs).scatter_(-1, log_probs.argmax(-1, keepdim=True), 1.0)
    return torch.softmax(log_probs / temperature, dim=-1)


@torch.no_grad()
def draft(drafter, prefix, n, steps, mask_id, generator=None, temperature=1.0):
    """n characters after prefix (B, P), revealed left to right. Returns x (B, n), q (B, n, V), calls.

    q[:, j] is the distribution x[:, j] was drawn from, recorded at the step that revealed it, (4).
    """
    B, P = prefix.shape
    z = torch.cat([prefix, torch.full((B, n), mask_id, dtype=torch.long, device=prefix.device)], dim=1)
    q = torch.zeros(B, n, drafter.vocab_size, dtype=torch.float64, device=prefix.device)
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    calls = 0
    for i in range(steps):
        t, s = times[i].item(), times[i + 1].item()
        masked = z[:, P:] == mask_id                       # always a suffix of the draft
        if not masked.any():
            break
        # 1. how many: each masked position would unmask with probability (t - s) / t, as in ancestral_sample
        coins = torch.rand(masked.shape, generator=generator, dtype=torch.float64).to(z.device)
        count = (masked & (coins < (t - s) / t)).sum(1, keepdim=True)
        # 2. which: the `count` leftmost masked positions
        reveal = masked & (masked.cumsum(1) <= count)
        if not reveal.any():                               # nothing changes: no network call
            continue
        # 3. what: a draw from x_theta(z_t)^j, and that distribution is recorded as q_j
        probs = tempered(subs_log_probs(drafter(z), z, mask_id)[:, P:], temperature)
        calls += 1
        x = sample_categorical(probs.log(), generator)
        q = torch.where(reveal[..., None], probs, q)
        z[:, P:] = torch.where(reveal, x, z[:, P:])
    return z[:, P:], q, calls


@torch.no_grad()
def verify(verifier, prefix, x, mask_id, temperature=1.0, bonus=True):
    """p (B, n + bonus, V): the twin's distributions for the n drafted positions (and the next one),
    from ONE plain forward pass over [BOS, prefix, x] (BOS is [MASK], as in ar_generate)."""
    bos = torch.full((prefix.shape[0], 1), mask_id, dtype=torch.long, device=prefix.device)
    seq = torch.cat([bos, prefix, x], dim=1)
    if not bonus:
        seq = seq[:, :-1]                                  # the last draft's successor is not needed
    logits = verifier(seq)[:, prefix.shape[1]:].float()    # position i predicts character i + 1
    logits[..., mask_id] = -torch.inf                      # [MASK] is never a character
    return tempered(torch.log_softmax(logits, dim=-1), temperature)


def _check_models(drafter, verifier, tok):
    if getattr(drafter, "causal", None) is not False:
        raise ValueError("drafter must be the bidirectional (causal=False) masked diffusion model.")
    if getattr(verifier, "causal", None) is not True:
        raise ValueError("verifier must be the causal (causal=True) twin: it scores the draft left to right.")
    if drafter.vocab_size != verifier.vocab_size or drafter.vocab_size != tok.vocab_size:
        raise ValueError(f"drafter, verifier and tokenizer must share one vocabulary, got sizes "
                         f"{drafter.vocab_size}, {verifier.vocab_size} and {tok.vocab_size}.")
    if drafter.context != verifier.context:
        raise ValueError(f"drafter and verifier must share the context, got {drafter.context} and "
                         f"{verifier.context}.")


@torch.no_grad()
def speculative_generate(drafter_model, verifier_model, tok, prompt, length, k, draft_steps, generator=None,
                         temperature=1.0, n_samples=1):
    """Continue prompt by `length` characters, an exact sample of the twin at `temperature`.

    Returns (texts, stats): stats["accepted"][i] lists, for sample i, the drafted characters kept in
    each round; "drafted" and "kept" count all of them ("acceptance_rate" = kept / drafted);
    "rounds"[i] = the twin's calls for sample i; "verifier_calls" and "drafter_calls" count the
    (batched) forward passes. Rows that have the same prefix length share each call.
    """
    _check_models(drafter_model, verifier_model, tok)
    context = verifier_model.context
    _validate.int_in("k", k, 1, context)
    _validate.positive_int("draft_steps", draft_steps)
    _validate.generator("generator", generator)
    _validate.nonnegative_float("temperature", temperature, " (0 means: always the most likely character)")
    z = masked_prompt(tok, prompt, length, context, n_samples).to(next(verifier_model.parameters()).device)
    total = z.shape[1]
    filled = (z != tok.mask_id).sum(1)                        # characters written so far, per sample
    stats = {"accepted": [[] for _ in range(n_samples)], "drafted": 0, "kept": 0,
             "verifier_calls": 0, "drafter_calls": 0}
    while bool((filled < total).any()):
        P = int(filled[filled < total].min())                # one group: the samples with this prefix length
        rows = (filled == P).nonzero()[:, 0]
        c = z[rows, :P]
        n = min(k, total - P)
        bonus = P + n < total
        # 1. draft n characters with the diffusion model, remembering what each was drawn from
        x, q, calls = draft(drafter_model, c, n, draft_steps, tok.mask_id, generator, temperature)
        # 2. the twin scores the whole draft in one pass
        p = verify(verifier_model, c, x, tok.mask_id, temperature, bonus)
        stats["drafter_calls"] += calls
        stats["verifier_calls"] += 1
        # 3. accept / reject every position; only the run of acceptances from the left counts
        y, accepted = accept_reject(p[:, :n], q, x, generator)
        kept = accepted.long().cumprod(1).sum(1)             # a: drafted characters kept, per sample
        # 4. new text: x_1 .. x_a, then the residual draw y_{a+1}, or (all n kept) a bonus from p_{n+1}
        width = n + 1 if bonus else n                          # characters this round can write
        new = torch.where(torch.arange(n, device=x.device) < kept[:, None], x, y)
        if bonus:
            new = torch.cat([new, sample_categorical(p[:, n].log(), generator)[:, None]], dim=1)
        count = torch.where(kept < n, kept + 1, width)         # a + 1, or all of them
        span = slice(P, P + width)
        z[rows, span] = torch.where(torch.arange(width, device=x.device) < count[:, None], new, z[rows, span])
        filled[rows] += count
        for i, a in zip(rows.tolist(), kept.tolist()):
            stats["accepted"][i].append(a)
        stats["drafted"] += n * len(rows)
        stats["kept"] += int(kept.sum())
    stats["rounds"] = [len(a) for a in stats["accepted"]]
    stats["acceptance_rate"] = stats["kept"] / stats["drafted"]
    return tok.decode_batch(z.cpu()), stats
