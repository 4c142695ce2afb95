"""A study's evidence beside its report: ``OUT/runs.jsonl``, every finished run the report was made from.

The first line is the header: the format, the study kind (``lm``, ``lm-ablation``, ``lm-size-curve``,
``lm-gpu``, ``vit``, ``vit-convnext``, ``vit-mae``, ``upcycle``), the command, the machine, date and wall time of
the call that trained the runs, and the measurements that are not runs (e.g. the step-cost benchmark). Every
other line is one run: the folder it was trained in (relative to ``OUT`` when inside it) and its ``result.json``
content, the per-step history stored as columns (the same numbers, a third of the size). Each record carries its
own SHA-256 over every value (``record_sha256``) and is verified when read, so an edited number is refused, never
printed. Checkpoints are never kept.

A study's command opens :func:`study_records` around its work:

- training (the default): ``runs.jsonl`` is written when the report is (atomically, once the study is done), from
  every run the study trained or reused through :mod:`.runs`;
- ``--report-only``: runs come from ``runs.jsonl`` (or finished run folders) and nothing trains; a run the plan
  needs that is not there is :class:`MissingRun`, and a plan that would use fewer runs than the records hold is
  refused (:meth:`StudyRecords.check_complete`) before the report is written.

An ``OUT`` whose ``runs.jsonl`` is another kind of study's, or that holds a ``report.md`` without records, is
refused before anything is written (:class:`RecordsError`): one study per folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .harness import RECORD_DIGEST_KEY, fingerprint_digest, record_digest
from .progress import RunGrid, run_grid, step

__all__ = ["FORMAT", "RECORDS_NAME", "MissingRun", "RecordsError", "StudyRecords", "active", "check_result",
           "measure", "pack_result", "provenance", "read_records", "study_records", "unpack_result"]

RECORDS_NAME = "runs.jsonl"
FORMAT = 1
REPORT_NAME = "report.md"

T = TypeVar("T")


class RecordsError(RuntimeError):
    """A study folder's ``runs.jsonl`` cannot be used (unreadable, altered, another study's, too few runs)."""


class MissingRun(RecordsError):
    """``--report-only`` needs a run that is neither in ``runs.jsonl`` nor finished in its folder."""


# ---------------------------------------------------------------------------------------------------- one record

_NUMBER = (int, float)


def _bad(where: str, what: str) -> RecordsError:
    return RecordsError(f"{where} is not a valid run record ({what}); delete it to train that run again")


def _check_rows(rows: Any, name: str, where: str) -> None:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _bad(where, f"{name} must be a list of objects")
    for row in rows:
        for key, value in row.items():
            if not isinstance(value, _NUMBER) or isinstance(value, bool) and key != "clipped":
                raise _bad(where, f"{name} value {key}={value!r} is not a number")


def check_result(record: Any, where: str) -> dict[str, Any]:
    """``record`` if it is a whole, unaltered run record (``result.json`` content): its digests match and every
    value a report reads has its type and range; else :class:`RecordsError` naming ``where``."""
    needed = ("history", "evals", "final_eval", "diverged", "interrupted", "tokens_per_s", "clip_fraction",
              "num_params", "world_size", "wall_s", "fingerprint", "fingerprint_sha256")
    if not isinstance(record, dict) or any(k not in record for k in needed):
        raise _bad(where, "it lacks results or a fingerprint")
    if RECORD_DIGEST_KEY not in record:
        raise _bad(where, "it predates whole-record digests, so an edited value could not be detected")
    if not isinstance(record["fingerprint"], dict) \
            or fingerprint_digest(record["fingerprint"]) != record["fingerprint_sha256"]:
        raise _bad(where, "its fingerprint does not match its SHA-256: it was altered after it was written")
    if record_digest(record) != record[RECORD_DIGEST_KEY]:
        raise _bad(where, "its values do not match their SHA-256: it was altered after it was written")
    for key in ("diverged", "interrupted"):
        if not isinstance(record[key], bool):
            raise _bad(where, f"{key} must be true or false, got {record[key]!r}")
    _check_rows(record["history"], "history", where)
    _check_rows(record["evals"], "evals", where)
    if not record["history"]:
        raise _bad(where, "its history is empty")
    if not isinstance(record["final_eval"], dict) \
            or not all(isinstance(v, _NUMBER) for v in record["final_eval"].values()):
        raise _bad(where, "final_eval must map metric names to numbers")
    if not record["diverged"] and not record["interrupted"] \
            and record["evals"] and set(record["evals"][-1]) - {"step"} != set(record["final_eval"]):
        raise _bad(where, "final_eval lacks metrics its evaluations have")
    for key, lo in (("tokens_per_s", 0), ("wall_s", 0), ("num_params", 0), ("world_size", 1)):
        value = record[key]
        if not isinstance(value, _NUMBER) or isinstance(value, bool) or not math.isfinite(value) or value < lo:
            raise _bad(where, f"{key} must be a finite number >= {lo}, got {value!r}")
    clip = record["clip_fraction"]
    if not isinstance(clip, _NUMBER) or not 0.0 <= clip <= 1.0:
        raise _bad(where, f"clip_fraction must be in [0, 1], got {clip!r}")
    return record


def _columns(rows: list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """Rows with the same keys as ``{"columns": keys, "rows": [values...]}``; other rows as they are."""
    if not rows or any(list(r) != list(rows[0]) for r in rows):
        return rows
    return {"columns": list(rows[0]), "rows": [list(r.values()) for r in rows]}


def _rows(packed: Any) -> Any:
    if isinstance(packed, dict) and set(packed) == {"columns", "rows"}:
        return [dict(zip(packed["columns"], values, strict=True)) for values in packed["rows"]]
    return packed


def pack_result(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its history and evaluations stored as columns (:func:`unpack_result` inverts it)."""
    return {**record, "history": _columns(record["history"]), "evals": _columns(record["evals"])}


def unpack_result(packed: dict[str, Any]) -> dict[str, Any]:
    """The ``result.json`` content :func:`pack_result` stored."""
    return {**packed, "history": _rows(packed.get("history")), "evals": _rows(packed.get("evals"))}


# ------------------------------------------------------------------------------------------------ a study's file

def read_records(path: Path) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The header and the ``(folder, result)`` runs of a ``runs.jsonl``, every run verified
    (:func:`check_result`); :class:`RecordsError` naming the file and line otherwise."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RecordsError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("study"), str):
        raise RecordsError(f"{path} has no valid header line (format {FORMAT}, study kind); it is not a study's run "
                           f"records file")
    runs = []
    for i, line in enumerate(lines[1:], start=2):
        where = f"{path} line {i}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordsError(f"{where} is not JSON ({e})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("run"), str) or "result" not in entry:
            raise RecordsError(f"{where} is not a run entry ({{'run': folder, 'result': record}})")
        result = entry["result"]
        runs.append((entry["run"], check_result(unpack_result(result) if isinstance(result, dict) else result,
                                                where)))
    return header, runs


def _study_of(out: Path) -> str | None:
    """The study kind of ``out``'s ``runs.jsonl`` header (None without one); RecordsError when unreadable."""
    path = out / RECORDS_NAME
    try:
        first = path.open().readline() if path.is_file() else None
    except (OSError, UnicodeDecodeError) as e:
        raise RecordsError(f"{path} cannot be read ({type(e).__name__}: {e})") from None
    if first is None:
        return None
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("study"), str):
        raise RecordsError(f"{path} has no valid header line; it is not a study's run records file (move it away "
                           f"or choose another --out)")
    return header["study"]


@dataclass
class StudyRecords:
    """The records of one study call (see the module docstring); :func:`active` is the open one. ``command``: the
    command that trained the runs (in a report-only call, the one the records name), for the report."""

    out: Path
    study: str
    command: str
    report_only: bool
    write_records: bool = True
    header: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    used: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)
    grid: RunGrid = field(default_factory=RunGrid)

    def folder_key(self, folder: Path) -> str:
        """How a run folder is named in the records: relative to ``out`` when inside it, else as given."""
        try:
            return Path(os.path.relpath(folder, self.out)).as_posix() if _inside(folder, self.out) \
                else Path(folder).as_posix()
        except ValueError:
            return Path(folder).as_posix()

    def stored_result(self, digest: str) -> dict[str, Any] | None:
        """The recorded result of the run whose fingerprint has SHA-256 ``digest`` (None: not recorded)."""
        found = self.stored.get(digest)
        return None if found is None else found[1]

    def has_run(self, task: Any, config: Any) -> bool:
        """Whether the records hold the run of ``task`` and ``config`` (by its fingerprint)."""
        from .harness import run_fingerprint

        return fingerprint_digest(run_fingerprint(task, config)) in self.stored

    def has_folder(self, folder: Path) -> bool:
        """Whether the records hold the run trained in ``folder``."""
        key = self.folder_key(folder)
        return any(name == key for name, _ in self.stored.values())

    def add(self, folder: Path, result: dict[str, Any], *, trained: bool = False) -> None:
        """Note that the study used ``result`` (reused, read from the records, or just ``trained``: then appended to
        ``runs.jsonl`` at once, so that an interrupted study keeps what it trained)."""
        key = self.folder_key(folder)
        self.used.setdefault(result["fingerprint_sha256"], (key, result))
        if trained and self.write_records and not self.report_only:
            if not (self.out / RECORDS_NAME).is_file():
                self.start()
            line = (json.dumps({"run": key, "result": pack_result(result)}) + "\n").encode()
            fd = os.open(self.out / RECORDS_NAME, os.O_WRONLY | os.O_APPEND)
            try:  # one write of the whole line: processes sharing the study append whole lines
                os.write(fd, line)
            finally:
                os.close(fd)

    def start(self) -> None:
        """Begin ``out/runs.jsonl`` with its header (a new study's runs are appended as they finish)."""
        self.out.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "study": self.study, "command": self.command, "measurements": {}}
        path = self.out / RECORDS_NAME
        tmp = path.with_name(f".{RECORDS_NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(header, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def measurement(self, name: str, measure: Callable[[], T], what: str | None = None) -> T:
        """A measurement that is not a run (e.g. a benchmark): taken and recorded when training (saying ``what`` it
        does and how long it took, when given: :func:`.progress.step`), read back from the records in a report-only
        call (:class:`MissingRun` when they lack it)."""
        if self.report_only:
            if name not in self.measurements:
                raise MissingRun(f"{self.out / RECORDS_NAME} holds no {name!r} measurement; run the study's command "
                                 f"without --report-only to take it")
            return self.measurements[name]
        with step(what) if what else contextlib.nullcontext():
            value = measure()
        self.measurements[name] = json.loads(json.dumps(value))
        return value

    def provenance(self, wall_s: float | None) -> str:
        """``machine; YYYY-MM-DD HH:MM UTC[, wall time X min] (this call: K runs trained now, M reused (...); its N
        runs trained for Y min in all)``: this machine and now, or what the records say in a report-only call (runs
        reused from an earlier call count in Y, not in X)."""
        if self.report_only:
            return self.header.get("provenance") or _provenance(None)
        trained_s = sum(result["wall_s"] for _, result in self.used.values())
        self.header["provenance"] = _provenance(wall_s) + (
            f" (this call: {self.grid.summary()}; its {len(self.used)} runs trained for {trained_s / 60:.1f} min in "
            f"all)" if self.used else "")
        return self.header["provenance"]

    def summary(self) -> str:
        """What this call did with its runs, for the command's last line: ``K runs trained now, M reused (...)``, or
        ``report from the N recorded runs`` in a report-only call."""
        if self.report_only:
            return f"report from the {len(self.used)} recorded runs, nothing trained"
        return self.grid.summary()

    def check_complete(self) -> None:
        """Before a report-only call writes: it must use some runs, and no fewer than the records hold."""
        if not self.report_only:
            return
        if not self.used:
            raise MissingRun(f"{self.out} has no finished run of this study; nothing to report (run the study's "
                             f"command without --report-only)")
        if len(self.used) < len(self.stored):
            raise RecordsError(f"this command's plan uses {len(self.used)} of the {len(self.stored)} runs recorded "
                               f"in {self.out / RECORDS_NAME}: its report would replace one made from more runs. "
                               f"Use the command in {self.out / REPORT_NAME} (its Command: line)")

    def write(self) -> Path:
        """``out/runs.jsonl`` from the runs used, in the order used (atomically)."""
        header = {"format": FORMAT, "study": self.study, "command": self.command, **self.header,
                  "measurements": self.measurements}
        lines = [json.dumps(header)]
        lines += [json.dumps({"run": name, "result": pack_result(result)})
                  for name, result in self.used.values()]
        path = self.out / RECORDS_NAME
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{RECORDS_NAME}.{os.getpid()}")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)
        return path


def _inside(folder: Path, out: Path) -> bool:
    try:
        Path(os.path.abspath(folder)).relative_to(os.path.abspath(out))
        return True
    except ValueError:
        return False


def _provenance(wall_s: float | None) -> str:
    from .common import machine

    return (f"{machine()}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
            + (f", wall time {wall_s / 60:.1f} min" if wall_s else ""))


_ACTIVE: ContextVar[StudyRecords | None] = ContextVar("seednorm_study_records", default=None)


def active() -> StudyRecords | None:
    """The records of the study call in progress (None outside :func:`study_records`)."""
    return _ACTIVE.get()


def measure(name: str, measure: Callable[[], T], what: str | None = None) -> T:
    """``measure()``, recorded as the open study's measurement ``name`` (:meth:`StudyRecords.measurement`: read
    back in a report-only call); outside a study call, just ``measure()``."""
    records = active()
    return records.measurement(name, measure, what) if records is not None else measure()


def provenance(wall_s: float | None = None) -> str:
    """The report's machine line (:meth:`StudyRecords.provenance`; this machine and now outside a study call)."""
    records = active()
    return records.provenance(wall_s) if records is not None else _provenance(wall_s)


@contextmanager
def study_records(out: Path, study: str, command: str, *, report_only: bool, write: bool = True
                  ) -> Iterator[StudyRecords]:
    """Open the records of a study call into ``out`` (see the module docstring). Refuses an ``out`` holding
    another study's records or a report without records; in a report-only call, loads and verifies
    ``out/runs.jsonl`` (a folder without it may still report from finished run folders). When the body returns
    normally, a training call writes ``runs.jsonl`` (unless ``write`` is False: a process that is not the one
    writing the report)."""
    kind = _study_of(out)
    if kind is not None and kind != study:
        raise RecordsError(f"{out} holds a {kind!r} study's records and report, not a {study!r} one; choose "
                           f"another --out (or the options of that study)")
    if kind is None and (out / REPORT_NAME).exists():
        raise RecordsError(f"{out} holds a report.md without run records ({RECORDS_NAME}): it is not this study's "
                           f"folder; choose another --out, or delete that report")
    records = StudyRecords(out, study, command, report_only, write_records=write)
    if kind is not None:
        header, runs = read_records(out / RECORDS_NAME)
        records.stored = {result["fingerprint_sha256"]: (name, result) for name, result in runs}
        if report_only:
            records.header = {k: v for k, v in header.items() if k not in ("format", "study", "measurements")}
            records.measurements = dict(header.get("measurements") or {})
            records.command = str(header.get("command") or command)
    token = _ACTIVE.set(records)
    try:
        with run_grid(quiet=report_only or not write) as grid:
            records.grid = grid
            yield records
    finally:
        _ACTIVE.reset(token)
    if write and not report_only:
        records.write()
