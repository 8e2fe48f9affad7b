"""The worker's admin service: answers the ``admin`` plugin's requests.

It checks the login (``pingap.admin.auth``), reads the request body (bounded), answers
reads from the config this worker serves, and sends everything that changes the config
(or needs the storage: history) to the master over the control channel, waiting for the
master's answer — the reload's result — without blocking other greenlets.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import time
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

import gevent
from gevent import Timeout
from gevent.event import AsyncResult

from pingap import __version__
from pingap.actions import Respond
from pingap.admin.api import MAX_BODY, AdminCall, AdminRequest, MasterCall, error, json_response, route
from pingap.admin.dashboard import (
    RequestRate,
    certificate_expiry,
    open_connections,
    upstream_health,
    worker_rows,
)
from pingap.admin.route_test import explain
from pingap.context import RequestContext
from pingap.control import MessageType
from pingap.errors import DownstreamError
from pingap.events import BodyReceived, MessageEnded
from pingap.metrics import request_counts
from pingap.scoreboard import SlotView
from pingap.system.processes import process_figures

log = logging.getLogger("pingap.admin")

CONTENT_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                 ".css": b"text/css; charset=utf-8", ".png": b"image/png"}


def ui_files() -> dict[str, Path]:
    """The UI's files by URL name: only these are ever served, so no request path can
    reach outside the package's ``web`` directory."""
    import pingap.admin

    web = Path(pingap.admin.__file__).resolve().parent / "web"
    return {p.name: p for p in web.iterdir() if p.is_file() and p.suffix in CONTENT_TYPES}


MASTER_TIMEOUT = 60.0
"""Seconds a write may take: validate, store, and roll a generation of workers."""


class AdminService:
    def __init__(self, send: Callable[[MessageType, object], None],
                 info: Callable[[], dict[str, Any]],
                 certificates: Callable[[], list[Any]] = list,
                 draining: Callable[[], bool] = bool,
                 servers: Callable[[], dict[str, Any]] = dict) -> None:
        self._certificate_entries = certificates
        self._draining = draining
        self._servers = servers
        self._send = send
        self._info = info
        self._ids = count(1)
        self._pending: dict[int, AsyncResult] = {}
        self._ui = ui_files()

    def config(self) -> dict[str, Any] | Respond:
        """The stored config, from the master: this worker's own copy may be a
        generation old (it is draining after the edit that asked for the reload)."""
        return self.ask_master(MasterCall(op="config"))

    def resolve(self, payload: dict[str, Any]) -> None:
        """The master's answer to one of our calls."""
        waiter = self._pending.pop(int(payload.get("id", 0)), None)
        if waiter is not None:
            waiter.set(payload)

    def answer(self, call: AdminCall, ctx: RequestContext,
               read_body: Callable[[int], bytes | None]) -> Respond:
        auth = call.auth
        ip = ctx.client_ip
        if auth.locked(ip):
            return Respond(status=403, headers=[(b"Content-Type", b"text/plain")],
                           body=b"Forbidden, too many failures")
        path = ctx.path[len(call.prefix):] if call.prefix != "/" else ctx.path
        if not path:
            location = (call.prefix + "/" + (f"?{ctx.query}" if ctx.query else "")).encode()
            return Respond(status=302, headers=[(b"Location", location)], body=b"")
        if self._draining():
            # a draining worker may be stopped before a write's reload is over: the
            # client retries on a fresh connection, which a serving worker takes
            return Respond(status=503, close=True, body=b'{"message": "retry", "retry": true}',
                           headers=[(b"Content-Type", b"application/json"),
                                    (b"Retry-After", b"0")])
        if not path.startswith("/api") and ctx.method in ("GET", "HEAD"):
            return self.static(path)  # the login page and its assets load without a login
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in ctx.request_headers}
        if not auth.valid(headers.get("authorization", "")):
            auth.failed(ip)
            log.warning("admin: authentication failed from %s for %s", ip, ctx.path)
            return error(401, "unauthorized")
        body = read_body(MAX_BODY)
        if body is None:
            return error(413, f"the body is larger than {MAX_BODY} bytes")
        if path.rstrip("/") == "/api/basic" and ctx.method == "GET":
            return json_response(200, self._info())
        config = {} if path.rstrip("/") == "/api/schema" else self.config()
        if isinstance(config, Respond):
            return config
        result = route(AdminRequest(method=ctx.method, path=path, headers=headers, body=body),
                       config)
        if isinstance(result, MasterCall) and result.op == "route-test":
            return self._route_test(result.values or {})
        if isinstance(result, MasterCall) and result.op == "certificates":
            return json_response(200, self._certificates())
        if isinstance(result, MasterCall):
            answer: Respond = self.ask_master(result)
            return answer
        return result

    def static(self, path: str) -> Respond:
        name = path.lstrip("/") or "index.html"
        file = self._ui.get(name)
        if file is None:
            return error(404, "not found")
        return Respond(status=200, body=file.read_bytes(),
                       headers=[(b"Content-Type", CONTENT_TYPES[file.suffix]),
                                (b"Cache-Control", b"no-cache"),
                                (b"X-Content-Type-Options", b"nosniff"),
                                (b"Content-Security-Policy",
                                 b"default-src 'self'; frame-ancestors 'none'")])

    def _route_test(self, test: dict[str, Any]) -> Respond:
        servers = self._servers()
        name = test.get("server") or (next(iter(servers)) if len(servers) == 1 else "")
        server = servers.get(name)
        if server is None:
            return error(400, f"unknown server '{name}'; one of: {', '.join(servers)}")
        headers = test.get("headers") or {}
        if not isinstance(headers, dict):
            return error(400, "headers must be a JSON object")
        return json_response(200, {"server": name, **explain(
            server.matcher, str(test["url"]), {str(k): str(v) for k, v in headers.items()})})

    def _certificates(self) -> dict[str, Any]:
        """``GET /api/certificates``: what each served certificate covers, and until when
        (never its key)."""
        return {entry.name: {"domains": list(entry.names), "is_default": entry.is_default,
                             "not_after": int(entry.not_after.timestamp())}
                for entry in self._certificate_entries()}

    def ask_master(self, call: MasterCall) -> Any:
        """The master's answer as a ``Respond`` (for ``config``: the config dict)."""
        call_id = next(self._ids)
        waiter: AsyncResult = AsyncResult()
        self._pending[call_id] = waiter
        self._send(MessageType.ADMIN_REQUEST, {"id": call_id, **call.payload()})
        try:
            reply = waiter.get(timeout=MASTER_TIMEOUT)
        except Timeout:
            self._pending.pop(call_id, None)
            return error(504, "the master did not answer in time")
        status = int(reply.get("status", 500))
        if call.op == "config" and status == 200:
            return dict(reply.get("body") or {})
        return json_response(status, reply.get("body"))


def body_reader(exchange: Any) -> Callable[[int], bytes | None]:
    """Reads the exchange's request body whole, up to ``limit`` bytes (None: larger)."""
    def read(limit: int) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = exchange.next_event()
            if isinstance(event, BodyReceived):
                size += len(event.data)
                if size > limit:
                    return None  # the rest stays unread: the answer closes the connection
                chunks.append(event.data)
            elif isinstance(event, MessageEnded):
                return b"".join(chunks)
            else:
                raise DownstreamError("the request body ended early")
    return read


class RateSampler:
    """Samples the host's accepted-requests total every second while someone watches the
    dashboard (a ``/api/basic`` call in the last ``WATCH`` seconds), so requests/s is
    ready at the next call whichever worker takes it."""

    WATCH = 60.0

    def __init__(self, read_total: Callable[[], int]) -> None:
        self.rate = RequestRate()
        self._read_total = read_total
        self._watched_until = 0.0
        self._greenlet: gevent.Greenlet | None = None

    def watch(self, total: int) -> float | None:
        """Requests/s now, given the current ``total``; keeps sampling a while."""
        now = time.monotonic()
        self.rate.add(now, total)
        self._watched_until = now + self.WATCH
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        return self.rate.per_second()

    def _run(self) -> None:
        while time.monotonic() < self._watched_until:
            gevent.sleep(1.0)
            self.rate.add(time.monotonic(), self._read_total())


_sampler: RateSampler | None = None
"""This worker process's sampler (one worker per process)."""

PROCESS_FIGURES_TTL = 5.0
"""Seconds the processes' figures are reused: reading every process's sockets takes
~10 ms per process (psutil parses /proc/<pid>/net/tcp*), so it is done at most this
often, and in a thread, where it does not hold up this worker's requests."""
_process_figures: tuple[float, tuple[int, ...], dict[str, Any]] | None = None


def host_process_figures(pids: tuple[int, ...]) -> dict[str, Any]:
    """``process_figures`` of ``pids`` read in the hub's thread pool, reused for
    ``PROCESS_FIGURES_TTL`` seconds (the admin dashboard and the ``stats`` plugin)."""
    global _process_figures
    now = time.monotonic()
    cached = _process_figures
    if cached is not None and cached[1] == pids and now - cached[0] < PROCESS_FIGURES_TTL:
        return cached[2]
    figures: dict[str, Any] = gevent.get_hub().threadpool.apply(process_figures, (pids,))
    _process_figures = (now, pids, figures)
    return figures


def _host_counts(worker: Any) -> tuple[list[SlotView], dict[str, int]]:
    """The host's worker slots and request counts (this worker's own without shared
    memory: a worker built by hand in tests)."""
    slots = list(worker.scoreboard.slots()) if worker.scoreboard is not None else []
    if worker.state is not None:
        return slots, request_counts(worker.state, [s.index for s in slots], None)
    servers = worker.runtime.servers.values()
    return slots, {"processing": sum(s.processing for s in servers),
                   "accepted": sum(s.accepted for s in servers)}


def basic_info(worker: Any) -> dict[str, Any]:
    """``GET /api/basic``: pingap's fields (process figures summed over the master and
    every worker) and the live dashboard's: worker processes, open connections,
    requests/s, each upstream's backends as the health checks see them, certificate
    expiry. Every figure is the host's, whichever worker answers."""
    global _sampler
    from pingap.config.plugin_schema import PLUGIN_SCHEMAS

    slots, counts = _host_counts(worker)
    if _sampler is None:
        _sampler = RateSampler(lambda: _host_counts(worker)[1]["accepted"])
    rows = worker_rows(slots, time.monotonic())
    runtime = worker.runtime
    basic = runtime.config.basic
    state = worker.state
    health = state.health if state is not None else \
        (lambda name, addr: runtime.upstreams[name].health.get(addr))
    return {
        **host_process_figures((os.getppid(), *(r["pid"] for r in rows if r["pid"]))),
        "version": __version__, "rustc_version": f"Python {platform.python_version()}",
        "config_hash": runtime.config.digest, "config_digest": runtime.config.digest,
        "user": basic.user or "", "group": basic.group or "",
        "processing": counts["processing"], "accepted": counts["accepted"],
        "features": ["default"], "supported_plugins": sorted(PLUGIN_SCHEMAS),
        "upstream_healthy_status": upstream_health(runtime.upstreams.values(), health),
        "now": int(time.time()),
        "pid": os.getppid(), "worker_pid": os.getpid(), "worker_id": worker.worker_id,
        "generation": worker.generation,
        "workers": sum(r["state"] == "serving" for r in rows),
        "worker_processes": rows,
        "connections": open_connections(rows),
        "requests_per_second": _sampler.watch(counts["accepted"]),
        "certificates": certificate_expiry(runtime.certificates.entries,
                                           datetime.datetime.now(datetime.UTC)),
    }
