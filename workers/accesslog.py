"""Access-log sinks that never block the event loop on disk.

Lines are appended to an in-memory buffer; a greenlet flushes it every ``flush_timeout``
(default 1 s; sooner when it passes 64 KiB or ``channel_buffer`` lines) through gevent's
thread pool, so a slow disk stalls a thread, not the worker. ``?rolling=`` moves to the
period's file (``pingap.accesslog.rolled_path``) at the first flush of a new period: a
line goes to the file of the moment it is flushed (within ``flush_timeout`` of being
written). ``reopen`` (USR1) reopens the file for logrotate.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import gevent
from gevent.event import Event

from pingap.accesslog import FileSinkSettings, rolled_path

FLUSH_BYTES = 65536
FLUSH_INTERVAL = 1.0

log = logging.getLogger("pingap.access")


class FileAccessLog:
    """Buffered, thread-pool-flushed writer for one access-log file (or, rolling, one
    file per period)."""

    def __init__(self, path: str, settings: FileSinkSettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.settings = settings or FileSinkSettings()
        self.clock = clock
        self._lines: list[str] = []
        self._size = 0
        self._wake = Event()
        self.current = rolled_path(path, self.settings.rolling, clock())
        self._fd = self._open()
        self._closed = False
        self._flusher = gevent.spawn(self._run)

    def _open(self) -> int:
        directory = os.path.dirname(self.current)
        if directory:
            os.makedirs(directory, exist_ok=True)
        return os.open(self.current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        limit = self.settings.channel_buffer
        if self._size >= FLUSH_BYTES or (limit is not None and len(self._lines) >= limit):
            self._wake.set()

    def _run(self) -> None:
        interval = self.settings.flush_timeout or FLUSH_INTERVAL
        while not self._closed:
            self._wake.wait(interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data = ("\n".join(self._lines) + "\n").encode("utf-8", "replace")
        self._lines = []
        self._size = 0
        path = rolled_path(self.path, self.settings.rolling, self.clock())
        if path != self.current:  # a new period: its own file
            self.current = path
            self._swap()
        fd = self._fd
        gevent.get_hub().threadpool.apply(_write_all, (fd, data))

    def _swap(self) -> None:
        old, self._fd = self._fd, self._open()
        os.close(old)

    def reopen(self) -> None:
        self.flush()
        self._swap()

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
