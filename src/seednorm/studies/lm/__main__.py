"""``python -m seednorm.studies.lm`` (what ``torchrun ... -m seednorm.studies.lm`` runs) = ``seednorm lm``."""

import sys

from . import main

sys.exit(main())
