"""Checkpoints: one file, written atomically (temp file, fsync, ``os.replace``) with a SHA-256 of its payload so
that a torn or damaged file is a :class:`CheckpointError`, never a silent misload; the check that a checkpoint
can resume this run (complete, same fingerprint); and the model and optimizer state dicts it holds (plain, or
gathered whole from DDP/FSDP through ``torch.distributed.checkpoint``).

File format: ``SEEDNORM-CKPT-1\\n``, the 64 hex digits of the payload's SHA-256, ``\\n``, then the payload
(``torch.save`` of the state dict; loaded with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import fingerprint_diff

__all__ = ["CHECKPOINT_NAME", "CheckpointError", "check_resumable", "load_checkpoint", "load_model_and_optimizer",
           "model_and_optimizer_state", "save_checkpoint"]

_MAGIC = b"SEEDNORM-CKPT-1\n"
CHECKPOINT_NAME = "checkpoint.pt"
# What a checkpoint written by the trainer holds; resuming needs every one of them.
_RESUME_KEYS = ("format", "step", "fingerprint", "model", "optimizer", "scheduler", "rng", "history")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted, or belongs to a different run."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    A crash at any point leaves either the previous checkpoint or the new one, never a torn file.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; :class:`CheckpointError` if it is missing,
    truncated or corrupted (its SHA-256 does not match)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume (run without resume to start)")
    data = path.read_bytes()
    header_len = len(_MAGIC) + 65
    if not data.startswith(_MAGIC) or len(data) < header_len:
        raise CheckpointError(f"{path} is not a seednorm checkpoint (bad header); it was left untouched")
    digest, payload = data[len(_MAGIC): header_len - 1].decode("ascii", "replace"), data[header_len:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is corrupted (checksum mismatch); it was left untouched")
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)


def check_resumable(ckpt: dict[str, Any], fingerprint: dict[str, Any], path: Path) -> None:
    """:class:`CheckpointError` unless ``ckpt`` (read from ``path``) is complete and of the run ``fingerprint``
    names; the message lists the settings that differ."""
    for key in _RESUME_KEYS:
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks {key!r}; it was left untouched")
    diff = fingerprint_diff(ckpt["fingerprint"], fingerprint)
    if diff:
        raise CheckpointError(f"{path} belongs to a different run (checkpoint -> now: {'; '.join(diff)}); "
                              "write this run to another folder, or delete that one to start over")


def model_and_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, *, wrapped: bool) -> tuple[dict, dict]:
    """The state dicts of ``model`` and ``opt``; for a DDP/FSDP-``wrapped`` model the full (unsharded) ones on
    CPU, a collective every rank must call."""
    if not wrapped:
        return model.state_dict(), opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_model_and_optimizer(model: nn.Module, opt: torch.optim.Optimizer, ckpt: dict[str, Any], *,
                             wrapped: bool) -> None:
    """Load ``ckpt["model"]`` and ``ckpt["optimizer"]`` (as :func:`model_and_optimizer_state` wrote them)."""
    if not wrapped:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, opt, model_state_dict=ckpt["model"], optim_state_dict=ckpt["optimizer"],
                   options=StateDictOptions(full_state_dict=True))
