"""Request bodies read whole before the upstream is contacted: a location's
``client_body_buffer_size`` (nginx's ``proxy_request_buffering on``).

``spool_body`` reads a request's body events from the client into a
``tempfile.SpooledTemporaryFile`` - up to the configured size in memory, the rest in a
temp file (``TMPDIR``) - checking ``client_max_body_size`` as it goes; ``SpooledBody.events``
then replays the body to the upstream in 64 KiB pieces. A slow upload holds a greenlet
and a buffer while it arrives, not an upstream connection: fifty slow uploads take an
upstream connection each only for the moment their body is forwarded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator

from pingap.events import BodyReceived, MessageEnded
from pingap.headers import Headers
from pingap.session import ProxySession

REPLAY_CHUNK = 65536


class SpooledBody:
    """A complete request body (and its trailers), in memory or in a temp file."""

    def __init__(self, memory_limit: int) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=memory_limit)
        self.size = 0
        self.trailers: Headers = []

    def events(self) -> Iterator[BodyReceived | MessageEnded]:
        """The body as the client's events again; the file is closed at the end."""
        try:
            self.file.seek(0)
            while data := self.file.read(REPLAY_CHUNK):
                yield BodyReceived(data=data)
            yield MessageEnded(trailers=self.trailers)
        finally:
            self.file.close()


def spool_body(next_event: Callable[[], object], session: ProxySession,
               memory_limit: int) -> SpooledBody | None:
    """Read the whole body; None when the client went away before its end.
    DownstreamError (413) past ``client_max_body_size``, as when streaming."""
    body = SpooledBody(memory_limit)
    try:
        while True:
            event = next_event()
            if isinstance(event, BodyReceived):
                body.size += len(event.data)
                session.check_body_size(body.size)
                body.file.write(event.data)
            elif isinstance(event, MessageEnded):
                body.trailers = list(event.trailers or [])
                return body
            else:
                body.file.close()
                return None
    except BaseException:
        body.file.close()
        raise
