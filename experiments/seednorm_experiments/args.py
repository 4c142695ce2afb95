"""The argument rules every ``seednorm`` subcommand shares, and how their errors reach the user.

Exit codes of every subcommand: 0 when it finished; 2 when it cannot run as given -- a bad argument (a
count < 1, a learning rate <= 0 or not finite, a preset field out of its range, an ``--out`` that is a file, a
dangling symlink or cannot be created or written) or files in ``--out`` that must not be used as they are (a run of
other settings, a corrupt checkpoint or run record, a file that is a folder, an unreadable one, a run folder another
process is training), or a data package the study reads that is not installed. A
2 is one line on stderr, ``seednorm <command>: error: ...``; arguments are checked before any work starts.
130 when interrupted (Ctrl-C): one line on stderr, ``seednorm <command>: interrupted; finished runs are kept; ...``
saying how to continue. Anything else is a bug and ends with a traceback (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .texts import MissingDataPackage


def _number(text: str, parse: type, ok: Callable[[Any], bool], expected: str, must: str) -> Any:
    """``parse(text)`` when it is ``ok``; else argparse's error: "expected <expected>, got <text>" when ``text`` does
    not parse, "must be <must>, got <text>" when it parses out of range."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {must}, got {value if parse is int else repr(text)}")
    return value


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "an integer >= 1", ">= 1")


def nonnegative_int(text: str) -> int:
    """argparse ``type=``: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0", ">= 0")


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite number > 0."""
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a number > 0", "a finite number > 0")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "count": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "count0": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "count?": (lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or none"),
    "rate": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "rate0": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "rate?": (lambda v: v is None or (_is_number(v) and v > 0), "a finite number > 0 or none"),
    "probability": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "rates": (lambda v: isinstance(v, tuple) and bool(v) and all(_is_number(x) and x > 0 for x in v),
              "one or more finite numbers > 0"),
    "rates0": (lambda v: isinstance(v, tuple) and all(_is_number(x) and x > 0 for x in v),
               "finite numbers > 0 (or none)"),
    "counts0": (lambda v: isinstance(v, tuple) and all(_is_int(x) and x >= 1 for x in v),
                "integers >= 1 (or none)"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "name": (lambda v: isinstance(v, str) and bool(v) and "/" not in v and os.sep not in v and v not in (".", ".."),
             "a non-empty name without path separators"),
    "dot_scale": (lambda v: v == "dim" or (_is_number(v) and v > 0), "a finite number > 0 or 'dim'"),
}


def check_fields(obj: Any, ranges: dict[str, str], what: str = "preset field") -> None:
    """ValueError ``<what> <name> must be <range>, got <value>`` for the first attribute of ``obj`` outside its
    range; ``ranges`` maps attribute names to kinds: count (int >= 1), count0 (>= 0), count? (None or >= 1), rate
    (finite > 0), rate0 (finite >= 0), rate? (None or rate), probability ([0, 1)), fraction ((0, 1)), rates
    (non-empty tuple of rates), rates0 (tuple of rates), counts0 (tuple of counts), bool, name (a file-name-safe
    string), dot_scale (rate or "dim"). How every study's preset checks its fields (one line and exit 2 from the
    CLI)."""
    for name, kind in ranges.items():
        ok, expected = _RANGES[kind]
        value = getattr(obj, name)
        if not ok(value):
            raise ValueError(f"{what} {name} must be {expected}, got {value!r}")


REPORT = "report.md"
"""The report every study writes into its ``--out`` (checked up front: :func:`check_out_dir`'s ``files``)."""


def _not_a_folder(path: Path) -> str | None:
    """What ``path`` is when it exists in some form but cannot be entered as a folder; None otherwise."""
    if path.is_symlink() and not path.exists():
        return f"a dangling symlink (to {os.readlink(path)}) or a symlink loop"
    if path.exists() and not path.is_dir():
        return "a file"
    return None


def _creatable(path: Path, what: str) -> None:
    """ValueError unless ``path`` can be created or written: its nearest existing ancestor is a writable folder in
    which a folder can be made (tried: made and removed again), and no missing part of it is a dangling symlink."""
    path = path.absolute()
    missing = parent = path
    for parent in [path, *path.parents][0 if not path.exists() else 1:]:
        if parent.is_symlink() and not parent.exists():
            raise ValueError(f"{what} {path}: {parent} is {_not_a_folder(parent)}; remove it or give another folder")
        if parent.exists():
            break
        missing = parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path} is under {parent}, which is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} cannot be created: {parent} is not writable")
    try:  # os.access says yes to root everywhere, and knows nothing of /proc or a read-only mount: try it
        os.mkdir(missing)
    except FileExistsError:  # made meanwhile (another process on the same --out)
        return
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be created in {parent} ({e.strerror or e}); give another folder") \
            from None
    with contextlib.suppress(OSError):  # not empty any more: another process on the same --out uses it
        os.rmdir(missing)


def check_out_dir(path: Path, files: tuple[str, ...] = ()) -> Path:
    """``path`` if it is a folder that exists and is writable, or can be created; ValueError naming the problem.
    ``files``: names of files the command writes in it, each of which must be a writable file if it is there."""
    path = Path(path)
    what = _not_a_folder(path)
    if what is not None:
        raise ValueError(f"--out {path} is {what}; give a folder")
    if not path.exists():
        _creatable(path, "--out")
        return path
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path} is not writable")
    for name in files:
        file = path / name
        if (file.is_symlink() and not file.exists()) or (file.exists() and not file.is_file()):
            raise ValueError(f"--out {path}: {file} is not a file (a folder or a broken symlink); remove it or give "
                             "another folder")
        if file.exists() and not os.access(file, os.W_OK):
            raise ValueError(f"--out {path}: {file} is not writable")
    return path


def check_out_file(path: Path) -> Path:
    """``path`` if a file can be written there (an existing file is replaced); ValueError naming the problem."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"--out {path} is not writable")
    _creatable(path, "--out")
    return path


def _argtype(check: Callable[[Path], Path]) -> Callable[[str], Path]:
    def parse(text: str) -> Path:
        try:
            return check(Path(text))
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("--out ")) from None

    parse.__name__ = check.__name__
    return parse


out_dir = _argtype(check_out_dir)
"""argparse ``type=`` of an output folder (:func:`check_out_dir`)."""
out_file = _argtype(check_out_file)
"""argparse ``type=`` of an output file (:func:`check_out_file`)."""


RERUN = "rerun the same command to continue"
"""How an interrupted study continues, unless its command says otherwise (:func:`report_errors`' ``rerun``)."""

INTERRUPTED_EXIT = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it)."""


def interrupted(prog: str, rerun: str = RERUN, kept: str = "finished runs are kept") -> int:
    """Print the one line of an interrupted command on stderr, ``<prog>: interrupted; <kept>; <rerun>``; returns
    :data:`INTERRUPTED_EXIT`."""
    print(f"{prog}: interrupted; {kept}; {rerun}", file=sys.stderr)
    return INTERRUPTED_EXIT


def report_errors(prog: str, body: Callable[[], int], expected: tuple[type[Exception], ...], *,
                  rerun: str = RERUN) -> int:
    """``body()``, with an ``expected`` error printed as one line ``<prog>: error: <message>`` on stderr and
    exit code 2 (see the module docstring). So is an OSError about a path (a file or folder in ``--out`` of the
    wrong kind, unreadable or unwritable): the line names the path and what to do; and a missing data package
    (:class:`MissingDataPackage`): the line gives the ``pip install`` that installs it. Ctrl-C ends with one
    line, ``<prog>: interrupted; finished runs are kept; <rerun>``, and exit code 130."""
    try:
        return body()
    except KeyboardInterrupt:
        return interrupted(prog, rerun)
    except (*expected, MissingDataPackage) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None:
            raise
        where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 is not None else "")
        print(f"{prog}: error: {where}: {e.strerror or e}; fix or remove that path, or choose another --out",
              file=sys.stderr)
        return 2
