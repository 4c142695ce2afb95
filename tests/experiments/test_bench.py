"""``seednorm bench`` runs end to end on a tiny shape and writes its markdown table."""

from __future__ import annotations

import pytest

from seednorm import ops
from seednorm_experiments import cli


def test_bench_cli_writes_a_table(tmp_path, capsys):
    out = tmp_path / "cpu.md"
    argv = ["bench", "--device", "cpu", "--shapes", "64x48", "--dtypes", "fp32", "--reps", "2", "--warmup", "1",
            "--out", str(out)]
    assert cli.main(argv) == 0
    text = out.read_text()
    assert "torch " in text and "triton " in text and "Machine:" in text
    rows = [line for line in text.splitlines() if line.startswith("| 64x48")]
    impls = {row.split("|")[3].strip() for row in rows}
    expected = {"rmsnorm eager", "rmsnorm compiled", "seednorm reference", "seednorm compiled"}
    assert expected | ({"seednorm cpp"} if ops.cpu.unavailable() is None else set()) <= impls
    assert "written to" in capsys.readouterr().out


def test_bench_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0 and "--quick" in capsys.readouterr().out
