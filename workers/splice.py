"""Zero-copy body forwarding between two plain TCP sockets with ``splice(2)``.

A response body with a known length, going from a plaintext upstream connection to a
plaintext client connection unchanged (HTTP/1.1 identity framing on both sides), does not
need to pass through Python at all: the kernel moves it socket → pipe → socket. That takes
the per-chunk Python work (parse, frame, copy) out of large downloads.

Both sockets are non-blocking under gevent: ``SPLICE_F_NONBLOCK`` makes the pipe side
non-blocking too, and on EAGAIN the greenlet waits for the socket with gevent's
``wait_read``/``wait_write`` — the loop keeps serving other connections meanwhile.
"""

from __future__ import annotations

import os
import socket
import ssl

from gevent.socket import wait_read, wait_write

AVAILABLE = hasattr(os, "splice")
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
PIPE_SIZE = 1 << 20
#: below this many bytes a plain recv/send is as cheap as setting the pipe up
MIN_BYTES = 32768


class SpliceError(Exception):
    """Moving the body failed; ``upstream`` says which side (False: the client),
    ``timeout`` whether it stalled rather than failed."""

    def __init__(self, message: str, *, upstream: bool, timeout: bool = False) -> None:
        super().__init__(message)
        self.upstream = upstream
        self.timeout = timeout


def usable(*socks: socket.socket) -> bool:
    return AVAILABLE and not any(isinstance(s, ssl.SSLSocket) for s in socks)


_free: list[Pipe] = []
_MAX_FREE = 64


def acquire() -> Pipe:
    """An empty pipe from this worker's free list (or a new one)."""
    return _free.pop() if _free else Pipe()


def release(pipe: Pipe, *, clean: bool) -> None:
    """Give ``pipe`` back; one that may still hold bytes (``clean`` False) is closed."""
    if clean and len(_free) < _MAX_FREE:
        _free.append(pipe)
    else:
        pipe.close()


class Pipe:
    """One pipe per worker greenlet that splices (pipes are cheap, but not free)."""

    __slots__ = ("read_fd", "write_fd")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            import fcntl
            fcntl.fcntl(self.write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
        except OSError:
            pass  # the default 64 KiB pipe works, in more rounds

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def forward(self, src: socket.socket, dst: socket.socket, length: int,
                timeout: float) -> int:
        """Move exactly ``length`` bytes from ``src`` to ``dst``; SpliceError on failure
        (an EOF from ``src`` before ``length`` bytes included, and either side stalling
        for ``timeout`` seconds)."""
        src_fd = src.fileno()
        dst_fd = dst.fileno()
        moved = 0
        while moved < length:
            try:
                n = os.splice(src_fd, self.write_fd, min(length - moved, PIPE_SIZE),
                              flags=_FLAGS)
            except BlockingIOError:
                try:
                    wait_read(src_fd, timeout=timeout)
                except TimeoutError as exc:  # gevent's socket.timeout is TimeoutError
                    raise SpliceError("upstream read timed out", upstream=True,
                                      timeout=True) from exc
                continue
            except OSError as exc:
                raise SpliceError(f"upstream read failed: {exc}", upstream=True) from exc
            if n == 0:
                raise SpliceError("upstream closed the connection mid-response",
                                  upstream=True)
            while n:
                try:
                    m = os.splice(self.read_fd, dst_fd, n, flags=_FLAGS)
                except BlockingIOError:
                    try:
                        wait_write(dst_fd, timeout=timeout)
                    except TimeoutError as exc:
                        raise SpliceError("client write timed out", upstream=False,
                                          timeout=True) from exc
                    continue
                except OSError as exc:
                    raise SpliceError(f"client write failed: {exc}", upstream=False) from exc
                n -= m
                moved += m
        return moved
