"""torchtitan trainer configs with SeeDNorm: ``--module seednorm_experiments.torchtitan`` (see docs/torchtitan.md)."""
