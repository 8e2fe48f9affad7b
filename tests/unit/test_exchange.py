"""``workers.exchange.Exchange`` through a fake downstream and a fake pool.

The exchange gets everything through ``RequestServices`` and its downstream hooks, so a
test can stand in for both: the client is a recording downstream fed request events,
the pool hands out connections over real socket pairs whose far ends play the backend
(the response is written before the exchange reads it, so nothing blocks).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pingap.config import load_config_text
from pingap.context import ConnectionInfo
from pingap.errors import UpstreamConnectError
from pingap.events import BodyReceived, MessageEnded, RequestReceived
from pingap.headers import Headers, header_value
from pingap.runtime import Runtime, build_runtime
from pingap.upstream import Backend
from workers.exchange import Downstream, Exchange
from workers.pool import UpstreamConnection
from workers.services import RequestServices

CONFIG = """
[upstreams.up]
addrs = ["127.0.0.1:9000"]

[locations.all]
upstream = "up"

[servers.web]
addr = "127.0.0.1:8080"
locations = ["all"]
prometheus_metrics = "/metrics"
"""


class FakeDownstream(Downstream):
    """Feeds request body events; records what the exchange writes, flush by flush."""

    def __init__(self, services: RequestServices, events: list[object]) -> None:
        self.services = services
        self.server = services.runtime.servers["web"]
        self.conn = ConnectionInfo(connection_id=1, remote_addr="10.0.0.1", remote_port=4000,
                                   server_addr="127.0.0.1", server_port=8080,
                                   accepted_at=0.0, requests=1)
        self.deadline = 0.0
        self.events = list(events)
        self.pending: list[tuple[str, object]] = []
        self.flushes: list[list[tuple[str, object]]] = []
        self.informational: list[int] = []

    def next_event(self) -> object:
        return self.events.pop(0)

    def write_head(self, status: int, headers: Headers, reason: bytes = b"") -> None:
        self.pending.append(("head", (status, headers)))

    def write_body(self, data: bytes) -> None:
        self.pending.append(("body", data))

    def write_end(self, trailers: Headers | None) -> None:
        self.pending.append(("end", trailers))

    def flush(self) -> None:
        self.flushes.append(self.pending)
        self.pending = []

    def send_informational(self, status: int) -> None:
        self.informational.append(status)

    def mark_close(self, headers: Headers) -> None:
        headers.append((b"Connection", b"close"))

    @property
    def written(self) -> list[tuple[str, object]]:
        return [item for flush in self.flushes for item in flush]

    @property
    def status(self) -> int:
        return next(v[0] for k, v in self.written if k == "head")  # type: ignore[index]

    @property
    def body(self) -> bytes:
        return b"".join(v for k, v in self.written if k == "body")  # type: ignore[misc]


class FakePool:
    """Hands out connections whose backend ends are ``self.backends``, in order."""

    def __init__(self, responses: list[bytes | None], *, reused: bool = False) -> None:
        self.responses = list(responses)
        self.reused = reused
        self.backends: list[socket.socket] = []
        self.released: list[tuple[UpstreamConnection, bool]] = []
        self.opened = 0
        self.probed: list[bool] = []

    def _connection(self) -> UpstreamConnection:
        ours, theirs = socket.socketpair()
        self.backends.append(theirs)
        response = self.responses.pop(0)
        if response is None:
            theirs.close()  # the backend closed this (idle) connection
        else:
            theirs.sendall(response)
        return UpstreamConnection(ours, Backend(host="127.0.0.1", port=9000), 0.0)

    def acquire(self, upstream: object, backend: object, host: str | None = None, *,
                probe: bool = True) -> tuple[UpstreamConnection, bool, float]:
        self.probed.append(probe)
        conn = self._connection()
        if self.reused:
            conn.requests = 1  # it served a request before
        return conn, self.reused, 0.0

    def open(self, upstream: object, backend: object,
             host: str | None = None) -> tuple[UpstreamConnection, float]:
        self.opened += 1
        return self._connection(), 0.0

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        self.released.append((conn, reusable))

    def received(self, index: int) -> bytes:
        """What backend ``index`` received (everything sent so far)."""
        sock = self.backends[index]
        sock.setblocking(False)
        data = b""
        try:
            while piece := sock.recv(65536):
                data += piece
        except BlockingIOError:
            pass
        return data


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    yield build_runtime(load_config_text(CONFIG))


def request(target: bytes = b"/", *, method: bytes = b"GET", content_length: int | None = None,
            expect_continue: bool = False) -> RequestReceived:
    headers = [(b"Host", b"example.com")]
    if content_length is not None:
        headers.append((b"Content-Length", str(content_length).encode()))
    if expect_continue:
        headers.append((b"Expect", b"100-continue"))
    return RequestReceived(method=method, target=target, headers=headers, http_version=b"1.1",
                           keep_alive=True, expect_continue=expect_continue,
                           content_length=content_length, chunked=False, host=b"example.com",
                           path=target, query=b"")


def serve(down: FakeDownstream, req: RequestReceived) -> bool:
    """One request through its own exchange, as a connection serves it."""
    return Exchange(down.services, down, req).serve()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello"


def services_of(runtime: Runtime, pool: FakePool, **kwargs: object) -> RequestServices:
    return RequestServices(runtime, pool, **kwargs)  # type: ignore[arg-type]


def test_a_response_is_relayed_in_one_flush_and_the_connection_goes_back(runtime: Runtime) -> None:
    pool = FakePool([OK])
    services = services_of(runtime, pool)
    down = FakeDownstream(services, [MessageEnded()])
    assert serve(down, request(b"/a")) is True
    assert pool.received(0).startswith(b"GET /a HTTP/1.1\r\n")
    [flush] = down.flushes  # head, body and end: one read, one write to the client
    assert [kind for kind, _ in flush] == ["head", "body", "end"]
    assert down.status == 200 and down.body == b"hello"
    head_headers = flush[0][1][1]  # type: ignore[index]
    assert header_value(head_headers, b"x-up") == b"1"
    [(conn, reusable)] = pool.released
    assert reusable is True
    assert services.requests == 1


def test_a_stale_reused_connection_is_retried_once_on_a_fresh_one(runtime: Runtime) -> None:
    pool = FakePool([None, OK], reused=True)
    down = FakeDownstream(services_of(runtime, pool), [MessageEnded()])
    assert serve(down, request()) is True
    assert pool.opened == 1
    assert pool.probed == [False]  # a GET may go again: no poll() on the idle connection
    assert down.status == 200 and down.body == b"hello"
    # both went back through the one release: the stale one closed, the fresh one pooled
    [(stale, stale_reusable), (fresh, fresh_reusable)] = pool.released
    assert stale_reusable is False and stale.sock.fileno() == -1
    assert fresh_reusable is True and fresh.sock.fileno() != -1


def test_a_request_body_streams_up_after_100_continue(runtime: Runtime) -> None:
    pool = FakePool([OK])
    down = FakeDownstream(services_of(runtime, pool),
                          [BodyReceived(data=b"abc"), BodyReceived(data=b"de"), MessageEnded()])
    req = request(b"/post", method=b"POST", content_length=5, expect_continue=True)
    assert serve(down, req) is True
    head, _, body = pool.received(0).partition(b"\r\n\r\n")
    assert head.startswith(b"POST /post HTTP/1.1") and body == b"abcde"
    assert b"expect" not in head.lower()
    assert down.informational == [100]
    assert pool.probed == [True]  # a body cannot be sent twice: check the idle connection


def test_a_backend_failing_before_its_head_gets_the_error_page(runtime: Runtime) -> None:
    class Cutting(FakePool):
        def _connection(self) -> UpstreamConnection:
            conn = super()._connection()
            self.backends[-1].close()  # the backend dies after half a head
            self.cut = conn
            return conn

    pool = Cutting([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"])
    down = FakeDownstream(services_of(runtime, pool), [MessageEnded()])
    assert serve(down, request()) is False
    assert down.status == 502
    assert pool.released == [(pool.cut, False)]  # given back as not reusable: closed
    assert pool.cut.sock.fileno() == -1


def test_a_connect_failure_is_answered_without_a_connection(runtime: Runtime) -> None:
    class Refusing(FakePool):
        def acquire(self, *args: object, **kwargs: object) -> tuple[UpstreamConnection, bool, float]:
            raise UpstreamConnectError("connect to 127.0.0.1:9000 failed: refused")

    pool = Refusing([])
    down = FakeDownstream(services_of(runtime, pool), [MessageEnded()])
    assert serve(down, request()) is False
    assert down.status == 502 and pool.released == []


def test_the_metrics_path_is_answered_locally_from_the_services(runtime: Runtime) -> None:
    pool = FakePool([])
    services = services_of(runtime, pool, metrics_text=lambda: "pingap_requests_total 7\n")
    down = FakeDownstream(services, [MessageEnded()])
    assert serve(down, request(b"/metrics")) is True
    assert down.status == 200 and down.body == b"pingap_requests_total 7\n"
    assert pool.backends == []


def test_a_draining_worker_closes_the_connection_after_the_response(runtime: Runtime) -> None:
    pool = FakePool([OK])
    services = services_of(runtime, pool)
    services.draining = True
    down = FakeDownstream(services, [MessageEnded()])
    assert serve(down, request()) is False
    head_headers = down.written[0][1][1]  # type: ignore[index]
    assert header_value(head_headers, b"connection") == b"close"
