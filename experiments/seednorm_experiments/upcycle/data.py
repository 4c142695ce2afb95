"""The upcycling study's text, tokenized with the pretrained model's own tokenizer, and training batches by step.

Adaptation domain (trained on; a held-out part is its evaluation), one of :data:`DOMAINS`:

- ``bible``: the King James Bible, every 10th chapter held out;
- ``folio``: the First Folio in original spelling ("haue", "vpon"), every 8th play held out.

Forgetting domains (never trained on; text the model knew before): ``plays``, held-out Shakespeare plays in modern
spelling, and ``code``, held-out Python standard-library source without docstrings (:mod:`..texts`).

Each split is the texts joined by blank lines, cut to ``max_chars`` (training split) or ``max_chars // 4``
(evaluation splits), tokenized without special tokens. Nothing is cached on disk: tokenizing takes seconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..texts import bible, plays, stdlib

__all__ = ["DOMAINS", "FORGETTING", "Corpus", "eval_domains", "load_corpus", "token_byte_lengths", "train_batch"]

DOMAINS = ("bible", "folio")
FORGETTING = ("plays", "code")


def eval_domains(domain: str) -> tuple[str, ...]:
    """The evaluation domains of a study adapting to ``domain``: it first, then :data:`FORGETTING`."""
    return (domain, *FORGETTING)


@dataclass
class Corpus:
    """Token streams (int64, 1-D) ``tokens["train"]`` and one per evaluation domain, the UTF-8 byte length of every
    token id (for bits per byte), and ``key``: a SHA-256 of the streams (part of every run's fingerprint)."""

    domain: str
    tokens: dict[str, torch.Tensor]
    token_bytes: torch.Tensor
    key: str


def _split(texts: list[str], every: int) -> tuple[list[str], list[str]]:
    """(kept, held out): every ``every``-th text, counting from the 4th, is held out."""
    return ([t for i, t in enumerate(texts) if i % every != 3], [t for i, t in enumerate(texts) if i % every == 3])


def _texts(domain: str, max_chars: int | None) -> dict[str, str]:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose from {', '.join(DOMAINS)}")
    eval_chars = max_chars // 4 if max_chars else None
    _, modern_held, folio = plays()
    train, held = _split(bible(), 10) if domain == "bible" else _split(folio, 8)
    _, code_held, _ = stdlib(eval_chars)
    texts = {"train": (train, max_chars), domain: (held, eval_chars), "plays": (modern_held, eval_chars),
             "code": (code_held, eval_chars)}
    return {k: "\n\n".join(v)[:cap] if cap else "\n\n".join(v) for k, (v, cap) in texts.items()}


def token_byte_lengths(tokenizer: Any) -> torch.Tensor:
    """UTF-8 bytes of every token id of a byte-level BPE tokenizer: the length of its token string, one character
    per byte in the byte-level alphabet. (V,) int64."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return torch.tensor([len(t) for t in tokens], dtype=torch.int64)


def _encode(tokenizer: Any, text: str) -> torch.Tensor:
    chunks = [text[i:i + 100_000] for i in range(0, len(text), 100_000)]
    ids = [i for chunk in tokenizer(chunks, add_special_tokens=False)["input_ids"] for i in chunk]
    return torch.tensor(ids, dtype=torch.int64)


def load_corpus(tokenizer: Any, domain: str = "bible", max_chars: int | None = None) -> Corpus:
    """Every split of the study adapting to ``domain`` (see the module docstring), tokenized with ``tokenizer``."""
    tokens = {name: _encode(tokenizer, text) for name, text in _texts(domain, max_chars).items()}
    h = hashlib.sha256(domain.encode())
    for name in sorted(tokens):
        h.update(name.encode())
        h.update(tokens[name].numpy().tobytes())
    return Corpus(domain, tokens, token_byte_lengths(tokenizer), h.hexdigest())


def train_batch(stream: torch.Tensor, step: int, rank: int, world: int, *, batch_size: int, seq_len: int,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of global batch ``step``: (inputs, targets), each (batch_size/world, seq_len), windows of
    ``stream`` at offsets drawn from a generator seeded by (seed, step) -- a pure function of its arguments, so
    every arm of a seed sees the same data in the same order, and resume and DDP are exact."""
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} must divide evenly over {world} ranks")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(stream) - seq_len - 1, size=batch_size)
    n = batch_size // world
    chunk = torch.stack([stream[s:s + seq_len + 1] for s in starts[rank * n:(rank + 1) * n].tolist()])
    return chunk[:, :-1], chunk[:, 1:]
