"""``import seednorm`` stays light: it does not import torch's compiler stack (a second of start-up)."""

from __future__ import annotations

import subprocess
import sys


def test_import_seednorm_does_not_import_dynamo():
    code = "import sys, seednorm; print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
