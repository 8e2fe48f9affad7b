"""Handing listening sockets to a new master over a Unix socket (SCM_RIGHTS).

The old master sends one control frame ``HANDOFF {"addrs": [...], "pid": old}`` with the
listening fds attached, in the order of ``addrs``; the new master answers ``READY`` on the
same connection once its workers serve, and only then does the old master drain. If the
connection closes before ``READY``, the old master keeps serving.

Two ways to meet: pingap's ``upgrade_sock`` path (the new master started with ``-u``
listens there; the old one connects on SIGQUIT), or a socketpair inherited by a master the
old one spawned itself (SIGUSR2).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from pingap.control import Decoder, Message, MessageType, encode

MAX_FDS = 250


class HandoffError(Exception):
    pass


def send_listeners(conn: socket.socket, listeners: dict[str, socket.socket],
                   regions: dict[str, int] | None = None) -> None:
    """Send every listening socket, plus shared-memory regions (keys ``shm:*``)."""
    keys = list(listeners)
    fds = [listeners[k].fileno() for k in keys]
    for key, fd in (regions or {}).items():
        keys.append(key)
        fds.append(fd)
    frame = encode(MessageType.HANDOFF, {"addrs": keys, "pid": os.getpid()})
    socket.send_fds(conn, [frame], fds)


def receive_listeners(conn: socket.socket) -> tuple[dict[str, socket.socket], dict[str, int],
                                                    int]:
    """(listeners by address key, shared-memory fds by ``shm:*`` key, old master pid)."""
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, MAX_FDS)
    messages = Decoder().feed(data)
    if not messages or messages[0].type != MessageType.HANDOFF:
        for fd in fds:
            os.close(fd)
        raise HandoffError("expected a HANDOFF frame")
    keys = messages[0].payload["addrs"]
    if len(keys) != len(fds):
        for fd in fds:
            os.close(fd)
        raise HandoffError(f"{len(keys)} addresses but {len(fds)} fds")
    socks: dict[str, socket.socket] = {}
    regions: dict[str, int] = {}
    for key, fd in zip(keys, fds, strict=True):
        os.set_inheritable(fd, True)
        if key.startswith("shm:"):
            regions[key] = fd
        else:
            socks[key] = socket.socket(fileno=fd)
    return socks, regions, int(messages[0].payload.get("pid", 0))


def wait_for_taker(path: str, timeout: float) -> socket.socket | None:
    """Connect to a new master listening on ``path`` (pingap's upgrade_sock), retrying."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def listen_for_handoff(path: str, timeout: float,
                       interrupted: Callable[[], bool] = lambda: False) -> socket.socket | None:
    """The new master's side of ``-u``: wait on ``path`` for the old master to connect.
    None if ``interrupted()`` turns true meanwhile (a stop signal arrived)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        server.bind(path)
        server.listen(1)
        while True:
            if interrupted():
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise HandoffError(f"no running pingap handed over its sockets on {path} "
                                   f"within {timeout:.0f}s")
            server.settimeout(min(left, 0.1))
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            return conn
    finally:
        server.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def send_ready(conn: socket.socket) -> None:
    conn.sendall(encode(MessageType.READY, {"pid": os.getpid()}))


def read_messages(conn: socket.socket, decoder: Decoder) -> list[Message] | None:
    """Messages available on ``conn``; None once the peer closed."""
    try:
        data = conn.recv(65536)
    except BlockingIOError:
        return []
    except OSError:
        return None
    if not data:
        return None
    return decoder.feed(data)
