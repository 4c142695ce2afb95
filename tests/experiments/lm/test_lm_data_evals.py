"""Offline corpora, batches by step, and the evaluations (bits per byte, cloze) against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seednorm_experiments.lm.data import EVAL_DOMAINS, SPELLING_SHIFT, ZERO_SHOT, domain_label, load_corpus, train_batch
from seednorm_experiments.text_evals import bits_per_byte, cloze_accuracy, cloze_items


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(300, max_chars=20_000)


def test_corpus_domains_and_token_bytes(corpus) -> None:
    assert set(corpus.tokens) == {"train/plays", "train/code", *EVAL_DOMAINS}
    assert all(len(t) > 1000 for t in corpus.tokens.values())
    ids = corpus.tokens["bible"][:500]
    text = corpus.decode(ids.tolist())
    assert "LORD" in text or "God" in text
    assert int(corpus.token_bytes[ids].sum()) == len(text.encode("utf-8"))
    assert '"""' not in corpus.decode(corpus.tokens["train/code"][:3000].tolist())  # docstrings held out
    folio = corpus.decode(corpus.tokens["folio"][:2000].tolist())
    assert any(w in folio for w in ("haue", "vpon", "giue"))  # original spelling


def test_folio_is_a_spelling_shift_not_zero_shot() -> None:
    # most Folio plays are training plays in original spelling: reported apart, never in a zero-shot mean
    assert SPELLING_SHIFT == ("folio",) and "folio" not in ZERO_SHOT
    assert [domain_label(d) for d in ("plays", "folio", "bible")] == [
        "plays (in-domain)", "folio (spelling shift)", "bible (zero-shot)"]
    # the evaluator seeds each domain's cloze set by its position: relabelling must not reorder
    assert EVAL_DOMAINS == ("plays", "code", "folio", "bible", "docstrings")


def test_batches_are_a_function_of_step_and_shard_the_global_batch(corpus) -> None:
    kw = {"batch_size": 4, "seq_len": 16, "seed": 3}
    x, y = train_batch(corpus, 7, 0, 1, **kw)
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x, train_batch(corpus, 7, 0, 1, **kw)[0])
    assert not torch.equal(x, train_batch(corpus, 8, 0, 1, **kw)[0])
    halves = [train_batch(corpus, 7, r, 2, **kw)[0] for r in range(2)]
    assert torch.equal(torch.cat(halves), x)
    with pytest.raises(ValueError, match="divide"):
        train_batch(corpus, 0, 0, 3, **kw)


class Uniform(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*idx.shape, self.vocab) + self.p


def test_bits_per_byte_of_a_uniform_model(corpus) -> None:
    tokens, vocab = corpus.tokens["plays"], corpus.vocab_size
    bpb = bits_per_byte(Uniform(vocab), tokens, corpus.token_bytes, seq_len=15, windows=10)
    starts = torch.linspace(0, len(tokens) - 16, 10).long()
    n_bytes = sum(int(corpus.token_bytes[tokens[s + 1:s + 16]].sum()) for s in starts.tolist())
    assert bpb == pytest.approx(10 * 15 * math.log2(vocab) / n_bytes, rel=1e-6)  # float32 log-softmax


def test_cloze_items_and_accuracy(corpus) -> None:
    tokens = corpus.tokens["bible"]
    ctx, opts = cloze_items(tokens, items=20, context=8, length=4, seed=1)
    assert ctx.shape == (20, 8) and opts.shape == (20, 4, 4)
    i = int(torch.nonzero((tokens.unfold(0, 8, 1) == ctx[0]).all(1))[0])
    assert torch.equal(tokens[i + 8:i + 12], opts[0, 0])  # option 0 continues the context
    assert cloze_accuracy(Uniform(corpus.vocab_size), ctx, opts) == 0.0  # ties never count as correct

