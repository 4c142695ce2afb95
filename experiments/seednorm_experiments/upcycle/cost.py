"""Memory of one training step of an arm, measured on the harness's own step.

On CUDA, ``peak``: ``torch.cuda.max_memory_allocated`` over one :meth:`harness.Trainer.step` (the allocator's peak:
weights, gradients, optimizer state, activations and workspace). Everywhere, the parts of it that do not depend on
the allocator, in bytes:

- ``weights``: every parameter; ``grads``: the trainable ones (one gradient each); ``adam``: AdamW's two moments
  of the trainable ones;
- ``activations``: the tensors autograd saves for the backward pass during the step's forward (each storage once,
  parameters excluded: counted by ``torch.autograd.graph.saved_tensors_hooks``).

Tokens/s comes from the runs themselves (``result.json``'s median over steps).
"""

from __future__ import annotations

from typing import Any

import torch

from ..harness import Task, TrainConfig
from ..harness.distributed import local
from ..harness.trainer import Trainer

__all__ = ["step_memory"]


def step_memory(task: Task, config: TrainConfig) -> dict[str, Any]:
    """The memory of one training step of ``task`` (batch 0) as :func:`..harness.train` runs it; see the module
    docstring. Nothing is written."""
    d = local()
    trainer = Trainer(task, config, d)
    params = list(trainer.inner.parameters())
    trainable = [p for p in params if p.requires_grad]
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    cuda = d.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.step(task.batches(0, 0, 1))
    nbytes = lambda ps: sum(p.numel() * p.element_size() for p in ps)  # noqa: E731
    out: dict[str, Any] = {"weights": nbytes(params), "grads": nbytes(trainable), "adam": 2 * nbytes(trainable),
                           "activations": sum(saved.values()), "peak": None}
    if cuda:
        torch.cuda.synchronize()
        out["peak"] = torch.cuda.max_memory_allocated()
    del trainer
    return out
