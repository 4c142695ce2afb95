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
    impls = {row.split("|")[4].strip() for row in rows}  # shape | dtype | heads | impl
    expected = {"rmsnorm eager", "rmsnorm compiled", "seednorm reference", "seednorm compiled"}
    assert expected | ({"seednorm cpp"} if ops.cpu.unavailable() is None else set()) <= impls
    assert "written to" in capsys.readouterr().out


def test_bench_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0 and "--quick" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["--reps", "-3"], "--reps: must be >= 1, got -3"),
    (["--warmup", "-1"], "--warmup: must be >= 0"),
    (["--peak-gbps", "nan"], "--peak-gbps: must be a finite number > 0"),
])
def test_bench_bad_numbers_are_one_line_errors(args, needle, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--device", "cpu", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and needle in err and "Traceback" not in err


def test_bench_unwritable_out_fails_before_the_run(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    from seednorm_experiments.bench import kernels as bench

    monkeypatch.setattr(bench, "run", lambda args: pytest.fail("the benchmark ran before --out was checked"))
    for out, needle in ((a_file / "cpu.md", "which is a file, not a folder"), (tmp_path, "is a folder")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["bench", "--device", "cpu", "--out", str(out)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("impls, column, value", [
    ("rmsnorm eager,seednorm reference", "vs rmsnorm eager", None),  # no compiled RMSNorm: against the eager one
    ("seednorm reference", "vs rmsnorm", "n/a (no RMSNorm measured)"),
])
def test_bench_compares_against_the_rmsnorm_it_measured(tmp_path, impls, column, value):
    out = tmp_path / "cpu.md"
    argv = ["bench", "--device", "cpu", "--shapes", "16x64", "--dtypes", "fp32", "--reps", "1", "--warmup", "0",
            "--copy-mb", "1", "--impls", impls, "--out", str(out)]
    assert cli.main(argv) == 0
    lines = [line for line in out.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]
    assert header[-2] == column and rows
    for row in rows:
        if value is None:
            ratio = float(row[column])
            assert ratio == ratio and ratio > 0 and (row["impl"] != "rmsnorm eager" or ratio == 1.0)
        else:
            assert row[column] == value


def test_profile_writes_a_table_naming_the_machine_and_the_command(tmp_path, capsys):
    """``python -m seednorm_experiments.bench.profile``: one row per layer of code, the totals and the ratio."""
    if ops.cpu.unavailable() is not None:
        pytest.skip("the profile times the C++ kernels")
    from seednorm_experiments.bench import profile

    out = tmp_path / "profile.md"
    assert profile.main(["--widths", "16", "24", "--repeats", "3", "--warmup", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Machine:" in text and "Load average" in text and f"--out {out}" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(profile.STAGES) + 3 and "D=16" in rows[0] and "D=24" in rows[0]
    assert rows[-1].startswith("| SeeDNorm ÷ RMSNorm |")


def test_recipe_cost_writes_one_row_per_part_whose_costs_add_up(tmp_path):
    """``python -m seednorm_experiments.bench.recipe_cost``: LayerNorm, then each part of the vision recipe; a part's
    cost is its call minus the row above, so the parts add up to the recipe's call."""
    if ops.cpu.unavailable() is not None:
        pytest.skip("the benchmark times the C++ kernels")
    from seednorm_experiments.bench import recipe_cost

    out = tmp_path / "recipe.md"
    argv = ["--batch", "3", "--tokens", "5", "--width", "12", "--heads", "3", "--dropout", "0.25", "--repeats", "3",
            "--warmup", "1", "--out", str(out)]
    assert recipe_cost.main(argv) == 0
    text = out.read_text()
    assert "Machine:" in text and "Load average" in text and f"--out {out}" in text and "input (3, 5, 12)" in text
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    assert rows[0][0] == "part" and len(rows) == 1 + len(recipe_cost.PARTS)
    assert rows[3][0] == "+ 3 heads, dot scale 1/4" and rows[4][0].startswith("+ dynamic dropout 0.25")
    parts, totals = [float(r[1]) for r in rows[1:]], [float(r[3]) for r in rows[1:]]
    assert sum(parts) == pytest.approx(totals[-1], abs=len(parts))  # rounded to 1 µs each
    assert rows[1][2] == "1.00×" and rows[1][4] == "1.00×"
    with pytest.raises(SystemExit):
        recipe_cost.main(["--width", "10", "--heads", "4", "--out", str(tmp_path / "x.md")])
