"""Access-log sinks that never block the event loop on disk.

Lines are appended to an in-memory buffer; a greenlet flushes it every second (or sooner
when it passes 64 KiB) through gevent's thread pool, so a slow disk stalls a thread, not
the worker. ``reopen`` (USR1) swaps the file for logrotate.
"""

from __future__ import annotations

import logging
import os

import gevent
from gevent.event import Event

FLUSH_BYTES = 65536
FLUSH_INTERVAL = 1.0

log = logging.getLogger("pingap.access")


class FileAccessLog:
    """Buffered, thread-pool-flushed writer for one access-log file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lines: list[str] = []
        self._size = 0
        self._wake = Event()
        self._fd = self._open()
        self._closed = False
        self._flusher = gevent.spawn(self._run)

    def _open(self) -> int:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= FLUSH_BYTES:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data = ("\n".join(self._lines) + "\n").encode("utf-8", "replace")
        self._lines = []
        self._size = 0
        fd = self._fd
        gevent.get_hub().threadpool.apply(_write_all, (fd, data))

    def reopen(self) -> None:
        self.flush()
        old, self._fd = self._fd, self._open()
        os.close(old)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        os.close(self._fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class LoggerAccessLog:
    """Access lines to the application log (pingap's behaviour without a file path)."""

    def write(self, line: str) -> None:
        log.info(line)

    def flush(self) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass
