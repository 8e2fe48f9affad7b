"""The h2 state machines behind HTTP/2 to clients (``workers.h2``) and to backends
(``workers.h2upstream``), driven in memory by a peer ``h2`` connection: a long-lived
connection remembers a bounded number of closed streams, and frames that arrive for a
stream it has forgotten do not end the connection."""

from __future__ import annotations

import weakref
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame, WindowUpdateFrame

from tests.support.collector import collector_off
from tests.support.h2client import server_frames
from workers.h2 import _StreamErrorsH2
from workers.h2upstream import CLOSED_STREAMS_KEPT, _GoawayTolerantConnection

STREAMS = 3 * CLOSED_STREAMS_KEPT


def _pair(ours_is_server: bool) -> tuple[h2.connection.H2Connection,
                                          h2.connection.H2Connection]:
    """(client, server), one of them ours, with their prefaces and SETTINGS exchanged."""
    if ours_is_server:
        server: h2.connection.H2Connection = _StreamErrorsH2(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False))
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    else:
        server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        client = _GoawayTolerantConnection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def _exchange(client: h2.connection.H2Connection, server: h2.connection.H2Connection,
              stream_id: int) -> list[h2.events.Event]:
    client.send_headers(stream_id, [(":method", "GET"), (":scheme", "http"),
                                    (":authority", "t"), (":path", "/")], end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(stream_id, [(":status", "200")])
    server.send_data(stream_id, b"pong", end_stream=True)
    return client.receive_data(server.data_to_send())


@pytest.mark.parametrize("ours_is_server", [True, False], ids=["to-clients", "to-backends"])
def test_closed_streams_remembered_are_bounded(ours_is_server: bool) -> None:
    client, server = _pair(ours_is_server)
    ours = server if ours_is_server else client
    for n in range(STREAMS):
        events = _exchange(client, server, 1 + 2 * n)
        assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    # h2 moves closed streams to its memory when it next counts open ones
    assert ours.open_outbound_streams + ours.open_inbound_streams == 0
    assert 0 < len(ours._closed_streams) <= CLOSED_STREAMS_KEPT  # h2's default: 65,536


def test_late_frames_on_a_forgotten_stream_keep_the_connection() -> None:
    """WINDOW_UPDATE, RST_STREAM and DATA for stream 1, long forgotten: nothing, nothing and
    a stream error (RST_STREAM STREAM_CLOSED). The connection goes on serving."""
    client, server = _pair(ours_is_server=True)
    for n in range(STREAMS):
        _exchange(client, server, 1 + 2 * n)
    server.open_inbound_streams  # noqa: B018 - moves the closed streams out
    assert 1 not in server._closed_streams
    late = (WindowUpdateFrame(1, window_increment=1000).serialize()
            + RstStreamFrame(1, error_code=8).serialize()
            + DataFrame(1, data=b"late", flags=["END_STREAM"]).serialize())
    events = server.receive_data(late)
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    sent = server.data_to_send()
    assert RstStreamFrame(1, error_code=h2.errors.ErrorCodes.STREAM_CLOSED).serialize() in sent
    client.receive_data(sent)
    next_id = 1 + 2 * STREAMS
    events = _exchange(client, server, next_id)
    assert [e.data for e in events if isinstance(e, h2.events.DataReceived)] == [b"pong"]


# --- the connection's writer ---------------------------------------------------------------

def _serving() -> tuple[Any, Any, Any, Any]:
    """An in-process ``workers.h2.H2Connection`` that answers ``/metrics`` itself, served
    over a socket pair: (services, connection, its reader greenlet, the client's socket)."""
    import gevent
    from gevent import socket as gsocket

    from pingap.config import load_config_text
    from pingap.context import ConnectionInfo
    from pingap.runtime import build_runtime
    from workers.h2 import H2Connection
    from workers.services import RequestServices

    runtime = build_runtime(load_config_text(
        '[upstreams.up]\naddrs = ["127.0.0.1:9"]\n[locations.all]\nupstream = "up"\n'
        '[servers.web]\naddr = "127.0.0.1:8080"\nlocations = ["all"]\n'
        'prometheus_metrics = "/metrics"\nenabled_h2 = true\n'))
    services = RequestServices(runtime, None,  # type: ignore[arg-type]  # no upstream used
                               metrics_text=lambda: "answered here\n")
    ours, theirs = gsocket.socketpair()
    info = ConnectionInfo(connection_id=1, remote_addr="10.0.0.1", remote_port=4000,
                          server_addr="127.0.0.1", server_port=8080, accepted_at=0.0)
    conn = H2Connection(services, runtime.servers["web"], ours, info)
    return services, conn, gevent.spawn(conn.run), theirs


def _get_metrics(client: h2.connection.H2Connection, theirs: Any, stream_id: int) -> bytes:
    """One GET /metrics on ``stream_id``, read to its end: the body."""
    import gevent

    client.send_headers(stream_id, [(":method", "GET"), (":scheme", "http"),
                                    (":authority", "t"), (":path", "/metrics")],
                        end_stream=True)
    theirs.sendall(client.data_to_send())
    body = b""
    ended = False
    with gevent.Timeout(5):
        while not ended:
            for event in client.receive_data(theirs.recv(65536)):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                ended = ended or (isinstance(event, h2.events.StreamEnded)
                                  and event.stream_id == stream_id)
            theirs.sendall(client.data_to_send())
    return body


def test_an_idle_connection_keeps_no_writer() -> None:
    """Small responses go out through a writer job batched per loop turn; once it has
    written, it ends: an idle HTTP/2 connection holds its reader greenlet only (a parked
    writer was ~8 KB per idle connection)."""
    import gevent

    services, conn, reader, theirs = _serving()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    body = b""
    try:
        for stream_id in (1, 3):  # the second after the first writer has ended
            body += _get_metrics(client, theirs, stream_id)
            for _turn in range(100):  # the turns after the answer: stream and writer end
                if not services.streams:
                    break
                gevent.sleep(0)
            assert services.streams == {}  # no stream, and no writer registered
            assert getattr(conn, "_writer_job", None) is None
            assert not reader.dead  # the connection itself stays open, idle
        assert body == b"answered here\n" * 2
    finally:
        reader.kill()
        theirs.close()


def test_a_whole_body_ends_its_stream_on_its_own_data_frame() -> None:
    """A response whose body is written before its end goes out as HEADERS and one DATA
    frame carrying END_STREAM, not a second, empty DATA frame to end the stream (one
    state-machine step and one frame fewer per response)."""
    import gevent

    _services, _conn, reader, theirs = _serving()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "t"),
                            (":path", "/metrics")], end_stream=True)
    theirs.sendall(client.data_to_send())
    received = b""
    try:
        with gevent.Timeout(5):
            while not any("END_STREAM" in f.flags for f in server_frames(received)
                          if f.stream_id == 1):
                received += theirs.recv(65536)
    finally:
        reader.kill()
        theirs.close()
    ours = [f for f in server_frames(received) if f.stream_id == 1]
    assert [type(f) for f in ours] == [HeadersFrame, DataFrame]
    assert ours[1].data == b"answered here\n" and "END_STREAM" in ours[1].flags


def test_tiny_data_frames_are_held_as_their_bytes() -> None:
    """DATA a stream has not taken yet is held as one piece of body, however many frames
    brought it: 5,000 one-byte frames queue as one event of 5,000 bytes (a record per
    frame cost ~100 bytes per byte a client sent while the upstream was slow), taken in
    order, before the end of the body, and acknowledged in full."""
    from pingap.events import BodyReceived, MessageEnded
    from workers.h2 import H2Stream

    _services, conn, reader, theirs = _serving()
    reader.kill()  # not started yet: this test feeds the state machine itself
    try:
        client = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        client.initiate_connection()
        conn.h2.initiate_connection()
        conn.h2.receive_data(client.data_to_send())
        client.receive_data(conn.h2.data_to_send())
        client.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "t"),
                                (":path", "/upload")])
        conn.h2.receive_data(client.data_to_send())
        stream = H2Stream(conn, 1, [], end_stream=False)
        conn.streams[1] = stream

        def send(*pieces: bytes, end: bool = False) -> None:
            for piece in pieces:
                client.send_data(1, piece)
            if end:
                client.end_stream(1)
            for event in conn.h2.receive_data(client.data_to_send()):
                assert conn._handle(event)

        send(*[b"x"] * 5000)
        assert len(stream._events) == 1 and stream.unacked == 5000
        first = stream.next_event()
        assert isinstance(first, BodyReceived) and first.data == b"x" * 5000
        assert stream.unacked == 0
        send(b"ab", b"c", end=True)
        assert len(stream._events) == 2 and stream.unacked == 3
        second = stream.next_event()
        assert isinstance(second, BodyReceived) and second.data == b"abc"
        assert isinstance(stream.next_event(), MessageEnded)
        assert stream.unacked == 0
    finally:
        theirs.close()


def test_tiny_data_frames_from_a_backend_are_held_as_their_bytes() -> None:
    """The same for a response from an HTTP/2 backend: body pieces the relay has not taken
    yet are one piece, so 5,000 one-byte DATA frames come out as one event."""
    import time

    import gevent
    from gevent import socket as gsocket

    from pingap.events import ResponseData, ResponseEnded, ResponseStarted
    from pingap.upstream import Backend
    from workers.h2upstream import H2UpstreamConnection

    ours, theirs = gsocket.socketpair()
    conn = H2UpstreamConnection(ours, Backend("127.0.0.1", 9), now=0.0)
    backend = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, header_encoding=None))
    backend.initiate_connection()
    try:
        theirs.sendall(backend.data_to_send())
        assert conn.wait_ready(5)
        stream = conn.open_stream(b"GET", b"http", b"t", b"/", [], end_stream=True)
        with gevent.Timeout(5):
            while not any(isinstance(e, h2.events.RequestReceived)
                          for e in backend.receive_data(theirs.recv(65536))):
                pass
        backend.send_headers(stream.stream_id, [(":status", "200")])
        for _ in range(5000):
            backend.send_data(stream.stream_id, b"y")
        backend.end_stream(stream.stream_id)
        theirs.sendall(backend.data_to_send())
        deadline = time.monotonic() + 5
        while not stream.remote_ended:  # the connection's reader takes all of it
            assert time.monotonic() < deadline, "the response did not arrive"
            gevent.sleep(0.001)
        events = stream.next_events(5)
        assert [type(e) for e in events] == [ResponseStarted, ResponseData, ResponseEnded]
        body = events[1]
        assert isinstance(body, ResponseData) and body.data == b"y" * 5000
    finally:
        conn.close()
        theirs.close()


def test_a_closed_connection_is_freed_without_the_collector() -> None:
    """An h2 state machine is a reference cycle (its frame dispatch table holds its own
    bound methods); the connection breaks it when its reader ends, so the machine (with
    its streams, HPACK tables and closed-stream record, ~70 KB for a busy one) goes with
    the connection instead of at the collector's next full pass."""
    with collector_off():
        _services, conn, reader, theirs = _serving()
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        assert _get_metrics(client, theirs, 1) == b"answered here\n"
        machine = weakref.ref(conn.h2)
        connection = weakref.ref(conn)
        theirs.close()
        reader.join(5)
        assert reader.dead
        del conn, reader
        assert machine() is None
        assert connection() is None


def test_an_ended_backend_connection_is_freed_without_the_collector() -> None:
    """The same for an HTTP/2 connection to a backend: once its reader has ended (here:
    the backend closed it), the pool's last reference is the last one."""
    from gevent import socket as gsocket

    from pingap.upstream import Backend
    from workers.h2upstream import H2UpstreamConnection

    with collector_off():
        ours, theirs = gsocket.socketpair()
        conn = H2UpstreamConnection(ours, Backend("127.0.0.1", 9), now=0.0)
        machine = weakref.ref(conn._h2)
        connection = weakref.ref(conn)
        theirs.close()
        conn._reader.join(5)
        assert conn._reader.dead and conn.closed
        del conn
        assert machine() is None
        assert connection() is None
