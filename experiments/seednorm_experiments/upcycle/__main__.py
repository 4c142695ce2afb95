"""``python -m seednorm_experiments.upcycle`` = ``seednorm upcycle``."""

import sys

from .cli import main

sys.exit(main())
