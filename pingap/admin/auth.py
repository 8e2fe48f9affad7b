"""Admin authentication, as pingap's admin: ``Authorization: <sha256(user:pass:ts)>:<ts>``.

``authorizations`` are base64 ``user:pass`` (or plain ``user:pass``). A token is valid
while ``ts`` is within ``max_age`` of now, so a login lasts ``max_age``. The header is
custom (a browser never sends it by itself), which with the JSON-only writes is what
keeps other sites from making an admin's browser change the config (CSRF). Digests are
compared in constant time. An IP with ``ip_fail_limit`` failures inside ``FAIL_WINDOW``
is refused (403) until the window passes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict

FAIL_WINDOW = 300.0
"""Seconds a failed attempt counts against its IP."""
MAX_TRACKED_IPS = 4096


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
    def __init__(self, authorizations: list[str], max_age: float, ip_fail_limit: int) -> None:
        self.credentials = [c for c in map(decode_authorization, authorizations) if c]
        self.max_age = max_age
        self.ip_fail_limit = ip_fail_limit if ip_fail_limit > 0 else 10
        self._fails: OrderedDict[str, list[float]] = OrderedDict()

    def locked(self, ip: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        recent = [t for t in self._fails.get(ip, ()) if now - t < FAIL_WINDOW]
        if recent:
            self._fails[ip] = recent
        else:
            self._fails.pop(ip, None)
        return len(recent) >= self.ip_fail_limit

    def failed(self, ip: str, now: float | None = None) -> None:
        self._fails.setdefault(ip, []).append(time.time() if now is None else now)
        self._fails.move_to_end(ip)
        while len(self._fails) > MAX_TRACKED_IPS:
            self._fails.popitem(last=False)

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
