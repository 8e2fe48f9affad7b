"""What request code may use: the worker's services, narrowed to one slotted object.

Connections (``workers.h1``, ``workers.h2``) and the exchange (``workers.exchange``)
receive a ``RequestServices`` — never the ``Worker`` (uvicorn's ``ServerState``): the
runtime, the upstream pool, the metrics recorder, the access-log sinks, the local answers
(the metrics exposition, ACME HTTP-01 challenges, the admin API), the HTTP/2 streams the
deadline sweeper watches, and whether the worker is draining.

Plugins get their I/O here too: ``plugin_services`` is the one place a worker creates
what it lends them at bind time (``pingap.plugins.Services``: counters, stats, outbound
HTTP, files, cache stores), and ``bind_plugins`` hands it to every plugin once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from pingap.actions import Respond
from pingap.context import RequestContext
from pingap.plugins import Services
from pingap.runtime import Runtime, ServerRuntime
from pingap.state import SharedState, ShmCounters

if TYPE_CHECKING:
    from pingap.metrics import MetricsRecorder
    from workers.admin import AdminService
    from workers.cache_store import CacheStores
    from workers.pool import UpstreamPool


class AccessLogSink(Protocol):
    def write(self, line: str) -> None: ...
    def reopen(self) -> None: ...
    def close(self) -> None: ...


class RequestServices:
    """The services a request may use; ``draining`` flips once, when the worker drains."""

    __slots__ = ("access_logs", "acme_answer", "admin", "draining", "metrics",
                 "metrics_text", "plugins", "pool", "requests", "runtime", "streams")

    def __init__(self, runtime: Runtime, pool: UpstreamPool, *,
                 metrics: MetricsRecorder | None = None,
                 access_logs: dict[str, AccessLogSink] | None = None,
                 metrics_text: Callable[[], str] = str,
                 acme_answer: Callable[[str], Respond | None] | None = None,
                 plugins: Services | None = None) -> None:
        self.runtime = runtime
        self.pool = pool
        self.metrics = metrics
        #: access-log sinks by file path ("" is the application log)
        self.access_logs = access_logs or {}
        #: the Prometheus exposition, served on a server's ``prometheus_metrics`` path
        self.metrics_text = metrics_text
        #: the answer to an ACME HTTP-01 challenge path (None: not one)
        self.acme_answer = acme_answer
        #: the admin API's worker side, when a location runs the ``admin`` plugin
        self.admin: AdminService | None = None
        #: what plugins were lent at bind time
        self.plugins = plugins or Services()
        self.draining = False
        self.requests = 0
        #: HTTP/2 request streams run in greenlets of their own: their deadlines are swept
        #: with the connections' (``workers.accept``)
        self.streams: dict[Any, Any] = {}

    def log_request(self, server: ServerRuntime, ctx: RequestContext) -> None:
        """Count the finished request and write its access-log line, if the server logs."""
        self.requests += 1
        access_log = server.access_log
        if access_log is None:
            return
        sink = self.access_logs.get(access_log.spec.path or "")
        if sink is not None:
            sink.write(access_log.format(ctx))


def open_access_logs(runtime: Runtime) -> dict[str, AccessLogSink]:
    """One sink per access-log file the servers name ("" logs through ``logging``)."""
    from pingap.accesslog import file_sink_settings
    from workers.accesslog import FileAccessLog, LoggerAccessLog
    sinks: dict[str, AccessLogSink] = {}
    for server in runtime.servers.values():
        if server.access_log is not None:
            path = server.access_log.spec.path or ""
            if path not in sinks:
                sinks[path] = (FileAccessLog(path, file_sink_settings(server.access_log.spec))
                               if path else LoggerAccessLog())
    return sinks


def plugin_services(runtime: Runtime, state: SharedState | None, slot: int,
                    stats: Callable[[RequestContext], dict[str, object]],
                    cache_stores: CacheStores) -> Services:
    """What this worker lends plugins: the I/O a pure plugin decision cannot do itself."""
    from workers.files import LocalFiles
    from workers.plugin_io import PluginHttpClient
    services = Services()
    basic = runtime.config.basic
    if basic.redis_url:
        from workers.redis_store import RedisCounters
        services.counters = RedisCounters(basic.redis_url,
                                          fail_open=basic.redis_failure_mode == "open")
    elif state is not None:
        services.counters = ShmCounters(state, slot, time.time)
    services.stats = stats
    services.http = PluginHttpClient()
    services.files = LocalFiles()
    services.cache_store = cache_stores
    return services


def bind_plugins(runtime: Runtime, services: Services) -> None:
    """Give every plugin of the runtime (each once, however many locations share it)
    the services it may use."""
    seen: set[int] = set()
    for location in runtime.locations.values():
        for plugin in location.plugins:
            if id(plugin) not in seen:
                seen.add(id(plugin))
                plugin.bind(services)
