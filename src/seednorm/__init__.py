"""seednorm: SeeDNorm (Self-Rescaled Dynamic Normalization, arXiv 2510.22777) for PyTorch."""

from .convert import UpcycleRecipe, convert_to_seednorm
from .functional import ada_seednorm, derf, dyt, layer_norm, rms_norm, seednorm
from .modules import (
    NORMS,
    AdaSeeDNorm,
    AdaSeeDNorm2d,
    Derf,
    DyT,
    LayerNorm,
    RMSNorm,
    SeeDNorm,
    SeeDNorm2d,
    build_norm,
    channels_first_class,
    dynamic_parameters,
)
from .optim import param_groups

__version__ = "0.1.0"

__all__ = [
    "NORMS",
    "AdaSeeDNorm",
    "AdaSeeDNorm2d",
    "Derf",
    "DyT",
    "LayerNorm",
    "RMSNorm",
    "SeeDNorm",
    "SeeDNorm2d",
    "UpcycleRecipe",
    "ada_seednorm",
    "build_norm",
    "channels_first_class",
    "convert_to_seednorm",
    "derf",
    "dynamic_parameters",
    "dyt",
    "layer_norm",
    "param_groups",
    "rms_norm",
    "seednorm",
]
