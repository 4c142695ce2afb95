"""``python -m seednorm_experiments.lm`` (what ``torchrun ... -m seednorm_experiments.lm`` runs) = ``seednorm lm``."""

import sys

from .cli import main

sys.exit(main())
