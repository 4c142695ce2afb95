"""``python -m seednorm_experiments.bench``."""

import sys

from .kernels import main

sys.exit(main())
