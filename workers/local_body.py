"""The body of a local answer (a plugin's, a static file's) written to the client.

A ``Respond`` carries its body as bytes or as ``stream`` pieces (bytes and open-file
slices). Without body filters, a file slice goes to a plaintext HTTP/1.1 client with
``sendfile`` (the kernel copies page cache to socket; the greenlet waits on EAGAIN);
otherwise it is read in its ``chunk_size`` pieces and written through the downstream's
codec — through the request's body filters (compression) when there are any. With a
filter that must see the whole body first (``whole_body``: image re-encoding, whose
result decides the head), the head is written just before the first output bytes.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

from pingap.actions import FilePart, Respond
from pingap.context import RequestContext
from workers import sockio

SEND_TIMEOUT = 60.0


class ClientWriteFailed(Exception):
    """The client socket failed (or timed out) during sendfile."""


def send_file(sock: socket.socket, file: Any, offset: int, count: int,
              timeout: float = SEND_TIMEOUT) -> None:
    """``count`` bytes of ``file`` from ``offset`` to ``sock`` with ``os.sendfile``."""
    try:
        sockio.send_file(sock, file.fileno(), offset, count, timeout)
    except OSError as exc:  # the timeout included
        raise ClientWriteFailed(str(exc)) from exc


def read_part(part: FilePart) -> Any:
    """The bytes of ``part`` in pieces of at most its ``chunk_size`` bytes."""
    chunk = part.chunk_size
    fd = part.file.fileno()
    offset, left = part.offset, part.length
    while left > 0:
        data = os.pread(fd, min(chunk, left), offset)
        if not data:
            raise ClientWriteFailed("file truncated while sending")
        offset += len(data)
        left -= len(data)
        yield data


def write_local_body(down: Any, answer: Respond, ctx: RequestContext, *,
                     write_head: Callable[[], None]) -> int:
    """Write ``answer``'s head (via ``write_head``) and body; the body bytes sent.

    ``down`` has the downstream hooks (``write_body``, ``flush``, ``raw_sink``,
    ``raw_body_sent``)."""
    filters = ctx.body_filters
    pieces = answer.stream or ((answer.body,) if answer.body else ())
    if not filters:
        write_head()
        total = sum(p.length if isinstance(p, FilePart) else len(p) for p in pieces)
        sent = 0
        for piece in pieces:
            if isinstance(piece, FilePart):
                sink = down.raw_sink(total - sent)
                if sink is not None and not isinstance(sink, ssl.SSLSocket):
                    # the end of the body: head and file go with the loop turn's other
                    # writes (a file under ``sockio.HOLD_FILE_MAX``); otherwise the head
                    # goes out with the file's first bytes
                    if not (sent + piece.length == total
                            and down.hold_file(piece.file, piece.offset, piece.length)):
                        down.flush(more=True)
                        send_file(sink, piece.file, piece.offset, piece.length)
                    down.raw_body_sent(piece.length)
                else:
                    down.flush()
                    for data in read_part(piece):
                        down.write_body(data)
                sent += piece.length
            else:
                down.write_body(piece)
                sent += len(piece)
        return sent
    deferred = any(getattr(f, "whole_body", False) for f in filters)
    if not deferred:
        write_head()
    size = 0
    for piece in pieces:
        parts = read_part(piece) if isinstance(piece, FilePart) else (piece,)
        for data in parts:
            out = ctx.filter_body(data)
            if out:
                if deferred:
                    write_head()
                    deferred = False
                size += len(out)
                down.write_body(out)
    tail = ctx.end_body()
    if deferred:
        write_head()
    if tail:
        size += len(tail)
        down.write_body(tail)
    return size
