"""HTTP/2 to clients, frame by frame: the real ``pingap`` on an h2c (prior knowledge)
listener, driven by a raw-socket client.

The client (``H2Client``) sends through the ``h2`` library's client state machine (with
its outbound checks switched off where a test needs a malformed request, and with
hyperframe for frames h2 will not produce at all), and reads everything the server sends
twice: through the same state machine (which acknowledges SETTINGS and PINGs and fails
on a server that oversteps a flow-control window) and through its own frame log
(hyperframe + its own HPACK decoder), so tests assert on the exact frames, window by
window, and keep reading after a GOAWAY, which the h2 library stops at.

Every read has a socket timeout and every wait a deadline (``H2Client.until``); the only
timed waits are the short "nothing arrives" observations (``H2Client.quiet``) that a
negative check needs, and the write timeout under test. One pingap serves the module
(a worker boot costs seconds); each test tells its own requests apart in the backend's
record by their targets (or an ``x-case`` field).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.support.backend import pattern
from tests.support.configs import proxy_config
from tests.support.proc import BackendProcess, PingapProcess, free_port

Fields = list[tuple[bytes, bytes]]
Codes = h2.errors.ErrorCodes
Settings = h2.settings.SettingCodes

#: the server's side of the h2c listener under test (a short write timeout for 1d)
SERVER = 'enabled_h2 = true\ndownstream_write_timeout = "1s"\n'
DEFAULT_WINDOW = 65535


@dataclass
class StreamLog:
    """What the server sent on one stream, from the frame log."""

    heads: list[Fields] = field(default_factory=list)  # every header block, 1xx included
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False            # END_STREAM seen
    reset: int | None = None       # RST_STREAM error code
    received: int = 0              # flow-controlled DATA bytes
    granted: int = 0               # window we opened for it (initial + updates)
    window_updates: int = 0        # the server's WINDOW_UPDATE increments for it
    last_frame: Frame | None = None
    first_frame_at: float = 0.0

    @property
    def final_head(self) -> Fields:
        for head in self.heads:
            if not dict(head).get(b":status", b"").startswith(b"1"):
                return head
        raise AssertionError(f"no final response head in {self.heads}")

    @property
    def status(self) -> int:
        return int(dict(self.final_head)[b":status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.final_head)

    @property
    def trailers(self) -> Fields | None:
        heads = self.heads[self.heads.index(self.final_head) + 1:]
        return heads[0] if heads else None

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class H2Client:
    """A real HTTP/2 client on a plain socket (h2c with prior knowledge)."""

    def __init__(self, port: int, *, settings: dict[Settings, int] | None = None,
                 validate: bool = True, auto_ack: bool = True, handshake: bool = True,
                 timeout: float = 5.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None,
            validate_outbound_headers=validate, normalize_outbound_headers=validate)
        self.h2 = h2.connection.H2Connection(config=config)
        if settings:
            self.h2.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.tracking = True            # still feeding the h2 state machine
        self.h2_error: Exception | None = None
        self.auto_ack = auto_ack        # hand back every DATA byte at once
        self.streams: dict[int, StreamLog] = {}
        self.frames: list[Frame] = []   # every frame the server sent, in order
        self.goaways: list[tuple[float, GoAwayFrame]] = []
        self.server_settings: dict[int, int] | None = None
        self.settings_acked = False
        self.eof = False
        self.violations: list[str] = []  # DATA beyond a window we granted
        self.initial_window = (settings or {}).get(Settings.INITIAL_WINDOW_SIZE,
                                                   DEFAULT_WINDOW)
        self.conn_received = 0
        self.conn_granted = DEFAULT_WINDOW
        self.send_blocked = 0           # times an upload waited for the server's window
        self.pings_answered = 0         # by the frame log, after the state machine stopped
        self._buffer = bytearray()
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = 1 << 20
        self._block: tuple[HeadersFrame, bytearray] | None = None
        self.h2.initiate_connection()
        self.flush()
        if handshake:
            self.until(lambda: self.server_settings is not None and self.settings_acked,
                       what="the SETTINGS exchange")

    # --- sending ------------------------------------------------------------------

    def flush(self) -> None:
        """Send what the state machine has queued (a closed connection is no error)."""
        self.send_raw(self.h2.data_to_send())

    def send_raw(self, data: bytes) -> None:
        if not data:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.eof = True

    def fields(self, path: bytes, method: bytes = b"GET",
               extra: Iterable[tuple[bytes, bytes]] = ()) -> Fields:
        return [(b":method", method), (b":scheme", b"http"),
                (b":authority", f"127.0.0.1:{self.port}".encode()), (b":path", path),
                *extra]

    def open(self, fields: Fields, *, end_stream: bool = True, send: bool = True) -> int:
        """Start a stream with this header block; its stream id."""
        stream_id = self.h2.get_next_available_stream_id()
        self.log(stream_id)
        self.h2.send_headers(stream_id, fields, end_stream=end_stream)
        if send:
            self.flush()
        return stream_id

    def get(self, path: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> int:
        return self.open(self.fields(path.encode(), extra=extra))

    def send_body(self, stream_id: int, data: bytes, *, end_stream: bool = True) -> None:
        """Send DATA within the server's windows, waiting for its WINDOW_UPDATEs."""
        view = memoryview(data)
        while view:
            window = min(self.h2.local_flow_control_window(stream_id),
                         self.h2.max_outbound_frame_size)
            if window <= 0:
                self.send_blocked += 1
                self.until(lambda: self.h2.local_flow_control_window(stream_id) > 0,
                           what=f"the server to open stream {stream_id}'s window")
                continue
            self.h2.send_data(stream_id, view[:window].tobytes())
            view = view[window:]
            self.flush()
        if end_stream:
            self.h2.end_stream(stream_id)
            self.flush()

    def grant(self, increment: int, stream_id: int | None = None) -> None:
        """Open a window (a stream's, or the connection's with ``stream_id=None``)."""
        self.h2.increment_flow_control_window(increment, stream_id=stream_id)
        if stream_id is None:
            self.conn_granted += increment
        else:
            self.log(stream_id).granted += increment
        self.flush()

    # --- receiving ----------------------------------------------------------------

    def log(self, stream_id: int) -> StreamLog:
        if stream_id not in self.streams:
            self.streams[stream_id] = StreamLog(granted=self.initial_window)
        return self.streams[stream_id]

    def pump(self, timeout: float) -> None:
        """One read (at most ``timeout`` seconds); parse and answer what arrived."""
        if self.eof:
            return
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError:  # reset by the server
            data = b""
        if not data:
            self.eof = True
            return
        if self.tracking:
            try:
                events = self.h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:  # e.g. frames after a GOAWAY
                # the limit of the test client's state machine, not the server's fault:
                # drop the GOAWAY it queued and follow the connection by the frame log
                self.h2_error = exc
                self.tracking = False
                self.h2.data_to_send()
                events = []
            for event in events:
                if isinstance(event, h2.events.DataReceived) and self.auto_ack:
                    try:
                        self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                          event.stream_id)
                    except h2.exceptions.ProtocolError:
                        pass
            self.flush()
        # the frame log after the state machine: once that has stopped, PINGs are
        # answered here
        self._buffer += data
        self._parse_frames()

    def until(self, condition: Callable[[], Any], timeout: float | None = None,
              what: str = "condition") -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            result = condition()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if self.eof:
                raise AssertionError(f"connection closed while waiting for {what}; "
                                     f"goaways={self.goaway_summary()}")
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            self.pump(min(remaining, 0.5))

    def quiet(self, seconds: float) -> list[Frame]:
        """Read for ``seconds`` (a negative check): the frames that arrived meanwhile."""
        start = len(self.frames)
        deadline = time.monotonic() + seconds
        while not self.eof and (remaining := deadline - time.monotonic()) > 0:
            self.pump(remaining)
        return self.frames[start:]

    def response(self, stream_id: int, timeout: float | None = None) -> StreamLog:
        log = self.log(stream_id)
        self.until(lambda: log.done, timeout, what=f"the response on stream {stream_id}")
        return log

    def wait_closed(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the server kept the connection open")
            self.pump(remaining)

    def goaway_summary(self) -> list[tuple[int, int]]:
        return [(f.last_stream_id, f.error_code) for _, f in self.goaways]

    def close(self) -> None:
        self.sock.close()

    # --- the frame log ------------------------------------------------------------

    def _parse_frames(self) -> None:
        buf = self._buffer
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(buf[:9])))
            if len(buf) < 9 + length:
                return
            frame.parse_body(memoryview(bytes(buf[9:9 + length])))
            del buf[:9 + length]
            self.frames.append(frame)
            self._on_frame(frame)

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acked = True
            elif self.server_settings is None:
                self.server_settings = dict(frame.settings)
            return
        if isinstance(frame, GoAwayFrame):
            self.goaways.append((time.monotonic(), frame))
            return
        if isinstance(frame, PingFrame):
            if "ACK" not in frame.flags and not self.tracking:  # h2 answers while it can
                self.send_raw(PingFrame(0, frame.opaque_data, flags=["ACK"]).serialize())
                self.pings_answered += 1
            return
        if isinstance(frame, WindowUpdateFrame):
            if frame.stream_id:
                self.log(frame.stream_id).window_updates += frame.window_increment
            return
        if frame.stream_id == 0:
            return
        log = self.log(frame.stream_id)
        log.last_frame = frame
        log.first_frame_at = log.first_frame_at or time.monotonic()
        if isinstance(frame, DataFrame):
            self._on_data(frame, log)
        elif isinstance(frame, HeadersFrame):
            self._block = (frame, bytearray(frame.data))
            if "END_HEADERS" in frame.flags:
                self._end_block()
        elif isinstance(frame, ContinuationFrame) and self._block is not None:
            self._block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                self._end_block()
        elif isinstance(frame, RstStreamFrame):
            log.reset = frame.error_code

    def _on_data(self, frame: DataFrame, log: StreamLog) -> None:
        size = frame.flow_controlled_length
        log.body += frame.data
        log.received += size
        self.conn_received += size
        if log.received > log.granted:
            self.violations.append(f"stream {frame.stream_id}: {log.received} bytes "
                                   f"for a {log.granted}-byte window")
        if self.conn_received > self.conn_granted:
            self.violations.append(f"connection: {self.conn_received} bytes for a "
                                   f"{self.conn_granted}-byte window")
        if "END_STREAM" in frame.flags:
            log.ended = True

    def _end_block(self) -> None:
        assert self._block is not None
        frame, block = self._block
        self._block = None
        log = self.log(frame.stream_id)
        log.heads.append(list(self._decoder.decode(bytes(block), raw=True)))
        if "END_STREAM" in frame.flags:
            log.ended = True


# --- fixtures ---------------------------------------------------------------------


@dataclass
class Proxy:
    """A pingap with an h2c listener in front of the recording backend."""

    port: int
    backend: BackendProcess
    proc: PingapProcess
    clients: list[H2Client] = field(default_factory=list)

    def client(self, **kwargs: Any) -> H2Client:
        client = H2Client(self.port, **kwargs)
        self.clients.append(client)
        return client

    def forwarded(self, marker: str) -> list[dict[str, Any]]:
        """Requests the backend received whose target contains ``marker``."""
        return [r for r in self.backend.requests() if marker in r.get("target", "")]

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterable[Proxy]:
    """One pingap (one worker) for the module: a worker boot costs seconds, and every
    test below tells its own requests apart in the backend's record by their targets.
    Only the drain test, which replaces the worker, starts its own."""
    tmp = tmp_path_factory.mktemp("h2frames")
    backend = BackendProcess(tmp)
    port = free_port()
    config = tmp / "pingap.toml"
    config.write_text(proxy_config(port, backend.addr, server=SERVER))
    try:
        proc = PingapProcess(config, port, tmp)
    except BaseException:
        backend.stop()
        raise
    setup = Proxy(port, backend, proc)
    try:
        yield setup
    finally:
        proc.stop()
        backend.stop()


@pytest.fixture
def proxy(shared: Proxy) -> Iterable[Proxy]:
    yield shared
    shared.close_clients()


def served_normally(setup: Proxy, path: str) -> None:
    """A fresh connection gets an ordinary proxied answer."""
    client = setup.client()
    reply = client.response(client.get(path))
    assert reply.status == 200
    assert json.loads(reply.body)["target"] == path


# --- 1. flow control ----------------------------------------------------------------


def test_zero_initial_window_gets_headers_then_exactly_each_window_of_data(proxy) -> None:
    n = 60_000
    client = proxy.client(settings={Settings.INITIAL_WINDOW_SIZE: 0}, auto_ack=False)
    client.grant(1 << 24)  # only the stream window limits this download
    stream = client.get(f"/big?n={n}&cl=1")
    log = client.log(stream)
    client.until(lambda: log.heads, what="the response HEADERS")
    assert log.status == 200 and log.headers[b"content-length"] == str(n).encode()
    late = client.quiet(0.3)
    assert not [f for f in late if isinstance(f, DataFrame)], "DATA into a zero window"
    assert log.received == 0
    for increment in (12_345, 12_345, 12_345, 12_345, n - 4 * 12_345):
        client.grant(increment, stream)
        client.until(lambda: log.received == log.granted,
                     what=f"{increment} bytes after the WINDOW_UPDATE")
        assert client.violations == []
    client.until(lambda: log.ended, what="END_STREAM")
    assert client.violations == [] and client.h2_error is None
    assert hashlib.sha256(log.body).digest() == hashlib.sha256(pattern(n)).digest()


def test_upload_larger_than_the_stream_window_arrives_intact(proxy) -> None:
    body = os.urandom(3 << 20)
    client = proxy.client()
    assert client.server_settings[Settings.INITIAL_WINDOW_SIZE] == 1 << 20
    stream = client.open(client.fields(b"/upload", b"POST", [
        (b"content-length", str(len(body)).encode())]), end_stream=False)
    client.send_body(stream, body)
    reply = client.response(stream, timeout=20)
    assert reply.status == 200
    assert json.loads(reply.body) == {"length": len(body),
                                      "sha256": hashlib.sha256(body).hexdigest(),
                                      "trailers": []}
    # the client had to wait for the server, and the server re-opened the window as it
    # forwarded: at least the 2 MiB beyond the initial window came back as updates
    assert client.send_blocked > 0
    assert reply.window_updates >= len(body) - (1 << 20)


def test_data_never_exceeds_the_connection_or_stream_windows(proxy) -> None:
    n = 300_000
    client = proxy.client(settings={Settings.INITIAL_WINDOW_SIZE: 100_000}, auto_ack=False)
    streams = [client.get(f"/big?n={n}&windows={i}") for i in range(2)]
    logs = [client.log(s) for s in streams]
    total = 0
    while not all(log.ended for log in logs):
        # wait for the granted windows to be used up (or the bodies to end) ...
        client.until(lambda: client.conn_received == client.conn_granted
                     or all(log.received == log.granted or log.ended for log in logs),
                     what="the server to fill the windows")
        assert client.violations == []
        # ... then open the connection window and each stream's by odd amounts
        client.grant(40_001)
        for stream, log in zip(streams, logs, strict=True):
            if not log.ended:
                client.grant(33_333, stream)
        total += 1
        assert total < 100, "the transfer made no progress"
    assert client.violations == [] and client.h2_error is None
    for log in logs:
        assert log.status == 200
        assert bytes(log.body) == pattern(n)


def test_stream_with_a_closed_window_gives_up_after_the_write_timeout(proxy) -> None:
    client = proxy.client(settings={Settings.INITIAL_WINDOW_SIZE: 0}, auto_ack=False)
    client.grant(1 << 24)
    stuck = client.get("/big?n=100000")
    stuck_log = client.log(stuck)
    client.until(lambda: stuck_log.heads, what="the stuck stream's HEADERS")
    began = time.monotonic()
    # meanwhile another stream on the same connection is served
    other = client.get("/closed-window-meanwhile")
    client.grant(1 << 20, other)
    assert client.response(other).status == 200
    assert stuck_log.reset is None
    client.until(lambda: stuck_log.reset is not None, timeout=5,
                 what="the stuck stream to be reset")
    waited = time.monotonic() - began
    assert 0.8 <= waited < 4.0, waited  # downstream_write_timeout = 1s (+ sweep tick)
    assert stuck_log.reset == Codes.CANCEL
    assert stuck_log.received == 0 and not stuck_log.ended
    # the connection itself lives on
    after = client.get("/closed-window-after")
    client.grant(1 << 20, after)
    assert client.response(after).status == 200
    assert client.goaways == [] and not client.eof


# --- 2. rapid reset -----------------------------------------------------------------


def test_rapid_reset_burst_ends_the_connection_with_enhance_your_calm(proxy) -> None:
    workers = proxy.proc.worker_pids()
    client = proxy.client()
    for i in range(1000):
        stream = client.h2.get_next_available_stream_id()
        client.log(stream)
        client.h2.send_headers(stream, client.fields(f"/rr/{i}".encode()), end_stream=True)
        client.h2.reset_stream(stream, Codes.CANCEL)
    client.flush()  # one burst
    client.wait_closed()
    assert client.goaways, "no GOAWAY before the close"
    assert client.goaways[-1][1].error_code == Codes.ENHANCE_YOUR_CALM
    # the worker is fine: a new connection is served by the same process
    served_normally(proxy, "/rr-after")
    assert proxy.proc.worker_pids() == workers
    assert len(proxy.forwarded("/rr/")) <= 110


# --- 3. header list limits ----------------------------------------------------------


def big_fields(total: int) -> Fields:
    """Header fields adding up to ``total`` bytes of list (8 KiB values)."""
    fields = []
    for i in range(total // 8192 + 1):
        fields.append((f"x-big-{i}".encode(), b"v" * 8000))
    return fields


def test_header_list_over_the_advertised_limit_gets_431_on_its_stream(proxy) -> None:
    # the client acknowledges the server's SETTINGS and sends the oversized request in
    # the same write
    client = proxy.client(handshake=False)
    client.until(lambda: client.server_settings is not None, what="the server's SETTINGS")
    assert client.server_settings[Settings.MAX_HEADER_LIST_SIZE] == 32768
    big = client.open(client.fields(b"/big-headers", extra=big_fields(40 * 1024)))
    assert client.response(big).status == 431
    fine = client.get("/fine")
    assert client.response(fine).status == 200
    assert client.goaways == [] and not client.eof
    assert proxy.forwarded("/big-headers") == []
    assert len(proxy.forwarded("/fine")) == 1


def test_header_list_over_the_hard_limit_ends_the_connection(proxy) -> None:
    client = proxy.client()
    client.open(client.fields(b"/huge-headers?", extra=big_fields(70 * 1024)))
    client.wait_closed()
    assert client.goaway_summary() == [(0, Codes.ENHANCE_YOUR_CALM)]  # an HPACK bomb
    served_normally(proxy, "/huge-headers-after")
    assert proxy.forwarded("/huge-headers?") == []


# --- 4. CONTINUATION flood ----------------------------------------------------------


def test_continuation_flood_is_cut_off_with_goaway(proxy) -> None:
    client = proxy.client()
    block = hpack.Encoder().encode([*client.fields(b"/flood?"),
                                    (b"x-flood", b"f" * 200_000)], huffman=False)
    pieces = [block[i:i + 200] for i in range(0, len(block), 200)]  # 1,000 fragments
    assert len(pieces) >= 1000
    frames = [HeadersFrame(1, pieces[0], flags=["END_STREAM"]).serialize()]
    frames += [ContinuationFrame(1, piece).serialize() for piece in pieces[1:]]
    began = time.monotonic()
    client.tracking = False  # the h2 client would not follow this
    client.send_raw(b"".join(frames))
    client.wait_closed(timeout=3)
    assert time.monotonic() - began < 2.0
    assert client.goaways and client.goaways[-1][1].error_code == Codes.PROTOCOL_ERROR
    served_normally(proxy, "/flood-after")
    assert proxy.forwarded("/flood?") == []


# --- 5. concurrency -----------------------------------------------------------------


def test_one_hundred_concurrent_streams_on_one_connection(proxy) -> None:
    client = proxy.client(timeout=15)
    assert client.server_settings[Settings.MAX_CONCURRENT_STREAMS] == 100
    began = time.monotonic()
    streams = [client.open(client.fields(f"/stall?s=1&i={i}".encode()), send=False)
               for i in range(100)]
    client.flush()
    logs = [client.log(s) for s in streams]
    client.until(lambda: all(log.done for log in logs), timeout=15,
                 what="all 100 responses")
    elapsed = time.monotonic() - began
    assert [log.status for log in logs] == [200] * 100
    assert all(log.ended and log.reset is None for log in logs)
    assert elapsed < 8.0, elapsed  # concurrently: 100 one-second stalls take ~1 s
    assert len(proxy.forwarded("/stall?s=1&i=")) == 100
    assert client.goaways == []


# --- 6. malformed requests ----------------------------------------------------------


def _req(case: str, method: bytes = b"GET", path: bytes | None = b"/bad",
         authority: bytes = b"127.0.0.1", extra: Fields | None = None) -> Fields:
    """A request head; ``x-case`` tells its copy in the backend's record apart."""
    fields = [(b":method", method), (b":scheme", b"http"), (b":authority", authority)]
    if path is not None:
        fields.append((b":path", path + b"?case=" + case.encode()))
    return [*fields, (b"x-case", case.encode()), *(extra or [])]


#: name: (header block, request body or None, the answer: a status on the stream, or
#: "reset" for RST_STREAM PROTOCOL_ERROR on that stream only (RFC 9113 §8.1.1: a
#: malformed request is a stream error), the connection going on)
MALFORMED: dict[str, tuple[Fields, bytes | None, int | str]] = {
    "missing-path": (_req("missing-path", path=None), None, "reset"),
    "uppercase-name": (_req("uppercase-name", extra=[(b"X-Upper", b"1")]), None, "reset"),
    "connection-header": (_req("connection-header", extra=[(b"connection", b"keep-alive")]),
                          None, "reset"),
    "te-gzip": (_req("te-gzip", extra=[(b"te", b"gzip")]), None, "reset"),
    "nul-in-value": (_req("nul-in-value", extra=[(b"x-a", b"a\x00b")]), None, "reset"),
    "pseudo-after-regular": (_req("pseudo-after-regular", extra=[(b":method", b"GET")]),
                             None, "reset"),
    "invalid-authority": (_req("invalid-authority", authority=b"bad host/"), None, 400),
    "connect": ([(b":method", b"CONNECT"), (b":authority", b"example.com:443"),
                 (b"x-case", b"connect")], None, 405),
    "absolute-path": (_req("absolute-path", path=b"http://127.0.0.1/bad"), None, 400),
    "content-length-mismatch": (_req("content-length-mismatch", b"POST",
                                     extra=[(b"content-length", b"10")]),
                                b"x" * 20, "reset"),
    "content-length-not-digits": (_req("content-length-not-digits", b"POST",
                                       extra=[(b"content-length", b"1x")]), b"x", "reset"),
    "content-length-2-to-the-64-plus-5": (
        _req("content-length-2-to-the-64-plus-5", b"POST",
             extra=[(b"content-length", b"18446744073709551621")]), None, 400),
    "ctl-in-value": (_req("ctl-in-value", extra=[(b"x-a", b"a\x01b\x7f")]), None, 400),
}


def _send_malformed(client: H2Client, case: str) -> int:
    fields, body, _ = MALFORMED[case]
    stream = client.open(fields, end_stream=body is None, send=body is None)
    if body is not None:
        client.h2.send_data(stream, body, end_stream=True)
        client.flush()  # the head and the wrong-sized body in one write
    return stream


def first_reset(client: H2Client, stream: int) -> int | None:
    """The code of the server's first RST_STREAM on ``stream`` (DATA the client sent
    after it may draw a second one, STREAM_CLOSED)."""
    return next((f.error_code for f in client.frames
                 if isinstance(f, RstStreamFrame) and f.stream_id == stream), None)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_is_refused_and_not_forwarded(proxy, case: str) -> None:
    expected = MALFORMED[case][2]
    client = proxy.client(validate=False)  # the h2 client's own checks off
    stream = _send_malformed(client, case)
    log = client.log(stream)
    client.until(lambda: log.done, what=f"the answer on stream {stream}")
    if expected == "reset":
        assert first_reset(client, stream) == Codes.PROTOCOL_ERROR and not log.heads
    else:
        assert log.status == expected
    # the connection goes on: a next stream on it is served
    after = client.open(client.fields(f"/malformed-after?case={case}".encode()))
    assert client.response(after).status == 200
    assert client.goaways == [] and not client.eof
    assert [r for r in proxy.backend.requests()
            if ["x-case", case] in r["headers"] or f"case={case}" in r["target"]] == \
        [r for r in proxy.forwarded(f"/malformed-after?case={case}")]


@pytest.mark.parametrize("case", ["te-gzip", "content-length-mismatch", "connection-header"])
def test_malformed_stream_is_reset_while_its_sibling_gets_200(proxy, case: str) -> None:
    client = proxy.client(validate=False)
    sibling = client.open(client.fields(f"/stall?s=0.5&sibling={case}".encode()))
    bad = _send_malformed(client, case)
    bad_log, sibling_log = client.log(bad), client.log(sibling)
    client.until(lambda: bad_log.done and sibling_log.done, what="both streams")
    assert first_reset(client, bad) == Codes.PROTOCOL_ERROR
    assert sibling_log.status == 200 and sibling_log.ended and sibling_log.reset is None
    assert client.goaways == [] and not client.eof
    assert len(proxy.forwarded(f"sibling={case}")) == 1
    assert not [r for r in proxy.backend.requests() if ["x-case", case] in r["headers"]]


# --- 7. drain on reload -------------------------------------------------------------


def test_reload_drains_with_two_goaways_and_finishes_the_stream(
        tmp_path: Path, pingap, backends, port) -> None:
    """The in-flight stream is an upload whose end the client holds back until both
    GOAWAYs have arrived, so it is in flight for certain however long the new
    generation takes to boot."""
    backend = backends()

    def config(marker: str) -> str:
        return proxy_config(port, backend.addr, server=SERVER,
                            basic=f'pid_file = "{tmp_path}/pingap.pid"',
                            location=f'proxy_set_headers = ["X-Config:{marker}"]'
                            ).replace('grace_period = "1s"', 'grace_period = "10s"')

    proc = pingap(config("gen-1"), port=port)
    setup = Proxy(port, backend, proc)
    try:
        client = setup.client(timeout=15)
        stream = client.open(client.fields(b"/upload?drain", b"POST", [
            (b"content-length", b"10")]), end_stream=False)
        client.send_body(stream, b"01234", end_stream=False)
        log = client.log(stream)
        (tmp_path / "pingap.toml").write_text(config("gen-2"))
        os.kill(proc.pid, signal.SIGHUP)
        client.until(lambda: len(client.goaways) >= 2, what="both GOAWAYs")
        first, final = (frame for _, frame in client.goaways)
        assert (first.last_stream_id, first.error_code) == ((1 << 31) - 1, Codes.NO_ERROR)
        assert (final.last_stream_id, final.error_code) == (stream, Codes.NO_ERROR)
        # between the two, the server's PING (answered by the client) measured the round
        # trip in which streams the client had already started could still arrive
        between = client.frames[client.frames.index(first):client.frames.index(final)]
        assert any(isinstance(f, PingFrame) and "ACK" not in f.flags for f in between)
        assert client.pings_answered >= 1
        assert not log.done and not client.eof  # still in flight
        # the rest of the body (raw: the h2 client state machine stops at a GOAWAY)
        client.send_raw(DataFrame(stream, b"56789", flags=["END_STREAM"]).serialize())
        client.until(lambda: log.done, what="the in-flight response")
        assert log.status == 200 and log.ended and log.reset is None
        assert json.loads(log.body)["sha256"] == hashlib.sha256(b"0123456789").hexdigest()
        client.wait_closed()  # its last stream done, the old worker closes the connection
        # a new connection is served by the new generation
        fresh = setup.client()
        reply = fresh.response(fresh.get("/new"))
        assert reply.status == 200
        assert ["x-config", "gen-2"] in [[k.lower(), v] for k, v in
                                         json.loads(reply.body)["headers"]]
    finally:
        setup.close_clients()


def test_client_goaway_lets_the_in_flight_stream_finish(proxy) -> None:
    """A client shutting down gracefully (GOAWAY NO_ERROR with a request still in
    flight) gets its response; then the server closes the connection."""
    client = proxy.client()
    stream = client.open(client.fields(b"/upload?client-goaway", b"POST", [
        (b"content-length", b"10")]), end_stream=False)
    client.send_body(stream, b"01234", end_stream=False)
    log = client.log(stream)
    client.tracking = False  # h2 would stop at its own GOAWAY: raw frames from here
    client.send_raw(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
    assert [f for f in client.quiet(0.2) if isinstance(f, (GoAwayFrame, RstStreamFrame))] == []
    client.send_raw(DataFrame(stream, b"56789", flags=["END_STREAM"]).serialize())
    client.until(lambda: log.done, what="the in-flight response")
    assert log.status == 200 and log.ended and log.reset is None
    assert json.loads(log.body)["length"] == 10
    client.wait_closed()


# --- 8. trailers --------------------------------------------------------------------


def test_request_and_response_trailers(proxy) -> None:
    client = proxy.client()
    stream = client.open(client.fields(b"/upload?trailers", b"POST"), end_stream=False)
    client.send_body(stream, b"hello", end_stream=False)
    client.h2.send_headers(stream, [(b"x-req-check", b"42")], end_stream=True)
    client.flush()
    upload = client.response(stream)
    assert upload.status == 200
    assert json.loads(upload.body)["length"] == 5
    record = proxy.forwarded("/upload?trailers")
    assert len(record) == 1
    assert [[k.lower(), v] for k, v in record[0]["trailers"]] == [["x-req-check", "42"]]

    reply = client.response(client.get("/trailers"))
    assert reply.status == 200 and bytes(reply.body) == b"hello"
    assert reply.trailers == [(b"x-checksum", b"abc123")]
    last = reply.last_frame
    assert isinstance(last, HeadersFrame) and "END_STREAM" in last.flags
