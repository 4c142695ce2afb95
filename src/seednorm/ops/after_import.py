"""Run a function right after a module is first imported, by whoever imports it: how the DTensor sharding rules
(``sharding.py``) get registered without ``import seednorm`` importing ``torch.distributed.tensor`` (and through it
sympy: about half a second that a process without DTensors never needs).

    after_import("torch.distributed.tensor", register)   # now if it is imported already, else right after it is

A finder at the front of ``sys.meta_path`` answers for that one name: it asks the other finders for the module's
spec and wraps its loader's ``exec_module`` so that ``callback`` runs once the module has executed, and then leaves.
A callback that raises does not break the import: it is logged as a warning (DTensor calls of the op then fail with
DTensor's own "no sharding strategy" error).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

logger = logging.getLogger(__name__)


def after_import(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` now if the module ``name`` is imported already, else once right after its first import."""
    if name in sys.modules:
        _call(name, callback)
    else:
        sys.meta_path.insert(0, _AfterImport(name, callback))


def _call(name: str, callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception as e:  # noqa: BLE001 -- the import that triggered it must not fail because of it
        logger.warning("seednorm: %s after importing %s failed: %s: %s", getattr(callback, "__qualname__", callback),
                       name, type(e).__name__, e)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for ``name`` it returns the other finders' spec with ``callback`` run after the module
    executes. It leaves ``sys.meta_path`` when that happens, not before: a ``find_spec`` that only asks (and imports
    nothing) does not use it up."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name, self.callback = name, callback
        self._asking = False  # inside this finder's own lookup of the spec
        self._called = False

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name or self._asking:
            return None
        self._asking = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._asking = False
        loader = None if spec is None else spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            logger.warning("seednorm: cannot run %s after importing %s (no loader to wrap)",
                           getattr(self.callback, "__qualname__", self.callback), fullname)
            return spec
        exec_module = loader.exec_module

        def exec_then_call(module: ModuleType) -> None:
            try:
                exec_module(module)
            finally:
                del loader.exec_module  # the loader's own method again
            self._done()

        loader.exec_module = exec_then_call  # type: ignore[method-assign]
        return spec

    def _done(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        if not self._called:
            self._called = True
            _call(self.name, self.callback)
