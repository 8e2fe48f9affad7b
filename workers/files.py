"""The worker's file-system service for the ``directory`` plugin (``StaticFiles``).

Plain ``os`` calls: stat and open of a local file do not block long enough to be
worth a thread, and gevent has no asynchronous file I/O anyway.
"""

from __future__ import annotations

import os

from gevent.monkey import get_original

from pingap.plugins.static import Entry

#: ``os.close`` as the stdlib has it. gevent's (monkey-patched) one first runs
#: ``fcntl(F_GETFD)`` and ``fstat`` to learn whether a loop watcher might still use the
#: descriptor; a regular file we opened never has one, and those two calls were 5 % of a
#: static file's time.
close_file = get_original("os", "close")


class OpenFile:
    """An open file as the body writers use it: its descriptor (``sendfile``, ``pread``)
    and ``close``. A file object would cost a second ``fstat`` and, to undo
    ``O_NONBLOCK``, an ``ioctl`` per request."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("the file is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            close_file(self._fd)
            self._fd = -1

    def detach(self) -> int:
        """The descriptor, now the caller's to close (a held ``sendfile``); ``close``
        does nothing after this."""
        fd = self.fileno()
        self._fd = -1
        return fd


class LocalFiles:
    """``pingap.plugins.static.StaticFiles`` on the local disk."""

    def realpath(self, path: str) -> str:
        return os.path.realpath(path, strict=True)

    def open(self, path: str) -> tuple[OpenFile, os.stat_result]:
        """The file opened for reading, and its own stat: the headers describe the
        bytes this handle will read even if the path is replaced meanwhile.
        ``O_NONBLOCK`` so that opening a FIFO cannot hang the worker; it changes nothing
        for a regular file, the only kind the plugin sends."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            return OpenFile(fd), os.fstat(fd)
        except BaseException:
            close_file(fd)
            raise

    def opened_path(self, handle: OpenFile) -> str | None:
        """The real path of the file ``handle`` has open (``/proc/self/fd``), or None where
        the system cannot tell."""
        try:
            return os.readlink(f"/proc/self/fd/{handle.fileno()}")
        except OSError:
            return None

    def listdir(self, path: str) -> list[Entry]:
        entries = []
        with os.scandir(path) as it:
            for item in it:
                try:
                    st = item.stat()
                except OSError:
                    continue
                entries.append(Entry(item.name, item.is_dir(), st.st_size, st.st_mtime))
        return entries
