"""Character tokenizer with a mask token, and batches from the split-by-play corpus."""
import pytest
import torch

from diffedu import data
from diffedu.text.tokenizer import (MASK_CHAR, CharTokenizer, eval_windows, random_windows,
                                    shakespeare_ids, shakespeare_tokenizer)


def test_vocab_is_corpus_chars_plus_mask():
    tok = shakespeare_tokenizer()
    corpus = data.shakespeare("train") + data.shakespeare("val")
    assert tok.chars == "".join(sorted(set(corpus)))
    assert tok.mask_id == tok.vocab_size - 1 == len(set(corpus))


def test_roundtrip_and_mask_display():
    tok = shakespeare_tokenizer()
    text = "To be, or not to be: that is the question.\n"
    ids = tok.encode(text)
    assert ids.dtype == torch.long and tok.decode(ids) == text
    ids[3] = tok.mask_id
    assert tok.decode(ids)[3] == MASK_CHAR


def test_unknown_characters_are_listed():
    tok = shakespeare_tokenizer()
    with pytest.raises(ValueError, match=r"\['é', '€'\]"):
        tok.encode("café costs 3€")
    with pytest.raises(ValueError, match="reserved"):
        CharTokenizer("ab" + MASK_CHAR)


def test_batches_come_from_the_right_split():
    train, val = shakespeare_ids("train"), shakespeare_ids("val")
    assert train.numel() == len(data.shakespeare("train")) and val.numel() == len(data.shakespeare("val"))
    g = torch.Generator().manual_seed(0)
    x = random_windows(train, 4, 64, g)
    assert x.shape == (4, 64)
    text = data.shakespeare("train")
    tok = shakespeare_tokenizer()
    assert all(tok.decode(row) in text for row in x)
    w = eval_windows("val", 128, max_windows=10)
    assert w.shape == (10, 128) and tok.decode(w[0]) == data.shakespeare("val")[:128]
    with pytest.raises(ValueError, match="split"):
        shakespeare_ids("test")


def test_wrap_keeps_text_and_newlines():
    from diffedu.plot import wrap
    text = "a" * 10 + "\n" + "b" * 3
    assert wrap(text, 4) == "aaaa\naaaa\naa\nbbb"
    assert wrap(text, 4).replace("\n", "") == text.replace("\n", "")
