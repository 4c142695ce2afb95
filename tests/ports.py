"""A free TCP port on this machine, for process groups and ``torchrun`` launches that tests start (torchrun's default
port, 29500, would be shared by two launches running at once under pytest-xdist's workers)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that the OS had free a moment ago (bound to 127.0.0.1 and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
