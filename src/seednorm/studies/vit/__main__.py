"""``python -m seednorm.studies.vit`` (what ``torchrun ... -m seednorm.studies.vit`` runs) = ``seednorm vit``."""

import sys

from .study import main

sys.exit(main())
