"""Admin authentication, as pingap's admin: ``Authorization: <sha256(user:pass:ts)>:<ts>``.

``authorizations`` are base64 ``user:pass`` (or plain ``user:pass``). A token is valid
while ``ts`` is within ``max_age`` of now, so a login lasts ``max_age``. The header is
custom (a browser never sends it by itself), which with the JSON-only writes is what
keeps other sites from making an admin's browser change the config (CSRF). Digests are
compared in constant time. An IP with ``ip_fail_limit`` failures inside ``FAIL_WINDOW``
is refused (403) until the window passes. Failures are counted in the worker's counter
store, as the limit plugins' requests are: shared memory, so every worker of the host
sees every failure (Redis with ``basic.redis_url``: every host sharing it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pingap.plugins import CounterStore

FAIL_WINDOW = 300.0
"""Seconds a failed attempt counts against its IP."""


def decode_authorization(value: str) -> tuple[str, str] | None:
    """``(user, password)`` from base64 ``user:pass`` or plain ``user:pass``."""
    text = value
    try:
        decoded = base64.b64decode(value, validate=True).decode()
        if ":" in decoded:
            text = decoded
    except (binascii.Error, UnicodeDecodeError):
        pass
    user, sep, password = text.partition(":")
    return (user, password) if sep and user else None


def _digest(user: str, password: str, ts: str) -> str:
    return hashlib.sha256(f"{user}:{password}:{ts}".encode()).hexdigest()


def make_token(user: str, password: str, ts: int) -> str:
    """The header value a client sends (what pingap's web UI computes)."""
    return f"{_digest(user, password, str(ts))}:{ts}"


class AdminAuth:
    def __init__(self, authorizations: list[str], max_age: float, ip_fail_limit: int,
                 name: str = "") -> None:
        self.credentials = [c for c in map(decode_authorization, authorizations) if c]
        self.max_age = max_age
        self.ip_fail_limit = ip_fail_limit if ip_fail_limit > 0 else 10
        self.name = name
        self.counters: CounterStore | None = None  # lent by the worker (``bind``)

    def _key(self, ip: str) -> str:
        return f"admin-fail:{self.name}:{ip}"

    def _store(self) -> CounterStore:
        if self.counters is None:
            raise RuntimeError("the admin's failed-login count needs the worker's counters")
        return self.counters

    def locked(self, ip: str) -> bool:
        return self._store().rate_count(self._key(ip), FAIL_WINDOW) >= self.ip_fail_limit

    def failed(self, ip: str) -> None:
        # counted up to the limit: beyond it the IP is refused anyway
        self._store().rate_acquire(self._key(ip), FAIL_WINDOW, self.ip_fail_limit)

    def valid(self, header: str, now: float | None = None) -> bool:
        """Whether ``header`` is a current token of one of the credentials."""
        if not self.credentials:
            return True  # pingap: an admin without authorizations is open
        token, sep, ts_text = header.strip().rpartition(":")
        if not sep or not ts_text.isdigit():
            return False
        now = time.time() if now is None else now
        if abs(now - int(ts_text)) > self.max_age:
            return False
        ok = False
        for user, password in self.credentials:
            ok |= hmac.compare_digest(_digest(user, password, ts_text).encode(),
                                      token.encode())
        return ok
