"""sd_notify without libsystemd: datagrams to ``$NOTIFY_SOCKET`` (abstract or path)."""

from __future__ import annotations

import os
import socket
import time


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``FIELD=value`` lines to systemd; False when not under systemd (or it failed)."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True


def monotonic_usec() -> str:
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
