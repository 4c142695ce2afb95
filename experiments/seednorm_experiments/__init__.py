"""Studies that compare normalization layers by training real models.

``harness`` is the one training loop every study uses; ``report`` turns per-seed results into tables
(mean ± std, 95% confidence intervals, paired differences) and PNG plots; ``lm`` and ``vit`` are the
language-model and vision studies built on them.
"""

__version__ = "0.1.0"
