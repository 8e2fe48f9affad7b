"""Socket reads and writes on the request path, cheaper than gevent's general ones.

gevent's ``recv`` tries the read first and, on EAGAIN, waits for the socket to become
readable; its ``sendall`` asks the kernel for SO_SNDBUF on every call. Both are right in
general and cost a syscall (and, for the failed read, a raised and caught exception) on
every request here: ``perf stat`` counted 7.7 syscalls per proxied pong, 1.9 of them
reads that found nothing.
"""

from __future__ import annotations

import socket

from gevent.socket import socket as PlainSocket


def recv_later(sock: socket.socket, size: int) -> bytes:
    """``recv`` for a read that is almost never ready yet: the response right after its
    request went out, the next request on a kept-alive connection. gevent's ``recv`` tries
    first and waits on EAGAIN; waiting first saves that failed syscall and the exception
    it raises (two of a pong's eight syscalls). TLS sockets read as usual: their buffer
    may hold bytes the file descriptor no longer shows."""
    if type(sock) is PlainSocket:
        event = sock._read_event  # type: ignore[attr-defined]
        if event is not None:  # None once closed: recv raises EBADF
            sock._wait(event)  # type: ignore[attr-defined]
    return sock.recv(size)


#: from this many bytes on, the pieces of one flush are worth ``send_pieces`` (a 100 KB
#: body is not copied once more in user space); below it a join and one ``send`` cost less
VECTOR_MIN = 32768


def send_pieces(sock: socket.socket, pieces: list[bytes], flags: int = 0) -> None:
    """The ``pieces`` in order, written as one: on a plain socket in one ``sendmsg``, as
    they are; a TLS socket (which has no ``sendmsg``) gets them joined. The caller decides
    they are large enough (``VECTOR_MIN``)."""
    if type(sock) is PlainSocket:
        sent = sock.sendmsg(pieces, (), flags)
        for i, piece in enumerate(pieces):  # a short write: the rest, joined
            if sent < len(piece):
                send_all(sock, b"".join([memoryview(piece)[sent:], *pieces[i + 1:]]), flags)
                return
            sent -= len(piece)
        return
    data = b"".join(pieces)
    if data:
        send_all(sock, data, flags)


def send_all(sock: socket.socket, data: bytes, flags: int = 0) -> None:
    """``sendall`` without its per-call cost (gevent's asks the kernel for SO_SNDBUF every
    time): one ``send`` almost always writes a whole response or request head. ``flags``
    (``MSG_MORE``) are for plain sockets only."""
    sent = sock.send(data, flags) if flags else sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:], flags)
