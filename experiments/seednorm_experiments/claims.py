"""Several processes sharing one grid of runs: each run folder is claimed by one process at a time.

A claim is a ``.claim`` file in the run's folder holding the claiming process's pid, created atomically with its
content (written to a private file, then hard-linked into place), so a reader never sees it empty. Claims of dead
processes are taken over; an empty or unreadable claim (another writer's, on a file system without hard links)
counts as live for :data:`CLAIM_GRACE_S` seconds after it was last modified. :func:`work` runs every unfinished
item this process can claim and waits for those other processes hold, so a phase that depends on the runs of the one
before starts only when they are all finished.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["CLAIM_GRACE_S", "CLAIM_NAME", "claim", "work"]

CLAIM_NAME = ".claim"
CLAIM_GRACE_S = 60.0
"""How long an empty or unreadable claim (one being written) counts as held by a live process."""

Item = TypeVar("Item")


def claim(folder: Path) -> bool:
    """Atomically claim the run folder ``folder`` (created if missing) for this process, taking over a claim whose
    process is gone; True when this process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CLAIM_NAME
    mine = folder / f"{CLAIM_NAME}.{os.getpid()}"
    mine.write_text(str(os.getpid()))
    try:
        for _ in range(2):
            try:
                _place(mine, path)
                return True
            except FileExistsError:
                pass
            try:
                text = path.read_text().strip()
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: try again
            except OSError:
                return False
            if not text.isdigit():
                if age < CLAIM_GRACE_S:
                    return False
            elif int(text) == os.getpid():
                return True
            elif _alive(int(text)):
                return False
            path.unlink(missing_ok=True)
        return False
    finally:
        mine.unlink(missing_ok=True)


def _place(mine: Path, path: Path) -> None:
    """Create ``path`` with ``mine``'s content, or FileExistsError: a hard link, or on file systems without
    them an exclusive create then write (whose empty moment the grace period covers)."""
    try:
        os.link(mine, path)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(mine.read_text())


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def work(items: Sequence[Item], folder: Callable[[Item], Path], done: Callable[[Item], bool],
         run: Callable[[Item], None], poll_s: float) -> Iterator[Item]:
    """Run every item not ``done`` that this process can claim (its run folder ``folder(item)``), yielding each
    after it ran; wait ``poll_s`` between looks for those other processes hold. Returns when all are done."""
    while True:
        pending = [item for item in items if not done(item)]
        if not pending:
            return
        ran = False
        for item in pending:
            if not done(item) and claim(folder(item)):
                try:
                    if not done(item):
                        run(item)
                        yield item
                    ran = True
                finally:
                    (folder(item) / CLAIM_NAME).unlink(missing_ok=True)
        if not ran:
            time.sleep(poll_s)
