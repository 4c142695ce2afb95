"""``python -m seednorm_experiments.vit`` (what ``torchrun -m seednorm_experiments.vit`` runs): ``seednorm vit``."""

import sys

from .study import main

sys.exit(main())
