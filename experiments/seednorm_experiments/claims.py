"""Several processes sharing one grid of runs: each run folder is claimed by one process at a time.

A claim is a ``.claim`` file in the run's folder holding the claiming process's pid, created atomically with its
content (written to a private file, then hard-linked into place), so a reader never sees it empty. Claims of dead
processes are taken over; an empty or unreadable claim (another writer's, on a file system without hard links)
counts as live for :data:`CLAIM_GRACE_S` seconds after it was last modified. :func:`work` runs every unfinished
item this process can claim and waits for those other processes hold, so a phase that depends on the runs of the one
before starts only when they are all finished. :func:`hold` claims one run folder for the time a run trains in it
(every study's runs go through it, :func:`..runs.train_or_reuse`): a second process on the same run waits for the
first and then reuses its run, or refuses with :class:`RunBusy` -- never two writers in one folder.

A run folder that cannot be used as it is (it or one of its parents a file, a dangling symlink or a symlink loop; not
writable; a file the run writes that is a folder) is a :class:`RunFolderError` naming the path and what to do.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from .progress import active_grid

__all__ = ["CLAIM_GRACE_S", "CLAIM_NAME", "WAIT_POLL_S", "RunBusy", "RunFolderError", "claim", "hold", "work"]

CLAIM_NAME = ".claim"
CLAIM_GRACE_S = 60.0
"""How long an empty or unreadable claim (one being written) counts as held by a live process."""
WAIT_POLL_S = 2.0
"""How often :func:`hold` looks whether the process holding a run folder has let it go."""

Item = TypeVar("Item")

_ADVICE = "remove it, or choose another --out"


class RunFolderError(RuntimeError):
    """A run folder cannot be used as it is (the message names the path and what to do)."""


class RunBusy(RunFolderError):
    """A run folder is being trained by another process."""


def _not_a_folder(path: Path) -> str | None:
    """What ``path`` is when it exists in some form but is not a folder one can enter; None when it is one or is
    missing."""
    if path.is_symlink() and not path.exists():
        return "a dangling symlink or a symlink loop"
    if path.exists() and not path.is_dir():
        return "a symlink to a file" if path.is_symlink() else "a file"
    return None


def _unusable(folder: Path, error: OSError) -> RunFolderError:
    """The one-line error of a run folder that ``error`` kept from being created or written."""
    for p in [*reversed(folder.parents), folder]:  # the outermost path that is in the way
        what = _not_a_folder(p)
        if what is not None:
            return RunFolderError(f"{p} is {what}, not a folder; {_ADVICE}")
    return RunFolderError(f"cannot create or write the run folder {folder} ({error.strerror or error}); make it "
                          f"writable, or choose another --out")


def _make(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unusable(folder, e) from None


def claim(folder: Path) -> bool:
    """Atomically claim the run folder ``folder`` (created if missing) for this process, taking over a claim whose
    process is gone; True when this process holds it. :class:`RunFolderError` when the folder cannot be created or
    written."""
    _make(folder)
    path = folder / CLAIM_NAME
    mine = folder / f"{CLAIM_NAME}.{os.getpid()}"
    try:
        mine.write_text(str(os.getpid()))
    except OSError as e:
        raise _unusable(folder, e) from None
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


def _holder(path: Path) -> int | None:
    """The pid a claim file names (None: no claim, or one not yet written)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _check_entries(folder: Path, files: Sequence[str], folders: Sequence[str]) -> None:
    """:class:`RunFolderError` when one of ``files`` in ``folder`` is there but is no readable file, or one of
    ``folders`` is there but is no folder."""
    for name in files:
        path = folder / name
        if not os.path.lexists(path):
            continue
        what = ("a folder" if path.is_dir() else "a dangling symlink or a symlink loop" if not path.exists()
                else None if path.is_file() else "not a regular file")
        if what is not None:
            raise RunFolderError(f"{path} is {what}, where the run keeps a file; {_ADVICE}")
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise RunFolderError(f"{path} cannot be read ({e.strerror or e}); make it readable, or {_ADVICE}") \
                from None
    for name in folders:
        what = _not_a_folder(folder / name)
        if what is not None:
            raise RunFolderError(f"{folder / name} is {what}, where the run keeps a folder; {_ADVICE}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write in the run folder {folder}; make it writable, or choose another --out")


def _try_hold(folder: Path, wait: bool, files: Sequence[str], folders: Sequence[str]) -> str:
    """Claim ``folder`` and check what is in it: "mine" (claimed now), "nested" (this process held it already),
    or "busy" (another process holds it and ``wait``; without ``wait``, :class:`RunBusy`)."""
    nested = _holder(folder / CLAIM_NAME) == os.getpid()
    if not claim(folder):
        if wait:
            return "busy"
        pid = _holder(folder / CLAIM_NAME)
        raise RunBusy(f"{folder} is being trained by another process{f' (pid {pid})' if pid else ''}; let it "
                      "finish (with --resume this command waits for it and reuses its run), or choose another --out")
    try:
        _check_entries(folder, files, folders)
    except RunFolderError:
        if not nested:
            (folder / CLAIM_NAME).unlink(missing_ok=True)
        raise
    return "nested" if nested else "mine"


def _launch(parallel: str) -> tuple[int, int]:
    """This process's rank and the number of ranks of its ``torchrun`` launch (joining its process group)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from .harness.distributed import setup_distributed

    d = setup_distributed(parallel)
    return d.rank, d.world


def _from_rank0(status: object) -> object:
    import torch.distributed as dist

    box = [status]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextmanager
def hold(folder: Path, *, wait: bool, files: Sequence[str] = (), folders: Sequence[str] = (),
         parallel: str = "auto", poll_s: float = WAIT_POLL_S) -> Iterator[None]:
    """Hold the claim of the run folder ``folder`` (created if missing) for the block. While another process holds
    it, wait for it (``wait``; every ``poll_s`` seconds) or raise :class:`RunBusy`. Inside the block ``files``
    there are readable files and ``folders`` folders, if present (else :class:`RunFolderError`). The claim is
    released when the block ends, by an exception too, unless this process held it before (:func:`work`).

    Under ``torchrun`` the ranks of one launch train the run together: rank 0 claims it for all of them and tells
    each the outcome (every rank must call this for the same folder; ``parallel`` is the run's mode, for joining
    the process group)."""
    rank, world = _launch(parallel)
    status: object = None
    told = False
    try:
        while True:
            if rank == 0:
                try:
                    status = _try_hold(folder, wait, files, folders)
                except RunFolderError as e:
                    status = e
            if world > 1:
                status = _from_rank0(status)
            if isinstance(status, RunFolderError):
                raise status
            if status != "busy":
                break
            if rank == 0 and not told:
                pid = _holder(folder / CLAIM_NAME)
                print(f"waiting for {f'process {pid}' if pid else 'another process'}, which trains {folder}",
                      file=sys.stderr, flush=True)
                told = True
            time.sleep(poll_s)
        yield
    finally:
        if rank == 0 and status == "mine":
            (folder / CLAIM_NAME).unlink(missing_ok=True)


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
                        _tell_grid(items, item, folder, done)
                        run(item)
                        yield item
                    ran = True
                finally:
                    (folder(item) / CLAIM_NAME).unlink(missing_ok=True)
        if not ran:
            time.sleep(poll_s)


def _tell_grid(items: Sequence[Item], mine: Item, folder: Callable[[Item], Path], done: Callable[[Item], bool]) -> None:
    """Tell the open study call's run grid (:mod:`.progress`) which of the other runs are done (by any process) and
    how many other processes hold now, before this process trains ``mine``."""
    grid = active_grid()
    if grid is None:
        return
    others = [(item, done(item)) for item in items if item is not mine]  # one look at each run on disk
    held = sum(1 for item, finished in others
               if not finished and _holder(folder(item) / CLAIM_NAME) not in (None, os.getpid()))
    grid.shared([folder(item) for item, finished in others if finished], held)
