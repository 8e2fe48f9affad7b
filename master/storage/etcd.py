"""The etcd backend of config storage, through etcd's HTTP/JSON gateway (etcd3gw).

pingap's URL and key layout: ``etcd://host1:2379,host2:2379/pingap?timeout=10s&
connect_timeout=5s&user=u&password=p&enable_history=true`` keeps ``basic.toml`` at
``/pingap/basic.toml`` and every entry at ``/pingap/<category>/<name>.toml`` (each value
a TOML document such as ``[servers.web] …``); history goes to
``/pingap-history/<key>/<mod_revision>-<unix seconds>``. Hosts are tried in order; a
write is one transaction that compares the document's ``mod_revision``, so two hosts
saving the same entry cannot overwrite each other. etcd3gw is blocking ``requests``
code: the master uses it from its own threads, each with its own HTTP session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs

import etcd3gw
from etcd3gw import exceptions as etcd_errors
from etcd3gw.utils import _encode, _increment_last_byte

from master.storage import HISTORY_KEEP, ConfigStorage, ConflictError, HistoryItem, StorageError
from master.storage.documents import Document, Layout
from pingap.headers import split_host_port, unbracket
from pingap.units import parse_duration

T = TypeVar("T")


class EtcdStorage(ConfigStorage):
    layout = Layout.BY_ENTRY
    single_key = "basic.toml"
    polled = True

    def __init__(self, url: str) -> None:
        rest = url[len("etcd://"):]
        hosts, _, path = rest.partition("/")
        path, _, query_text = path.partition("?")
        query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
        self.addrs: list[tuple[str, int]] = []
        for item in hosts.split(","):
            host, port = split_host_port(item.strip())
            if not host or not port.isdigit():
                raise StorageError(f"etcd: bad address '{item}' in {url.split('?')[0]} "
                                   f"(expected host:port)")
            self.addrs.append((unbracket(host), int(port)))
        self.prefix = "/" + path.strip("/")
        self.history_prefix = self.prefix.rstrip("/") + "-history"
        self.user = query.get("user", "")
        self.password = query.get("password", "")
        try:
            timeout = parse_duration(query["timeout"]) if query.get("timeout") else 10.0
            connect = (parse_duration(query["connect_timeout"])
                       if query.get("connect_timeout") else min(timeout, 3.0))
        except ValueError as exc:
            raise StorageError(f"etcd: {exc}") from None
        self.timeout = (connect, timeout)
        self.history_enabled = query.get("enable_history") == "true"
        self.url = f"etcd://{hosts}{self.prefix}"
        self._local = threading.local()

    # --- connection -------------------------------------------------------------------

    def _client(self, index: int) -> etcd3gw.Etcd3Client:
        clients: dict[int, etcd3gw.Etcd3Client] = self._local.__dict__.setdefault("clients", {})
        client = clients.get(index)
        if client is None:
            host, port = self.addrs[index]
            client = etcd3gw.Etcd3Client(host=host, port=port, api_path="/v3/")
            # requests takes (connect, read) and etcd3gw hands its timeout to requests
            client.timeout = self.timeout  # type: ignore[assignment]
            if self.user and self.password:
                reply = client.post(client.get_url("/auth/authenticate"),
                                    json={"name": self.user, "password": self.password})
                client.session.headers["Authorization"] = reply["token"]
            clients[index] = client
        return client

    def _call(self, operation: Callable[[etcd3gw.Etcd3Client], T]) -> T:
        """Run ``operation`` on the first host that answers."""
        failures = []
        start = getattr(self._local, "preferred", 0)
        for step in range(len(self.addrs)):
            index = (start + step) % len(self.addrs)
            try:
                result = operation(self._client(index))
            except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError) as exc:
                self._local.__dict__.get("clients", {}).pop(index, None)
                failures.append(f"{self.addrs[index][0]}:{self.addrs[index][1]}: "
                                f"{type(exc).__name__}")
                continue
            except etcd_errors.Etcd3Exception as exc:
                self._local.__dict__.get("clients", {}).pop(index, None)
                raise StorageError(f"{self.url}: etcd refused the request: "
                                   f"{getattr(exc, 'detail_text', '') or exc}") from None
            self._local.preferred = index
            return result
        raise StorageError(f"{self.url}: etcd is unreachable ({'; '.join(failures)})")

    def _key(self, key: str) -> str:
        return f"{self.prefix.rstrip('/')}/{key}"

    # --- ConfigStorage -----------------------------------------------------------------

    def location(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    def _range(self, prefix: str, **options: Any) -> list[tuple[bytes, Any]]:
        return self._call(lambda c: list(c.get(prefix, metadata=True,
                                               range_end=_increment_last_byte(prefix),
                                               **options)))

    def documents(self) -> list[Document]:
        root = self.prefix.rstrip("/") + "/"
        out = []
        for value, meta in self._range(root, sort_order="ascend", sort_target="key"):
            key = meta["key"].decode()[len(root):]
            if key.endswith(".toml"):
                out.append(Document(key, value, int(meta.get("mod_revision", 0))))
        return out

    def fingerprint(self) -> Any:
        root = self.prefix.rstrip("/") + "/"
        metas = self._range(root, keys_only=True)
        return len(metas), max((int(m.get("mod_revision", 0)) for _, m in metas), default=0)

    def write(self, key: str, data: bytes | None, previous: Document | None) -> None:
        full = _encode(self._key(key))
        if previous is not None:
            compare = {"key": full, "result": "EQUAL", "target": "MOD",
                       "mod_revision": previous.revision}
        else:
            compare = {"key": full, "result": "EQUAL", "target": "VERSION", "version": 0}
        success: list[dict[str, Any]] = []
        if previous is not None and self.history_enabled:
            history = f"{self.history_prefix}/{key}/{previous.revision}-{int(time.time())}"
            success.append({"request_put": {"key": _encode(history),
                                            "value": _encode(previous.data)}})
        if data is None:
            success.append({"request_delete_range": {"key": full}})
        else:
            success.append({"request_put": {"key": full, "value": _encode(data)}})
        txn = {"compare": [compare], "success": success, "failure": []}
        result = self._call(lambda c: c.transaction(txn))
        if not result.get("succeeded"):
            raise ConflictError(f"{self.location(key)} changed while it was being edited")

    def history(self, key: str) -> list[HistoryItem]:
        if not self.history_enabled:
            return []
        prefix = f"{self.history_prefix}/{key}/"
        items = []
        for value, meta in self._range(prefix):
            stamp = meta["key"].decode().rpartition("-")[2]
            if stamp.isdigit():
                items.append(HistoryItem(int(stamp), value.decode("utf-8", "replace").strip()))
        items.sort(key=lambda item: item.created_at, reverse=True)
        return items[:HISTORY_KEEP]

    def close(self) -> None:
        for client in self._local.__dict__.get("clients", {}).values():
            client.session.close()
