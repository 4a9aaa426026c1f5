"""Loopback ports: find a free one, check one, wait for a server to listen on one."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(
    port: int,
    host: str = LOOPBACK,
    timeout_s: float = 10.0,
    alive: Callable[[], bool] | None = None,
) -> bool:
    """Wait until something accepts connections on ``host:port``.

    Args:
        alive: called between attempts; waiting stops early (returning False) once it says the
            server process has exited, so a crashed start is reported at once, not after the
            timeout.

    Returns:
        True once a connection succeeded, False on timeout or when ``alive`` says no.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if alive is not None and not alive():
                return False
            time.sleep(0.05)
    return False
