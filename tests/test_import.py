"""``import seednorm`` stays light: it does not import torch's compiler stack (a second of start-up) nor DTensor (and
through it sympy, half a second), whose sharding rules for the op are registered once DTensor is imported, in
either order."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys


def test_import_seednorm_does_not_import_dynamo():
    code = "import sys, seednorm; print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


HAS_RULES = ("all(op in dt.DTensor._op_dispatcher.sharding_propagator.op_strategy_funcs "
             "for op in (torch.ops.seednorm.forward.default, torch.ops.seednorm.backward.default))")


def test_import_seednorm_does_not_import_dtensor_and_registers_its_rules_when_dtensor_comes():
    code = ("import sys, torch, seednorm; print('torch.distributed.tensor' in sys.modules, 'sympy' in sys.modules); "
            f"import torch.distributed.tensor as dt; print({HAS_RULES})")
    assert _fresh(code).splitlines() == ["False False", "True"]


def test_sharding_rules_are_registered_when_dtensor_was_imported_first():
    code = f"import torch, torch.distributed.tensor as dt; import seednorm; print({HAS_RULES})"
    assert _fresh(code) == "True"


def test_after_import_runs_once_after_the_module_executed_and_a_failing_callback_only_warns(tmp_path, monkeypatch,
                                                                                            caplog):
    from seednorm.ops.after_import import after_import

    (tmp_path / "sn_probe_mod.py").write_text("VALUE = 42\n")
    (tmp_path / "sn_probe_bad.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("sn_probe_mod", "sn_probe_bad"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    seen: list[int] = []
    after_import("sn_probe_mod", lambda: seen.append(sys.modules["sn_probe_mod"].VALUE))
    assert importlib.util.find_spec("sn_probe_mod") is not None  # asking imports nothing and keeps the hook
    assert seen == []
    import sn_probe_mod

    importlib.reload(sn_probe_mod)  # a second execution does not call it again
    assert seen == [42]
    after_import("sn_probe_mod", lambda: seen.append(0))  # imported already: now
    assert seen == [42, 0]

    def broken() -> None:
        raise RuntimeError("no rules today")

    after_import("sn_probe_bad", broken)
    import sn_probe_bad

    assert sn_probe_bad.VALUE == 1 and "no rules today" in caplog.text
