"""The cache directory's storage options through the real pingap against a recording
origin: ``max_size`` evicts the least recently used entries, ``writing_max`` and
``reading_max`` turn work over the cap into unstored fills and misses, ``cache_max``
serves small entries from memory, the memory store's bound evicts the same way, and
entries survive a restart while a write cut short by a crash is never served; with
two workers, the caps and ``max_size`` hold for the host and a killed worker's reads and
fills are given back. What reached the origin proves each miss."""

from __future__ import annotations

import http.client
import os
import signal
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psutil
import pytest

from tests.integration.test_body_plugins import DECODE
from tests.support.client import request
from tests.support.content_backend import text
from tests.support.h2c import Answer, http1, http2
from tests.support.proc import Origin, PingapProcess, free_port, hits, wait_for


def config(port: int, origin: Origin, directory: str, extra: str = "", threads: int = 1) -> str:
    # one worker unless a test says: the hot layer is per worker
    return f"""
[basic]
grace_period = "1s"
threads = {threads}

[upstreams.u]
addrs = ["{origin.addr}"]

[plugins.c]
category = "cache"
directory = "{directory}"
max_file_size = "64mb"
{extra}
[locations.all]
upstream = "u"
plugins = ["c"]

[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
enabled_h2 = true
"""


def page(name: str, size: int) -> str:
    return f"/text?n={size}&cc=max-age%3D600&k={name}"


def get(port: int, path: str) -> Answer:
    answer = http1(port, path=path)
    assert answer.status == 200
    return answer


def status(port: int, path: str) -> str | None:
    return get(port, path).header("x-cache-status")


def small_buffer_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def held(port: int, path: str,
         sock: socket.socket | None = None) -> tuple[socket.socket, bytes]:
    """A client (on ``sock`` if given) that asks for ``path``, reads the response head
    and then stops reading, so the response (and what it holds in pingap) stays in
    progress until closed."""
    sock = sock or small_buffer_socket(port)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, head
        head += byte
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock, head.lower()


def entry_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts]


@pytest.mark.parametrize("store", ["file", "memory"])
def test_max_size_evicts_the_least_recently_used(pingap: Callable[..., PingapProcess],
                                                 origin: Origin, tmp_path: Path,
                                                 store: str) -> None:
    port = free_port()
    root = tmp_path / "cache"
    directory = f"{root}?max_size=100kb" if store == "file" else "memory://t?max_size=100kb"
    pingap(config(port, origin, directory), port=port)
    a, b, c, d = (page(n, 25_000) for n in "abcd")
    for path in (a, b, c):
        assert status(port, path) == "miss"
    assert status(port, a) == "hit"  # a is used again: b is now the least recent
    assert status(port, d) == "miss"  # 4 x 25 KB (and heads) do not fit in 100 KB
    for path in (a, c, d):
        assert status(port, path) == "hit", path
    assert [hits(origin, p) for p in (a, c, d)] == [1, 1, 1]
    evicted = get(port, b)
    assert evicted.header("x-cache-status") == "miss" and evicted.body == text(25_000)
    assert hits(origin, b) == 2
    if store == "file":
        assert sum(p.stat().st_size for p in entry_files(root)) <= 100_000


def test_large_hits_are_sent_from_their_file(pingap: Callable[..., PingapProcess],
                                             origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    text_config = config(port, origin, str(tmp_path / "cache"), "").replace(
        'plugins = ["c"]', 'plugins = ["c", "z"]') + (
        '[plugins.z]\ncategory = "compression"\ngzip_level = 6\n')
    pingap(text_config, port=port)
    path = page("large", 300_000)
    assert status(port, path) == "miss"
    for fetch in (http1, http2):  # sendfile on plaintext HTTP/1.1, read in chunks for h2
        answer = fetch(port, path=path)
        assert answer.header("x-cache-status") == "hit" and answer.body == text(300_000)
        assert answer.header("content-length") == "300000"
        zipped = fetch(port, path=path, headers={"Accept-Encoding": "gzip"})
        assert zipped.header("x-cache-status") == "hit"  # through the compression filter
        assert zipped.header("content-encoding") == "gzip"
        assert DECODE["gzip"](zipped.body) == text(300_000)
    assert hits(origin, path) == 1


def test_writing_max_leaves_fills_over_the_cap_unstored(pingap: Callable[..., PingapProcess],
                                                        origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    pingap(config(port, origin, f"{tmp_path / 'cache'}?writing_max=1"), port=port)
    big, small = page("big", 20_000_000), page("small", 1000)
    slow_client, _ = held(port, big)  # its fill is the one write in progress
    try:
        assert status(port, small) == "miss"
        # the second fill was over writing_max: relayed whole, not stored (pingap)
        again = get(port, small)
        assert again.header("x-cache-status") == "miss" and again.body == text(1000)
        assert hits(origin, small) == 2
    finally:
        slow_client.close()
    # the client that went away gave its write back: fills are stored again
    wait_for(lambda: status(port, small) == "hit",  # each miss fills again
             what="a stored fill once the slow response ended")
    assert status(port, big) == "miss"  # the cut-short fill stored nothing


def test_reading_max_makes_reads_over_the_cap_misses(pingap: Callable[..., PingapProcess],
                                                      origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    pingap(config(port, origin, f"{tmp_path / 'cache'}?reading_max=1"), port=port)
    big, small = page("big", 20_000_000), page("small", 1000)
    assert status(port, big) == "miss" and status(port, small) == "miss"
    slow_client, head = held(port, big)  # a hit sent from its file: the read in progress
    try:
        assert b"x-cache-status: hit" in head
        over = get(port, small)
        # over reading_max the entry is not read: a miss, fetched from the origin (pingap)
        assert over.header("x-cache-status") == "miss" and over.body == text(1000)
        assert hits(origin, small) == 2
    finally:
        slow_client.close()
    wait_for(lambda: status(port, small) == "hit", what="reads once the slow hit ended")
    assert hits(origin, big) == 1


def test_cache_max_serves_small_entries_from_memory(pingap: Callable[..., PingapProcess],
                                                    origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    root = tmp_path / "cache"
    pingap(config(port, origin, f"{root}?cache_max=100&cache_file_max_weight=2"), port=port)
    small, large = page("small", 1000), page("large", 20_000)
    assert status(port, small) == "miss" and status(port, large) == "miss"
    # overwrite both files in place, keeping inode, size and modification time: only an
    # entry held in memory can still be served whole
    for path in entry_files(root):
        st = path.stat()
        with open(path, "r+b") as handle:
            handle.write(b"\0" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    hot = get(port, small)
    assert hot.header("x-cache-status") == "hit" and hot.body == text(1000)
    assert hits(origin, small) == 1
    # 20 KB is 4 pages, not under cache_file_max_weight: read from its (ruined) file
    cold = get(port, large)
    assert cold.header("x-cache-status") == "miss" and cold.body == text(20_000)
    assert hits(origin, large) == 2


def owner(proc: PingapProcess, client_port: int) -> int | None:
    """The worker holding the connection from our ``client_port``."""
    for pid in proc.worker_pids():
        for held in psutil.Process(pid).net_connections("tcp"):
            if held.raddr and held.raddr.port == client_port:
                return pid
    return None


def sockets_on_two_workers(proc: PingapProcess, port: int) -> list[tuple[int, socket.socket]]:
    """Two connections (with the small receive buffer ``held`` needs) that two different
    workers accepted, each with that worker's pid (its socket whose peer is our local
    port tells which)."""
    by_worker: dict[int, socket.socket] = {}
    opened = []
    for _ in range(60):
        sock = small_buffer_socket(port)
        opened.append(sock)
        worker = wait_for(partial(owner, proc, sock.getsockname()[1]),
                          what="the worker of a connection")
        by_worker.setdefault(worker, sock)
        if len(by_worker) == 2:
            for other in opened:
                if other not in by_worker.values():
                    other.close()
            return list(by_worker.items())
    raise AssertionError("60 connections all went to one worker")


def keep_alive(port: int, sock: socket.socket) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.sock = sock
    return conn


def connections_on_two_workers(proc: PingapProcess,
                               port: int) -> tuple[http.client.HTTPConnection, ...]:
    """Two keep-alive connections that two different workers accepted."""
    return tuple(keep_alive(port, sock) for _, sock in sockets_on_two_workers(proc, port))


def on(port: int, conn: http.client.HTTPConnection, path: str) -> str | None:
    answer = request(port, path=path, conn=conn)
    assert answer.status == 200
    return answer.header("x-cache-status")


def test_writing_max_counts_the_fills_of_every_worker(pingap: Callable[..., PingapProcess],
                                                      origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    proc = pingap(config(port, origin, f"{tmp_path / 'cache'}?writing_max=1", threads=2),
                  port=port)
    (_, first), (_, second) = sockets_on_two_workers(proc, port)
    big, small = page("big", 20_000_000), page("small", 1000)
    held(port, big, first)  # one worker's fill: the host's one write in progress
    other = keep_alive(port, second)
    assert on(port, other, small) == "miss"
    # the other worker's fill was over the host's writing_max (pingap's one process
    # has one count): relayed whole, not stored
    again = request(port, path=small, conn=other)
    assert again.header("x-cache-status") == "miss" and again.body == text(1000)
    assert hits(origin, small) == 2
    first.close()
    # each miss fills again: a hit shows that one was stored
    wait_for(lambda: on(port, other, small) == "hit",
             what="a stored fill on the other worker once the slow fill ended")
    other.close()


def test_reading_max_counts_the_reads_of_every_worker(pingap: Callable[..., PingapProcess],
                                                      origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    proc = pingap(config(port, origin, f"{tmp_path / 'cache'}?reading_max=1", threads=2),
                  port=port)
    big, small = page("big", 20_000_000), page("small", 1000)
    assert status(port, big) == "miss" and status(port, small) == "miss"
    (_, first), (_, second) = sockets_on_two_workers(proc, port)
    _, head = held(port, big, first)  # one worker's hit sent from its file: the host's read
    assert b"x-cache-status: hit" in head
    other = keep_alive(port, second)
    over = request(port, path=small, conn=other)
    # the other worker's read is over the host's reading_max: a miss, fetched again
    assert over.header("x-cache-status") == "miss" and over.body == text(1000)
    assert hits(origin, small) == 2
    first.close()
    wait_for(lambda: on(port, other, small) == "hit", what="reads once the slow hit ended")
    assert hits(origin, big) == 1
    other.close()


def test_max_size_holds_for_the_fills_of_every_worker(pingap: Callable[..., PingapProcess],
                                                      origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    root = tmp_path / "cache"
    proc = pingap(config(port, origin, f"{root}?max_size=100kb", threads=2), port=port)
    conns = connections_on_two_workers(proc, port)
    for n in range(60):  # the two workers' fills take turns
        conn, path = conns[n % 2], page(f"k{n}", 4000)
        assert on(port, conn, path) == "miss" and on(port, conn, path) == "hit"
        used = sum(p.stat().st_size for p in entry_files(root))
        assert used <= 100_000, (n, used)  # one account for the host, as pingap's
    for conn in conns:
        conn.close()


def test_a_killed_worker_gives_back_its_reads_and_fills(
        pingap: Callable[..., PingapProcess], origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    directory = f"{tmp_path / 'cache'}?writing_max=1&reading_max=1"
    proc = pingap(config(port, origin, directory, threads=2), port=port)
    stored, small = page("stored", 20_000_000), page("small", 1000)
    assert status(port, stored) == "miss" and status(port, small) == "miss"
    [(pid, reading), (_, spare)] = sockets_on_two_workers(proc, port)
    spare.close()
    writing = dict(sockets_on_two_workers(proc, port))
    for other, sock in writing.items():
        if other != pid:
            sock.close()
    # one worker holds the host's one read and its one write...
    assert b"x-cache-status: hit" in held(port, stored, reading)[1]
    held(port, page("filling", 20_000_000), writing[pid])
    assert hits(origin, small) == 1 and status(port, small) == "miss"  # over the caps
    os.kill(pid, signal.SIGKILL)  # ...when it dies
    reading.close()
    writing[pid].close()
    wait_for(lambda: pid not in [c.pid for c in psutil.Process(proc.pid).children()],
             what="the master reaping the killed worker")
    # neither is counted any more: entries are read and fills stored again
    wait_for(lambda: status(port, small) == "hit", what="a read after the holder died")
    fresh = page("fresh", 1000)
    assert status(port, fresh) == "miss" and status(port, fresh) == "hit"


def test_a_purge_reaches_every_workers_memory_layer(pingap: Callable[..., PingapProcess],
                                                     origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    extra = 'purge_ip_list = ["127.0.0.1"]\n'
    proc = pingap(config(port, origin, f"{tmp_path / 'cache'}?cache_max=100", extra,
                         threads=2), port=port)
    one, two = connections_on_two_workers(proc, port)
    path = page("p", 1000)
    assert request(port, path=path, conn=one).header("x-cache-status") == "miss"
    for conn in (two, one):  # each worker now has the entry in its memory layer
        assert request(port, path=path, conn=conn).header("x-cache-status") == "hit"
    assert request(port, "PURGE", path, conn=one).status == 204
    # the other worker's memory copy must not outlive the file the purge removed
    again = request(port, path=path, conn=two)
    assert again.header("x-cache-status") == "miss" and again.body == text(1000)
    assert hits(origin, path) == 2
    one.close()
    two.close()


def test_restart_keeps_entries_and_never_serves_a_torn_write(
        pingap: Callable[..., PingapProcess], origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    root = tmp_path / "cache"
    first = pingap(config(port, origin, str(root)), port=port)
    kept, torn, big = page("kept", 4000), page("torn", 4000), page("big", 20_000_000)
    assert status(port, kept) == "miss"
    before = set(entry_files(root))
    assert status(port, torn) == "miss"
    (torn_file,) = set(entry_files(root)) - before
    slow_client, _ = held(port, big)  # a fill in progress when the host dies
    os.killpg(first.pid, signal.SIGKILL)
    slow_client.close()
    first.proc.wait(10)
    # a crash mid-write of a store without atomic renames: half an entry on disk
    torn_file.write_bytes(torn_file.read_bytes()[:2000])

    port = free_port()
    pingap(config(port, origin, str(root)), port=port, name="again.toml")
    assert status(port, kept) == "hit" and hits(origin, kept) == 1
    for path in (torn, big):
        answer = get(port, path)
        assert answer.header("x-cache-status") == "miss", path
        assert hits(origin, path) == 2, path
    assert len(get(port, big).body) == 20_000_000
    assert status(port, torn) == "hit" and get(port, torn).body == text(4000)
