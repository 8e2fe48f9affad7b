"""Where the config lives: one interface (``ConfigStorage``), two backends.

``open_storage(url)`` picks the backend from pingap's ``-c`` syntax:

* a file or a directory (``?separation=true`` writes one file per entry,
  ``&enable_history=true`` keeps every replaced version) -> ``master.storage.files``;
* ``etcd://host1:2379,host2:2379/prefix?timeout=…&connect_timeout=…&user=…&password=…``
  -> ``master.storage.etcd`` (pingap's key layout: ``<prefix>/basic.toml``,
  ``<prefix>/servers/web.toml`` …).

A storage hands out its TOML documents (the master snapshots them for its workers) and
writes one entry at a time (``save_entry``): the entry is edited with tomlkit in the
document that holds it, only if the entry is still the version the caller saw, else
``ConflictError``. The master is the only process that writes.
"""

from __future__ import annotations

import abc
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from master.storage.documents import (
    Document,
    Layout,
    check_name,
    entry_digest,
    entry_values,
    place_entry,
)
from master.wakeup import WakePipe
from pingap.config.sources import Source

__all__ = ["ConfigStorage", "ConflictError", "Document", "HistoryItem", "PollingWatcher",
           "StorageError", "open_storage", "redact"]

HISTORY_KEEP = 10
"""Versions kept per document, as pingap (its history API returns the last ten)."""


class StorageError(Exception):
    """The storage cannot be read or written (missing, unreachable, refused)."""


class ConflictError(StorageError):
    """The entry changed since the caller read it."""


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """A replaced version of a document: when it was replaced and its text."""

    created_at: int
    data: str


class ConfigStorage(abc.ABC):
    """A config source the master reads, snapshots, watches and writes."""

    url: str
    """How the storage is named to users (no password)."""
    layout: Layout
    single_key: str = "pingap.toml"
    history_enabled: bool = False
    polled: bool = False
    """Watched by polling ``fingerprint()`` (etcd) rather than by file events."""

    @abc.abstractmethod
    def documents(self) -> list[Document]:
        """Every TOML document, in load order; raises ``StorageError``."""

    @abc.abstractmethod
    def write(self, key: str, data: bytes | None, previous: Document | None) -> None:
        """Store ``data`` under ``key`` (None removes it), only if the document is still
        ``previous`` (None: it must not exist); else ``ConflictError``."""

    @abc.abstractmethod
    def history(self, key: str) -> list[HistoryItem]:
        """Replaced versions of the document ``key``, newest first (at most ten)."""

    @abc.abstractmethod
    def location(self, key: str) -> str:
        """The user-facing name of document ``key`` (a path, or an etcd URL)."""

    def fingerprint(self) -> Any:
        """A value that changes whenever any document changes (for polling watchers);
        None when the backend is watched another way."""
        return None

    def close(self) -> None:
        """Release connections."""
        return None

    # --- shared behaviour ---------------------------------------------------------

    def sources(self) -> list[Source]:
        """The documents as the config loader's ``Source`` list, named for users."""
        return [Source(self.location(d.key), d.data) for d in self.documents()]

    def entry(self, category: str, name: str) -> tuple[str, dict[str, Any] | None]:
        """(key of the document holding the entry, its values) — key "" when absent."""
        holder, values = entry_values(self.documents(), category, name)
        return (holder.key if holder else ""), values

    def save_entry(self, category: str, name: str, values: Mapping[str, Any] | None,
                   expected: str | None = None) -> str:
        """Write (or with ``values=None`` delete) one entry; returns the document key.

        ``expected`` is the ``entry_digest`` the caller read ("" = the entry must not
        exist; None = do not check)."""
        problem = check_name(category, name)
        if problem:
            raise StorageError(problem)
        documents = self.documents()
        _, current = entry_values(documents, category, name)
        if expected is not None and entry_digest(current) != expected:
            raise ConflictError(f"{category}.{name} was changed by someone else; "
                                f"reload it and apply your edit again")
        try:
            placement = place_entry(documents, self.layout, self.single_key, category, name,
                                    values)
        except KeyError as exc:
            raise StorageError(f"no such entry: {exc.args[0]}") from None
        self.write(placement.key, placement.data, placement.previous)
        return placement.key

    def copy_to(self, target: ConfigStorage) -> int:
        """Write every entry of this storage into ``target`` (``--sync``); returns the
        number of entries copied."""
        count = 0
        for category, name, values in self.entries():
            target.save_entry(category, name, values)
            count += 1
        return count

    def entries(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(category, name, values) of every entry, ``basic`` first."""
        from pingap.config.sources import Report, merge_sources

        report = Report()
        raw = merge_sources(self.sources(), report)
        if report.errors:
            raise StorageError("; ".join(str(p) for p in report.errors))
        out: list[tuple[str, str, dict[str, Any]]] = []
        if raw.basic is not None:
            out.append(("basic", "", dict(raw.basic.values)))
        for category, entries in raw.sections.items():
            out += [(category, name, dict(entry.values)) for name, entry in entries.items()]
        return out


class PollingWatcher(WakePipe):
    """Wakes the master (a byte on a pipe) when ``storage.fingerprint()`` changes.

    Runs in a thread of the master (never gevent). While the storage is unreachable it
    keeps the last fingerprint, so the change is noticed once the storage is back.
    ``forget()`` makes the next successful poll wake the master again (after a reload
    that could not read the storage)."""

    def __init__(self, storage: ConfigStorage, interval: float = 0.2) -> None:
        super().__init__()
        self.storage = storage
        self.interval = interval
        self.debounce = 0.05
        try:
            self._last: Any = storage.fingerprint()
        except StorageError:
            self._last = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def forget(self) -> None:
        self._last = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                current = self.storage.fingerprint()
            except StorageError:
                continue
            if current != self._last:
                self._last = current
                self.wake()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def redact(url: str) -> str:
    """``url`` with any ``password=`` value hidden, for messages and logs."""
    return re.sub(r"(?<=[?&]password=)[^&]*", "***", url)


def open_storage(url: str) -> ConfigStorage:
    """The storage named by pingap's ``-c`` value; raises ``StorageError``."""
    if url.startswith("etcd://"):
        from master.storage.etcd import EtcdStorage

        return EtcdStorage(url)
    from master.storage.files import FileStorage

    return FileStorage(url)
