"""Prometheus push-gateway mode: POST the text exposition to a URL periodically.

``prometheus_metrics = "http://user:pass@gateway:9091/metrics/job/pingap?interval=30s"``:
userinfo becomes basic auth, ``$HOSTNAME`` in the URL is replaced by the host name, and
``interval`` (default 60s; unlike pingap, not rounded to whole minutes) sets the period.
Failures are logged and retried at the next period.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit, urlunsplit

import gevent

from pingap.units import parse_duration

log = logging.getLogger("pingap.metrics")


def push_target(url: str) -> tuple[str, str | None, float]:
    """(URL without userinfo, basic-auth header value or None, interval seconds)."""
    url = url.replace("$HOSTNAME", socket.gethostname())
    parts = urlsplit(url)
    auth = None
    if parts.username:
        token = f"{parts.username}:{parts.password or ''}".encode()
        auth = "Basic " + base64.b64encode(token).decode()
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    interval = parse_duration(parse_qs(parts.query).get("interval", ["60s"])[0])
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), auth, interval


def push_loop(url: str, render: Callable[[], str]) -> None:
    import http.client

    target, auth, interval = push_target(url)
    parts = urlsplit(target)
    while True:
        gevent.sleep(interval)
        try:
            conn_cls = (http.client.HTTPSConnection if parts.scheme == "https"
                        else http.client.HTTPConnection)
            conn = conn_cls(parts.hostname or "", parts.port, timeout=10)
            headers = {"Content-Type": "text/plain; version=0.0.4"}
            if auth:
                headers["Authorization"] = auth
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("POST", path or "/", body=render().encode(), headers=headers)
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status >= 300:
                log.warning("push to %s answered %d", parts.netloc, response.status)
        except OSError as exc:
            log.warning("push to %s failed: %s", parts.netloc, exc)
