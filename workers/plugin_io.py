"""Outbound HTTP for plugins (``pingap.plugins.HttpFetcher``): forward_auth's
sub-request and the JWKS download, on gevent sockets.

Each request has one deadline for the whole exchange (connect, send, read), follows no
redirect, reads at most ``MAX_BODY`` bytes and turns every failure into ``OSError`` or
``ValueError`` so the calling guard denies. Concurrent ``get_shared`` calls for one URL
share a single request.
"""

from __future__ import annotations

import http.client
import ssl
from urllib.parse import urlsplit

import gevent
from gevent.event import AsyncResult

from pingap.plugins import FetchedResponse

#: the most an auth answer or a JWKS document may hold
MAX_BODY = 1024 * 1024


class PluginHttpClient:
    """``Services.http``: one connection per request, closed after it."""

    def __init__(self) -> None:
        self._shared: dict[str, AsyncResult] = {}
        self._tls: ssl.SSLContext | None = None

    def request(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                timeout: float) -> FetchedResponse:
        try:
            with gevent.Timeout(timeout, TimeoutError(f"no answer within {timeout:g}s")):
                return self._exchange(method, url, headers, timeout)
        except http.client.HTTPException as exc:
            raise ValueError(f"bad HTTP answer: {exc!r}") from exc

    def get_shared(self, url: str, timeout: float) -> FetchedResponse:
        pending = self._shared.get(url)
        if pending is not None:
            return pending.get()  # re-raises the first caller's failure
        pending = self._shared[url] = AsyncResult()
        try:
            reply = self.request("GET", url, [], timeout)
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        else:
            pending.set(reply)
            return reply
        finally:
            del self._shared[url]

    def _exchange(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                  timeout: float) -> FetchedResponse:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                               context=self._tls)
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        else:
            raise ValueError(f"unsupported scheme in {url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.putheader("Connection", "close")
            conn.endheaders()
            response = conn.getresponse()
            body = response.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise ValueError(f"answer larger than {MAX_BODY} bytes")
            raw = [(n.encode("latin-1"), v.encode("latin-1"))
                   for n, v in response.getheaders()]
            return FetchedResponse(status=response.status, headers=raw, body=body)
        finally:
            conn.close()
