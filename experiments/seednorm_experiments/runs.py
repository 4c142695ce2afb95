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
settings and says to choose another ``--out`` or delete the folder. An unreadable ``result.json`` is a
:class:`RunRecordError`. The study CLIs print either as one line and exit 2.
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

__all__ = ["EXPECTED_ERRORS", "RunMismatch", "RunRecordError", "check_reusable", "finished_result",
           "train_or_reuse"]


class RunRecordError(RuntimeError):
    """A run folder's ``result.json`` cannot be read as a finished run's record."""


class RunMismatch(RuntimeError):
    """A run folder holds a run made with other settings than the one asked for."""


EXPECTED_ERRORS: tuple[type[Exception], ...] = (CheckpointError, RunRecordError, RunMismatch, RunFolderError)
"""Errors a study reports as one line (a file or folder the user must change), not as a crash."""

_ADVICE = "choose another --out, or delete that folder to train the run again"


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunRecordError(f"{path} is not a readable run record ({type(e).__name__}: {e}); "
                             f"delete it to train that run again") from None
    needed = ("history", "final_eval", "diverged", "fingerprint", "fingerprint_sha256")
    if not isinstance(record, dict) or any(k not in record for k in needed):
        raise RunRecordError(f"{path} is not a complete run record (it lacks a fingerprint or results; it may "
                             f"predate run fingerprints); delete it to train that run again")
    if fingerprint_digest(record["fingerprint"]) != record["fingerprint_sha256"]:
        raise RunRecordError(f"{path} was altered after it was written (its fingerprint does not match its "
                             f"SHA-256); delete it to train that run again")
    return record


def finished_result(task: Task, config: TrainConfig) -> dict[str, Any] | None:
    """The ``result.json`` of ``config.out_dir`` if it is this run's (same fingerprint), None if there is
    none; :class:`RunMismatch` if it is another run's, :class:`RunRecordError` if it is unreadable."""
    path = config.out_dir / RESULT_NAME
    if not os.path.lexists(path):  # a folder or a broken link there is an unreadable record, not a missing one
        return None
    record = _read_record(path)
    expected = run_fingerprint(task, config)
    if record["fingerprint_sha256"] != fingerprint_digest(expected):
        diff = "; ".join(fingerprint_diff(record["fingerprint"], expected)) or "fingerprint"
        raise RunMismatch(f"{config.out_dir} holds a finished run with other settings (there -> now: {diff}); "
                          f"{_ADVICE}")
    return record


def train_or_reuse(task: Task, config: TrainConfig, *, reuse: bool = True) -> dict[str, Any]:
    """This run's ``result.json`` content: the finished run in ``config.out_dir`` if it is this run, else
    training resumed from its checkpoint, else training from scratch (see the module docstring).
    ``reuse=False`` trains from scratch whatever the folder holds (``config.resume`` is ignored either way).

    The run folder is claimed first (:func:`..claims.hold`; under ``torchrun`` once for the launch): a run another
    process is training is waited for and then reused, or with ``reuse=False`` refused (:class:`..claims.RunBusy`),
    so that one process at a time writes a run folder."""
    with hold(config.out_dir, wait=reuse, files=(RESULT_NAME, CHECKPOINT_NAME, "metrics.csv"), folders=("tb",),
              parallel=config.parallel):
        if not reuse:
            return train(task, _with_resume(config, False)).to_json()
        result = finished_result(task, config)
        if result is not None:
            return result
        return train(task, _with_resume(config, (config.out_dir / CHECKPOINT_NAME).is_file())).to_json()


def check_reusable(runs: Iterable[tuple[Task, TrainConfig]]) -> None:
    """:func:`finished_result` for every run, so that a folder of another run stops a study before it trains
    anything rather than halfway."""
    for task, config in runs:
        finished_result(task, config)


def _with_resume(config: TrainConfig, resume: bool) -> TrainConfig:
    return dataclasses.replace(config, resume=resume)
