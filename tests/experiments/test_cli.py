"""Every bad argument of ``seednorm lm`` and ``seednorm vit`` is one line on stderr and exit code 2, before any
work starts (the CLI runs in-process through ``main(argv)``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from seednorm_experiments import args as arg_rules
from seednorm_experiments import lm, upcycle, vit


def exit_code(main, argv: list[str]) -> int:
    """``main(argv)``'s exit code, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def assert_one_line_error(capsys: pytest.CaptureFixture[str], needle: str) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err and needle in err, err
    assert err.strip().splitlines()[-1].count("error:") == 1


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("args, needle", [
    (["--steps", "0"], "--steps: must be >= 1, got 0"),
    (["--steps", "-5"], "--steps: must be >= 1, got -5"),
    (["--steps", "ten"], "--steps: expected an integer >= 1"),
    (["--lr", "-1"], "--lr: must be a finite number > 0, got '-1'"),
    (["--lr", "nan"], "--lr: must be a finite number > 0, got 'nan'"),
    (["--lr", "inf"], "--lr: must be a finite number > 0"),
    (["--seeds", "0"], "--seeds: must be >= 1"),
    (["--ablation", "--dim", "0"], "--dim: must be >= 1"),
    (["--ablation", "--carry", "-1"], "--carry: must be >= 0"),
    (["--ablation", "--ablation-lrs", "1e-3", "-2"], "--ablation-lrs: must be a finite number > 0"),
    (["--ablation", "--long-factors", "0"], "--long-factors: must be >= 1"),
])
def test_lm_bad_numbers(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(lm.main, ["--preset", "smoke", *args]) == 2
    assert_one_line_error(capsys, needle)


@pytest.mark.parametrize("ablation", [[], ["--ablation"]])
def test_lm_out_that_is_a_file_or_under_one(ablation: list[str], a_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(lm.main, ["--preset", "smoke", *ablation, "--out", str(a_file)]) == 2
    assert_one_line_error(capsys, "is a file")
    assert exit_code(lm.main, ["--preset", "smoke", *ablation, "--out", str(a_file / "sub")]) == 2
    assert_one_line_error(capsys, "which is a file, not a folder")
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("args, needle", [
    (["--steps", "0"], "--steps: must be >= 1"),
    (["--seeds", "-1"], "--seeds: must be >= 1"),
    (["--ablation-lr", "nan"], "--ablation-lr: must be a finite number > 0"),
    (["--threads", "0"], "--threads: must be >= 1"),
    (["--seednorm-heads", "0"], "--seednorm-heads: must be >= 1"),
    (["--heads", "3"], "--heads: 3 heads must divide"),
    (["--norms", "batchnorm"], "--norms: unknown"),
])
def test_vit_bad_arguments(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(vit.main, ["--preset", "smoke", *args]) == 2
    assert_one_line_error(capsys, needle)


def test_vit_out_that_is_a_file(a_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--out", "--runs-dir"):
        assert exit_code(vit.main, ["--preset", "smoke", flag, str(a_file)]) == 2
        assert_one_line_error(capsys, "is a file")


def test_argument_types() -> None:
    rules = arg_rules
    assert rules.positive_int("3") == 3 and rules.nonnegative_int("0") == 0 and rules.positive_float("1e-3") == 1e-3
    for parse, text in ((rules.positive_int, "0"), (rules.positive_int, "1.5"), (rules.nonnegative_int, "-1"),
                        (rules.positive_float, "0"), (rules.positive_float, "-inf"), (rules.positive_float, "x")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_writable_paths(tmp_path: Path, a_file: Path) -> None:
    assert arg_rules.check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert arg_rules.check_out_file(a_file) == a_file  # an existing file is replaced
    with pytest.raises(ValueError, match="is a folder"):
        arg_rules.check_out_file(tmp_path)
    with pytest.raises(ValueError, match="which is a file"):
        arg_rules.check_out_file(a_file / "x.md")


@pytest.mark.parametrize("study", [lm, vit, upcycle])
def test_help_is_plain_text_with_each_default_once(study, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        study.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for marker in (":mod:", ":func:", "``", "issue"):
        assert marker not in text.lower(), marker
    options = text.split("options:")[1]
    entries = [entry for entry in options.split("\n  -") if entry.strip()]
    assert all(" ".join(entry.split()).count("(default") <= 1 for entry in entries), entries


@pytest.mark.parametrize("study, option, spaced, commas", [
    (lm, "--norms", ["rmsnorm", "seednorm"], ["rmsnorm,seednorm"]),
    (lm, "--ablation-lrs", ["1e-3", "2e-3"], ["1e-3,2e-3"]),
    (vit, "--norms", ["dyt", "seednorm"], ["dyt,seednorm"]),
    (vit, "--heads", ["1", "4"], ["1,4"]),
    (upcycle, "--arms", ["rmsnorm", "seednorm-norms"], ["rmsnorm,seednorm-norms"]),
])
def test_list_options_take_spaces_or_commas(study, option: str, spaced: list[str], commas: list[str]) -> None:
    parser = study.cli.build_parser()
    dest = option.lstrip("-").replace("-", "_")
    assert getattr(parser.parse_args([option, *spaced]), dest) == getattr(parser.parse_args([option, *commas]), dest)


def test_a_bad_list_item_is_one_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(vit.main, ["--preset", "smoke", "--heads", "2,0"]) == 2
    assert_one_line_error(capsys, "argument --heads: must be >= 1, got 0")


@pytest.mark.parametrize("study", [lm, vit])
def test_unknown_norm_is_one_line(study, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(study.main, ["--preset", "smoke", "--norms", "rmsnorm", "batchnorm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--norms: unknown norm(s) ['batchnorm']" in err
