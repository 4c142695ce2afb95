"""What a study call tells its user while it works, one line at a time on stderr (the main process only):

- a slow step that is not a run (building the corpus, training the tokenizer, loading a checkpoint): one line when
  it starts and one with its time when it ends (:func:`step`);
- the C++ kernels' first build: the library logs it (``logging`` at INFO under ``seednorm``, silent by default);
  :func:`library_notices` shows those lines on stderr, as the ``seednorm`` command does;
- every run of the study's grid (:class:`RunGrid`, fed by :mod:`.runs`, the one way every study gets a run):
  ``run k of N: <run> (training)`` when a run starts training, and when it ends its time, how many runs are done
  and the whole grid's ETA from the mean time of the runs trained so far in this call. Runs reused from their
  folders or the study's records count as done, silently; :meth:`RunGrid.summary` says how many of each. With
  several processes on one study folder (:func:`.claims.work`), the runs the others finished count as done too, and
  the ETA shares the runs left among this process and those training now.

``--no-progress`` turns off the per-step progress bars only: these lines are few (two per trained run) and say
where a long call stands, so they are always printed. A report-only call trains nothing and has no run lines.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

__all__ = ["RunGrid", "active_grid", "expect", "run_grid", "library_notices", "say", "step"]


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def say(line: str) -> None:
    """Print ``line`` on stderr (the main process only), at once."""
    if _main_process():
        print(line, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``1.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@contextmanager
def step(what: str, *, log: Callable[[str], None] = say) -> Iterator[None]:
    """``<what> ...`` before the block and ``<what>: done in X s`` after it (not when it raises)."""
    log(f"{what} ...")
    t0 = time.perf_counter()
    yield
    log(f"{what}: done in {duration(time.perf_counter() - t0)}")


class _StderrHandler(logging.Handler):
    """Writes each record to the current ``sys.stderr`` (whatever replaced it since), from the main process only."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if _main_process():
                print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 -- logging's own rule: a handler never raises
            self.handleError(record)


@contextmanager
def library_notices() -> Iterator[None]:
    """Show the library's INFO lines (the ``seednorm`` logger: the first build of the C++ kernels and its time) on
    stderr as ``seednorm: <message>`` for the block, as the ``seednorm`` command does; the logger's level and
    handlers are as before afterwards. A library user who wants these lines configures ``logging`` instead."""
    logger = logging.getLogger("seednorm")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("seednorm: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class RunGrid:
    """The runs of one study call: how many the study expects (:meth:`expect`), which are done and how (trained now,
    reused from their folder, reused from the records), and how long the trained ones took. ``log`` prints a line;
    ``quiet`` prints nothing (a report-only call); ``clock`` gives seconds (tests pass a fake one)."""

    def __init__(self, *, log: Callable[[str], None] = say, quiet: bool = False,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.log, self.quiet, self.clock = log, quiet, clock
        self.expected = 0
        self.done: dict[str, str] = {}  # folder -> "trained", "folder" or "records"
        self.trained_s: list[float] = []
        self._started: dict[str, tuple[float, str]] = {}
        self.elsewhere: set[str] = set()  # folders of finished runs seen on disk (other processes' too)
        self.others = 0  # runs other processes are training now

    def shared(self, finished: Iterable[Path], training: int) -> None:
        """What other processes working on the same study folder did: the runs of the folders ``finished`` are done
        (this process will reuse them), and ``training`` runs are being trained by them now."""
        self.elsewhere |= {_key(folder) for folder in finished}
        self.others = training

    def _done_count(self) -> int:
        return len(self.done.keys() | self.elsewhere)

    def expect(self, total: int) -> None:
        """The study plans ``total`` runs in all (a grid that grows as it goes may say so again, with more)."""
        self.expected = max(self.expected, total)

    @property
    def total(self) -> int:
        """N of "run k of N": the runs expected, or more once more than that were started or done."""
        return max(self.expected, len(self.done.keys() | self._started.keys() | self.elsewhere))

    def _say(self, line: str) -> None:
        if not self.quiet:
            self.log(line)

    def reused(self, folder: Path, source: str) -> None:
        """The run of ``folder`` was reused, its result read from ``source`` ("folder" or "records")."""
        self.done.setdefault(_key(folder), source)

    def started(self, folder: Path, desc: str, resuming: bool) -> None:
        """The run of ``folder`` (``desc``: its name) starts training (``resuming`` from its checkpoint)."""
        key = _key(folder)
        self.done.pop(key, None)
        self.elsewhere.discard(key)
        k = self._done_count() + 1
        self._started[key] = (self.clock(), desc)
        self._say(f"run {k} of {self.total}: {desc or folder} "
                  f"({'resuming from its checkpoint' if resuming else 'training'})")

    def finished(self, folder: Path, stopped: bool = False) -> None:
        """The run of ``folder`` ended (``stopped``: interrupted before its last step)."""
        key = _key(folder)
        t0, desc = self._started.pop(key, (self.clock(), ""))
        took = self.clock() - t0
        self.done[key] = "trained"
        self.trained_s.append(took)
        k, n = self._done_count(), self.total
        line = f"run {k} of {n}{' stopped' if stopped else ''} after {duration(took)}"
        left = n - k
        if left > 0:
            workers = 1 + self.others
            wait = left * (sum(self.trained_s) / len(self.trained_s)) / workers
            eta = time.strftime("%H:%M UTC", time.gmtime(time.time() + wait))
            line += (f"; {left} to go, about {duration(wait)} at the mean of the {len(self.trained_s)} "
                     f"trained so far{f' over {workers} processes' if workers > 1 else ''} (done near {eta})")
        self._say(line)

    def counts(self) -> dict[str, int]:
        """How many runs were trained now and reused from folders and from records."""
        out = {"trained": 0, "folder": 0, "records": 0}
        for how in self.done.values():
            out[how] += 1
        return out

    def summary(self) -> str:
        """``12 runs trained now, 36 reused (30 from their folders, 6 from the records)``."""
        c = self.counts()
        text = f"{c['trained']} run{'' if c['trained'] == 1 else 's'} trained now"
        reused = c["folder"] + c["records"]
        if reused:
            parts = [f"{c['folder']} from their folders" if c["folder"] else "",
                     f"{c['records']} from the records" if c["records"] else ""]
            text += f", {reused} reused ({', '.join(p for p in parts if p)})"
        return text


def _key(folder: Path) -> str:
    return os.path.abspath(folder)


_GRID: ContextVar[RunGrid | None] = ContextVar("seednorm_run_grid", default=None)


def active_grid() -> RunGrid | None:
    """The run grid of the study call in progress (None outside :func:`run_grid`)."""
    return _GRID.get()


def expect(total: int) -> None:
    """Tell the open study call's grid that it plans ``total`` runs in all (nothing outside a study call)."""
    grid = active_grid()
    if grid is not None:
        grid.expect(total)


@contextmanager
def run_grid(*, quiet: bool = False, log: Callable[[str], None] = say) -> Iterator[RunGrid]:
    """Open the run grid of a study call (:class:`RunGrid`) for the block."""
    grid = RunGrid(log=log, quiet=quiet)
    token = _GRID.set(grid)
    try:
        yield grid
    finally:
        _GRID.reset(token)
