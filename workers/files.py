"""The worker's file-system service for the ``directory`` plugin (``StaticFiles``).

Plain ``os`` calls: stat and open of a local file do not block long enough to be
worth a thread, and gevent has no asynchronous file I/O anyway.
"""

from __future__ import annotations

import os
from typing import Any

from pingap.plugins.static import Entry


class LocalFiles:
    """``pingap.plugins.static.StaticFiles`` on the local disk."""

    def realpath(self, path: str) -> str:
        return os.path.realpath(path, strict=True)

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def open(self, path: str) -> tuple[Any, os.stat_result]:
        """The file opened for reading, and its own stat: the headers describe the
        bytes this handle will read even if the path is replaced meanwhile."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb", buffering=0), st
        except BaseException:
            os.close(fd)
            raise

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
