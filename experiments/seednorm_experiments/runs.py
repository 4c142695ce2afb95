"""Runs on disk: reuse a finished run, resume an interrupted one, train a missing one -- only ever the same run.

A harness run folder holds ``checkpoint.pt`` (while and after training) and ``result.json`` (once finished);
both carry the run's fingerprint (:func:`~seednorm_experiments.harness.run_fingerprint`: every setting that
shapes the result -- training config, model, data, evaluation, seed, world size, seednorm version -- and its
SHA-256). :func:`train_or_reuse` is the one way every study (``seednorm lm``, its ablation, ``seednorm vit``)
gets a run's result:

- ``result.json`` present: returned if its fingerprint equals this run's;
- else ``checkpoint.pt`` present: training resumes from it (the harness checks its fingerprint);
- else: trained from scratch.

A folder holding a run of *another* fingerprint (a changed ``--steps``, ``--lr``, width, ... into the same
``--out``) is never reused, resumed or overwritten: :class:`RunMismatch` names the folder and the differing
settings and says to choose another ``--out`` or delete the folder. An unreadable, edited or malformed
``result.json`` (every value is covered by its ``record_sha256`` and checked for type and range,
:func:`.records.check_result`) is a :class:`RunRecordError`. The study CLIs print either as one line and exit 2.

Inside a study call (:func:`.records.study_records`) every result obtained here is noted for the study's
``runs.jsonl``; in a report-only call the records are read first and nothing trains (:class:`.records.MissingRun`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .claims import RunFolderError, hold
from .harness import (
    CHECKPOINT_NAME,
    RESULT_NAME,
    CheckpointError,
    Task,
    TrainConfig,
    fingerprint_diff,
    fingerprint_digest,
    run_fingerprint,
    train,
)
from .progress import active_grid
from .records import RECORDS_NAME, MissingRun, RecordsError, active, check_result

__all__ = ["EXPECTED_ERRORS", "RunMismatch", "RunRecordError", "check_reusable", "finished_result", "is_finished",
           "train_or_reuse"]


class RunRecordError(RuntimeError):
    """A run folder's ``result.json`` cannot be read as a finished run's record."""


class RunMismatch(RuntimeError):
    """A run folder holds a run made with other settings than the one asked for."""


EXPECTED_ERRORS: tuple[type[Exception], ...] = (CheckpointError, RunRecordError, RunMismatch, RunFolderError,
                                               RecordsError)
"""Errors a study reports as one line (a file or folder the user must change), not as a crash."""

_ADVICE = "choose another --out, or delete that folder to train the run again"


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunRecordError(f"{path} is not a readable run record ({type(e).__name__}: {e}); "
                             f"delete it to train that run again") from None
    try:
        return check_result(record, str(path))
    except RecordsError as e:
        raise RunRecordError(str(e)) from None


def finished_result(task: Task, config: TrainConfig) -> dict[str, Any] | None:
    """The ``result.json`` of ``config.out_dir`` if it is this run's (same fingerprint), None if there is
    none; :class:`RunMismatch` if it is another run's, :class:`RunRecordError` if it is unreadable. In a
    report-only call (:mod:`.records`), the run's record in ``runs.jsonl`` comes first. Every result returned is
    noted in the open study's records."""
    records = active()
    if records is not None and records.stored:
        stored = records.stored_result(fingerprint_digest(run_fingerprint(task, config)))
        if stored is not None:
            records.add(config.out_dir, stored)
            _reused(config, "records")
            return stored
    path = config.out_dir / RESULT_NAME
    if not os.path.lexists(path):  # a folder or a broken link there is an unreadable record, not a missing one
        return None
    record = _read_record(path)
    expected = run_fingerprint(task, config)
    if record["fingerprint_sha256"] != fingerprint_digest(expected):
        diff = "; ".join(fingerprint_diff(record["fingerprint"], expected)) or "fingerprint"
        raise RunMismatch(f"{config.out_dir} holds a finished run with other settings (there -> now: {diff}); "
                          f"{_ADVICE}")
    if records is not None:
        records.add(config.out_dir, record)
    _reused(config, "folder")
    return record


def is_finished(folder: Path) -> bool:
    """Whether the run of ``folder`` is finished: its ``result.json`` exists, or the open study's records hold it
    (the one test of "done" every study's scheduler uses)."""
    records = active()
    return (folder / RESULT_NAME).is_file() or (records is not None and records.has_folder(folder))


def train_or_reuse(task: Task, config: TrainConfig, *, reuse: bool = True) -> dict[str, Any]:
    """This run's ``result.json`` content: the finished run in ``config.out_dir`` if it is this run, else
    training resumed from its checkpoint, else training from scratch (see the module docstring).
    ``reuse=False`` trains from scratch whatever the folder holds (``config.resume`` is ignored either way).

    The run folder is claimed first (:func:`..claims.hold`; under ``torchrun`` once for the launch): a run another
    process is training is waited for and then reused, or with ``reuse=False`` refused (:class:`..claims.RunBusy`),
    so that one process at a time writes a run folder. A run the open study's records hold is reused without its
    folder; in a report-only call nothing trains (:class:`.records.MissingRun`)."""
    records = active()
    if records is not None and (reuse or records.report_only):
        result = finished_result(task, config) if records.report_only or records.has_run(task, config) else None
        if result is not None:
            return result
        if records.report_only:
            raise MissingRun(f"no record of the run {config.out_dir} in {records.out / RECORDS_NAME} nor a finished "
                             f"run in that folder: --report-only trains nothing (run the command without it)")
    with hold(config.out_dir, wait=reuse, files=(RESULT_NAME, CHECKPOINT_NAME, "metrics.csv"), folders=("tb",),
              parallel=config.parallel):
        if not reuse:
            result = _train(task, config, False)
        else:
            result = finished_result(task, config)
            if result is not None:
                return result
            result = _train(task, config, (config.out_dir / CHECKPOINT_NAME).is_file())
    if records is not None and not result["interrupted"]:
        records.add(config.out_dir, result, trained=True)
    return result


def check_reusable(runs: Iterable[tuple[Task, TrainConfig]]) -> None:
    """:func:`finished_result` for every run, so that a folder of another run stops a study before it trains
    anything rather than halfway."""
    for task, config in runs:
        finished_result(task, config)


def _train(task: Task, config: TrainConfig, resume: bool) -> dict[str, Any]:
    """Train the run (resuming from its checkpoint when ``resume``), telling the open study's grid
    (:mod:`.progress`: "run k of N" and the ETA)."""
    grid = active_grid()
    if grid is not None:
        grid.started(config.out_dir, config.desc, resume)
    result = train(task, dataclasses.replace(config, resume=resume)).to_json()
    if grid is not None:
        grid.finished(config.out_dir, stopped=bool(result["interrupted"]))
    return result


def _reused(config: TrainConfig, source: str) -> None:
    grid = active_grid()
    if grid is not None:
        grid.reused(config.out_dir, source)
