"""Characters as tokens, plus one extra token: the mask.

The vocabulary is every character that occurs in the shipped Shakespeare corpus (train and
validation plays), sorted, followed by the mask token that absorbing diffusion needs:

    ids 0 .. V-2   the characters  ('\\n', ' ', '!', ..., 'z', ...)
    id  V-1        [MASK]          (printed as MASK_CHAR)

The autoregressive twin uses the same vocabulary and reuses [MASK] as its start-of-text symbol,
so both models assign probabilities to exactly the same L characters of a window.

Batches are random windows of `context` characters cut from the corpus of one split; the split
is by play, so validation text is never seen in training.
"""
from functools import lru_cache

import torch

MASK_CHAR = "\u2588"  # a full block: easy to see in printed samples, never in the corpus


class CharTokenizer:
    """encode(str) -> LongTensor of ids; decode(ids) -> str. The last id is the mask token."""

    def __init__(self, chars):
        if not isinstance(chars, str) or len(chars) == 0:
            raise TypeError("CharTokenizer needs a non-empty string of the characters in the vocabulary.")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: the vocabulary characters must be distinct.")
        if MASK_CHAR in chars:
            raise ValueError(f"CharTokenizer: {MASK_CHAR!r} is reserved for the mask token.")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.mask_id = len(chars)
        self.vocab_size = len(chars) + 1

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    def __repr__(self):
        return f"CharTokenizer({len(self.chars)} characters + mask, mask_id={self.mask_id})"

    def encode(self, text: str) -> torch.Tensor:
        """Ids of the characters of text; ValueError naming every character not in the vocabulary."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}.")
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            raise ValueError(f"Text contains {len(unknown)} character(s) outside the vocabulary: "
                             f"{unknown}. Use only characters from the Shakespeare corpus "
                             f"(tokenizer.chars).")
        return torch.tensor([self.stoi[c] for c in text], dtype=torch.long)

    def decode(self, ids, mask: str = MASK_CHAR) -> str:
        """Text of a 1-D sequence of ids; the mask token prints as `mask`."""
        if torch.is_tensor(ids):
            if ids.dim() != 1:
                raise ValueError(f"decode expects a 1-D sequence of ids, got shape {tuple(ids.shape)}; "
                                 "use decode_batch for a batch.")
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= int(i) < self.vocab_size:
                raise ValueError(f"decode: id {i} is outside the vocabulary 0..{self.vocab_size - 1}.")
            out.append(mask if int(i) == self.mask_id else self.chars[int(i)])
        return "".join(out)

    def decode_batch(self, ids, mask: str = MASK_CHAR) -> list:
        return [self.decode(row, mask) for row in ids]


@lru_cache(maxsize=1)
def shakespeare_tokenizer() -> CharTokenizer:
    """The course tokenizer: every character of the shipped corpus (all plays) + [MASK]."""
    from diffedu import data
    text = data.shakespeare("train") + data.shakespeare("val")
    return CharTokenizer.from_text(text)


@lru_cache(maxsize=2)
def shakespeare_ids(split: str = "train") -> torch.Tensor:
    """The whole split as one int64 tensor of ids (plays joined by diffedu.data.shakespeare)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    from diffedu import data
    return shakespeare_tokenizer().encode(data.shakespeare(split))


def random_windows(ids: torch.Tensor, batch_size: int, context: int, generator=None) -> torch.Tensor:
    """(batch_size, context) windows starting at uniformly random offsets of ids."""
    if not isinstance(batch_size, int) or batch_size < 1 or not isinstance(context, int) or context < 1:
        raise ValueError(f"batch_size and context must be positive ints, got {batch_size!r}, {context!r}.")
    if ids.numel() <= context:
        raise ValueError(f"Text of {ids.numel()} characters is too short for windows of {context}.")
    starts = torch.randint(0, ids.numel() - context + 1, (batch_size,), generator=generator)
    return ids[starts[:, None] + torch.arange(context)]


def batch_iterator(split: str, batch_size: int, context: int, generator=None):
    """Infinite iterator of random training windows from one split of the corpus."""
    ids = shakespeare_ids(split)
    while True:
        yield random_windows(ids, batch_size, context, generator)


def eval_windows(split: str, context: int, max_windows=None) -> torch.Tensor:
    """Non-overlapping windows (N, context) tiling the split from its start (the tail is dropped).

    With max_windows, N windows spread evenly over the whole split (every play is represented).
    """
    ids = shakespeare_ids(split)
    n = ids.numel() // context
    windows = ids[: n * context].view(n, context)
    if max_windows is not None and max_windows < n:
        pick = torch.linspace(0, n - 1, max_windows).round().long()
        windows = windows[pick]
    return windows
