"""A worker process: serves the listeners the master passed it until told to stop.

Life cycle (gunicorn's split): *boot* loads and compiles the config and adopts the
listening fds — any failure there exits with ``EXIT_BOOT_ERROR`` so the master stops
instead of respawning in a loop; *serve* runs one accept greenlet per listener, one
greenlet per connection, the health probers and a parent watchdog. TERM/QUIT drain
(stop accepting, finish in-flight requests up to ``grace_period``), INT exits at once,
USR1 reopens log files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from itertools import count

import gevent
from gevent.event import Event

from pingap.config import load_config
from pingap.context import ConnectionInfo, RequestContext
from pingap.errors import ConfigError
from pingap.runtime import Runtime, ServerRuntime, build_runtime
from workers.accesslog import FileAccessLog, LoggerAccessLog
from workers.h1 import H1Connection
from workers.health import HealthProber
from workers.pool import UpstreamPool

log = logging.getLogger("pingap.worker")

EXIT_BOOT_ERROR = 3
IDLE_CLOSE_GRACE = 1.0


def setup_logging(path: str | None) -> None:
    handler: logging.Handler
    if path:
        handler = logging.FileHandler(path)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("PINGAP_LOG_LEVEL", "INFO").upper())


class Worker:
    """One worker process's state; ``serve()`` blocks until the worker should exit."""

    def __init__(self, runtime: Runtime, listeners: dict[str, list[socket.socket]],
                 worker_id: int = 0) -> None:
        self.runtime = runtime
        self.listeners = listeners
        self.worker_id = worker_id
        self.pool = UpstreamPool(runtime.keepalive_pool_size)
        self.draining = False
        self.ppid = os.getppid()
        self._stop = Event()
        self._conn_ids = count(1)
        self._connections: dict[H1Connection, gevent.Greenlet] = {}
        self._accepters: list[gevent.Greenlet] = []
        self._probers = [HealthProber(u) for u in runtime.upstreams.values()]
        self._access_logs: dict[str, FileAccessLog | LoggerAccessLog] = {}
        for server in runtime.servers.values():
            if server.access_log is not None:
                path = server.access_log.spec.path
                key = path or ""
                if key not in self._access_logs:
                    self._access_logs[key] = FileAccessLog(path) if path else LoggerAccessLog()

    # --- serving ------------------------------------------------------------------

    def serve(self) -> int:
        for name, socks in self.listeners.items():
            server = self.runtime.servers[name]
            for sock in socks:
                self._accepters.append(gevent.spawn(self._accept_loop, server, sock))
        for prober in self._probers:
            prober.start()
        gevent.signal_handler(signal.SIGTERM, self.begin_drain)
        gevent.signal_handler(signal.SIGQUIT, self.begin_drain)
        gevent.signal_handler(signal.SIGINT, self._stop.set)
        gevent.signal_handler(signal.SIGUSR1, self.reopen_logs)
        gevent.spawn(self._watch_parent)
        log.info("worker %d serving %s", self.worker_id,
                 ", ".join(f"{n}={s.addrs}" for n, s in self.runtime.servers.items()))
        self._stop.wait()
        self._shutdown()
        return 0

    def _accept_loop(self, server: ServerRuntime, sock: socket.socket) -> None:
        while not self.draining:
            try:
                client, peer = sock.accept()
            except OSError as exc:
                if self.draining:
                    return
                log.warning("accept on %s failed: %s", server.name, exc)
                gevent.sleep(0.05)
                continue
            gevent.spawn(self._serve_connection, server, client, peer)

    def _serve_connection(self, server: ServerRuntime, client: socket.socket,
                          peer: tuple[str, int]) -> None:
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = client.getsockname()
        except OSError:
            client.close()
            return
        info = ConnectionInfo(
            connection_id=next(self._conn_ids),
            remote_addr=peer[0] if isinstance(peer, tuple) else "",
            remote_port=peer[1] if isinstance(peer, tuple) else 0,
            server_addr=local[0] if isinstance(local, tuple) else "",
            server_port=local[1] if isinstance(local, tuple) else 0,
            accepted_at=time.monotonic(),
        )
        conn = H1Connection(self, server, client, info)
        self._connections[conn] = gevent.getcurrent()  # type: ignore[assignment]
        try:
            conn.run()
        finally:
            self._connections.pop(conn, None)

    def log_request(self, server: ServerRuntime, ctx: RequestContext) -> None:
        access_log = server.access_log
        if access_log is None:
            return
        sink = self._access_logs.get(access_log.spec.path or "")
        if sink is not None:
            sink.write(access_log.format(ctx))

    def record_failure(self, upstream: object, backend: object) -> None:
        """Hook for passive health/backend stats (later issues)."""

    # --- stopping -----------------------------------------------------------------

    def begin_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("worker %d draining", self.worker_id)
        for greenlet in self._accepters:
            greenlet.kill(block=False)
        for socks in self.listeners.values():
            for sock in socks:
                sock.close()
        gevent.spawn(self._drain)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.runtime.config.basic.grace_period
        gevent.sleep(min(IDLE_CLOSE_GRACE, self.runtime.config.basic.grace_period))
        while self._connections and time.monotonic() < deadline:
            for conn, greenlet in list(self._connections.items()):
                if not conn.busy:
                    greenlet.kill(block=False)
            gevent.sleep(0.05)
        self._stop.set()

    def _watch_parent(self) -> None:
        while True:
            gevent.sleep(1.0)
            if os.getppid() != self.ppid:
                log.warning("master %d is gone; worker %d exits", self.ppid, self.worker_id)
                self._stop.set()
                return

    def reopen_logs(self) -> None:
        for sink in self._access_logs.values():
            sink.reopen()

    def _shutdown(self) -> None:
        for prober in self._probers:
            prober.stop()
        for greenlet in list(self._connections.values()):
            greenlet.kill(block=False)
        for sink in self._access_logs.values():
            sink.close()
        self.pool.close_all()


def adopt_listeners(spec: str) -> dict[str, list[socket.socket]]:
    """``{"server": [fd, ...]}`` JSON → sockets wrapping those inherited fds."""
    mapping = json.loads(spec)
    return {name: [socket.socket(fileno=fd) for fd in fds] for name, fds in mapping.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--config", required=True)
    parser.add_argument("--listeners", required=True,
                        help='JSON {"server name": [fd, ...]} of inherited sockets')
    parser.add_argument("--worker-id", type=int, default=0)
    parser.add_argument("--log", default=None)
    args = parser.parse_args(argv)
    setup_logging(args.log)
    try:
        config = load_config(args.config)
        runtime = build_runtime(config)
        listeners = adopt_listeners(args.listeners)
        worker = Worker(runtime, listeners, args.worker_id)
    except ConfigError as err:
        log.error("worker boot failed: invalid config:\n%s", err)
        return EXIT_BOOT_ERROR
    except Exception:
        log.exception("worker boot failed")
        return EXIT_BOOT_ERROR
    return worker.serve()
