"""``workers.sockio``'s writes on real (gevent) socket pairs: pieces sent as one, a short
``sendmsg`` finished with the rest in order, and ``MSG_MORE`` accepted."""

from __future__ import annotations

import socket as stdlib_socket

import gevent
from gevent import socket

from workers.sockio import VECTOR_MIN, send_pieces


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
