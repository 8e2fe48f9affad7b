"""Socket reads and writes on the request path, cheaper than gevent's general ones.

gevent's ``recv`` tries the read first and, on EAGAIN, waits for the socket to become
readable; its ``sendall`` asks the kernel for SO_SNDBUF on every call. Both are right in
general and cost a syscall (and, for the failed read, a raised and caught exception) on
every request here: ``perf stat`` counted 7.7 syscalls per proxied pong, 1.9 of them
reads that found nothing.

The last write of a response or request waits for the end of the loop turn
(``send_later``, ``send_file_later``): the end of a whole response on a kept-alive
connection (its pieces referenced, whatever their size), a file's head and ``sendfile``
(under ``HOLD_FILE_MAX``), a body-less request head. Every write held in one turn of the
hub goes out together, after every greenlet the turn woke has run. A peer that sleeps (a
client or a backend on another CPU) is then woken once for several writes rather than
once each; each such wake-up of a sleeping process is an inter-processor interrupt, which
``perf`` showed at 14 % of a worker's time under the pong bench (``sock_def_readable``).
Node's http server does the same: a response is corked until the next tick. The delay is
one loop turn: under no load that is no delay at all, under load it is the time the turn
takes anyway.

Writes on one socket stay in order: ``send_all`` and ``send_pieces`` send a socket's held
writes first (``settle``), and a caller about to write around them (``splice``,
``sendfile``) or to close the socket settles them itself. A held write the socket cannot
take whole at the end of the turn is finished by a greenlet of its own, under the
caller's write timeout; a later write on that socket waits for it. A held write that
fails shuts the socket down, so whoever waits to read from it wakes up (the client's
connection ends; a pooled upstream connection reads as closed, and its request goes again
as for any stale connection).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import gevent
from gevent.hub import get_hub
from gevent.socket import socket as PlainSocket
from gevent.socket import wait_write

from workers.files import close_file

log = logging.getLogger("pingap.sockio")


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
#: more pieces than this are joined before a ``sendmsg``: the kernel takes at most 1024
#: (IOV_MAX, EMSGSIZE past it: a chunked response read in many small chunks), and past a
#: few dozen one copy costs less than the vector
VECTOR_MAX_PIECES = 64


def _vector(pieces: list[bytes]) -> list[bytes]:
    return pieces if len(pieces) <= VECTOR_MAX_PIECES else [b"".join(pieces)]


def send_pieces(sock: socket.socket, pieces: list[bytes], flags: int = 0) -> None:
    """The ``pieces`` in order, written as one: on a plain socket in one ``sendmsg``, as
    they are; a TLS socket (which has no ``sendmsg``) gets them joined. The caller decides
    they are large enough (``VECTOR_MIN``)."""
    if _later or _writing:
        settle(sock)
    if type(sock) is PlainSocket:
        pieces = _vector(pieces)
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
        settle(sock)
    sent = sock.send(data, flags) if flags else sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:], flags)


# --- writes deferred to the end of the loop turn ----------------------------------------


class HeldFile:
    """``count`` bytes of an open file from ``offset``, held for ``sendfile``. The
    descriptor is the held write's own (taken over from the request's file, or a
    ``dup``): the request may close its file before the turn ends. Closed once sent or
    given up."""

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def close(self) -> None:
        if self.fd >= 0:
            close_file(self.fd)
            self.fd = -1


Held = list[bytes | HeldFile]

#: a file from this size on is sent at once, not held: its ``sendfile`` may take a slow
#: client long, which the request should still be in progress for (its write timeout
#: applies per wait, the file cache counts it among its reads: ``reading_max``)
HOLD_FILE_MAX = 256 * 1024

#: held writes by socket: the pieces in order, the write timeout for what the socket
#: cannot take at once, and whether a file is among them
_later: dict[socket.socket, tuple[Held, float, bool]] = {}
#: the rest of a held write the socket did not take whole, being sent by a greenlet
_writing: dict[socket.socket, gevent.Greenlet] = {}
_scheduled = False


def send_later(sock: socket.socket, pieces: list[bytes], timeout: float) -> bool:
    """Send ``pieces`` (in order, as one write) at the end of this loop turn, with the
    other held writes; False (nothing done) when they must be sent now: a TLS socket,
    or the rest of an earlier held write still on its way. Only for the end of a
    response or request, after which the caller waits to read (or writes again through
    ``send_all``). The pieces are referenced, not copied: they are in memory already."""
    if type(sock) is not PlainSocket or sock in _writing:
        return False
    _hold(sock, pieces, timeout, False)  # type: ignore[arg-type]
    return True


def send_file_later(sock: socket.socket, head: list[bytes], file: Any, offset: int,
                    count: int, timeout: float) -> bool:
    """``head`` then ``count`` bytes of ``file`` from ``offset`` (``sendfile``), held like
    ``send_later``; the caller may close ``file`` at once. The held write takes the
    descriptor over when ``file`` can give it up (``detach``: ``workers.files.OpenFile``),
    else it holds a ``dup`` of it. False (nothing done) also for a file of
    ``HOLD_FILE_MAX`` bytes or more."""
    if type(sock) is not PlainSocket or sock in _writing or not 0 < count < HOLD_FILE_MAX:
        return False
    detach = getattr(file, "detach", None)
    if detach is not None:
        own = detach()
    else:
        try:
            own = os.dup(file.fileno())
        except OSError:  # out of descriptors: the caller sends it now, with its own
            return False
    _hold(sock, [*head, HeldFile(own, offset, count)], timeout, True)
    return True


def _hold(sock: socket.socket, items: Held, timeout: float, has_file: bool) -> None:
    global _scheduled
    prior = _later.get(sock)
    if prior is not None:  # pipelined responses: one after the other
        prior[0].extend(items)
        if has_file and not prior[2]:
            _later[sock] = (prior[0], prior[1], True)
    else:
        _later[sock] = (items, timeout, has_file)
    if not _scheduled:
        _scheduled = True
        get_hub().loop.run_callback(_send_deferred)


def settle(sock: socket.socket) -> None:
    """Send now, in the caller's greenlet, what ``sock`` still owes of its held writes:
    first wait for the greenlet finishing a short one (OSError if it failed). The
    caller bounds the wait (its deadline)."""
    writer = _writing.get(sock)
    if writer is not None and not writer.get():
        raise BrokenPipeError("a held write on this socket failed")
    entry = _later.pop(sock, None)
    if entry is not None:
        _send_items(sock, entry[0])


def _send_deferred() -> None:
    """The end of the loop turn (run by the hub): every held write, non-blocking; what a
    socket does not take whole goes on in a greenlet (``_send_rest``)."""
    global _scheduled
    _scheduled = False
    batch = list(_later.items())
    _later.clear()
    for sock, (items, timeout, has_file) in batch:
        raw = sock._sock  # type: ignore[attr-defined]  # the non-blocking socket itself
        try:
            if has_file:
                rest = _send_some(raw, items)
            else:  # the common case: bytes only
                pieces = _vector(items)  # type: ignore[arg-type]
                sent = raw.send(pieces[0]) if len(pieces) == 1 else raw.sendmsg(pieces)
                tail = _after(pieces, sent)
                rest = [tail] if tail else []
        except BlockingIOError:
            rest = items
        except OSError:  # reset, closed meanwhile, or a file that shrank
            _close_files(items)
            _broken(sock)
            continue
        except Exception:  # a bug here must not cost the other sockets their writes
            log.exception("held write failed")
            _close_files(items)
            _broken(sock)
            continue
        if rest:
            _writing[sock] = gevent.spawn(_send_rest, sock, rest, timeout)


def _send_some(raw: socket.socket, items: Held) -> Held:
    """As much of ``items`` as ``raw`` (non-blocking) takes now; the rest. Files sent
    whole are closed; a file cut short stays open, its offset moved on."""
    i, n = 0, len(items)
    while i < n:
        item = items[i]
        if type(item) is HeldFile:
            try:
                sent = os.sendfile(raw.fileno(), item.fd, item.offset, item.count)
            except BlockingIOError:
                return items[i:]
            if sent == 0:
                raise OSError("file truncated while sending")
            item.offset += sent
            item.count -= sent
            if item.count:
                return items[i:]
            item.close()
            i += 1
            continue
        j = i + 1
        while j < n and type(items[j]) is not HeldFile:
            j += 1
        run = _vector(items[i:j])  # type: ignore[arg-type]
        flags = socket.MSG_MORE if j < n else 0  # the head goes with the file's bytes
        try:
            sent = raw.send(run[0], flags) if len(run) == 1 else raw.sendmsg(run, (), flags)
        except BlockingIOError:
            return items[i:]
        tail = _after(run, sent)
        if tail:
            return [tail, *items[j:]]
        i = j
    return []


def _send_items(sock: socket.socket, items: Held) -> None:
    """``items`` in order, blocking (gevent); every held file closed whatever happens."""
    try:
        pieces: list[bytes] = []
        for item in items:
            if type(item) is HeldFile:
                if pieces:
                    sock.sendall(b"".join(pieces), socket.MSG_MORE)
                    pieces = []
                send_file(sock, item.fd, item.offset, item.count)
                item.close()
            else:
                pieces.append(item)  # type: ignore[arg-type]
        if pieces:
            sock.sendall(b"".join(pieces))
    finally:
        _close_files(items)


def _close_files(items: Held) -> None:
    for item in items:
        if type(item) is HeldFile:
            item.close()


def _after(pieces: list[bytes], sent: int) -> bytes:
    """What is left of ``pieces`` once ``sent`` bytes of them went, joined."""
    for i, piece in enumerate(pieces):
        if sent < len(piece):
            return b"".join([memoryview(piece)[sent:], *pieces[i + 1:]])
        sent -= len(piece)
    return b""


def _send_rest(sock: socket.socket, rest: Held, timeout: float) -> bool:
    try:
        with gevent.Timeout(timeout or None, TimeoutError):
            _send_items(sock, rest)
        return True
    except OSError:  # TimeoutError included: the peer stopped reading
        _broken(sock)
        return False
    finally:  # (``_send_items`` closed the held files, whatever happened)
        _writing.pop(sock, None)


def _broken(sock: socket.socket) -> None:
    """A held write failed: end the socket both ways, so a reader waiting on it wakes
    (its owner sees the connection end and closes it)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def send_file(sock: socket.socket, fd: int, offset: int, count: int,
              timeout: float | None = None) -> None:
    """``count`` bytes of the file ``fd`` from ``offset`` to ``sock`` with ``os.sendfile``,
    waiting (gevent) while the socket is full; OSError on failure, also when the file
    turns out shorter than ``count``."""
    out_fd = sock.fileno()
    while count > 0:
        try:
            sent = os.sendfile(out_fd, fd, offset, min(count, 1 << 30))
        except BlockingIOError:
            wait_write(out_fd, timeout=timeout)
            continue
        except InterruptedError:
            continue
        if sent == 0:  # the file shrank under us: the promised length cannot be kept
            raise OSError("file truncated while sending")
        offset += sent
        count -= sent
