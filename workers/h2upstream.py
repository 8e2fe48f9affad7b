"""HTTP/2 to a backend: one multiplexed client connection on the ``h2`` library.

``H2UpstreamConnection`` owns a connected socket (TLS with ALPN ``h2``, or plain TCP for
h2c with prior knowledge). It sends the preface and SETTINGS at once, then one reader
greenlet per connection feeds every byte to ``h2`` and hands the resulting events to the
streams they belong to; whoever sends (a stream, the reader acknowledging SETTINGS)
drains ``h2``'s output under one send lock, so frames never interleave.

Each request is an ``H2UpstreamStream`` speaking the same events as the HTTP/1.1 client
(``pingap.events``: ``ResponseStarted`` with ``http_version="2"``, ``ResponseData``,
``ResponseEnded``), so the request path relays either the same way.

Key decisions:

* Back-pressure both ways. Received DATA is acknowledged to the backend only when the
  consumer takes it (``next_events``), so a slow client slows the backend instead of
  filling our memory: at most ``STREAM_WINDOW`` bytes wait per stream. The connection
  window is larger (``CONNECTION_WINDOW``) so one stalled stream does not block the
  others. ``send_data`` sends no more than the backend's window and frame size allow and
  blocks (this greenlet only) until a WINDOW_UPDATE opens it again.
* Concurrency: at most ``min(max_streams, the peer's SETTINGS_MAX_CONCURRENT_STREAMS)``
  open streams; ``available`` says whether a new one fits, ``open_stream`` waits for a
  slot if it does not. ``wait_ready`` waits for the backend's first SETTINGS, so the
  limit is known before streams pile on (and a backend that does not speak HTTP/2 is
  found out before a request is sent). No PING keep-alive: the pool closes idle ones.
* A GOAWAY makes the connection unavailable for new streams; streams it accepted finish,
  streams above its last-stream-id fail as retryable (the backend never processed them),
  and the connection closes itself once its last stream ends. REFUSED_STREAM is
  retryable too; any other failure says whether response bytes had arrived.
* Every ``h2`` call that queues frames runs under the send lock together with the write
  of what it queued (``_sending``), so ``h2``'s output buffer is empty whenever nobody
  holds the lock: no greenlet's frames can be sent out of order, or lost when ``h2``
  clears its buffer on receiving a GOAWAY.
* ``h2`` treats a received GOAWAY as the end of the connection and would reject the
  frames of the streams the GOAWAY lets finish (even later frames of the same read);
  ``_GoawayTolerantConnection`` keeps its state machine open after a GOAWAY, and the
  connection refuses new streams itself.
* Writes run under the socket's timeout (``write_timeout``); a write that fails or
  times out leaves the connection unusable, so it fails the connection and every stream.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from socket import socket
from typing import Any

import gevent
import h2.exceptions
from gevent.event import Event
from gevent.lock import Semaphore
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.settings import SettingCodes, Settings

from pingap.errors import H2StreamError, UpstreamTimeout
from pingap.events import (
    JoinedPieces,
    ResponseData,
    ResponseEnded,
    ResponseEvent,
    ResponseStarted,
)
from pingap.headers import HOP_BY_HOP, Headers
from pingap.upstream import Backend

READ_SIZE = 65536
#: receive window per stream: the most response bytes held for a consumer not reading
STREAM_WINDOW = 256 * 1024
#: receive window of the whole connection, shared by its streams
CONNECTION_WINDOW = 16 * 1024 * 1024
DEFAULT_WRITE_TIMEOUT = 60.0
_DEFAULT_WINDOW = 65535
#: stop opening streams this close to the end of the stream-id space
_LAST_STREAM_ID = 2**31 - 1 - 2 * 1000
#: how many closed streams an h2 state machine (this client's, and the server's in
#: ``workers.h2``) remembers, and how each closed. ``h2`` keeps 65,536 per connection by
#: default: ~140 bytes each, so a long-lived connection grew by up to ~9 MB. What the
#: memory buys is small: DATA, WINDOW_UPDATE and RST_STREAM on a forgotten stream are
#: handled as on a remembered one (a stream error or nothing); only a late HEADERS on a
#: stream we reset more than this many streams ago becomes a connection error.
#: RFC 9113 §5.1 lets an endpoint limit how long it ignores frames after a RST_STREAM.
#: 128 is more than the streams a client may have open at once (``MAX_CONCURRENT_STREAMS``
#: in ``workers.h2``), and ~18 KB per busy connection (512 kept ~70 KB).
CLOSED_STREAMS_KEPT = 128


def release_machine(machine: H2Connection) -> None:
    """Break the reference cycle an ``h2`` connection forms with itself (its frame dispatch
    table holds its own bound methods) once nothing will feed it frames again, so the
    state machine (its streams, HPACK tables and closed-stream record) is freed when its
    owner lets go of it instead of at the cyclic collector's next full pass. Only
    ``receive_data`` reads the table: the caller is the connection's reader, at its end."""
    machine._frame_dispatch_table = {}  # type: ignore[attr-defined]


#: HTTP/1 headers that mean nothing (or are forbidden) in HTTP/2; TE is kept for "trailers"
_CONNECTION_SPECIFIC = HOP_BY_HOP | {b"host"}


class _GoawayTolerantConnection(H2Connection):
    """``h2`` with RFC 9113 §6.8 semantics for a received GOAWAY: streams up to its
    last-stream-id may complete, so the connection state stays open (``h2`` would close
    it and reject every further frame). New streams are refused by our own ``goaway``."""

    MAX_CLOSED_STREAMS = CLOSED_STREAMS_KEPT

    def _receive_goaway_frame(self, frame: Any) -> Any:
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = ConnectionState.CLIENT_OPEN
        return result


def request_headers(method: bytes, scheme: bytes, authority: bytes, path: bytes,
                    headers: Headers) -> Headers:
    """HTTP/1-style request headers as an HTTP/2 header block (pseudo-headers first).

    Names are lower-cased; connection-specific headers are dropped, ``TE`` survives only
    as ``trailers``, and ``Host`` becomes ``:authority`` when no authority is given.
    """
    fields: Headers = []
    host = b""
    for name, value in headers:
        low = name.lower()
        if low in _CONNECTION_SPECIFIC:
            if low == b"host" and not host:
                host = value
            elif low == b"te" and b"trailers" in (t.split(b";")[0].strip()
                                                   for t in value.lower().split(b",")):
                fields.append((b"te", b"trailers"))
            continue
        fields.append((low, value))
    head = [(b":method", method), (b":scheme", scheme),
            (b":authority", authority or host), (b":path", path or b"/")]
    return head + fields


def trailer_headers(trailers: Headers) -> Headers:
    """Request trailers as HTTP/2 needs them: lower-case, no connection-specific fields."""
    return [(n.lower(), v) for n, v in trailers
            if n.lower() not in _CONNECTION_SPECIFIC and not n.startswith(b":")]


class H2UpstreamStream:
    """One request on an ``H2UpstreamConnection``; used by one greenlet at a time."""

    __slots__ = ("_events", "_joined", "_ready", "_trailers", "_unacked", "_writable",
                 "buffered", "conn", "error", "local_ended", "remote_ended", "send_error",
                 "started", "stream_id")

    #: whatever happens to one stream, the shared connection stays (its own failures
    #: close it); a stream is never upgraded nor spliced: the relay loop asks, as it asks
    #: an ``H1UpstreamStream`` (``workers.h1upstream``)
    reusable = True
    upgraded = False
    leftover = b""

    def __init__(self, conn: H2UpstreamConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self._events: deque[ResponseEvent] = deque()
        self._joined = JoinedPieces()  # body pieces the relay has not taken yet, as one
        self._ready = Event()      # events queued, or the stream failed
        self._writable = Event()   # the send window may have opened, or the stream failed
        self._trailers: Headers = []
        self._unacked = 0          # flow-controlled bytes received, not yet consumed
        #: response body bytes queued for the consumer (bounded by the stream window)
        self.buffered = 0
        self.started = False       # a final response head arrived
        self.local_ended = False   # we sent END_STREAM (or reset)
        self.remote_ended = False  # the backend sent END_STREAM (or reset)
        self.error: H2StreamError | None = None       # raised by next_events
        self.send_error: H2StreamError | None = None  # raised by send_data / end

    # --- the consumer's side ------------------------------------------------------

    def next_events(self, timeout: float) -> list[ResponseEvent]:
        """The response events received so far, waiting up to ``timeout`` seconds for one.

        Taking body bytes here is what lets the backend send more (flow control). Raises
        H2StreamError when the stream failed (after any events that preceded the failure)
        and UpstreamTimeout when nothing arrived in time. Empty once the response ended.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._events:
                events = [self._joined.take(event) for event in self._events]
                self._events.clear()
                self.buffered = 0
                consumed, self._unacked = self._unacked, 0
                if consumed:
                    try:
                        self.conn._acknowledge(self.stream_id, consumed)
                    except H2StreamError:
                        pass  # the connection failed: the next call raises the error
                return events
            if self.error is not None:
                raise self.error
            if self.remote_ended:
                return []
            remaining = deadline - time.monotonic()
            self._ready.clear()
            if remaining <= 0 or not self._ready.wait(remaining):
                raise UpstreamTimeout("upstream read timed out")

    def send_data(self, data: bytes) -> None:
        """Send request body bytes, blocking while the backend's window is closed."""
        conn = self.conn
        view = memoryview(data)
        while view:
            self._check_sendable()
            self._writable.clear()
            sent = 0
            try:
                with conn._sending():
                    window = conn._h2.local_flow_control_window(self.stream_id)
                    frame = conn._h2.max_outbound_frame_size
                    while view and window > 0:
                        size = min(window, frame, len(view))
                        conn._h2.send_data(self.stream_id, view[:size])
                        view = view[size:]
                        window -= size
                        sent += size
            except h2.exceptions.H2Error as exc:
                raise self._failed_send(exc) from exc
            if not sent and not self._writable.wait(conn.write_timeout):
                raise UpstreamTimeout("upstream write timed out")

    def end(self, trailers: Headers | None = None) -> None:
        """End the request body, with ``trailers`` if any."""
        if self.local_ended:
            return
        self._check_sendable()
        conn = self.conn
        try:
            with conn._sending():
                if trailers:
                    conn._h2.send_headers(self.stream_id, trailer_headers(trailers),
                                          end_stream=True)
                else:
                    conn._h2.end_stream(self.stream_id)
                self.local_ended = True
        except h2.exceptions.H2Error as exc:
            raise self._failed_send(exc) from exc
        conn._stream_progressed(self)

    def reset(self) -> None:
        """Cancel the request (the client went away): RST_STREAM(CANCEL), if still open."""
        if self.local_ended and self.remote_ended:
            return
        conn = self.conn
        try:
            with conn._sending():
                self._close(H2StreamError("stream cancelled", response_started=self.started))
                try:
                    conn._h2.reset_stream(self.stream_id, ErrorCodes.CANCEL)
                except h2.exceptions.H2Error:
                    pass  # already closed on the h2 side
        except H2StreamError:
            self._close(H2StreamError("stream cancelled", response_started=self.started))
        conn._stream_progressed(self)

    def raw_owed(self) -> int:
        return -1

    def splice(self, sink: socket, owed: int, timeout: float) -> ResponseEnded | None:
        return None

    # --- the reader's side ----------------------------------------------------------

    def _push(self, event: ResponseEvent, flow_controlled: int = 0) -> None:
        events = self._events
        # a backend's tiny DATA frames cost their bytes, not a queued event each
        if not (events and self._joined.join(events[-1], event)):
            events.append(event)
        self._unacked += flow_controlled
        if isinstance(event, ResponseData):
            self.buffered += len(event.data)
        self._ready.set()

    def _close(self, err: H2StreamError) -> None:
        """Both directions are over; ``err`` is what further calls raise."""
        if not self.remote_ended:
            self.error = err
        self.send_error = err
        self.local_ended = self.remote_ended = True
        # what the consumer will never take still counts against the connection window
        consumed, self._unacked = self._unacked, 0
        if consumed and not self.conn.closed:
            self.conn._h2.acknowledge_received_data(consumed, self.stream_id)
        self._ready.set()
        self._writable.set()

    def _check_sendable(self) -> None:
        if self.send_error is not None:
            raise self.send_error
        if self.local_ended:
            raise H2StreamError("request body already ended", response_started=self.started)

    def _failed_send(self, exc: Exception) -> H2StreamError:
        return self.send_error or H2StreamError(f"upstream HTTP/2 stream error: {exc}",
                                                response_started=self.started)


class H2UpstreamConnection:
    """An HTTP/2 client connection to one backend, shared by up to ``stream_limit`` requests."""

    protocol = "h2"

    def __init__(self, sock: socket, backend: Backend, now: float, max_streams: int = 1,
                 *, write_timeout: float | None = None) -> None:
        self.sock = sock
        self.backend = backend
        self.created = now
        self.last_used = now       # when the last stream ended (idle since, if none open)
        self.requests = 0          # counted by the caller, like UpstreamConnection's
        self.max_streams = max(1, max_streams)
        self.write_timeout = write_timeout or DEFAULT_WRITE_TIMEOUT
        self.pool_key: Any = None  # set by the pool that shares it
        self.tcp_connect_time: float | None = None
        self.tls_handshake_time: float | None = None
        self.closed = False
        self.goaway = False        # no new streams (GOAWAY received or sent)
        self.streams: dict[int, H2UpstreamStream] = {}
        self._capacity = Event()   # set whenever a stream slot frees or the connection ends
        self._settings = Event()   # the backend's first SETTINGS arrived (or the end)
        self._send_lock = Semaphore()
        config = H2Configuration(client_side=True, header_encoding=None)
        self._h2 = _GoawayTolerantConnection(config=config)
        self._h2.local_settings = Settings(client=True, initial_values={
            SettingCodes.ENABLE_PUSH: 0,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        })
        # writes (and reads) give up after write_timeout; the reader just reads again
        sock.settimeout(self.write_timeout)
        with self._sending():
            self._h2.initiate_connection()
            self._h2.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self._reader = gevent.spawn(self._read_loop)

    # --- state ------------------------------------------------------------------------

    @property
    def stream_limit(self) -> int:
        """Streams open at once: ours (``max_h2_streams``) or the backend's, the lower."""
        return min(self.max_streams, self._h2.remote_settings.max_concurrent_streams)

    @property
    def available(self) -> bool:
        """Alive, not GOAWAY'd, and below the stream limit: a new stream fits now."""
        return (not self.closed and not self.goaway
                and len(self.streams) < self.stream_limit
                and self._h2.highest_outbound_stream_id < _LAST_STREAM_ID)

    def alive(self) -> bool:
        return not self.closed

    def wait_ready(self, timeout: float) -> bool:
        """Wait for the backend's SETTINGS; False if the connection failed or timed out."""
        return self._settings.wait(timeout) and not self.closed

    # --- streams ----------------------------------------------------------------------

    def open_stream(self, method: bytes, scheme: bytes, authority: bytes, path: bytes,
                    headers: Headers, end_stream: bool) -> H2UpstreamStream:
        """Send a request head on a new stream; waits (up to ``write_timeout``) for a slot.

        Raises H2StreamError (retryable: nothing was sent) if the connection is closed or
        closing, UpstreamTimeout if no slot freed in time.
        """
        block = request_headers(method, scheme, authority, path, headers)
        deadline = time.monotonic() + self.write_timeout
        while True:
            if self.closed or self.goaway or (
                    self._h2.highest_outbound_stream_id >= _LAST_STREAM_ID):
                raise H2StreamError("upstream HTTP/2 connection is closing", retryable=True)
            if len(self.streams) >= self.stream_limit:
                remaining = deadline - time.monotonic()
                self._capacity.clear()
                if remaining <= 0 or not self._capacity.wait(remaining):
                    raise UpstreamTimeout("no free upstream HTTP/2 stream")
                continue
            stream = None
            try:
                with self._sending():  # may wait while another greenlet writes
                    if self.goaway or len(self.streams) >= self.stream_limit:
                        continue  # another stream took the slot meanwhile: check again
                    stream_id = self._h2.get_next_available_stream_id()
                    try:
                        self._h2.send_headers(stream_id, block, end_stream=end_stream)
                    except h2.exceptions.H2Error as exc:
                        raise H2StreamError(
                            f"cannot send the request over HTTP/2: {exc}") from exc
                    stream = H2UpstreamStream(self, stream_id)
                    stream.local_ended = end_stream
                    self.streams[stream_id] = stream
            except H2StreamError as err:
                if stream is None and self.closed:  # closed before anything was sent
                    raise H2StreamError(err.message, retryable=True) from err
                raise
            return stream

    def _stream_progressed(self, stream: H2UpstreamStream) -> None:
        """Forget ``stream`` once both sides ended; close after a GOAWAY's last stream."""
        if not (stream.local_ended and stream.remote_ended):
            return
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self.last_used = time.monotonic()
        self._capacity.set()
        if self.goaway and not self.streams:
            self.close()

    # --- I/O ----------------------------------------------------------------------------

    @contextmanager
    def _sending(self) -> Iterator[None]:
        """Hold the send lock for some ``h2`` calls, then write what they queued.

        A failed write fails the whole connection (H2StreamError); so does entering
        after the connection closed.
        """
        with self._send_lock:
            if self.closed:
                raise H2StreamError("upstream HTTP/2 connection closed")
            try:
                yield
            finally:
                data = self._h2.data_to_send()
                if data:
                    try:
                        self.sock.sendall(data)
                    except OSError as exc:  # TimeoutError included: backend not reading
                        message = f"upstream write failed: {exc or 'timed out'}"
                        self._fail(message)
                        raise H2StreamError(message) from exc
                    except BaseException:
                        # killed mid-write (GreenletExit, an injected timeout): a partial
                        # frame may be on the wire, so nothing more can follow it
                        self._fail("upstream write interrupted")
                        raise

    def _acknowledge(self, stream_id: int, size: int) -> None:
        """The consumer took ``size`` flow-controlled bytes: let the backend send more."""
        if not self.closed:
            with self._sending():
                self._h2.acknowledge_received_data(size, stream_id)

    def _read_loop(self) -> None:
        try:
            self._read_frames()
        finally:
            release_machine(self._h2)

    def _read_frames(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(READ_SIZE)
            except TimeoutError:
                continue  # idle: the pool decides when an idle connection goes
            except OSError as exc:
                self._fail(f"upstream connection lost: {exc}")
                return
            if not data:
                self._fail("upstream closed the HTTP/2 connection")
                return
            try:
                events = self._h2.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                self._fail(f"upstream HTTP/2 protocol error: {exc}", goaway=True)
                return
            for event in events:
                self._dispatch(event)
            if self.closed:
                return
            try:
                with self._sending():
                    pass  # SETTINGS and PING acknowledgements, RST_STREAMs
            except H2StreamError:
                return

    def _dispatch(self, event: object) -> None:
        if isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None or stream.remote_ended:
                # a stream we gave up on: hand its bytes back to the connection window
                self._h2.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
            elif event.data or event.flow_controlled_length:
                stream._push(ResponseData(data=event.data), event.flow_controlled_length)
        elif isinstance(event, ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                status = 0
                fields: Headers = []
                for name, value in event.headers:
                    if name == b":status":
                        status = int(value)
                    elif not name.startswith(b":"):
                        fields.append((bytes(name), bytes(value)))
                stream.started = True
                stream._push(ResponseStarted(status=status, reason=b"", headers=fields,
                                             http_version="2"))
        elif isinstance(event, TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._trailers = [(bytes(n), bytes(v)) for n, v in event.headers]
        elif isinstance(event, StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.remote_ended:
                stream.remote_ended = True
                stream._push(ResponseEnded(trailers=stream._trailers, keep_alive=True))
                self._stream_progressed(stream)
        elif isinstance(event, StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                refused = event.error_code == ErrorCodes.REFUSED_STREAM
                code = _error_name(event.error_code)
                stream._close(H2StreamError(
                    f"upstream reset the stream ({code})",
                    retryable=refused and not stream.started,
                    response_started=stream.started))
                self._stream_progressed(stream)
        elif isinstance(event, WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream._writable.set()
            else:
                self._wake_senders()
        elif isinstance(event, RemoteSettingsChanged):
            self._settings.set()
            self._wake_senders()       # a new initial window size opens every stream
            self._capacity.set()       # ... and a new stream limit may have room
        elif isinstance(event, ConnectionTerminated):
            self._on_goaway(event)

    def _wake_senders(self) -> None:
        for stream in self.streams.values():
            stream._writable.set()

    def _on_goaway(self, event: ConnectionTerminated) -> None:
        self.goaway = True
        last = event.last_stream_id if event.last_stream_id is not None else 0
        code = _error_name(event.error_code)
        for stream in [s for sid, s in self.streams.items() if sid > last]:
            stream._close(H2StreamError(f"upstream GOAWAY ({code}) before the stream ran",
                                        retryable=not stream.started,
                                        response_started=stream.started))
            self._stream_progressed(stream)
        self._capacity.set()
        if not self.streams:
            self.close()

    def _fail(self, message: str, *, goaway: bool = False) -> None:
        """The connection is unusable: every open stream fails with ``message``."""
        if self.closed:
            return
        if goaway and self._send_lock.acquire(blocking=False):
            try:  # tell the backend why (h2 queued a GOAWAY), if the socket still takes it
                self.sock.sendall(self._h2.data_to_send())
            except OSError:
                pass
            finally:
                self._send_lock.release()
        self.closed = True
        self.goaway = True
        for stream in list(self.streams.values()):
            stream._close(H2StreamError(message, response_started=stream.started))
        self.streams.clear()
        self._capacity.set()
        self._settings.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def close(self) -> None:
        """Close now: GOAWAY to the backend, then the socket; open streams fail."""
        if self.closed:
            return
        try:
            self._h2.close_connection()  # queues the GOAWAY that _fail sends
        except h2.exceptions.H2Error:
            pass
        self._fail("upstream HTTP/2 connection closed", goaway=True)
        if self._reader is not gevent.getcurrent():
            self._reader.kill(block=False)


def _error_name(code: int | None) -> str:
    try:
        return ErrorCodes(code or 0).name
    except ValueError:
        return str(code)
