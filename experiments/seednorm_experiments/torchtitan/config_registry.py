"""torchtitan trainer configs: Llama3 debug model with SeeDNorm, and its RMSNorm baseline under the same optimizer.

torchtitan 0.3.0 selects configs by Python function (``--module <package> --config <function>``), not by file:

    torchrun --nproc_per_node=4 -m torchtitan.train --module seednorm_experiments.torchtitan \\
        --config llama3_debugmodel_seednorm --parallelism.tensor_parallel_degree 2

Both configs use torchtitan's ``llama3_debugmodel`` (data, tokenizer, schedule: run from a torchtitan checkout, whose
``tests/assets`` hold the tokenizer and the c4_test data) with the DTensor backend ("partial_dtensor") and
``seednorm_adamw``: α, β decayed with the global coefficient, norm gains not (spec §4), the same γ policy for both.
"""

from __future__ import annotations

from torchtitan.models.llama3 import model_registry
from torchtitan.models.llama3.config_registry import llama3_debugmodel
from torchtitan.trainer import Trainer

from seednorm.integrations.torchtitan import SeeDNormConverter, seednorm_adamw

LR, WEIGHT_DECAY, STEPS = 8e-4, 0.1, 300


def _debugmodel(converters: list | None, *, seednorm: bool) -> Trainer.Config:
    config = llama3_debugmodel()
    config.model_spec = model_registry("debugmodel", converters=converters)
    config.optimizer = seednorm_adamw(lr=LR, weight_decay=WEIGHT_DECAY, seednorm=seednorm)
    config.parallelism.spmd_backend = "partial_dtensor"  # the op sees DTensors: its sharding rules apply
    config.training.steps = STEPS
    config.checkpoint.interval = STEPS
    return config


def llama3_debugmodel_seednorm() -> Trainer.Config:
    """Llama3 debug model, attention and MLP pre-norms converted to SeeDNorm (α = 1, β = 0, tanh, one head)."""
    return _debugmodel([SeeDNormConverter.Config()], seednorm=True)


def llama3_debugmodel_rmsnorm() -> Trainer.Config:
    """The same run with torchtitan's RMSNorm: the baseline for ``llama3_debugmodel_seednorm``."""
    return _debugmodel(None, seednorm=False)
