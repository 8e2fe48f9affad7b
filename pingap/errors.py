"""One error hierarchy for the whole proxy.

Every error carries what the single error handler needs: the HTTP ``status`` to answer
with, whether the failed step may be ``retryable`` on another connection, and the
``error_type`` shown in the error page and the ``X-Pingap-EType`` header. Handlers read
these attributes; they never branch on the concrete class.
"""

from __future__ import annotations

from dataclasses import dataclass


class PingapError(Exception):
    """Base of every error the proxy raises on purpose."""

    status: int = 500
    retryable: bool = False
    error_type: str = "internal"

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class DownstreamError(PingapError):
    """The client sent something we refuse: answered with a 4xx, connection closed."""

    status = 400
    error_type = "downstream"


class ClientGone(PingapError):
    """The client connection (or HTTP/2 stream) failed or closed while we talked to it:
    nothing can be answered any more (499 in the access log's terms, nginx's)."""

    status = 499
    error_type = "downstream"


class UpstreamError(PingapError):
    """Connecting to, writing to or reading from a backend failed."""

    status = 502
    error_type = "upstream"


class UpstreamConnectError(UpstreamError):
    """No connection could be made; nothing was sent, so another backend may be tried."""

    retryable = True


class StaleConnection(UpstreamError):
    """A reused upstream connection died before any response byte: the backend closed it
    while it sat idle, so the request may go again on a fresh one."""

    retryable = True


class UpstreamProtocolError(UpstreamError):
    """The backend sent something that is not a valid HTTP/1.x response."""


class H2StreamError(UpstreamError):
    """An upstream HTTP/2 stream failed: reset, refused, or its connection was lost.

    ``retryable`` is True only when the backend certainly did not process the request
    (REFUSED_STREAM, or a GOAWAY whose last-stream-id is below the stream), so it may be
    sent again; ``response_started`` says whether a response head had arrived.
    """

    def __init__(self, message: str, *, retryable: bool = False,
                 response_started: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.response_started = response_started


class UpstreamTimeout(UpstreamError):
    """The backend did not answer within ``read_timeout``/``write_timeout``."""

    status = 504


class ProxyLoopError(UpstreamError):
    """A transparent upstream's target is this proxy itself: 508 Loop Detected."""

    status = 508
    retryable = False


class NoBackendError(UpstreamError):
    """The upstream has no healthy backend to offer."""

    status = 503


class InternalError(PingapError):
    """A bug or an unexpected state inside the proxy."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a configuration, located by file and dotted key path."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}{self.key}: {self.message}"


class ConfigError(PingapError):
    """A configuration could not be used; ``problems`` lists every reason found."""

    error_type = "config"

    def __init__(self, problems: list[Problem], warnings: list[Problem] | None = None) -> None:
        self.problems = list(problems)
        #: what was found besides (ignored keys...), for a complete ``pingap -t`` report
        self.warnings = list(warnings or ())
        super().__init__("\n".join(str(p) for p in self.problems))
