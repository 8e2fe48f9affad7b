"""The host's DNS discovery check: pingap's ``service_discover_fail`` webhook.

One thread of the master resolves the names of every upstream on DNS discovery
(``pingap.discovery``) when the config starts serving and then every ``update_frequency``,
off every request path and once per host (workers resolve on their own at connect
time). A pass where names do not resolve is logged; the webhook event is sent when an
upstream's failure starts or changes, not again on every pass while it lasts, and once
more after the names resolved again and fail anew.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pingap.discovery import DnsDiscovery, discover_fail_message, dns_discoveries

log = logging.getLogger("pingap.discovery")

Notify = Callable[[str, str, str, str], None]  # category, level, title, message
Resolve = Callable[[str, int], object]


def _getaddrinfo(host: str, port: int) -> object:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


class DiscoveryWatch:
    def __init__(self, notify: Notify, resolve: Resolve = _getaddrinfo) -> None:
        self._notify = notify
        self._resolve = resolve
        self._config: Any = None
        self._discoveries: list[DnsDiscovery] = []
        self._due: dict[str, float] = {}       # upstream -> monotonic time of its next pass
        self._reported: dict[str, str] = {}    # upstream -> the failure last sent
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def follow(self, config: Any) -> None:
        """Watch the upstreams of the config now serving (a new one: check at once)."""
        if config is None or config is self._config:
            return
        self._config = config
        discoveries = dns_discoveries(config)
        with self._lock:
            self._discoveries = discoveries
            self._due = {d.upstream: 0.0 for d in discoveries}
            watched = set(self._due)
            self._reported = {k: v for k, v in self._reported.items() if k in watched}
        if discoveries and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="discovery", daemon=True)
            self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            with self._lock:
                now = time.monotonic()
                due = [d for d in self._discoveries if self._due.get(d.upstream, 0.0) <= now]
                for discovery in due:
                    self._due[discovery.upstream] = now + discovery.every
            for discovery in due:
                self.check(discovery)
            with self._lock:
                wait = min(self._due.values(), default=now + 60.0) - time.monotonic()
            self._wake.wait(max(wait, 0.05))

    def check(self, discovery: DnsDiscovery) -> None:
        """One pass over one upstream's names."""
        failed, error = [], ""
        for host, port in discovery.hosts:
            try:
                self._resolve(host, port)
            except (OSError, UnicodeError) as exc:
                failed.append(host)
                error = str(exc)
        message = discover_fail_message(discovery, failed, error)
        with self._lock:  # follow() prunes the reported failures from the master's thread
            if message is None:
                news = self._reported.pop(discovery.upstream, None) is not None
            else:
                news = self._reported.get(discovery.upstream) != message
                self._reported[discovery.upstream] = message
        if message is None:
            if news:
                log.info("dns discovery of upstream %s resolves again", discovery.upstream)
            return
        log.warning("%s", message)
        if news:
            self._notify("service_discover_fail", "warn", "", message)  # pingap: no title
