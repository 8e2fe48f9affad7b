"""The master's side of the admin: the one writer of the config.

A worker forwards each admin write (``ADMIN_REQUEST``). The master edits the entry in
the storage's documents in memory, validates the result with the same code as
``pingap -t`` (every problem returned, with its key), refuses a stale version (409),
writes the document, reloads, and answers once the reload is over with its result.
Deleting an entry something still references fails validation like any other edit.

``admin_document()`` is the config ``--admin`` adds (pingap's ``pingap:admin`` server,
location and plugin); it joins every snapshot, never the user's storage.
"""

from __future__ import annotations

import base64
import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from master.storage import ConfigStorage, ConflictError, StorageError
from master.storage.documents import (
    CATEGORIES,
    Document,
    check_name,
    entry_values,
    place_entry,
)
from pingap.admin.api import entry_digest, mask, unmask
from pingap.config import load_config_sources
from pingap.config.sources import Source
from pingap.errors import ConfigError
from pingap.runtime import build_runtime

log = logging.getLogger("pingap.master")

ADMIN_NAME = "pingap:admin"
ADMIN_DOCUMENT_KEY = "pingap-admin.toml"
RESTART_REASON = "admin restart"
"""The reload reason of ``/api/restart`` (its webhook is restart / restart_fail)."""


def admin_document(spec: str) -> Document:
    """pingap's ``--admin [user:pass@]host:port[/path][?max_age=2d]`` as config."""
    import tomlkit  # only with --admin: a master without it never loads tomlkit

    parts = urlsplit(f"http://{spec}")
    if not parts.hostname or not parts.port:
        raise ValueError(f"--admin {spec!r}: expected [user:pass@]host:port[/path]")
    authorizations = []
    if parts.username:
        # pingap: "user:pass" is encoded; a lone user part is taken as base64 already
        raw = f"{parts.username}:{parts.password}" if parts.password is not None \
            else None
        authorizations.append(base64.b64encode(raw.encode()).decode() if raw
                              else parts.username)
    max_age = parse_qs(parts.query).get("max_age", ["2d"])[-1]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    doc = tomlkit.document()
    doc["servers"] = {ADMIN_NAME: {"addr": f"{host}:{parts.port}",
                                   "locations": [ADMIN_NAME]}}
    doc["locations"] = {ADMIN_NAME: {"plugins": [ADMIN_NAME]}}
    doc["plugins"] = {ADMIN_NAME: {"category": "admin", "path": parts.path or "/",
                                   "authorizations": authorizations, "max_age": max_age,
                                   "remark": "Admin serve"}}
    return Document(ADMIN_DOCUMENT_KEY, tomlkit.dumps(doc).encode())


def config_json(storage: ConfigStorage) -> dict[str, Any]:
    """The stored config as pingap's JSON: basic and every entry, as written (unmasked:
    the worker masks before answering)."""
    out: dict[str, Any] = {"basic": {}}
    for category, name, values in storage.entries():
        if category == "basic":
            out["basic"] = values
        else:
            out.setdefault(category, {})[name] = values
    return out


@dataclass
class PendingAnswer:
    reply: Callable[[int, Any], None]
    after_seq: int
    body: dict[str, Any]


class AdminWriter:
    """Applies admin writes for the arbiter; ``poll()`` answers once reloads finish."""

    def __init__(self, storage: ConfigStorage, extra: list[Document],
                 reload: Callable[[str], None], reload_state: Callable[[], tuple[int, Any]]
                 ) -> None:
        self.storage = storage
        self.extra = extra
        self._reload = reload
        self._reload_state = reload_state
        self.pending: list[PendingAnswer] = []

    def handle(self, payload: dict[str, Any], reply: Callable[[int, Any], None]) -> None:
        op = str(payload.get("op", ""))
        try:
            if op == "history":
                reply(200, {"history": self.history(str(payload.get("category", "")),
                                                    str(payload.get("name", "")))})
            elif op == "config":
                reply(200, config_json(self.storage))
            elif op == "import":
                self.import_config(str((payload.get("values") or {}).get("toml", "")), reply)
            elif op == "reload":
                self._reload_then(reply, RESTART_REASON, {"message": "reloaded"})
            elif op in ("save", "delete"):
                self.write(payload, reply)
            else:
                reply(400, {"message": f"unknown admin operation '{op}'"})
        except ConflictError as exc:
            reply(409, {"message": str(exc)})
        except StorageError as exc:
            reply(503, {"message": f"config storage: {exc}"})

    def history(self, category: str, name: str) -> list[dict[str, Any]]:
        key, _ = self.storage.entry(category, name)
        out = []
        for item in self.storage.history(key) if key else []:
            _, values = entry_values([Document(key, item.data.encode())], category, name)
            if values is not None:
                out.append({"created_at": item.created_at, "data": mask(values)})
        return out

    def write(self, payload: dict[str, Any], reply: Callable[[int, Any], None]) -> None:
        category, name = str(payload.get("category", "")), str(payload.get("name", ""))
        problem = check_name(category, name)
        if problem:
            reply(400, {"message": problem})
            return
        if name == ADMIN_NAME:
            reply(400, {"message": f"'{ADMIN_NAME}' is set by --admin, not stored"})
            return
        documents = self.storage.documents()
        _, current = entry_values(documents, category, name)
        expected = payload.get("expected")
        if expected is not None and entry_digest(current) != expected:
            reply(409, {"message": f"{category}.{name} was changed by someone else; "
                                   f"reload it and apply your edit again"})
            return
        values = payload.get("values") if payload.get("op") == "save" else None
        if values is not None:
            values = unmask(values, current)
        try:
            placement = place_entry(documents, self.storage.layout, self.storage.single_key,
                                    category, name, values)
        except KeyError:
            reply(404, {"message": f"{category}.{name} not found"})
            return
        after = [d for d in documents if d.key != placement.key]
        if placement.data is not None:
            after.append(Document(placement.key, placement.data))
        after.sort(key=lambda d: d.key)
        problems = self.validate(after)
        if problems:
            reply(400, {"message": "invalid config: nothing was changed",
                        "problems": problems})
            return
        self.storage.write(placement.key, placement.data, placement.previous)
        action = "deleted" if values is None else "saved"
        log.info("admin: %s %s.%s in %s", action, category, name,
                 self.storage.location(placement.key))
        self._reload_then(reply, f"admin: {action} {category}.{name}",
                          {"message": f"{category}.{name} {action}",
                           "file": self.storage.location(placement.key)})

    def import_config(self, text: str, reply: Callable[[int, Any], None]) -> None:
        """pingap's import: every entry of a TOML config is saved (entries it does not
        name are kept), after the result as a whole passed validation."""
        try:
            imported = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            reply(400, {"message": f"invalid TOML: {exc}"})
            return
        entries: list[tuple[str, str, dict[str, Any]]] = []
        for category, table in imported.items():
            if category == "basic" and isinstance(table, dict):
                entries.append(("basic", "", table))
            elif category in CATEGORIES and isinstance(table, dict):
                entries += [(category, n, v) for n, v in table.items() if isinstance(v, dict)]
            else:
                reply(400, {"message": f"unknown section '{category}'"})
                return
        documents = self.storage.documents()
        placements = []
        for category, name, values in entries:
            problem = check_name(category, name)
            if problem:
                reply(400, {"message": f"{category}.{name}: {problem}"})
                return
            _, stored = entry_values(documents, category, name)
            placement = place_entry(documents, self.storage.layout, self.storage.single_key,
                                    category, name, unmask(values, stored))
            placements.append(placement)
            documents = sorted([d for d in documents if d.key != placement.key] +
                               [Document(placement.key, placement.data or b"")],
                               key=lambda d: d.key)
        problems = self.validate(documents)
        if problems:
            reply(400, {"message": "invalid config: nothing was changed",
                        "problems": problems})
            return
        final = {d.key: d for d in documents}
        originals = {d.key: d for d in self.storage.documents()}
        for key in dict.fromkeys(p.key for p in placements):
            self.storage.write(key, final[key].data, originals.get(key))
        log.info("admin: imported %d entries", len(entries))
        self._reload_then(reply, "admin: import", {"message": f"{len(entries)} entries "
                                                              f"imported"})

    def validate(self, documents: list[Document]) -> list[str]:
        """Every problem ``pingap -t`` would report for these documents."""
        sources = [Source(self.storage.location(d.key), d.data) for d in documents]
        sources += [Source(f"--admin ({d.key})", d.data) for d in self.extra]
        try:
            build_runtime(load_config_sources(sources))
        except ConfigError as err:
            return [str(p) for p in err.problems]
        return []

    def _reload_then(self, reply: Callable[[int, Any], None], reason: str,
                     body: dict[str, Any]) -> None:
        seq, _ = self._reload_state()
        self.pending.append(PendingAnswer(reply, seq, body))
        self._reload(reason)
        self.poll()

    def poll(self) -> None:
        """Answer the writes whose reload has finished (ok or not)."""
        if not self.pending:
            return
        _, last = self._reload_state()
        if not last:
            return
        waiting = []
        for answer in self.pending:
            if last["seq"] <= answer.after_seq:
                waiting.append(answer)
                continue
            result = {"ok": last["ok"], "problems": last.get("problems", [])}
            if last["ok"]:
                answer.reply(200, {**answer.body, "reload": result})
            else:
                answer.reply(500, {**answer.body, "message": answer.body["message"] +
                                   ", but the reload failed: the previous config keeps "
                                   "serving", "reload": result})
        self.pending = waiting
