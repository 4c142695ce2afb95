"""A study's run records under faults: an edited or malformed record is refused with one line (never printed in a
report), ``--report-only`` rebuilds the same report from ``runs.jsonl`` alone and refuses (exit 2, nothing written)
when it has no runs, fewer runs than the report it would replace, or another study's folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from study_faults import exit_code, one_line_error, private_cache, snapshot  # noqa: F401 (private_cache: autouse)

from seednorm_experiments.harness import RECORD_DIGEST_KEY, record_digest
from seednorm_experiments.records import RECORDS_NAME, pack_result, read_records

SMOKE = ["--preset", "smoke", "--norms", "rmsnorm", "seednorm", "--no-progress"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke study (two norms, its seeds) with its report and records."""
    out = tmp_path_factory.mktemp("study") / "lm"
    assert exit_code([*SMOKE, "--out", str(out)]) == 0
    return out


def records_only(study: Path, dest: Path) -> Path:
    """The study's report and records without its run folders, as committed under results/."""
    dest.mkdir()
    for name in ("report.md", RECORDS_NAME):
        shutil.copy(study / name, dest / name)
    return dest


def test_the_records_hold_every_run_verified(study: Path) -> None:
    header, runs = read_records(study / RECORDS_NAME)
    assert header["study"] == "lm" and header["command"].startswith("seednorm lm --preset smoke")
    assert "throughput" in header["measurements"]
    on_disk = sorted(json.loads(p.read_text())["fingerprint_sha256"] for p in study.glob("runs/*/*/result.json"))
    assert sorted(r["fingerprint_sha256"] for _, r in runs) == on_disk and len(on_disk) >= 2
    assert all(name.startswith("runs/") for name, _ in runs)


def test_report_only_rebuilds_the_same_report_from_the_records_alone(study: Path, tmp_path: Path) -> None:
    copy = records_only(study, tmp_path / "copy")
    assert exit_code([*SMOKE, "--out", str(copy), "--report-only"]) == 0
    assert (copy / "report.md").read_text() == (study / "report.md").read_text()
    assert (copy / RECORDS_NAME).read_bytes() == (study / RECORDS_NAME).read_bytes()
    assert not (copy / "runs").exists()  # nothing trained


def _edit_record(path: Path, edit, *, redigest: bool) -> None:
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    from seednorm_experiments.records import unpack_result

    result = unpack_result(entry["result"])
    edit(result)
    if redigest:
        result[RECORD_DIGEST_KEY] = record_digest(result)
    lines[1] = json.dumps({"run": entry["run"], "result": pack_result(result)})
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("edit", "redigest", "says"), [
    (lambda r: r["final_eval"].update({k: 1.2345 for k in r["final_eval"]}), False, "altered"),
    (lambda r: r.update(diverged="no"), False, "altered"),
    (lambda r: r.update(diverged="no"), True, "diverged must be true or false"),
    (lambda r: r.update(history=[]), True, "history is empty"),
    (lambda r: r.update(final_eval={}), True, "final_eval lacks metrics"),
    (lambda r: r.update(clip_fraction=3.0), True, "clip_fraction"),
    (lambda r: r.pop(RECORD_DIGEST_KEY), False, "predates whole-record digests"),
])
def test_an_edited_or_malformed_record_is_refused_in_one_line(study: Path, tmp_path: Path, edit, redigest: bool,
                                                               says: str, capsys: pytest.CaptureFixture[str]) -> None:
    copy = records_only(study, tmp_path / "copy")
    _edit_record(copy / RECORDS_NAME, edit, redigest=redigest)
    before = snapshot(copy)
    capsys.readouterr()
    assert exit_code([*SMOKE, "--out", str(copy), "--report-only"]) == 2
    err = one_line_error(capsys)
    assert says in err and RECORDS_NAME in err
    assert snapshot(copy) == before


def test_an_edited_result_json_is_refused_on_resume(study: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("report.md", RECORDS_NAME))  # the run folders only
    path = next(copy.glob("runs/seednorm/*/result.json"))
    record = json.loads(path.read_text())
    record["final_eval"] = {k: 1.2345 for k in record["final_eval"]}
    path.write_text(json.dumps(record))
    before = snapshot(copy)
    capsys.readouterr()
    assert exit_code([*SMOKE, "--out", str(copy), "--resume"]) == 2
    err = one_line_error(capsys)
    assert str(path) in err and "altered" in err
    assert snapshot(copy) == before


def test_a_study_reuses_its_recorded_runs_without_their_folders(study: Path, tmp_path: Path) -> None:
    copy = records_only(study, tmp_path / "copy")
    assert exit_code([*SMOKE, "--no-throughput", "--out", str(copy), "--resume"]) == 0
    assert not list(copy.glob("runs/*/*/result.json"))  # nothing trained: every run came from runs.jsonl
    assert table_rows(copy / "report.md")[:6] == table_rows(study / "report.md")[:6]


def test_an_interrupted_study_keeps_what_it_trained(tmp_path: Path) -> None:
    out = tmp_path / "cut"
    assert exit_code([*SMOKE, "--no-throughput", "--out", str(out), "--override", "steps=3"]) == 0
    (out / "report.md").unlink()
    lines = (out / RECORDS_NAME).read_text().splitlines()
    (out / RECORDS_NAME).write_text("\n".join(lines[:2]) + "\n")  # as if stopped after the first run
    _, runs = read_records(out / RECORDS_NAME)
    assert len(runs) == 1


def table_rows(report: Path) -> list[str]:
    return [line for line in report.read_text().splitlines() if line.startswith("|")]


def test_report_only_without_runs_refuses_and_writes_nothing(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert exit_code([*SMOKE, "--out", str(tmp_path / "empty"), "--report-only"]) == 2
    assert "--report-only trains nothing" in one_line_error(capsys)
    assert not (tmp_path / "empty" / "report.md").exists()


def test_report_only_with_fewer_runs_than_recorded_refuses(study: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    copy = records_only(study, tmp_path / "copy")
    before = snapshot(copy)
    capsys.readouterr()
    assert exit_code(["--preset", "smoke", "--norms", "rmsnorm", "--no-progress", "--out", str(copy),
                      "--report-only"]) == 2
    assert "would replace one made from more runs" in one_line_error(capsys)
    assert snapshot(copy) == before


@pytest.mark.parametrize("other", [["--ablation"], ["--size-curve"]])
def test_another_kind_of_study_into_the_folder_is_refused(study: Path, tmp_path: Path, other: list[str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    copy = records_only(study, tmp_path / "copy")
    before = snapshot(copy)
    for extra in ([], ["--report-only"]):
        capsys.readouterr()
        assert exit_code(["--preset", "smoke", *other, "--no-progress", "--out", str(copy), *extra]) == 2
        assert "holds a 'lm' study's records" in one_line_error(capsys)
    assert snapshot(copy) == before


def test_a_report_without_records_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "legacy"
    out.mkdir()
    (out / "report.md").write_text("# someone's report\n")
    capsys.readouterr()
    assert exit_code([*SMOKE, "--out", str(out)]) == 2
    assert "report.md without run records" in one_line_error(capsys)
    assert snapshot(out) == {"report.md": b"# someone's report\n"}
