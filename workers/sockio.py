"""Socket reads and writes on the request path, cheaper than gevent's general ones.

gevent's ``recv`` tries the read first and, on EAGAIN, waits for the socket to become
readable; its ``sendall`` asks the kernel for SO_SNDBUF on every call. Both are right in
general and cost a syscall (and, for the failed read, a raised and caught exception) on
every request here: ``perf stat`` counted 7.7 syscalls per proxied pong, 1.9 of them
reads that found nothing.

Small final writes wait for the end of the loop turn (``send_later``): a whole response on
a kept-alive connection, a body-less request head. Every write deferred in one turn of the
hub goes out together, after every greenlet the turn woke has run. A peer that sleeps (a
client or a backend on another CPU) is then woken once for several writes rather than
once each; each such wake-up of a sleeping process is an inter-processor interrupt, which
``perf`` showed at 14 % of a worker's time under the pong bench (``sock_def_readable``).
Node's http server does the same: a response is corked until the next tick. The delay is
one loop turn: under no load that is no delay at all, under load it is the time the turn
takes anyway.

Writes on one socket stay in order: ``send_all`` and ``send_pieces`` send a socket's
deferred bytes first (``take_later``), and a caller about to write around them (``splice``,
``sendfile``) or to close the socket takes them itself. A deferred write the socket
cannot take whole at the end of the turn is finished by a greenlet of its own, under the
caller's write timeout; a later write on that socket waits for it. A deferred write that
fails shuts the socket down, so whoever waits to read from it wakes up (the client's
connection ends; a pooled upstream connection reads as closed, and its request goes again
as for any stale connection).
"""

from __future__ import annotations

import socket

import gevent
from gevent.hub import get_hub
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
    if _later or _writing:
        prior = take_later(sock)
        if prior:
            pieces = [*prior, *pieces]
    if type(sock) is PlainSocket:
        rest = _after(pieces, sock.sendmsg(pieces, (), flags))
        if rest:  # a short write: the rest, joined
            send_all(sock, rest, flags)
        return
    data = b"".join(pieces)
    if data:
        send_all(sock, data, flags)


def send_all(sock: socket.socket, data: bytes, flags: int = 0) -> None:
    """``sendall`` without its per-call cost (gevent's asks the kernel for SO_SNDBUF every
    time): one ``send`` almost always writes a whole response or request head. ``flags``
    (``MSG_MORE``) are for plain sockets only. The socket's deferred bytes go first."""
    if _later or _writing:
        prior = take_later(sock)
        if prior:
            data = b"".join([*prior, data])
    sent = sock.send(data, flags) if flags else sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:], flags)


# --- writes deferred to the end of the loop turn ----------------------------------------

#: deferred pieces by socket, with the write timeout for what the socket cannot take at once
_later: dict[socket.socket, tuple[list[bytes], float]] = {}
#: the rest of a deferred write the socket did not take whole, being sent by a greenlet
_writing: dict[socket.socket, gevent.Greenlet] = {}
_scheduled = False


def send_later(sock: socket.socket, pieces: list[bytes], timeout: float) -> bool:
    """Send ``pieces`` (in order, as one write) at the end of this loop turn, with the
    other deferred writes; False (nothing done) when they must be sent now: a TLS socket,
    or the rest of an earlier deferred write still on its way. Only for a final write,
    after which the caller waits to read (or writes again through ``send_all``). The
    pieces are referenced, not copied: they are in memory already."""
    global _scheduled
    if type(sock) is not PlainSocket or sock in _writing:
        return False
    prior = _later.get(sock)
    if prior is not None:  # pipelined responses: one after the other
        prior[0].extend(pieces)
    else:
        _later[sock] = (pieces, timeout)
    if not _scheduled:
        _scheduled = True
        get_hub().loop.run_callback(_send_deferred)
    return True


def take_later(sock: socket.socket) -> list[bytes]:
    """What ``sock`` still owes of its deferred writes, now the caller's to send first:
    the deferred pieces, or nothing once the greenlet finishing a short one is done
    (waited for here; OSError if it failed)."""
    writer = _writing.get(sock)
    if writer is not None and not writer.get():
        raise BrokenPipeError("a deferred write on this socket failed")
    entry = _later.pop(sock, None)
    return entry[0] if entry is not None else []


def _send_deferred() -> None:
    """The end of the loop turn (run by the hub): every deferred write, non-blocking."""
    global _scheduled
    _scheduled = False
    batch = list(_later.items())
    _later.clear()
    for sock, (pieces, timeout) in batch:
        raw = sock._sock  # type: ignore[attr-defined]  # the non-blocking socket itself
        try:
            sent = raw.send(pieces[0]) if len(pieces) == 1 else raw.sendmsg(pieces)
        except BlockingIOError:
            sent = 0
        except OSError:  # reset, or closed meanwhile
            _broken(sock)
            continue
        rest = _after(pieces, sent)
        if rest:
            _writing[sock] = gevent.spawn(_send_rest, sock, rest, timeout)


def _after(pieces: list[bytes], sent: int) -> bytes:
    """What is left of ``pieces`` once ``sent`` bytes of them went, joined."""
    for i, piece in enumerate(pieces):
        if sent < len(piece):
            return b"".join([memoryview(piece)[sent:], *pieces[i + 1:]])
        sent -= len(piece)
    return b""


def _send_rest(sock: socket.socket, rest: bytes, timeout: float) -> bool:
    try:
        with gevent.Timeout(timeout or None, TimeoutError):
            sock.sendall(rest)
        return True
    except OSError:  # TimeoutError included: the peer stopped reading
        _broken(sock)
        return False
    finally:
        _writing.pop(sock, None)


def _broken(sock: socket.socket) -> None:
    """A deferred write failed: end the socket both ways, so a reader waiting on it wakes
    (its owner sees the connection end and closes it)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
