"""The cache stores a worker lends the ``cache`` plugin, and their fill locks.

``memory://...``: a ``MemoryStore`` per worker process; its lock is a gevent event
per key. A directory: ``FileStore``, shared by every worker of the host and kept
across restarts. Each entry is one file named by its key's hash, written to a
temporary file in the same directory and renamed into place, so a reader sees a
whole entry or none, whatever happens mid-write. Its lock is an ``flock`` on a
per-key lock file, which excludes other greenlets of this process (each opens its
own file description) as well as other workers; a waiter polls it, with gevent
sleeping in between, for at most the plugin's ``lock`` time.

A directory's query options: ``reading_max``/``writing_max`` cap the disk reads and
fills in progress (over the cap a read is a miss, a fill is not written) on the whole
host, as in pingap's one process; ``max_size`` bounds the directory, evicting the
entries least recently used (their access time, set on every use) when a write would
pass it by the host's account of the directory (a file every worker updates under
``flock``, measured again once an eighth of ``max_size`` has been written since);
``cache_max`` keeps a hot layer of entries up to ``cache_file_max_weight`` pages in
memory, per worker, each checked against its file on use so a purge or a newer entry
from another worker is never hidden.

The caps are counted in the host's shared region (``pingap.state`` in-flight counters,
never Redis: disk work is per host by nature), one count per (directory string, cap,
worker slot), each written only under the region's lock; a read or fill is admitted
while the sum over every slot stays within the cap. A count belongs to its holder's
slot, so a worker that dies holding reads or fills (SIGKILL) cannot leak them: the
master voids a reaped worker's counts before its slot is given to a replacement
(``SharedState.drop_owner``), and a worker zeroes its own count when it first opens a
directory, which covers a predecessor whose reaping did not void it (say a master that
died mid-upgrade). A process without the region (a lone worker) counts for itself.
Counting costs a read or fill about 10 µs (the region's lock and table); a hot-layer
hit and an uncapped directory (``=0``) count nothing.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import struct
import time
from dataclasses import replace
from typing import NamedTuple

import cachetools
import gevent
from gevent.event import Event

from pingap.actions import FilePart
from pingap.plugins.cache import FileStoreOptions, file_store_options
from pingap.plugins.cache.memory import UNCACHEABLE_TTL, MemoryStore, memory_size
from pingap.plugins.cache.policy import Entry
from pingap.state import SharedState, StateFull
from workers.files import OpenFile, close_file

log = logging.getLogger("pingap.cache")

_POLL = 0.005
#: pingap's default for a file entry nobody used (``?inactive=``)
DEFAULT_INACTIVE = 48 * 3600.0
#: how often a worker that stores entries sweeps the inactive ones
SWEEP_EVERY = 3600.0
#: pingap's weight unit for the hot layer's budget (``cache_max``) and entries
PAGE = 4096
#: how stale a hot entry's file access time may get (a hit from memory touches the file
#: at most this often, so ``max_size`` and ``inactive`` do not drop what is in use)
_TOUCH_EVERY = 1.0
#: entry files above this size are sent from the file (sendfile where the socket allows)
#: unless the hot layer takes them; their read lasts until the body is sent
STREAM_FROM = 32 * 1024
_HEAD_READ = 4096
#: a temporary file untouched this long is what a dead write (a crash) left
_DEAD_WRITE = 3600.0
#: what eviction for max_size leaves, in per cent of it
_LOW_WATER = 90
#: the directory is measured again once the host has written this part of max_size
#: since, which bounds how far the account can drift (a crash between a write and its
#: account, files removed by hand)
_REMEASURE = 8
#: the host's account of a directory's size, in its ``.locks``: bytes used as last
#: measured plus every worker's writes and removals since, and the bytes written since
_ACCOUNT = struct.Struct("<qq")


def _pages(size: int) -> int:
    return 1 if size <= PAGE else size // PAGE


class _Slot:
    """One disk read or write in progress (``Disk.reading``/``writing``)."""

    __slots__ = ("_gauge",)

    def __init__(self, gauge: _Gauge | _HostGauge | None) -> None:
        self._gauge = gauge

    def release(self) -> None:
        if self._gauge is not None:
            self._gauge.release()
            self._gauge = None


class _Gauge:
    """A cap counted in this process: where there is no shared region, or no cap."""

    __slots__ = ("busy", "limit")

    def __init__(self, limit: int) -> None:
        self.busy = 0
        self.limit = limit

    def acquire(self) -> _Slot | None:
        """A slot, or None when ``limit`` (0: none) are already busy."""
        if self.limit and self.busy >= self.limit:
            return None
        self.busy += 1
        return _Slot(self)

    def release(self) -> None:
        self.busy -= 1


class _HostGauge:
    """A cap counted for the whole host in the shared region (see the module docstring):
    ``name`` is the directory string and cap, ``owner`` this worker's slot."""

    __slots__ = ("limit", "_state", "_name", "_owner")

    def __init__(self, state: SharedState, name: str, owner: int, limit: int) -> None:
        self.limit = limit
        self._state = state
        self._name = name
        self._owner = owner
        state.inflight_reset(name, owner)  # this worker holds nothing yet

    def acquire(self) -> _Slot | None:
        try:
            admitted = self._state.inflight_acquire(self._name, self._owner, self.limit)[0]
        except StateFull:
            log.warning("cache: shared counter table full; %s over its cap", self._name)
            return None
        return _Slot(self) if admitted else None

    def release(self) -> None:
        self._state.inflight_release(self._name, self._owner)


def _gauge(limit: int, state: SharedState | None, name: str,
           owner: int) -> _Gauge | _HostGauge:
    if state is None or not limit:
        return _Gauge(limit)
    return _HostGauge(state, name, owner, limit)


class _Reading(OpenFile):
    """An entry's open file while its body is sent: closing it ends the read (and gives
    back its ``reading_max`` slot)."""

    __slots__ = ("_slot",)

    def __init__(self, fd: int, slot: _Slot) -> None:
        super().__init__(fd)
        self._slot = slot

    def close(self) -> None:
        super().close()
        self._slot.release()  # once, also after ``detach``


def _touch(file: int | str, st: os.stat_result) -> None:
    """Mark an entry as used now (``max_size`` and ``inactive`` go by its access time);
    a file we may not touch (another owner) is still read."""
    try:
        os.utime(file, ns=(time.time_ns(), st.st_mtime_ns))
    except OSError:
        pass


def _read_fd(fd: int, size: int) -> bytes:
    """The whole of a file of ``size`` bytes (short if it shrank meanwhile)."""
    pieces: list[bytes] = []
    offset = 0
    while True:
        data = os.pread(fd, max(size - offset, 0) + 1, offset)
        if not data:
            return b"".join(pieces)
        pieces.append(data)
        offset += len(data)


def _read_all(part: FilePart) -> bytes:
    fd = part.file.fileno()
    pieces = []
    offset, left = part.offset, part.length
    while left > 0:
        data = os.pread(fd, min(left, 1 << 20), offset)
        if not data:
            raise OSError(errno.EIO, "cache entry file shorter than its head says")
        pieces.append(data)
        offset += len(data)
        left -= len(data)
    return b"".join(pieces)


class _Hot(NamedTuple):
    entry: Entry
    #: (inode, size, mtime) of the file it was read from or written to
    ident: tuple[int, int, int]
    pages: int
    touched: list[float]


def _ident(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


class Disk:
    """A cache directory in this worker: its caps (host-wide with a shared ``state``;
    ``name`` the directory string, ``owner`` this worker's slot), hot layer and the
    host's size account."""

    def __init__(self, options: FileStoreOptions, state: SharedState | None = None,
                 name: str = "", owner: int = 0) -> None:
        self.base = options.root
        self.levels = options.levels
        self.inactive = options.inactive
        self.reading = _gauge(options.reading_max, state, f"cache|reading|{name}", owner)
        self.writing = _gauge(options.writing_max, state, f"cache|writing|{name}", owner)
        self.max_size = options.max_size
        self.hot: cachetools.LRUCache[str, _Hot] | None = None
        if options.cache_max:
            self.hot = cachetools.LRUCache(maxsize=options.cache_max,
                                           getsizeof=lambda hot: hot.pages)
        self.hot_max_pages = options.cache_file_max_weight
        self._account = os.path.join(self.base, ".locks", ".size")
        self.swept = time.monotonic()

    def hot_get(self, path: str) -> Entry | None:
        if self.hot is None:
            return None
        hot = self.hot.get(path)
        if hot is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is None or _ident(st) != hot.ident:
            self.hot.pop(path, None)  # purged, evicted or replaced since
            return None
        now = time.monotonic()
        if now - hot.touched[0] > _TOUCH_EVERY:
            hot.touched[0] = now
            _touch(path, st)
        return hot.entry

    def hot_takes(self, size: int) -> bool:
        """Whether an entry file of ``size`` bytes belongs in the hot layer."""
        if self.hot is None:
            return False
        pages = _pages(size)
        return pages < self.hot_max_pages and pages <= self.hot.maxsize

    def hot_put(self, path: str, entry: Entry, st: os.stat_result) -> None:
        if self.hot is None:
            return
        if self.hot_takes(st.st_size):
            self.hot[path] = _Hot(entry, _ident(st), _pages(st.st_size), [time.monotonic()])
        else:
            self.hot.pop(path, None)

    def forget(self, path: str | None = None, size: int = 0) -> None:
        """``path`` (``size`` bytes) is gone; None: an unknown part of the directory."""
        if path is None:
            if self.hot is not None:
                self.hot.clear()
            if self.max_size:
                try:
                    os.unlink(self._account)  # unknown: measured on the next write
                except OSError:
                    pass
            return
        if self.hot is not None:
            self.hot.pop(path, None)
        self.grew(-size)

    def grew(self, size: int) -> None:
        if self.max_size:
            self.account(size)

    def account(self, change: int = 0, measured: int | None = None) -> tuple[int, int] | None:
        """The host's account of the directory, shared by every worker through a file
        under ``flock`` (held for one read and write): add ``change`` bytes, or start
        again from ``measured``; (bytes used, bytes written since measured), or None
        when nobody has measured yet (or a purge made it unknown)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            try:
                fd = os.open(self._account, flags, 0o600)
            except FileNotFoundError:  # only namespaces used so far
                os.makedirs(os.path.dirname(self._account), exist_ok=True)
                fd = os.open(self._account, flags, 0o600)
        except OSError as exc:
            log.warning("cache: cannot keep %s: %s", self._account, exc)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, _ACCOUNT.size, 0)
            if measured is not None:
                used, written = measured, 0
            elif len(raw) < _ACCOUNT.size:
                return None
            else:
                used, written = _ACCOUNT.unpack(raw)
                if not change:
                    return used, written
                used, written = max(used + change, 0), written + max(change, 0)
            os.pwrite(fd, _ACCOUNT.pack(used, written), 0)
            return used, written
        except OSError as exc:
            log.warning("cache: cannot keep %s: %s", self._account, exc)
            return None
        finally:
            os.close(fd)  # and with it the flock

    def due_sweep(self) -> None:
        """Sweep in the background (in this worker) once ``SWEEP_EVERY`` has passed."""
        if time.monotonic() - self.swept > SWEEP_EVERY:
            self.swept = time.monotonic()
            gevent.spawn(self.sweep)

    def sweep(self) -> int:
        """Remove the directory's entries (every namespace) not used for ``inactive``
        seconds (pingap's inactive sweep, by access time), the lock files of keys not
        filled for as long, ended markers and what writes that died (a crash) left; the
        number of entries and temporary files removed."""
        now = time.time()
        limit = now - self.inactive
        dead = now - _DEAD_WRITE
        removed = 0
        for base, _, files in os.walk(self.base):
            locks = os.path.basename(base) == ".locks"
            for name in files:
                path = os.path.join(base, name)
                try:
                    st = os.stat(path)
                    if locks:  # not counted: a lock file (touched when taken) or a
                        # marker (its mtime is when it ends), one per key ever filled
                        if st.st_mtime < (now if name.endswith(".nc") else limit):
                            os.unlink(path)
                    elif name.startswith(".tmp-"):
                        if st.st_mtime < dead:
                            os.unlink(path)
                            removed += 1
                    elif st.st_atime < limit:
                        os.unlink(path)
                        self.forget(path, st.st_size)
                        removed += 1
                except OSError:
                    continue
        return removed

    def make_room(self, need: int) -> None:
        """When ``need`` more bytes do not fit in ``max_size`` by the host's account,
        remove the least recently used entries until they fit in ``_LOW_WATER`` % of it;
        the directory is measured when the account may be off (unknown, a write that does
        not fit, much written since)."""
        if not self.max_size:
            return
        account = self.account()
        if (account is not None and account[0] + need <= self.max_size
                and account[1] <= self.max_size // _REMEASURE):
            return
        files = []
        for base, dirs, names in os.walk(self.base):
            dirs[:] = [d for d in dirs if d != ".locks"]
            for name in names:
                if name.startswith(".tmp-"):
                    continue  # a write in progress: its writer owns it
                path = os.path.join(base, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                files.append((st.st_atime_ns, st.st_size, path, st.st_ino))
        used = sum(file[1] for file in files)
        if used + need > self.max_size:
            # down to a low-water mark, so that a full directory is not walked again
            # for every write
            target = self.max_size * _LOW_WATER // 100
            files.sort()
            for atime, size, path, ino in files:
                if used + need <= target:
                    break
                try:
                    now = os.stat(path)
                    if now.st_ino != ino or now.st_atime_ns != atime:
                        continue  # replaced or used since the walk (another worker)
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("cache: cannot evict %s: %s", path, exc)
                    continue
                used -= size
                if self.hot is not None:
                    self.hot.pop(path, None)
        self.account(measured=used)


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
    """Entries as files under ``root`` (the directory or its namespace), see the module
    docstring; ``disk`` is the directory's per-worker side, shared by its namespaces."""

    def __init__(self, root: str, levels: tuple[int, ...] = (),
                 inactive: float = DEFAULT_INACTIVE, disk: Disk | None = None) -> None:
        self.root = root
        self.disk = disk if disk is not None else Disk(FileStoreOptions(root, levels, inactive))
        self.levels = self.disk.levels
        self.inactive = self.disk.inactive
        os.makedirs(os.path.join(root, ".locks"), exist_ok=True)

    def sweep(self) -> int:
        return self.disk.sweep()

    def _path(self, key: str) -> str:
        parts = [self.root]
        pos = 0
        for width in self.levels:
            parts.append(key[pos:pos + width])
            pos += width
        parts.append(key)
        return os.path.join(*parts)

    def get(self, key: str) -> Entry | None:
        path = self._path(key)
        disk = self.disk
        hot = disk.hot_get(path)
        if hot is not None:
            return hot
        disk.due_sweep()
        slot = disk.reading.acquire()
        if slot is None:
            return None  # pingap: a read over reading_max is a miss, not an error
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            slot.release()
            return None
        entry: Entry | None = None
        try:
            st = os.fstat(fd)
            _touch(fd, st)
            if st.st_size > STREAM_FROM and not disk.hot_takes(st.st_size):
                # sent from the file: its read lasts until the body's file is closed
                prefix = os.pread(fd, _HEAD_READ, 0)
                wanted = Entry.head_size(prefix)
                if len(prefix) < wanted <= st.st_size:
                    prefix = os.pread(fd, wanted, 0)  # a head larger than the first read
                entry = Entry.in_file(prefix, st.st_size, _Reading(fd, slot))
                if entry is not None:
                    return entry
            else:
                entry = Entry.loads(_read_fd(fd, st.st_size))
        except OSError:
            entry = None
            return None
        finally:
            if entry is None or entry.part is None:
                close_file(fd)
                slot.release()
        if entry is None:  # torn or foreign: removed, so that it stops taking room
            self._discard(path, st)
            return None
        disk.hot_put(path, entry, st)
        return entry

    def _discard(self, path: str, st: os.stat_result) -> None:
        try:
            if os.stat(path).st_ino == st.st_ino:  # not a newer entry renamed in since
                os.unlink(path)
                self.disk.forget(path, st.st_size)
        except OSError:
            pass

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

    def write_slot(self) -> _Slot | None:
        """A fill's right to write (held from its head to its end), or None over
        ``writing_max``: then the response is not stored (pingap skips the write)."""
        return self.disk.writing.acquire()

    def put(self, key: str, entry: Entry) -> None:
        disk = self.disk
        disk.due_sweep()
        try:
            os.unlink(os.path.join(self.root, ".locks", key + ".nc"))
        except OSError:
            pass
        if entry.part is not None:  # a revalidated entry still in its old file
            entry = replace(entry, body=_read_all(entry.part), part=None)
        data = entry.dumps()
        path = self._path(key)
        if disk.max_size and len(data) > disk.max_size:
            log.info("cache: %s (%d bytes) is larger than max_size", path, len(data))
            return
        try:
            old = os.stat(path).st_size
        except OSError:
            old = 0
        disk.make_room(len(data) - old)
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f".tmp-{key}-{secrets.token_hex(4)}")
        try:
            os.makedirs(directory, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                st = os.fstat(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cache: cannot store %s: %s", path, exc)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        disk.grew(len(data) - old)
        disk.hot_put(path, entry, st)

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except OSError:
            return False
        self.disk.forget(path, size)
        return True

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
        self.disk.forget()
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
                os.utime(fd)  # in use: the sweep leaves it
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
    """One store per ``directory`` string in this worker (``Services.cache_store``);
    with the host's shared ``state``, directories' caps count for the whole host and
    ``owner`` is this worker's slot in it."""

    def __init__(self, state: SharedState | None = None, owner: int = 0) -> None:
        self._state = state
        self._owner = owner
        self._stores: dict[str, FileStore] = {}
        self._disks: dict[str, Disk] = {}
        self._memory: WorkerMemoryStore | None = None

    def __call__(self, directory: str, namespace: str = "") -> WorkerMemoryStore | FileStore:
        if not directory or directory.startswith("memory://"):
            if self._memory is None:  # one memory store per process, as pingap
                self._memory = WorkerMemoryStore(memory_size(directory))
            return self._memory
        found = self._stores.get(f"{directory}\n{namespace}")
        if found is None:
            disk = self._disks.get(directory)
            if disk is None:  # one per directory string, as pingap: namespaces share it
                disk = self._disks[directory] = Disk(file_store_options(directory),
                                                     self._state, directory, self._owner)
            root = os.path.join(disk.base, namespace) if namespace else disk.base
            found = self._stores[f"{directory}\n{namespace}"] = FileStore(root, disk=disk)
        return found
