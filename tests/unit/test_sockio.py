"""``workers.sockio``'s writes on real (gevent) socket pairs: pieces sent as one, a short
``sendmsg`` finished with the rest in order, ``MSG_MORE`` accepted, and writes deferred
to the end of the loop turn (``send_later``): sent then, in order with the socket's other
writes, finished when the socket takes only part, and a failure that wakes the reader."""

from __future__ import annotations

import os
import resource
import socket as stdlib_socket
from pathlib import Path

import gevent
from gevent import socket

from workers import sockio
from workers.files import OpenFile
from workers.sockio import (
    HOLD_FILE_MAX,
    VECTOR_MIN,
    send_all,
    send_file_later,
    send_later,
    send_pieces,
    settle,
)


def _pair(sndbuf: int | None = None) -> tuple[socket.socket, socket.socket]:
    left, right = socket.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    if sndbuf:
        left.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, sndbuf)
        right.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, sndbuf)
    return left, right


def _read_all(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        data = sock.recv(65536)
        assert data, "the writer closed early"
        got += data
    return bytes(got)


def test_pieces_arrive_as_one_write_and_empty_ones_write_nothing() -> None:
    left, right = _pair()
    with left, right:
        send_pieces(left, [b"HTTP/1.1 200 OK\r\n\r\n", b"pong", b""])
        assert right.recv(100) == b"HTTP/1.1 200 OK\r\n\r\npong"
        send_pieces(left, [b"", b""])  # nothing to write: no write, nothing arrives
        left.close()
        assert right.recv(100) == b""


def test_a_short_sendmsg_is_finished_in_order() -> None:
    """A socket buffer far smaller than the pieces: ``sendmsg`` writes part of them and
    the rest follows, every byte once and in order (also when the cut is inside a piece
    and after a whole one)."""
    pieces = [b"H" * 300, bytes(range(256)) * 300, b"x" * VECTOR_MIN, b"tail"]
    want = b"".join(pieces)
    left, right = _pair(sndbuf=4096)
    with left, right:
        reader = gevent.spawn(_read_all, right, len(want))
        send_pieces(left, pieces, stdlib_socket.MSG_MORE if hasattr(
            stdlib_socket, "MSG_MORE") else 0)
        assert reader.get(timeout=10) == want


def test_large_pieces_on_a_tcp_socket_arrive_whole() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with client, server:
            pieces = [b"head\r\n\r\n", b"b" * (VECTOR_MIN * 4)]
            reader = gevent.spawn(_read_all, client, sum(map(len, pieces)))
            send_pieces(server, pieces)
            assert reader.get(timeout=10) == b"".join(pieces)


# --- send_later ------------------------------------------------------------------------


def _nothing_waiting(sock: socket.socket) -> bool:
    """No byte is readable on ``sock`` right now (checked without waiting)."""
    try:
        sock._sock.recv(1, stdlib_socket.MSG_PEEK | stdlib_socket.MSG_DONTWAIT)  # type: ignore[attr-defined]
    except BlockingIOError:
        return True
    return False


def test_a_deferred_write_goes_out_at_the_end_of_the_loop_turn() -> None:
    left, right = _pair()
    with left, right:
        assert send_later(left, [b"HTTP/1.1 200 OK\r\n\r\n"], 5.0)
        assert send_later(left, [b"po", b"ng"], 5.0)  # a second one joins the first
        assert _nothing_waiting(right)  # held back while this greenlet runs
        gevent.sleep(0)  # one turn of the hub's loop
        assert right.recv(100) == b"HTTP/1.1 200 OK\r\n\r\npong"
        assert not sockio._later


def test_a_direct_write_sends_the_deferred_bytes_first_and_only_once() -> None:
    left, right = _pair()
    with left, right:
        assert send_later(left, [b"first "], 5.0)
        send_all(left, b"second ")
        send_pieces(left, [b"third", b""])
        gevent.sleep(0)
        left.close()
        assert _read_until_closed(right) == b"first second third"


def _read_until_closed(sock: socket.socket) -> bytes:
    got = bytearray()
    while data := sock.recv(65536):
        got += data
    return bytes(got)


def test_a_large_deferred_write_goes_out_whole_and_in_order() -> None:
    """A 100 KB response (a cache hit: head and body as pieces) is held too, referenced
    and not copied, and arrives whole."""
    pieces = [b"HTTP/1.1 200 OK\r\nContent-Length: 102400\r\n\r\n",
              bytes(range(256)) * 400]
    want = b"".join(pieces)
    left, right = _pair()
    with left, right:
        reader = gevent.spawn(_read_all, right, len(want))
        assert send_later(left, pieces, 5.0)
        assert reader.get(timeout=10) == want


def test_non_gevent_sockets_are_not_deferred() -> None:
    plain_left, plain_right = stdlib_socket.socketpair()
    with plain_left, plain_right:
        assert not send_later(plain_left, [b"x"], 5.0)  # what is not a plain gevent socket
        assert not sockio._later


def test_settle_sends_the_held_bytes_now_and_once() -> None:
    """What a caller writing around ``send_all`` (splice, sendfile, close) does first."""
    left, right = _pair()
    with left, right:
        assert send_later(left, [b"owed"], 5.0)
        settle(left)
        assert right.recv(100) == b"owed"
        settle(left)  # nothing left to send
        gevent.sleep(0)
        assert _nothing_waiting(right)  # sent: the loop turn did not send it again


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _file(tmp_path: Path, size: int) -> tuple[bytes, int]:
    data = bytes(range(256)) * (size // 256)
    path = tmp_path / "body.bin"
    path.write_bytes(data)
    return data, os.open(path, os.O_RDONLY)


class _Shared:
    """A file the held write may not take over (no ``detach``): it holds a ``dup``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def test_a_held_file_takes_the_request_s_descriptor_over(tmp_path: Path) -> None:
    """A static file's own ``OpenFile``: the held write takes its descriptor (no ``dup``,
    no second ``close``); the request's ``close`` then leaves it open until it is sent."""
    data, fd = _file(tmp_path, 4096)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n"
    left, right = _pair()
    with left, right:
        before = _open_fds()
        handle = OpenFile(fd)
        assert send_file_later(left, [head], handle, 0, 4096, 5.0)
        handle.close()  # the request ends
        assert handle.closed and _open_fds() == before  # not closed, not duplicated
        assert _nothing_waiting(right)
        gevent.sleep(0)
        assert _read_all(right, len(head) + 4096) == head + data
        assert _open_fds() == before - 1  # closed once sent


def test_a_held_file_follows_its_head_though_the_caller_closed_it(tmp_path: Path) -> None:
    """A static file's end: the head and a ``sendfile`` of the file, held to the end of
    the turn; the request closes its file at once, the held write has its own
    descriptor and closes it once sent."""
    data, fd = _file(tmp_path, 102400)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    left, right = _pair()
    with left, right:
        before = _open_fds()
        assert send_file_later(left, [head], _Shared(fd), 1000, 100, 5.0)
        os.close(fd)
        assert _nothing_waiting(right)
        gevent.sleep(0)
        assert _read_all(right, len(head) + 100) == head + data[1000:1100]
        assert _open_fds() == before - 1  # the caller's descriptor and the held one: closed


def test_a_large_file_is_not_held(tmp_path: Path) -> None:
    """Its sendfile may take a slow client long: it is sent while the request is still in
    progress (the file cache counts it among its reads), with the per-wait timeout."""
    _, fd = _file(tmp_path, HOLD_FILE_MAX)
    left, right = _pair()
    with left, right:
        assert not send_file_later(left, [b"head"], _Shared(fd), 0, HOLD_FILE_MAX, 5.0)
        assert send_file_later(left, [b"head"], _Shared(fd), 0, HOLD_FILE_MAX - 1, 5.0)
        os.close(fd)
        gevent.sleep(0)
        assert _read_all(right, HOLD_FILE_MAX + 3)[:4] == b"head"


def test_a_file_is_not_held_when_no_descriptor_is_left(tmp_path: Path) -> None:
    """The held write needs a descriptor of its own; out of them (EMFILE), the caller
    sends the file now with its own instead of failing the request."""
    _, fd = _file(tmp_path, 4096)
    left, right = _pair()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with left, right:
        probe = os.dup(fd)  # the lowest free descriptor number
        os.close(probe)
        lowest_free = probe
        try:
            # the next descriptor would be lowest_free: at the limit, dup fails (EMFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
            assert not send_file_later(left, [b"head"], _Shared(fd), 0, 4096, 5.0)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            os.close(fd)
        assert not sockio._later


def test_a_held_file_the_socket_takes_only_in_part_is_finished_in_order(
        tmp_path: Path) -> None:
    data, fd = _file(tmp_path, 204800)  # under HOLD_FILE_MAX
    left, right = _pair(sndbuf=4096)
    with left, right:
        before = _open_fds()
        assert send_later(left, [b"first|"], 5.0)
        assert send_file_later(left, [b"head|"], _Shared(fd), 0, len(data), 5.0)  # pipelined
        os.close(fd)
        gevent.sleep(0)
        assert sockio._writing  # the socket took only part
        want = b"first|head|" + data + b"|last"
        reader = gevent.spawn(_read_all, right, len(want))
        send_all(left, b"|last")  # waits for the rest first
        assert reader.get(timeout=10) == want
        assert _open_fds() == before - 1


def test_a_held_file_whose_socket_failed_is_closed_and_the_reader_wakes(
        tmp_path: Path) -> None:
    _, fd = _file(tmp_path, 4096)
    left, right = _pair()
    with left:
        before = _open_fds()
        right.close()
        assert send_file_later(left, [b"head"], _Shared(fd), 0, 4096, 5.0)
        os.close(fd)
        reader = gevent.spawn(left.recv, 100)
        assert reader.get(timeout=10) == b""
        assert _open_fds() == before - 2  # right, and the file: both descriptors closed


def test_a_deferred_write_the_socket_takes_only_in_part_is_finished_in_order() -> None:
    """Small socket buffers and a reader that has not started: the end of the turn writes
    part, a greenlet writes the rest, and a later write on the socket waits for it."""
    want = bytes(range(256)) * 400
    left, right = _pair(sndbuf=4096)
    with left, right:
        assert send_later(left, [want[:1000], want[1000:]], 5.0)
        gevent.sleep(0)
        assert sockio._writing  # the socket took only part
        reader = gevent.spawn(_read_all, right, len(want) + 4)
        send_all(left, b"tail")  # waits for the rest first
        assert reader.get(timeout=10) == want + b"tail"
        assert not sockio._writing


def test_a_failed_deferred_write_wakes_the_reader_with_the_end_of_the_connection() -> None:
    left, right = _pair()
    with left:
        right.close()  # the peer is gone: the deferred write fails
        assert send_later(left, [b"response"], 5.0)
        reader = gevent.spawn(left.recv, 100)  # the owner, waiting for the next request
        assert reader.get(timeout=10) == b""  # woken: the socket was shut down


def test_a_deferred_rest_that_times_out_fails_the_next_write() -> None:
    """A peer that stops reading: the greenlet finishing the write gives up after the
    write timeout and the socket's next write fails instead of waiting forever."""
    left, right = _pair(sndbuf=4096)
    with left, right:
        assert send_later(left, [b"x" * 200_000], 0.2)
        gevent.sleep(0)
        assert sockio._writing
        try:
            send_all(left, b"more")
        except OSError:
            pass
        else:
            raise AssertionError("a write after the failed deferred one went through")


def test_many_small_pieces_arrive_whole() -> None:
    """A chunked response read in many small chunks: more pieces than ``sendmsg`` takes at
    once (1024), held or sent at once, still arrive whole (joined first)."""
    pieces = [b"%x\r\n%s\r\n" % (5, b"chunk") for _ in range(1100)] + [b"0\r\n\r\n"]
    big = [*pieces[:-1], b"x" * VECTOR_MIN]
    left, right = _pair()
    with left, right:
        assert send_later(left, list(pieces), 5.0)
        gevent.sleep(0)
        assert _read_all(right, len(b"".join(pieces))) == b"".join(pieces)
        send_pieces(left, big)  # a large flush of many pieces, at once
        assert _read_all(right, len(b"".join(big))) == b"".join(big)


def test_an_empty_file_is_not_held(tmp_path: Path) -> None:
    _, fd = _file(tmp_path, 256)
    left, right = _pair()
    with left, right:
        assert not send_file_later(left, [b"head"], _Shared(fd), 0, 0, 5.0)
        os.close(fd)
        assert not sockio._later


def test_a_cache_read_taken_over_still_gives_back_its_slot(tmp_path: Path) -> None:
    """A file-backed cache hit's file (``reading_max`` counts it): when a held write takes
    its descriptor over, the request's ``close`` still gives back the read's slot."""
    from workers.cache_store import _Gauge, _Reading

    _, fd = _file(tmp_path, 4096)
    gauge = _Gauge(1)
    slot = gauge.acquire()
    assert slot is not None and gauge.busy == 1
    reading = _Reading(fd, slot)
    os.close(reading.detach())
    reading.close()
    assert gauge.busy == 0 and gauge.acquire() is not None
