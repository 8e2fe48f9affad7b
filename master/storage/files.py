"""The file backend of config storage: one file, or a directory of ``*.toml`` files.

pingap's layouts: a path ending in ``.toml`` (or an existing file) is one document; a
directory holds one file per category (``servers.toml`` …), or with
``?separation=true`` one file per entry (``basic.toml``, ``servers/web.toml`` …), and
then ``&enable_history=true`` keeps each replaced version in ``<dir>-history/`` as
``servers-web.toml-<unix seconds>`` (pingap's names). Every write goes to a temporary
file renamed over the target, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs

from master.storage import HISTORY_KEEP, ConfigStorage, ConflictError, HistoryItem, StorageError
from master.storage.documents import Document, Layout


def _flag(query: dict[str, list[str]], name: str, *, present_means_true: bool) -> bool:
    values = query.get(name)
    if not values:
        return False
    # pingap: any value of "separation" but "false" turns it on; enable_history is a bool
    return values[-1] != "false" if present_means_true else values[-1] == "true"


class FileStorage(ConfigStorage):
    def __init__(self, url: str) -> None:
        base, _, query_text = url.partition("?")
        if not base.strip():
            raise StorageError("no configuration path given (-c / PINGAP_CONF)")
        query = parse_qs(query_text, keep_blank_values=True)
        self.root = os.path.abspath(base)
        path = Path(self.root)
        is_dir = path.is_dir() if path.exists() else path.suffix not in (".toml", ".hcl", ".kdl")
        self.is_dir = is_dir
        self.url = self.root
        self.history_dir = ""
        if not is_dir:
            self.layout = Layout.SINGLE
            self.single_key = path.name
        elif _flag(query, "separation", present_means_true=True):
            self.layout = Layout.BY_ENTRY
            if _flag(query, "enable_history", present_means_true=False):
                self.history_dir = self.root.rstrip("/") + "-history"
                self.history_enabled = True
        else:
            self.layout = Layout.BY_CATEGORY

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key) if self.is_dir else self.root

    def location(self, key: str) -> str:
        return self._path(key)

    def _keys(self) -> list[str]:
        if not self.is_dir:
            return [self.single_key] if os.path.isfile(self.root) else []
        root = Path(self.root)
        if not root.is_dir():
            return []
        return sorted(
            relative
            for relative in (item.relative_to(root).as_posix() for item in root.rglob("*.toml"))
            # hidden entries are skipped, as by the loader (a ConfigMap's "..data")
            if not any(part.startswith(".") for part in relative.split("/"))
            and (root / relative).is_file()
        )

    def _read(self, key: str) -> bytes | None:
        try:
            return Path(self._path(key)).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"{self._path(key)}: cannot read: {exc.strerror or exc}") \
                from exc

    def documents(self) -> list[Document]:
        out = []
        for key in self._keys():
            data = self._read(key)
            if data is not None:
                out.append(Document(key, data))
        return out

    def write(self, key: str, data: bytes | None, previous: Document | None) -> None:
        current = self._read(key)
        if current != (previous.data if previous is not None else None):
            raise ConflictError(f"{self._path(key)} changed while it was being edited")
        if current is not None and self.history_dir:
            self._keep_history(key, current)
        target = self._path(key)
        if data is None:
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".pingap-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            if current is not None:
                os.chmod(tmp, os.stat(target).st_mode & 0o7777)
            os.replace(tmp, target)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StorageError(f"{target}: cannot write: {exc.strerror or exc}") from exc

    def _history_prefix(self, key: str) -> str:
        return os.path.join(self.history_dir, key.replace("/", "-"))

    def _keep_history(self, key: str, data: bytes) -> None:
        os.makedirs(self.history_dir, exist_ok=True)
        path = f"{self._history_prefix(key)}-{int(time.time())}"
        with open(path, "wb") as out:
            out.write(data)

    def history(self, key: str) -> list[HistoryItem]:
        if not self.history_dir or not os.path.isdir(self.history_dir):
            return []
        prefix = os.path.basename(self._history_prefix(key)) + "-"
        items = []
        for name in os.listdir(self.history_dir):
            stamp = name[len(prefix):]
            if name.startswith(prefix) and stamp.isdigit():
                items.append((int(stamp), name))
        items.sort(reverse=True)
        return [HistoryItem(stamp, Path(self.history_dir, name).read_text().strip())
                for stamp, name in items[:HISTORY_KEEP]]
