"""Genres for free: the First Folio's comedies, histories and tragedies, and a classifier to judge them.

The First Folio (1623) sorts Shakespeare's plays into three groups, and its table of contents
gives a label to every play in it. The course corpus keeps each play apart, so every training
window inherits its play's label at no cost:

    comedy    14 plays (12 train, val: twelfth_night, winters_tale)
    history   10 plays ( 9 train, val: richard_ii)
    tragedy   12 plays (11 train, val: macbeth)  -- the Folio counts cymbeline and troilus here

Pericles and the poems are not in the Folio: they carry no genre and are left out of the
labelled windows (lesson 15 trains on the 32 labelled training plays).

The judge of lesson 15 is a plain bag-of-words logistic regression (scikit-learn: tf-idf of the
lower-cased words, then a linear softmax over the three genres). It is trained on random windows
of the training plays and scored on windows of the validation plays, which it never saw. It is
retrained in about a second from the same seed, so nothing is pickled.
"""
from functools import lru_cache

import torch

from .tokenizer import shakespeare_tokenizer

GENRES = ("comedy", "history", "tragedy")

_FOLIO = {
    "comedy": ("tempest", "two_gentlemen_of_verona", "merry_wives_of_windsor", "measure_for_measure",
               "comedy_of_errors", "much_ado_about_nothing", "loves_labours_lost", "midsummer_nights_dream",
               "merchant_of_venice", "as_you_like_it", "taming_of_the_shrew", "alls_well_that_ends_well",
               "twelfth_night", "winters_tale"),
    "history": ("john", "richard_ii", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
                "henry_vi_part_2", "henry_vi_part_3", "richard_iii", "henry_viii"),
    "tragedy": ("troilus_and_cressida", "coriolanus", "tragedy_of_titus_andronicus", "romeo_and_juliet",
                "timon_of_athens", "julius_caesar", "macbeth", "hamlet", "lear", "othello",
                "antony_and_cleopatra", "cymbeline"),
}
PLAY_GENRE = {play: genre for genre, plays in _FOLIO.items() for play in plays}


def genre_id(genre) -> int:
    """The label of a genre name ('comedy' -> 0, 'history' -> 1, 'tragedy' -> 2); ints pass if valid."""
    if isinstance(genre, int) and not isinstance(genre, bool) and 0 <= genre < len(GENRES):
        return genre
    if genre not in GENRES:
        raise ValueError(f"Unknown genre {genre!r}: the model was trained with the labels {GENRES} "
                         f"(or 0..{len(GENRES) - 1}).")
    return GENRES.index(genre)


@lru_cache(maxsize=2)
def genre_ids(split: str = "train") -> tuple:
    """One id tensor per genre: the split's plays of that genre joined by a blank line."""
    from diffedu import data
    tok = shakespeare_tokenizer()
    plays = data.shakespeare_plays(split)
    return tuple(tok.encode("\n\n".join(text for play, text in plays.items() if PLAY_GENRE.get(play) == g))
                 for g in GENRES)


def random_genre_windows(batch_size: int, context: int, generator=None, split: str = "train"):
    """(x (B, context), y (B,)): a genre drawn uniformly for each row, then a random window of it."""
    ids = genre_ids(split)
    y = torch.randint(0, len(GENRES), (batch_size,), generator=generator)
    starts = (torch.rand(batch_size, generator=generator, dtype=torch.float64)
              * torch.tensor([ids[g].numel() - context + 1 for g in y.tolist()], dtype=torch.float64)).long()
    x = torch.stack([ids[g][s:s + context] for g, s in zip(y.tolist(), starts.tolist())])
    return x, y


def genre_windows(split: str, context: int, per_genre: int):
    """(x (3 n, context), y (3 n,)): n non-overlapping windows per genre, spread evenly over its plays."""
    xs, ys = [], []
    for g, ids in enumerate(genre_ids(split)):
        n = ids.numel() // context
        if per_genre > n:
            raise ValueError(f"per_genre={per_genre}: the {split} {GENRES[g]} plays have only {n} windows "
                             f"of {context} characters.")
        pick = torch.linspace(0, n - 1, per_genre).round().long()
        xs.append(ids[: n * context].view(n, context)[pick])
        ys.append(torch.full((per_genre,), g, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


class GenreClassifier:
    """Logistic regression on the tf-idf of a window's words: predict(texts) -> genre ids (0, 1, 2)."""

    def __init__(self, context: int = 256, per_genre: int = 2000, seed: int = 0):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        self.context = context
        g = torch.Generator().manual_seed(seed)
        x, y = random_genre_windows(per_genre * len(GENRES), context, g)
        self.vectorizer = TfidfVectorizer(analyzer="word", lowercase=True, sublinear_tf=True)
        features = self.vectorizer.fit_transform(shakespeare_tokenizer().decode_batch(x))
        self.clf = LogisticRegression(C=3.0, max_iter=2000).fit(features, y.numpy())

    def predict_proba(self, texts) -> torch.Tensor:
        """(N, 3) probabilities of comedy, history, tragedy for N strings."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("predict_proba expects a list of strings.")
        return torch.from_numpy(self.clf.predict_proba(self.vectorizer.transform(list(texts)))).float()

    def predict(self, texts) -> torch.Tensor:
        return self.predict_proba(texts).argmax(-1)

    def accuracy(self, texts, labels) -> float:
        return (self.predict(texts) == torch.as_tensor(labels)).float().mean().item()


@lru_cache(maxsize=2)
def genre_classifier(context: int = 256, seed: int = 0) -> GenreClassifier:
    """The course's judge (trained once per process, a few seconds, the same every time)."""
    return GenreClassifier(context=context, seed=seed)
