"""A bounded, self-stopping load of real HTTP/1.1 clients for reload/upgrade tests.

``clients`` threads loop until stopped: half reuse one keep-alive connection (reconnecting
when the server says ``Connection: close``), half send ``Connection: close`` each time.
Every response must be 200 with the exact body the backend's echo produces for that
request's unique target; anything else (error, reset, timeout, wrong body) is a failure
with its reason kept.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for reason in self.failures:
            reasons[reason] = reasons.get(reason, 0) + 1
        return f"{self.ok} ok, {len(self.failures)} failed: {reasons}"


class Load:
    def __init__(self, port: int, clients: int = 64, path: str = "/load",
                 timeout: float = 15.0, think: float = 0.0) -> None:
        self.port = port
        self.clients = clients
        self.path = path
        self.timeout = timeout
        self.think = think
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self.result

    def wait_requests(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.result.ok < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"load made only {self.result.ok} requests")
            time.sleep(0.01)

    def _record(self, ok: bool, reason: str = "") -> None:
        with self._lock:
            if ok:
                self.result.ok += 1
            else:
                self.result.failures.append(reason)

    def _run(self, index: int) -> None:
        keep_alive = index % 2 == 0
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self._stop.is_set():
            n += 1
            target = f"{self.path}/{index}/{n}"
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                headers = {} if keep_alive else {"Connection": "close"}
                conn.request("GET", target, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    self._record(False, f"status {resp.status}")
                elif json.loads(body).get("target") != target:
                    self._record(False, "wrong body")
                else:
                    self._record(True)
                if not keep_alive or resp.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:  # every client-side failure counts
                self._record(False, type(exc).__name__)
                conn.close()
                conn = None
            if self.think:
                time.sleep(self.think)
        if conn is not None:
            conn.close()
