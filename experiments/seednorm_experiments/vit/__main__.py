"""``python -m seednorm_experiments.vit`` = ``seednorm vit`` (what ``torchrun ... -m`` runs)."""

import sys

from .cli import main

sys.exit(main())
