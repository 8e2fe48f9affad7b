"""The cache stores a worker lends the ``cache`` plugin, and their fill locks.

``memory://...``: a ``MemoryStore`` per worker process; its lock is a gevent event
per key. A directory: ``FileStore``, shared by every worker of the host and kept
across restarts. Each entry is one file named by its key's hash, written to a
temporary file in the same directory and renamed into place, so a reader sees a
whole entry or none, whatever happens mid-write. Its lock is an ``flock`` on a
per-key lock file, which excludes other greenlets of this process (each opens its
own file description) as well as other workers; a waiter polls it, with gevent
sleeping in between, for at most the plugin's ``lock`` time.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import time

import gevent
from gevent.event import Event

from pingap.plugins.cache import file_store_options
from pingap.plugins.cache.memory import UNCACHEABLE_TTL, MemoryStore, memory_size
from pingap.plugins.cache.policy import Entry

log = logging.getLogger("pingap.cache")

_POLL = 0.005
#: pingap's default for a file entry nobody used (``?inactive=``)
DEFAULT_INACTIVE = 48 * 3600.0
#: how often a worker that stores entries sweeps the inactive ones
SWEEP_EVERY = 3600.0


class _EventTicket:
    __slots__ = ("waited", "_locks", "_key", "_event")

    def __init__(self, locks: dict[str, Event], key: str, event: Event, waited: bool) -> None:
        self.waited = waited
        self._locks = locks
        self._key = key
        self._event = event

    def release(self) -> None:
        event = self._event
        if self._locks.get(self._key) is event:
            del self._locks[self._key]
            event.set()  # type: ignore[union-attr]


class WorkerMemoryStore(MemoryStore):
    """``MemoryStore`` with a per-key fill lock for this worker's greenlets."""

    def __init__(self, max_size: int) -> None:
        super().__init__(max_size)
        self._locks: dict[str, Event] = {}

    def lock(self, key: str, timeout: float) -> _EventTicket | None:
        waited = False
        deadline = time.monotonic() + timeout
        while True:
            current = self._locks.get(key)
            if current is None:
                event = self._locks[key] = Event()
                return _EventTicket(self._locks, key, event, waited)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            current.wait(remaining)
            waited = True


class _FileTicket:
    __slots__ = ("waited", "_fd")

    def __init__(self, fd: int, waited: bool) -> None:
        self.waited = waited
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class FileStore:
    """Entries as files under ``root[/namespace]`` (see the module docstring)."""

    def __init__(self, root: str, levels: tuple[int, ...] = (),
                 inactive: float = DEFAULT_INACTIVE) -> None:
        self.root = root
        self.levels = levels
        self.inactive = inactive
        self._swept = time.monotonic()
        os.makedirs(os.path.join(root, ".locks"), exist_ok=True)

    def sweep(self) -> int:
        """Remove entries not read or written for ``inactive`` seconds (pingap's inactive
        sweep); the number removed."""
        limit = time.time() - self.inactive
        removed = 0
        for base, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if d != ".locks"]
            for name in files:
                path = os.path.join(base, name)
                try:
                    if os.stat(path).st_mtime < limit:
                        os.unlink(path)
                        removed += 1
                except OSError:
                    continue
        return removed

    def _path(self, key: str) -> str:
        parts = [self.root]
        pos = 0
        for width in self.levels:
            parts.append(key[pos:pos + width])
            pos += width
        parts.append(key)
        return os.path.join(*parts)

    def get(self, key: str) -> Entry | None:
        try:
            with open(self._path(key), "rb") as handle:
                data = handle.read()
                # a read keeps the entry active: its mtime is what the sweep looks at,
                # refreshed at most once per tenth of ``inactive``
                modified = os.fstat(handle.fileno()).st_mtime
                if time.time() - modified > self.inactive / 10:
                    os.utime(handle.fileno())
        except OSError:
            return None
        return Entry.loads(data)

    def mark_uncacheable(self, key: str) -> None:
        """Note for every worker that ``key``'s response could not be stored: a marker
        file whose mtime is when that stops holding."""
        marker = os.path.join(self.root, ".locks", key + ".nc")
        try:
            with open(marker, "wb"):
                pass
            until = time.time() + UNCACHEABLE_TTL
            os.utime(marker, (until, until))
        except OSError as exc:
            log.warning("cache: cannot mark %s: %s", marker, exc)

    def is_uncacheable(self, key: str) -> bool:
        try:
            return os.stat(os.path.join(self.root, ".locks", key + ".nc")).st_mtime > time.time()
        except OSError:
            return False

    def put(self, key: str, entry: Entry) -> None:
        if time.monotonic() - self._swept > SWEEP_EVERY:
            self._swept = time.monotonic()
            gevent.spawn(self.sweep)  # after this fill, in this worker
        try:
            os.unlink(os.path.join(self.root, ".locks", key + ".nc"))
        except OSError:
            pass
        path = self._path(key)
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f".tmp-{key}-{secrets.token_hex(4)}")
        try:
            os.makedirs(directory, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(entry.dumps())
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cache: cannot store %s: %s", path, exc)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self._path(key))
            return True
        except OSError:
            return False

    def purge_namespace(self, namespace: str) -> tuple[int, int] | None:
        purged = failed = 0
        for base, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if d != ".locks"]
            for name in files:
                try:
                    os.unlink(os.path.join(base, name))
                    purged += 1
                except OSError:
                    failed += 1
        return purged, failed

    def lock(self, key: str, timeout: float) -> _FileTicket | None:
        try:
            fd = os.open(os.path.join(self.root, ".locks", key),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return _FileTicket(fd, waited)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    return None
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            waited = True
            gevent.sleep(_POLL)


class CacheStores:
    """One store per ``directory`` string in this worker (``Services.cache_store``)."""

    def __init__(self) -> None:
        self._stores: dict[str, FileStore] = {}
        self._memory: WorkerMemoryStore | None = None

    def __call__(self, directory: str, namespace: str = "") -> WorkerMemoryStore | FileStore:
        if not directory or directory.startswith("memory://"):
            if self._memory is None:  # one memory store per process, as pingap
                self._memory = WorkerMemoryStore(memory_size(directory))
            return self._memory
        found = self._stores.get(f"{directory}\n{namespace}")
        if found is None:
            options = file_store_options(directory)
            root = os.path.join(options.root, namespace) if namespace else options.root
            found = self._stores[f"{directory}\n{namespace}"] = FileStore(
                root, options.levels, options.inactive)
        return found
