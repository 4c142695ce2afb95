"""The argument rules every ``seednorm`` subcommand shares, and how their errors reach the user.

Exit codes of every subcommand: 0 when it finished; 2 when it cannot run as given -- a bad argument (a
count < 1, a learning rate <= 0 or not finite, an ``--out`` that is a file or cannot be written) or files in
``--out`` that must not be used as they are (a run of other settings, a corrupt checkpoint or run record). A
2 is one line on stderr, ``seednorm <command>: error: ...``; arguments are checked before any work starts.
Anything else is a bug and ends with a traceback (exit 1).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def _creatable(path: Path, what: str) -> None:
    """ValueError unless ``path`` can be created or written: its nearest existing ancestor is a writable folder."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path} is under {parent}, which is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} cannot be created: {parent} is not writable")


def check_out_dir(path: Path) -> Path:
    """``path`` if it is a folder that exists and is writable, or can be created; ValueError naming the problem."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--out {path} is a file; give a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"--out {path} is not writable")
        return path
    _creatable(path, "--out")
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


def report_errors(prog: str, body: Callable[[], int], expected: tuple[type[Exception], ...]) -> int:
    """``body()``, with an ``expected`` error printed as one line ``<prog>: error: <message>`` on stderr and
    exit code 2 (see the module docstring)."""
    try:
        return body()
    except expected as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
