"""Sends webhook notifications from the master, off every request path.

One thread drains a queue and POSTs each notification (``urllib``, 10 s timeout),
retrying a failed send (network error, 429 or 5xx) with back-off (1, 2, 4, 8 s) before
giving up with a log line. ``notify`` only enqueues, so neither the master loop nor a
worker ever waits on the webhook. Which categories are sent, and where, follows the
current config's ``basic.webhook``/``webhook_type``/``webhook_notifications``.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from typing import Any

from pingap.webhook import Notification, payload

log = logging.getLogger("pingap.webhook")

BACKOFF = (1.0, 2.0, 4.0, 8.0)
TIMEOUT = 10.0


def local_ips() -> str:
    """Non-loopback addresses of this host, as pingap reports them."""
    import psutil  # psutil and urllib (ssl, http.client) only once a webhook is sent

    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6) and \
                    not address.address.startswith(("127.", "::1", "fe80")):
                found.append(address.address.split("%")[0])
    return ";".join(found)


class WebhookSender:
    def __init__(self) -> None:
        self.url = ""
        self.kind = ""
        self.categories: frozenset[str] = frozenset()
        self._queue: queue.Queue[tuple[str, str, Notification] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.hostname = socket.gethostname()

    def configure(self, basic: Any) -> None:
        self.url = basic.webhook or ""
        self.kind = basic.webhook_type or ""
        self.categories = frozenset(basic.webhook_notifications or ())

    def notify(self, category: str, level: str, title: str, message: str) -> None:
        log.info("notification %s: %s: %s", category, title, message)
        if not self.url or category not in self.categories:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
            self._thread.start()
        self._queue.put((self.url, self.kind, Notification(
            category=category, level=level, title=title, message=message)))

    def stop(self, timeout: float = 2.0) -> None:
        """Let queued notifications go out (briefly) when the master exits."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        ips = local_ips()
        while True:
            item = self._queue.get()
            if item is None:
                return
            url, kind, note = item
            body = json.dumps(payload(kind, note, self.hostname, ips)).encode()
            for attempt, pause in enumerate((*BACKOFF, None)):
                error = self._post(url, body)
                if error is None:
                    break
                if pause is None:
                    log.error("webhook %s not sent after %d attempts: %s", note.category,
                              attempt + 1, error)
                    break
                time.sleep(pause)

    @staticmethod
    def _post(url: str, body: bytes) -> str | None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                reply.read()
            return None
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                return f"HTTP {exc.code}"
            log.error("webhook refused: HTTP %d", exc.code)
            return None  # a 4xx will not get better by retrying
        except (OSError, ValueError) as exc:
            return str(exc)
