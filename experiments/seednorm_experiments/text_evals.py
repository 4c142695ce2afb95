"""Evaluations of a language model on one token stream: bits per byte and a multiple-choice cloze task.

- :func:`bits_per_byte`: Σ −log₂ p(token) over non-overlapping windows, divided by the UTF-8 bytes
  those tokens spell -- independent of the tokenizer, so domains and vocabularies compare.
- :func:`cloze_items` / :func:`cloze_accuracy`: our small analogue of ARC/HellaSwag/PIQA. Each item is
  a context of ``context`` tokens from the domain and ``choices`` continuations of ``length`` tokens:
  the true one and distractors cut from other random places of the same domain. The model picks the
  continuation with the highest total log-probability given the context; chance is 1/choices.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["bits_per_byte", "cloze_accuracy", "cloze_items"]


@torch.no_grad()
def _token_logprobs(model: nn.Module, seqs: Tensor, batch_size: int) -> Tensor:
    """log p(seqs[:, t+1] | seqs[:, :t+1]) for t < T-1: (N, T) ids → (N, T-1) float32 log-probs."""
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size].to(next(model.parameters()).device)
        logits = model(chunk[:, :-1]).float()
        out.append(-F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="none").cpu())
    return torch.cat(out)


def bits_per_byte(model: nn.Module, tokens: Tensor, token_bytes: Tensor, *, seq_len: int, windows: int,
                  batch_size: int = 16) -> float:
    """Bits per UTF-8 byte of ``windows`` windows of ``seq_len + 1`` tokens spread evenly over ``tokens``
    (every window predicts its last ``seq_len`` tokens from the ones before)."""
    span = seq_len + 1
    if len(tokens) < span:
        raise ValueError(f"need at least {span} tokens to evaluate, got {len(tokens)}")
    windows = min(windows, len(tokens) // span)
    starts = torch.linspace(0, len(tokens) - span, windows).long()
    seqs = torch.stack([tokens[s:s + span] for s in starts.tolist()])
    nats = -_token_logprobs(model, seqs, batch_size).double().sum()
    return float(nats / math.log(2) / token_bytes[seqs[:, 1:]].sum())


def cloze_items(tokens: Tensor, *, items: int, context: int, length: int, choices: int = 4,
                seed: int = 0) -> tuple[Tensor, Tensor]:
    """``items`` cloze questions from one stream: (contexts (N, context), options (N, choices, length)),
    the true continuation at option 0. Positions are drawn with a generator seeded by ``seed``."""
    span = context + length
    if len(tokens) < 4 * span:
        raise ValueError(f"need at least {4 * span} tokens for cloze items, got {len(tokens)}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(tokens) - span, (items, choices), generator=g)
    ctx = torch.stack([tokens[s:s + context] for s in starts[:, 0].tolist()])
    opts = torch.stack([torch.stack([tokens[s + context:s + span] if j == 0 else tokens[s:s + length]
                                     for j, s in enumerate(row.tolist())]) for row in starts])
    return ctx, opts


def cloze_accuracy(model: nn.Module, contexts: Tensor, options: Tensor, batch_size: int = 64) -> float:
    """Fraction of items whose true continuation (option 0) has the strictly highest log-probability."""
    n, k, length = options.shape
    seqs = torch.cat([contexts[:, None].expand(n, k, -1), options], dim=-1).reshape(n * k, -1)
    scores = _token_logprobs(model, seqs, batch_size)[:, -length:].double().sum(-1).view(n, k)
    return float((scores[:, 0] > scores[:, 1:].max(-1).values).double().mean())
