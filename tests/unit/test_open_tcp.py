"""workers/pool.py ``open_tcp``: backends given as addresses are connected without a
name lookup (gevent's resolver hands every lookup to a thread, ~60 µs of a connect);
names still resolve; a failed connect leaves no socket open."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from workers.pool import open_tcp


class LookedUp(Exception):
    pass


@pytest.fixture
def no_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise LookedUp(args)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@contextmanager
def _listener(family: socket.AddressFamily, host: str) -> Iterator[tuple[socket.socket, int]]:
    try:
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.bind((host, 0))
    except OSError as exc:  # no IPv6 on this host's loopback
        pytest.fail(f"cannot listen on {host}: {exc}")
    srv.listen(8)
    try:
        yield srv, srv.getsockname()[1]
    finally:
        srv.close()


@pytest.fixture
def v4() -> Iterator[tuple[socket.socket, int]]:
    with _listener(socket.AF_INET, "127.0.0.1") as listening:
        yield listening


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"),
                                              (socket.AF_INET6, "::1")], ids=["ipv4", "ipv6"])
def test_an_address_connects_without_a_lookup(no_lookups: None, family: socket.AddressFamily,
                                              host: str) -> None:
    with _listener(family, host) as (srv, port):
        sock = open_tcp(host, port, 5.0)
        try:
            peer, _ = srv.accept()
            assert sock.family == family
            assert sock.getpeername()[:2] == (host, port)
            assert sock.gettimeout() == 5.0
            peer.close()
        finally:
            sock.close()


def test_a_name_is_still_looked_up(no_lookups: None, v4: tuple[socket.socket, int]) -> None:
    _srv, port = v4
    with pytest.raises(LookedUp):
        open_tcp("localhost", port, 5.0)


def test_a_refused_connect_raises_and_leaves_no_socket(v4: tuple[socket.socket, int]) -> None:
    srv, port = v4
    srv.close()  # nothing listens on the port any more
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ConnectionRefusedError):
        open_tcp("127.0.0.1", port, 5.0)
    assert len(os.listdir("/proc/self/fd")) == before
