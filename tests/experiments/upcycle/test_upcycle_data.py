"""The study's text with the model's tokenizer: held-out splits, bytes per token, batches by step."""

from __future__ import annotations

import pytest
import torch

from seednorm_experiments.upcycle.data import _split, eval_domains, load_corpus, train_batch
from seednorm_experiments.upcycle.pretrained import load_tokenizer


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(load_tokenizer(), "bible", max_chars=40_000)


def test_every_tenth_text_from_the_fourth_is_held_out() -> None:
    kept, held = _split([str(i) for i in range(25)], 10)
    assert held == ["3", "13", "23"] and len(kept) == 22 and not set(kept) & set(held)


def test_splits_and_bytes_per_token(corpus) -> None:
    tok = load_tokenizer()
    assert set(corpus.tokens) == {"train", *eval_domains("bible")} and eval_domains("bible")[0] == "bible"
    assert tok.decode(corpus.tokens["bible"][:12].tolist()).startswith("Genesis 4\n")  # chapter index 3 held out
    assert "Genesis 4\n" not in tok.decode(corpus.tokens["train"][:20_000].tolist())
    for name, stream in corpus.tokens.items():
        ids = stream[:400].tolist()
        assert int(corpus.token_bytes[ids].sum()) == len(tok.decode(ids).encode("utf-8")), name
    assert len(corpus.key) == 64


def test_folio_is_original_spelling() -> None:
    folio = load_corpus(load_tokenizer(), "folio", max_chars=40_000)
    text = load_tokenizer().decode(folio.tokens["folio"][:3000].tolist())
    assert any(w in text for w in ("haue", "vpon", "giue"))
    with pytest.raises(ValueError, match="unknown domain"):
        load_corpus(load_tokenizer(), "news")


def test_batches_are_a_function_of_step_and_shard_the_global_batch() -> None:
    stream = torch.arange(1000)
    kw = {"batch_size": 4, "seq_len": 8, "seed": 3}
    x, y = train_batch(stream, 5, 0, 1, **kw)
    assert x.shape == (4, 8) and torch.equal(y, x + 1)  # windows of a counting stream: targets shifted by one
    assert torch.equal(x, train_batch(stream, 5, 0, 1, **kw)[0])
    assert not torch.equal(x, train_batch(stream, 6, 0, 1, **kw)[0])
    assert torch.equal(torch.cat([train_batch(stream, 5, r, 2, **kw)[0] for r in range(2)]), x)
    with pytest.raises(ValueError, match="divide"):
        train_batch(stream, 0, 0, 3, **kw)
