"""The ``cache`` plugin: pingap's HTTP cache, with PURGE.

At the ``request`` step a GET or HEAD (unless ``skip`` matches its path and query)
is looked up by its key — ``namespace``, the values of the configured request
``headers``, what other plugins add (compression coding, image types), the method
and the URI. A fresh entry answers at once (304 when the client's own validators
match; ``Age`` and ``X-Cache-Status: hit``). Otherwise, with ``lock``, concurrent
misses for one key wait for the first one's fill, across every worker for the file
store. A stale entry with validators is revalidated: the upstream request carries
them, and an upstream 304 refreshes the entry and serves it (``revalidated``). What
the upstream sends is stored while it streams to the client (``policy.freshness``
decides; ``max_file_size`` bounds it) and only once it is complete.

Stores come from the worker (``Services.cache_store``): ``memory://`` is one store
per worker process; a directory is shared by every worker of the host and survives
restarts.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs, urlsplit

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import BodyFilter, RequestContext, header_value
from pingap.headers import Headers
from pingap.plugins import Plugin, plugin_response, register
from pingap.plugins.cache.memory import memory_size
from pingap.plugins.cache.policy import (
    DEFAULT_TTL,
    Entry,
    answer,
    freshness,
    make_entry,
    refreshed,
    vary_matches,
)
from pingap.regexes import compile_pingap_regex
from pingap.units import parse_bytesize, parse_duration

log = logging.getLogger("pingap.cache")

_CONDITIONAL = frozenset({b"if-none-match", b"if-modified-since"})


class FillTicket(Protocol):
    """The right to fill one key (held until released)."""

    waited: bool

    def release(self) -> None: ...


class Slot(Protocol):
    """A disk write in progress, counted against the store's ``writing_max``."""

    def release(self) -> None: ...


class CacheStore(Protocol):
    """Where entries live; ``lock`` waits at most ``timeout`` seconds for another
    fill of ``key`` to end, and returns the ticket (None: no lock could be had)."""

    def get(self, key: str) -> Entry | None: ...
    def put(self, key: str, entry: Entry) -> None: ...
    def delete(self, key: str) -> bool: ...
    def purge_namespace(self, namespace: str) -> tuple[int, int] | None: ...
    def lock(self, key: str, timeout: float) -> FillTicket | None: ...
    def write_slot(self) -> Slot | None: ...
    def mark_uncacheable(self, key: str) -> None: ...
    def is_uncacheable(self, key: str) -> bool: ...


@dataclass(slots=True)
class _Lookup:
    """One request's cache state, between its hooks."""

    key: str
    client_headers: Headers
    status: bytes = b"miss"
    stale: Entry | None = None
    ticket: FillTicket | None = None
    #: answered from the cache, or its fill decided: the later hooks have nothing to do
    done: bool = False

    def release(self) -> None:
        if self.ticket is not None:
            self.ticket.release()
            self.ticket = None


class FileStoreOptions(NamedTuple):
    root: str
    levels: tuple[int, ...]
    inactive: float
    #: disk reads / writes in progress on the host beyond which a read is a miss and a
    #: write is skipped (pingap's defaults; 0: no cap)
    reading_max: int = 10_000
    writing_max: int = 1_000
    #: the in-memory hot layer's budget and the largest entry it takes, in 4 KiB pages
    cache_max: int = 0
    cache_file_max_weight: int = 256
    #: bytes the directory may hold (0: no bound); least recently used entries go first
    max_size: int = 0


_COUNTS = ("reading_max", "writing_max", "cache_max", "cache_file_max_weight")


def file_store_options(directory: str) -> FileStoreOptions:
    """A file cache ``directory`` (``/path?levels=1:2&inactive=7d...``) read and checked,
    with pingap's query options and defaults: ``levels`` are hash characters per
    directory level (each 1-3, at most two levels), ``inactive`` the unused time after
    which an entry is swept (48h), ``reading_max``/``writing_max``/``cache_max``/
    ``cache_file_max_weight`` counts, ``max_size`` a size (``10gb``). Other keys are
    ignored, as pingap ignores them."""
    split = urlsplit(directory)
    query = {k: v[-1] for k, v in parse_qs(split.query).items()}
    raw = query.get("levels", "")
    try:
        levels = tuple(int(p) for p in raw.split(":")) if raw else ()
    except ValueError as exc:
        raise ValueError(f"cache levels {raw!r}: expected digits like 1:2") from exc
    if len(levels) > 2 or any(not 1 <= w <= 3 for w in levels):
        raise ValueError(f"cache levels {raw!r}: at most two levels of 1-3 characters")
    inactive = parse_duration(query["inactive"]) if query.get("inactive") else 48 * 3600.0
    counts: dict[str, int] = {}
    for name in _COUNTS:
        value = query.get(name, "").strip()
        if value:
            if not value.isdigit():
                raise ValueError(f"cache {name} {value!r}: expected a whole number")
            counts[name] = int(value)
    size = query.get("max_size", "").strip()
    max_size = parse_bytesize(size) if size else 0
    return FileStoreOptions(os.path.abspath(os.path.expanduser(split.path)), levels, inactive,
                            max_size=max_size, **counts)


def _networks(items: Any) -> tuple[Any, ...]:
    out = []
    for item in items or ():
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"`purge_ip_list`: {item!r} is not an IP or CIDR") from exc
    return tuple(out)


@register
class Cache(Plugin):
    """HTTP cache (see the module docstring)."""

    category = "cache"
    steps = ("request",)
    filter_rank = 5  # first: it stores what the upstream sent, before any rewrite
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        self.directory = str(options.get("directory", "") or "").strip()
        memory = not self.directory or self.directory.startswith("memory://")
        try:  # a bad query is a config error
            memory_size(self.directory) if memory else file_store_options(self.directory)
        except ValueError as exc:
            raise ValueError(f"`directory` {self.directory!r}: {exc}") from exc
        if "eviction" in options and not memory:
            log.warning("plugins.%s: `eviction` applies to the memory cache only (pingap "
                        "ignores it on a file cache too); max_size in the directory's "
                        "query bounds a file cache", name)
        self.namespace = str(options.get("namespace", "") or "")
        self.key_headers = [str(h).lower().encode("latin-1")
                            for h in options.get("headers", ()) or ()]
        max_ttl = options.get("max_ttl")
        self.max_ttl = parse_duration(max_ttl) if max_ttl else None
        size = options.get("max_file_size")
        self.max_file_size = parse_bytesize(size) if size else 1_000_000
        lock = options.get("lock")
        self.lock = parse_duration(lock) if lock is not None else 1.0
        self.check_cache_control = bool(options.get("check_cache_control", False))
        self.predictor = bool(options.get("predictor", False))
        self.purge_ips = _networks(options.get("purge_ip_list"))
        skip = options.get("skip")
        try:
            self.skip = compile_pingap_regex(str(skip)) if skip else None
        except ValueError as exc:
            raise ValueError(f"invalid `skip` regex {skip!r}: {exc}") from exc
        self.store: CacheStore | None = None

    def bind(self, services: Any) -> None:
        opener = getattr(services, "cache_store", None)
        try:
            self.store = opener(self.directory, self.namespace) if opener is not None else None
        except OSError as exc:
            raise ValueError(f"plugins.{self.name}: cannot use the cache directory "
                             f"{self.directory!r}: {exc.strerror or exc}") from exc

    # --- keys -----------------------------------------------------------------

    def key(self, ctx: RequestContext, method: str) -> str:
        parts = []
        for name in self.key_headers:
            value = header_value(ctx.request_headers, name)
            if value:
                parts.append(value.decode("latin-1"))
        parts.extend(ctx.cache_keys or ())
        parts += [method, ctx.uri]
        primary = ":".join(parts)
        digest = hashlib.sha256(f"{self.namespace}\n{primary}".encode("utf-8", "replace"))
        return digest.hexdigest()

    # --- request ----------------------------------------------------------------

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step or self.store is None:
            return CONTINUE
        method = ctx.method
        if method not in ("GET", "HEAD", "PURGE"):
            return CONTINUE
        if self.skip is not None and self.skip.search(ctx.uri):
            return CONTINUE
        if method == "PURGE":
            return self._purge(ctx)
        store = self.store
        key = self.key(ctx, method)
        if self.predictor and store.is_uncacheable(key):
            return CONTINUE  # pingap's predictor: known uncacheable, not even looked up
        lookup = _Lookup(key, list(ctx.request_headers))
        ctx.plugin_state(self.name, lookup)
        start = time.monotonic()
        entry = self._fetch(key, ctx)
        now = time.time()
        if entry is not None and entry.fresh(now):
            ctx.cache_lookup_time = time.monotonic() - start
            return self._serve(ctx, entry, lookup, b"hit", now)
        ctx.cache_lookup_time = time.monotonic() - start
        # a key whose last response could not be stored takes no lock: waiting for one
        # another request's head at a time would serialise every request for it (asked
        # only now: a hit does not need to know)
        if self.lock > 0 and not store.is_uncacheable(key):
            waited_from = time.monotonic()
            ticket = store.lock(key, self.lock)
            if ticket is not None:
                lookup.ticket = ticket
                ctx.on_finish(lookup.release)
                if ticket.waited:
                    ctx.cache_lock_time = time.monotonic() - waited_from
                    filled = self._fetch(key, ctx)
                    now = time.time()
                    if filled is not None and filled.fresh(now):
                        lookup.release()
                        _close(entry)
                        return self._serve(ctx, filled, lookup, b"hit", now)
                    if store.is_uncacheable(key):
                        lookup.release()  # the fill we waited for found nothing to keep
                    if filled is not None:
                        _close(entry)
                        entry = filled
        if entry is not None:
            lookup.status = b"expired"
            validators = entry.validators()
            if not validators:
                _close(entry)
            else:
                lookup.stale = entry
                kept = [(n, v) for n, v in ctx.request_headers
                        if n.lower() not in _CONDITIONAL and n.lower() != b"range"
                        and n.lower() != b"if-range"]
                ctx.request_headers = kept + validators
        return CONTINUE

    def _fetch(self, key: str, ctx: RequestContext) -> Entry | None:
        """The stored entry for ``key`` if it suits this request; one whose body is in
        its file holds that open (and a read of the store) until closed, at the latest
        when the request finishes."""
        assert self.store is not None
        entry = self.store.get(key)
        if entry is not None and entry.part is not None:
            ctx.on_finish(entry.part.file.close)
        if entry is None or not vary_matches(entry, ctx.request_headers):
            _close(entry)
            return None
        return entry

    def _serve(self, ctx: RequestContext, entry: Entry, lookup: _Lookup, label: bytes,
               now: float) -> Respond:
        lookup.status = label
        lookup.done = True
        status, headers, body = answer(entry, lookup.client_headers, now, label)
        _timings(ctx, headers)
        if status != 304 and entry.part is not None:  # sent from its file (sendfile)
            return Respond(status=status, headers=headers, body=b"", stream=(entry.part,))
        return Respond(status=status, headers=headers, body=body)

    def _purge(self, ctx: RequestContext) -> Respond:
        assert self.store is not None
        try:
            ip = ipaddress.ip_address(ctx.client_ip)
            allowed = any(ip in net for net in self.purge_ips)
        except ValueError:
            allowed = False
        if not allowed:
            return plugin_response(403, b"Forbidden, ip is not allowed")
        if ctx.path == "/*":
            result = self.store.purge_namespace(self.namespace) if self.namespace else None
            if result is None:
                return plugin_response(
                    501, b"Purging everything needs a file cache with a namespace")
            purged, failed = result
            return plugin_response(200, f"purged: {purged}, fail: {failed}".encode())
        for method in ("GET", "HEAD"):
            self.store.delete(self.key(ctx, method))
        return Respond(status=204, headers=[(b"Cache-Control", b"private, no-cache")],
                       body=b"")

    # --- response ---------------------------------------------------------------

    def handle_response(self, ctx: RequestContext, status: int,
                        headers: list[tuple[bytes, bytes]]) -> Respond | None:
        lookup: _Lookup | None = ctx.plugin_state(self.name)
        if lookup is None or lookup.done:
            return None
        if status == 304 and lookup.stale is not None and self.store is not None:
            now = time.time()
            entry = lookup.stale
            merged = refreshed(entry, headers, 0, now)
            ttl = freshness(entry.status, merged.headers,
                            check_cache_control=self.check_cache_control,
                            max_ttl=self.max_ttl, now=now)
            entry = refreshed(entry, headers, ttl if ttl is not None else DEFAULT_TTL, now)
            if ttl is not None:
                self.store.put(lookup.key, entry)
            lookup.release()
            return self._serve(ctx, entry, lookup, b"revalidated", now)
        headers.append((b"X-Cache-Status", lookup.status))
        _timings(ctx, headers)
        return None

    def body_filter(self, ctx: RequestContext, status: int,
                    headers: Headers) -> BodyFilter | None:
        lookup: _Lookup | None = ctx.plugin_state(self.name)
        if lookup is None or lookup.done or self.store is None:
            return None
        lookup.done = True
        now = time.time()
        ttl = freshness(status, headers, check_cache_control=self.check_cache_control,
                        max_ttl=self.max_ttl, now=now)
        length = header_value(headers, b"content-length")
        if ttl is None or (length is not None and length.isdigit()
                           and int(length) > self.max_file_size):
            self.store.mark_uncacheable(lookup.key)
            lookup.release()  # nothing will be stored: let the waiters go now
            return None
        slot = self.store.write_slot()
        if slot is None:  # over the store's writing_max: relayed, not stored (pingap)
            lookup.release()
            return None
        ctx.on_finish(slot.release)  # a response cut short gives its slot back too
        stored = [(n, v) for n, v in headers if n.lower() != b"x-cache-status"]
        return _Filler(self, lookup, status, stored, ttl, slot)


def _close(entry: Entry | None) -> None:
    """Let go of an entry's file early (closing twice is harmless)."""
    if entry is not None and entry.part is not None:
        entry.part.file.close()


def _timings(ctx: RequestContext, headers: Headers) -> None:
    """pingap's ``X-Cache-Lookup`` / ``X-Cache-Lock`` (``<n>ms``) when they are known."""
    if ctx.cache_lookup_time is not None:
        headers.append((b"X-Cache-Lookup", b"%dms" % round(ctx.cache_lookup_time * 1000)))
    if ctx.cache_lock_time is not None:
        headers.append((b"X-Cache-Lock", b"%dms" % round(ctx.cache_lock_time * 1000)))


class _Filler:
    """Passes the body through and keeps a copy; stores it once complete."""

    __slots__ = ("plugin", "lookup", "status", "headers", "ttl", "slot", "parts", "size")

    def __init__(self, plugin: Cache, lookup: _Lookup, status: int, headers: Headers,
                 ttl: float, slot: Slot) -> None:
        self.plugin = plugin
        self.slot = slot
        self.lookup = lookup
        self.status = status
        self.headers = headers
        self.ttl = ttl
        self.parts: list[bytes] | None = []
        self.size = 0

    def feed(self, data: bytes) -> bytes:
        if self.parts is not None:
            self.size += len(data)
            if self.size > self.plugin.max_file_size:
                self.parts = None  # too big: pass it on, store nothing
                if self.plugin.store is not None:
                    self.plugin.store.mark_uncacheable(self.lookup.key)
                self.lookup.release()
                self.slot.release()
            else:
                self.parts.append(data)
        return data

    def end(self) -> bytes:
        if self.parts is not None and self.plugin.store is not None:
            now = time.time()
            entry = make_entry(self.status, self.headers, b"".join(self.parts),
                               self.lookup.client_headers, self.ttl, now)
            self.plugin.store.put(self.lookup.key, entry)
        self.parts = None
        self.slot.release()
        self.lookup.release()
        return b""
