"""Accepting connections: the accept loops, the registry of live connections, deadlines.

``Acceptor`` runs one accept greenlet per listening socket and one greenlet per
connection; it wraps TLS, tells h2c from HTTP/1 by the first bytes, and hands the socket
to ``workers.h1`` or ``workers.h2``. It balances the host's workers: it stops accepting
while this worker holds ``BALANCE_SLACK`` connections more than the serving workers'
average (the scoreboard), and takes one connection per wake-up. Draining, it stops
accepting new work but serves what the kernel already queued (``take_queues``).

Timeouts: connections and HTTP/2 streams set ``deadline`` (monotonic seconds, 0 = none)
before each blocking step; the sweeper raises TimeoutError in the greenlet of every one
whose deadline has passed — cheaper than a gevent Timeout per call.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from itertools import count
from typing import Any

import gevent

from pingap.context import ConnectionInfo
from pingap.runtime import ServerRuntime
from pingap.scoreboard import Scoreboard
from workers.h1 import H1Connection
from workers.h2 import PREFACE, H2Connection, is_preface
from workers.runners import RUNNERS, Job, current_job
from workers.services import RequestServices

log = logging.getLogger("pingap.worker")

DEADLINE_TICK = 0.1
#: Stop accepting while this many connections above the serving workers' average.
BALANCE_SLACK = 4
#: Draining: at most this many queued connections taken per listener and pass
BACKLOG_TAKE = 4096
QUEUE_SETTLE = 0.05

Connection = H1Connection | H2Connection


class Acceptor:
    """Accepts on the worker's listeners and keeps the table of live connections."""

    def __init__(self, services: RequestServices, listeners: dict[str, list[socket.socket]],
                 *, tls: dict[str, Any], scoreboard: Scoreboard | None,
                 on_change: Callable[[], None]) -> None:
        self.services = services
        self.listeners = listeners
        self.tls = tls                  # server name -> workers.tls.TLSAcceptor
        self.scoreboard = scoreboard
        self.on_change = on_change      # the live connection count changed
        self.accepted = 0
        self.connections: dict[Connection, Job] = {}  # what to kill to end each
        self.unregistered = 0           # accepted, not yet in ``connections``
        self._ids = count(1)
        self._accepters: list[gevent.Greenlet] = []

    @property
    def live(self) -> int:
        return len(self.connections) + self.unregistered

    def start(self) -> None:
        runtime = self.services.runtime
        for name, socks in self.listeners.items():
            server = runtime.servers[name]
            for sock in socks:
                self._accepters.append(gevent.spawn(self._accept_loop, server, sock))

    def stop(self, take_queue: bool) -> list[gevent.Greenlet]:
        """Stop accepting. ``take_queue`` (a stop): the greenlets that serve what the
        kernel already queued, then close our copies of the listening sockets; after a
        reload the new generation accepts those."""
        for greenlet in self._accepters:
            greenlet.kill(block=False)
        if not take_queue:
            return []
        runtime = self.services.runtime
        return [gevent.spawn(self.take_queue, runtime.servers[name], sock)
                for name, socks in self.listeners.items() for sock in socks]

    def drain(self) -> None:
        """Tell every connection that the worker drains (HTTP/2 sends its GOAWAYs)."""
        for conn in list(self.connections):
            conn.drain()

    def close_idle(self) -> None:
        for conn, greenlet in list(self.connections.items()):
            if not conn.busy:
                greenlet.kill(block=False)

    def close_all(self) -> None:
        for greenlet in list(self.connections.values()):
            greenlet.kill(block=False)

    # --- accepting --------------------------------------------------------------------

    def _overloaded(self) -> bool:
        board = self.scoreboard
        if board is None:
            return False
        return len(self.connections) > board.serving_average() + BALANCE_SLACK

    def _accept_loop(self, server: ServerRuntime, sock: socket.socket) -> None:
        services = self.services
        while not services.draining:
            if self._overloaded():
                gevent.sleep(0.002)  # let less busy workers take the next connections
                continue
            try:
                client, peer = sock.accept()
            except OSError as exc:
                if services.draining:
                    return
                log.warning("accept on %s failed: %s", server.name, exc)
                gevent.sleep(0.05)
                continue
            self.accepted += 1
            self.unregistered += 1  # counted as live from accept on
            self.on_change()
            RUNNERS.spawn(self._serve_connection, server, client, peer)
            gevent.sleep(0)  # one connection per wake-up: others get their turn

    def _serve_connection(self, server: ServerRuntime, client: socket.socket,
                          peer: tuple[str, int]) -> None:
        handshake: float | None = None
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = client.getsockname()
            acceptor = self.tls.get(server.name)
            if acceptor is not None:
                client, handshake = acceptor.wrap(client)
        except (OSError, ssl.SSLError) as exc:
            self.unregistered -= 1
            log.debug("connection from %s dropped: %s", peer, exc)
            client.close()
            return
        info = ConnectionInfo(
            connection_id=next(self._ids),
            remote_addr=peer[0] if isinstance(peer, tuple) else "",
            remote_port=peer[1] if isinstance(peer, tuple) else 0,
            server_addr=local[0] if isinstance(local, tuple) else "",
            server_port=local[1] if isinstance(local, tuple) else 0,
            accepted_at=time.monotonic(),
        )
        if handshake is not None:
            tls = client  # an ssl.SSLSocket
            info.tls = True
            info.tls_version = tls.version()  # type: ignore[attr-defined]
            cipher = tls.cipher()  # type: ignore[attr-defined]
            info.tls_cipher = cipher[0] if cipher else None
            info.tls_handshake_time = handshake
        services = self.services
        conn: Connection
        if handshake is not None:
            if client.selected_alpn_protocol() == "h2":  # type: ignore[attr-defined]
                conn = H2Connection(services, server, client, info)
            else:
                conn = H1Connection(services, server, client, info)
        elif server.enabled_h2:
            try:
                initial = _first_bytes(server, client)
            except OSError:
                self.unregistered -= 1
                client.close()
                return
            if is_preface(initial):
                conn = H2Connection(services, server, client, info, initial)
            else:
                conn = H1Connection(services, server, client, info)
                conn.codec.receive_data(initial)
        else:
            conn = H1Connection(services, server, client, info)
        job = current_job()
        assert job is not None, "connections run as runner jobs (RUNNERS.spawn)"
        self.connections[conn] = job
        self.unregistered -= 1
        try:
            conn.run()
        finally:
            self.connections.pop(conn, None)
            self.on_change()

    def take_queue(self, server: ServerRuntime, sock: socket.socket) -> None:
        """Draining: serve the connections the kernel already queued on ``sock`` (their
        clients completed the handshake and wait for an answer), then close our copy of
        it. The last copy closed with connections queued would reset them; on a stop the
        master first makes the listener drop new handshakes
        (``master.listeners.ListenerSet.refuse_new_connections``), so the queue only
        empties. A second pass after ``QUEUE_SETTLE`` takes handshakes that were half way
        through."""
        sock.settimeout(0.0)
        try:
            for settle in (False, True):
                if settle:
                    gevent.sleep(QUEUE_SETTLE)
                for _ in range(BACKLOG_TAKE):
                    try:
                        client, peer = sock.accept()
                    except OSError:  # BlockingIOError: the queue is empty
                        break
                    self.accepted += 1
                    self.unregistered += 1
                    RUNNERS.spawn(self._serve_connection, server, client, peer)
        finally:
            sock.close()

    # --- deadlines --------------------------------------------------------------------

    def sweep_deadlines(self) -> None:
        """Raise TimeoutError in every connection or stream whose deadline has passed."""
        while True:
            gevent.sleep(DEADLINE_TICK)
            now = time.monotonic()
            for table in (self.connections, self.services.streams):
                for conn, greenlet in list(table.items()):
                    if 0.0 < conn.deadline < now:
                        conn.deadline = 0.0
                        greenlet.kill(TimeoutError("timed out"), block=False)


def _first_bytes(server: ServerRuntime, client: socket.socket) -> bytes:
    """On a plaintext server with HTTP/2 enabled: read until the bytes either are the
    whole h2c preface or cannot be, so the connection goes to the right protocol."""
    data = b""
    with gevent.Timeout(server.read_timeout or 60.0, TimeoutError("idle")):
        while len(data) < len(PREFACE) and is_preface(data or PREFACE):
            piece = client.recv(65536)
            if not piece:
                break
            data += piece
    return data
