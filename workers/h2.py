"""HTTP/2 to clients: ALPN ``h2`` on TLS servers and h2c with prior knowledge on plain
ones, for servers with ``enabled_h2``.

One greenlet per connection reads frames and feeds them to the ``h2`` library (no frame
or HPACK code here); each request stream is an ``H2Stream`` running in its own greenlet
through its own ``Exchange`` (so the same ``ProxySession``, plugins, upstream handling,
access log and metrics) as HTTP/1.1.

Defences and limits:

- SETTINGS: at most ``MAX_CONCURRENT_STREAMS`` streams, ``MAX_HEADER_LIST`` bytes of
  headers (a larger list up to the HPACK decoder's hard limit gets 431 on its stream;
  beyond it the connection ends), 1 MiB initial stream window, 16 MiB connection window.
- Flow control both ways: request DATA is acknowledged only once the stream has taken
  it (so a slow upstream slows the client down); response DATA waits for the client's
  window (so a slow client slows the upstream read).
- Rapid reset (CVE-2023-44487): more than ``RESET_LIMIT`` client resets within
  ``RESET_WINDOW`` seconds ends the connection with GOAWAY ENHANCE_YOUR_CALM. A stream
  reset before its greenlet ran costs no upstream work at all.
- Control-frame floods: more than ``CONTROL_LIMIT`` PING, SETTINGS, PRIORITY, empty DATA
  or crumb-sized WINDOW_UPDATE (< ``CONTROL_CRUMB`` bytes) frames within
  ``CONTROL_WINDOW`` seconds end the connection with GOAWAY ENHANCE_YOUR_CALM, as rapid
  reset does. Whatever arrives, the reader feeds the state machine ``FEED_SIZE`` bytes at
  a time and yields to the hub every ``workers.turns.FRAMES_PER_TURN`` frames, so a client
  that keeps the socket full never starves the worker.
- CONTINUATION floods are cut off by the h2 library (64 frames per header block).
- A malformed request (RFC 9113 §8.1.1: a bad character, an uppercase or
  connection-specific field, ``te`` other than ``trailers``, a pseudo-header problem, a
  bad or conflicting Content-Length, DATA that disagrees with it, trailers without
  END_STREAM) resets its own stream with PROTOCOL_ERROR; its siblings go on. The h2
  library would end the whole connection for these, so ``_StreamErrorsH2`` runs its
  header checks per stream (``validate_inbound_headers`` off, ``validate_headers`` on
  each block here) and turns its Content-Length errors into stream resets. Frame, HPACK
  and state errors stay connection errors.
- Drain (reload, upgrade, stop): a GOAWAY with the maximal stream id, then — one PING
  round trip later, so requests already in flight are not refused — the final GOAWAY
  with the last stream id we accept; the connection closes once those streams finish.
  The h2 state machine refuses to send anything after its own GOAWAY, so these two are
  serialized with hyperframe and written after the state machine's pending bytes.
- A client's GOAWAY (a client shutting down gracefully, e.g. Go's ``Shutdown``, sends it
  with requests still in flight) never reaches the state machine either: once h2 has
  received a GOAWAY it refuses every later frame and every response frame, which would
  kill the streams the client is still waiting for. ``_GoawaySplitter`` takes those
  frames out of the byte stream; with NO_ERROR the connection then takes no new streams
  and closes once the open ones finish, with an error code it ends at once.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING

import gevent
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.utilities
from gevent.event import Event
from gevent.lock import Semaphore
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame

from pingap.context import ConnectionInfo
from pingap.errors import ClientGone, DownstreamError
from pingap.events import BodyReceived, JoinedPieces, MessageEnded
from pingap.h2request import request_from_h2
from pingap.headers import HOP_BY_HOP, Headers
from pingap.http1 import check_field_values
from workers.exchange import Downstream, Exchange
from workers.h2upstream import CLOSED_STREAMS_KEPT, release_machine
from workers.runners import RUNNERS, Job
from workers.turns import FRAMES_PER_TURN, Turn

if TYPE_CHECKING:
    from pingap.runtime import ServerRuntime
    from workers.services import RequestServices

log = logging.getLogger("pingap.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
READ_SIZE = 65536
DEFAULT_IDLE_TIMEOUT = 60.0
MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST = 32768           # advertised; the same limit as an HTTP/1 head
HARD_HEADER_LIST = 65536          # what the HPACK decoder accepts before failing the connection
STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 16 << 20
#: response bytes the streams may queue for the connection's batched flush; past it a
#: stream writes them itself (and so waits for the client to read)
FLUSH_AT = 16384
RESET_LIMIT = 100
RESET_WINDOW = 1.0
CONTROL_LIMIT = 1000              # control frames per CONTROL_WINDOW before ENHANCE_YOUR_CALM
CONTROL_WINDOW = 1.0
CONTROL_CRUMB = 1024              # a WINDOW_UPDATE opening less than this counts as control
FEED_SIZE = 4096                  # bytes handed to the state machine between two checks
GOAWAY_ROUND_TRIP = 5.0           # how long to wait for the drain PING's answer at most
CLOSE_LINGER = 2.0                # after the final GOAWAY, wait this long for the client's close
LAST_STREAM_ID = (1 << 31) - 1
_DRAIN_PING = b"pingapgo"
_FRAME_HEADER = 9
_GOAWAY_TYPE = 0x7
_MAX_GOAWAY = 16384               # SETTINGS_MAX_FRAME_SIZE we accept (the default)

_NO_BODY_STATUS = frozenset({204, 304})


def _h2_fields(headers: Headers) -> Headers:
    """Response fields as HTTP/2 sends them: lower-case, no connection-specific ones."""
    return [(name.lower(), value) for name, value in headers
            if name.lower() not in HOP_BY_HOP]


class _GoawaySplitter:
    """Splits the client's byte stream at frame boundaries and takes its GOAWAY frames
    out; everything else passes through untouched (payloads are not buffered)."""

    def __init__(self) -> None:
        self._preface_left = len(PREFACE)  # the preface comes before any frame
        self._pass_left = 0                # bytes of the current frame still to pass
        self._pending = b""                # an incomplete frame header or GOAWAY frame

    def feed(self, data: bytes) -> tuple[bytes, list[GoAwayFrame]]:
        """(the bytes for the state machine, the GOAWAY frames that were in ``data``)."""
        buf = memoryview(self._pending + data if self._pending else data)
        self._pending = b""
        out: list[bytes | memoryview] = []
        goaways: list[GoAwayFrame] = []
        i = 0
        while i < len(buf):
            through = self._preface_left or self._pass_left
            if through:
                piece = buf[i:i + through]
                out.append(piece)
                i += len(piece)
                if self._preface_left:
                    self._preface_left -= len(piece)
                else:
                    self._pass_left -= len(piece)
                continue
            if len(buf) - i < _FRAME_HEADER:
                self._pending = bytes(buf[i:])
                break
            length = int.from_bytes(buf[i:i + 3], "big")
            if buf[i + 3] != _GOAWAY_TYPE or length > _MAX_GOAWAY:
                self._pass_left = _FRAME_HEADER + length  # (an oversized one: h2 fails it)
                continue
            end = i + _FRAME_HEADER + length
            if len(buf) < end:
                self._pending = bytes(buf[i:])
                break
            frame, _ = Frame.parse_frame_header(buf[i:i + _FRAME_HEADER])
            try:
                frame.parse_body(buf[i + _FRAME_HEADER:end])
            except Exception:  # malformed (e.g. too short): let h2 fail the connection
                out.append(buf[i:end])
            else:
                if isinstance(frame, GoAwayFrame) and frame.stream_id == 0:
                    goaways.append(frame)
                else:
                    out.append(buf[i:end])
            i = end
        return b"".join(out), goaways


_REQUEST_FLAGS = h2.utilities.HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)
_TRAILER_FLAGS = _REQUEST_FLAGS._replace(is_trailer=True)


_CONTROL_EVENTS = (h2.events.PingReceived, h2.events.RemoteSettingsChanged,
                   h2.events.SettingsAcknowledged, h2.events.PriorityUpdated,
                   h2.events.WindowUpdated, h2.events.DataReceived)


def _is_control(event: h2.events.Event) -> bool:
    """Whether an event of ``_CONTROL_EVENTS`` counts against the control-frame budget:
    DATA only when empty and not ending its stream, WINDOW_UPDATE only in crumbs."""
    if isinstance(event, h2.events.DataReceived):
        return not event.data and event.stream_ended is None
    if isinstance(event, h2.events.WindowUpdated):
        return (event.delta or 0) < CONTROL_CRUMB
    return True


class _StreamErrorsH2(h2.connection.H2Connection):
    """The h2 state machine with malformed requests as stream errors (RFC 9113 §8.1.1).

    h2 raises a ProtocolError - a connection error - for a bad Content-Length and for
    DATA that disagrees with it, after the frame has updated HPACK, flow control and the
    stream's state. Those errors come from the stream's own checks, so when the stream is
    still open afterwards only the stream is reset (and a ``StreamReset`` event with
    ``remote_reset=False`` tells the reader); any other error, or one that closed the
    stream, stays a connection error. Header validation is off in the configuration and
    done per stream by ``H2Connection._valid_block``.
    """

    MAX_CLOSED_STREAMS = CLOSED_STREAMS_KEPT

    def _receive_headers_frame(self, frame: HeadersFrame
                               ) -> tuple[list[Frame], list[h2.events.Event]]:
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.ProtocolError as exc:
            return self._stream_error(frame.stream_id, exc)

    def _receive_data_frame(self, frame: DataFrame
                            ) -> tuple[list[Frame], list[h2.events.Event]]:
        try:
            return super()._receive_data_frame(frame)
        except h2.exceptions.InvalidBodyLengthError as exc:
            frames, events = self._stream_error(frame.stream_id, exc)
            # the DATA counted against the connection window: give it back
            self.acknowledge_received_data(frame.flow_controlled_length, frame.stream_id)
            return frames, events

    def _stream_error(self, stream_id: int, exc: h2.exceptions.ProtocolError
                      ) -> tuple[list[Frame], list[h2.events.Event]]:
        stream = self.streams.get(stream_id)
        if (isinstance(exc, h2.exceptions.StreamClosedError | h2.exceptions.TooManyStreamsError
                       | h2.exceptions.FlowControlError)
                or stream is None or stream.closed):
            raise exc
        log.info("h2 stream %d malformed: %s", stream_id, exc)
        self.reset_stream(stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        return [], [h2.events.StreamReset(stream_id=stream_id,
                                          error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR,
                                          remote_reset=False)]


class _Writer:
    """The deadline the sweeper watches while the writer greenlet sends."""

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline = 0.0


class H2Connection:
    """Serves one HTTP/2 client connection until it closes."""

    def __init__(self, services: RequestServices, server: ServerRuntime,
                 sock: socket.socket, conn: ConnectionInfo, initial: bytes = b"") -> None:
        self.services = services
        self.server = server
        self.sock = sock
        self.conn = conn
        self.initial = initial
        self.idle_timeout = server.read_timeout or DEFAULT_IDLE_TIMEOUT
        self.write_timeout = server.write_timeout or DEFAULT_IDLE_TIMEOUT
        # header blocks are validated per stream (``_valid_block``), never skipped
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_inbound_headers=False)
        self.h2 = _StreamErrorsH2(config=config)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        })
        self.streams: dict[int, H2Stream] = {}
        self.deadline = 0.0
        self._write_lock = Semaphore()
        self._resets: deque[float] = deque()
        self._control_count = 0
        self._control_since = 0.0
        self._turn = Turn(FRAMES_PER_TURN)
        self._draining = False            # first GOAWAY sent
        self._last_stream: int | None = None  # final GOAWAY sent with this id
        self._drain_acked = Event()
        self._dead = False
        self._ended_by = "killed"  # why the reader stopped, for the log
        self._splitter = _GoawaySplitter()
        # small responses are written by one writer job once the streams that can run
        # in this loop turn have run (``flush_soon``): one send for many streams
        self._flush_wanted = False
        self._writer = _Writer()
        self._writer_job: Job | None = None  # runs while a flush is wanted, then ends
        #: response body bytes queued since the last flush
        self.queued = 0

    @property
    def busy(self) -> bool:
        """Streams are open, or a drain has not yet told the client its last stream."""
        return bool(self.streams) or (self._draining and self._last_stream is None)

    # --- output -------------------------------------------------------------------

    def flush(self, owner: H2Connection | H2Stream | _Writer | None = None,
              extra: bytes = b"") -> None:
        """Write what the state machine has queued (then ``extra``), in order."""
        who = owner or self
        with self._write_lock:
            self.queued = 0
            data = self.h2.data_to_send() + extra
            if not data:
                return
            if self._dead:
                raise ClientGone("connection closed")
            previous = who.deadline
            who.deadline = time.monotonic() + self.write_timeout
            try:
                self.sock.sendall(data)
            except OSError as exc:  # TimeoutError included: the client stopped reading
                self._dead = True
                raise ClientGone(str(exc)) from exc
            finally:
                who.deadline = previous

    def flush_soon(self) -> None:
        """Write what is queued after the greenlets that can run now have run, so the
        frames of every stream answered in this loop turn go out in one send. For small
        writes only: past ``FLUSH_AT`` queued bytes a stream flushes itself, which keeps
        it paced by the client's reading."""
        self._flush_wanted = True
        if self._writer_job is None:
            self._writer_job = RUNNERS.spawn(self._write_wanted)
            self.services.streams[self._writer] = self._writer_job

    def _write_wanted(self) -> None:
        """The writer: flushes while flushes are wanted (a stream may want one while it
        sends), then ends, so an idle connection holds no writer greenlet."""
        try:
            while self._flush_wanted and not self._dead:
                self._flush_wanted = False
                self.flush(self._writer)
        except ClientGone:
            pass  # the reader sees the connection end too
        finally:
            self._writer_job = None
            self.services.streams.pop(self._writer, None)

    def _goaway(self, last_stream_id: int, code: int = 0) -> None:
        frame = GoAwayFrame(stream_id=0, last_stream_id=last_stream_id, error_code=code)
        self.flush(extra=frame.serialize())

    # --- the reader loop ----------------------------------------------------------

    def run(self) -> None:
        try:
            self.h2.initiate_connection()
            self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
            self.flush()
            data = self.initial
            while True:
                if data:
                    data, goaways = self._splitter.feed(data)
                    for offset in range(0, len(data), FEED_SIZE):
                        if not self._receive(data[offset:offset + FEED_SIZE]):
                            return
                    for goaway in goaways:  # after the frames that came with it
                        if not self._client_goaway(goaway):
                            return
                    self.flush()
                closing = self._last_stream is not None and not self.streams
                if closing:
                    # told the client its last stream and answered it: wait (briefly) for
                    # the client to close first, so no unread byte turns our close into
                    # a reset that could destroy the end of the last response
                    if not self.deadline:
                        self.deadline = time.monotonic() + CLOSE_LINGER
                elif self.streams:
                    self.deadline = 0.0
                else:
                    self.deadline = time.monotonic() + self.idle_timeout
                try:
                    data = self.sock.recv(READ_SIZE)
                except TimeoutError:
                    if not closing and self._last_stream is None:
                        self._goaway(self.h2.highest_inbound_stream_id)
                    return
                if not data:
                    self._ended_by = "client closed"
                    return
        except (OSError, ClientGone) as exc:
            self._ended_by = f"{type(exc).__name__}: {exc}"
            return
        finally:
            self._dead = True
            if self._writer_job is not None:
                self._writer_job.kill(block=False)  # one not started yet never runs:
                self.services.streams.pop(self._writer, None)  # so unregister it here
            if self.streams:
                log.info("h2 connection from %s ended with %d streams open (%s)",
                         self.conn.remote_addr, len(self.streams),
                         self._ended_by)
            for stream in list(self.streams.values()):
                stream.abort()
            release_machine(self.h2)
            try:
                self.sock.close()
            except OSError:
                pass

    def _receive(self, data: bytes) -> bool:
        """Feed the state machine and act on its events; False to end the connection."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("h2 protocol error from %s: %s", self.conn.remote_addr, exc)
            self.flush()  # the library queued its GOAWAY
            return False
        for event in events:
            if not self._handle(event):
                return False
            if isinstance(event, _CONTROL_EVENTS) and _is_control(event) \
                    and not self._count_control():
                log.warning("h2 control frame flood from %s: closing the connection",
                            self.conn.remote_addr)
                self.h2.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
                self.flush()
                return False
        self._turn.spend(len(events))
        return True

    def _count_control(self) -> bool:
        """Record a control frame; False once the client sends too many."""
        now = time.monotonic()
        if now - self._control_since > CONTROL_WINDOW:
            self._control_since = now
            self._control_count = 0
        self._control_count += 1
        return self._control_count <= CONTROL_LIMIT

    def _handle(self, event: object) -> bool:
        """Act on one h2 event; False to end the connection."""
        if isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.finished:
                stream.push(BodyReceived(data=event.data), event.flow_controlled_length)
                if event.stream_ended is not None:
                    stream.push(MessageEnded(), 0)
            elif event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.RequestReceived):
            if self._valid_block(event.stream_id, event.headers, _REQUEST_FLAGS):
                self._start_stream(event)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if not self._valid_block(event.stream_id, event.headers, _TRAILER_FLAGS):
                if stream is not None:
                    stream.abort()
            elif stream is not None:
                stream.push(MessageEnded(trailers=list(event.headers)), 0)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.ended_pushed:
                stream.push(MessageEnded(), 0)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.abort()
            if event.remote_reset and not self._count_reset():
                log.warning("h2 rapid reset from %s: closing the connection",
                            self.conn.remote_addr)
                self.h2.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
                self.flush()
                return False
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            for stream in self.streams.values():
                stream.window_open.set()
        elif isinstance(event, h2.events.SettingsAcknowledged):
            # Our advertised limit stays MAX_HEADER_LIST; lists between it and the hard
            # limit are decoded and answered with 431 on their stream only.
            self.h2.decoder.max_header_list_size = HARD_HEADER_LIST
        elif isinstance(event, h2.events.PingAckReceived):
            if event.ping_data == _DRAIN_PING:
                self._drain_acked.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            return False
        return True

    def _valid_block(self, stream_id: int, headers: Headers | None,
                     flags: h2.utilities.HeaderValidationFlags) -> bool:
        """Whether a header block passes h2's checks (and, for trailers, the
        control-character rule of ``check_field_values``); if not, its stream is reset
        with PROTOCOL_ERROR - the connection and the other streams go on."""
        try:
            fields = list(h2.utilities.validate_headers(headers or [], flags))
            if flags.is_trailer:
                check_field_values(fields)
        except (h2.exceptions.ProtocolError, DownstreamError) as exc:
            log.info("h2 stream %d from %s malformed: %s", stream_id,
                     self.conn.remote_addr, exc)
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return False
        return True

    def _client_goaway(self, frame: GoAwayFrame) -> bool:
        """The client's GOAWAY; False to end the connection now."""
        if frame.error_code != h2.errors.ErrorCodes.NO_ERROR:
            log.info("h2 GOAWAY from %s: error %d", self.conn.remote_addr, frame.error_code)
            return False
        # graceful: finish the open streams, take no new ones, then close
        if self._last_stream is None:
            self._last_stream = self.h2.highest_inbound_stream_id
        return True

    def _count_reset(self) -> bool:
        """Record a client reset; False once the client resets too much."""
        now = time.monotonic()
        resets = self._resets
        resets.append(now)
        while resets and resets[0] < now - RESET_WINDOW:
            resets.popleft()
        return len(resets) <= RESET_LIMIT

    def _start_stream(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if self._last_stream is not None and stream_id > self._last_stream:
            log.info("h2 stream %d from %s refused: it came after the final GOAWAY (last "
                     "stream %d)", stream_id, self.conn.remote_addr, self._last_stream)
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        stream = H2Stream(self, stream_id, list(event.headers), event.stream_ended is not None)
        self.streams[stream_id] = stream
        stream.job = RUNNERS.spawn(stream.run)
        self.services.streams[stream] = stream.job

    def stream_done(self, stream: H2Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        self.services.streams.pop(stream, None)
        # hand back the connection window the stream's unread DATA still holds
        unread = stream.unacked
        stream.unacked = 0
        if unread and not self._dead:
            self.h2.acknowledge_received_data(unread, stream.stream_id)
            try:
                self.flush()
            except ClientGone:
                pass
        if self._last_stream is not None and not self.streams:
            self.deadline = time.monotonic() + CLOSE_LINGER  # the reader closes by then

    # --- drain --------------------------------------------------------------------

    def drain(self) -> None:
        """Stop taking new streams, let the open ones finish (reload/upgrade/stop)."""
        if self._draining or self._dead:
            return
        self._draining = True
        gevent.spawn(self._drain)

    def _drain(self) -> None:
        try:
            self._goaway(LAST_STREAM_ID)
            self.h2.ping(_DRAIN_PING)
            self.flush()
            self._drain_acked.wait(GOAWAY_ROUND_TRIP)
            self._last_stream = self.h2.highest_inbound_stream_id
            self._goaway(self._last_stream)
        except (ClientGone, OSError):
            self._last_stream = self._last_stream or 0
        if not self.streams:
            self.deadline = time.monotonic() + CLOSE_LINGER


class H2Stream(Downstream):
    """One request stream: the Downstream hooks map onto HEADERS/DATA frames."""

    def __init__(self, connection: H2Connection, stream_id: int, headers: Headers,
                 end_stream: bool) -> None:
        self.connection = connection
        self.services = connection.services
        self.server = connection.server
        self.conn = connection.conn
        self.stream_id = stream_id
        self.headers = headers
        self.end_stream = end_stream
        self.deadline = 0.0
        self.busy = True
        self.finished = False       # our side ended (response complete or stream aborted)
        self.ended_pushed = False
        self.job: Job | None = None  # the stream's run, in a reusable greenlet
        self.window_open = Event()
        self.unacked = 0
        self._events: deque[tuple[object, int]] = deque()
        self._joined = JoinedPieces()  # body pieces the stream has not taken yet, as one
        self._arrived = Event()
        self._head: Headers | None = None
        #: the newest body piece, not yet handed to the state machine: ``write_end``
        #: sends it with END_STREAM (one DATA frame, not a second empty one to end it)
        self._held: bytes | None = None
        self._aborted = False
        self._head_only = False
        self.response_ended = False   # the response's END_STREAM was queued
        self._reset_code = h2.errors.ErrorCodes.INTERNAL_ERROR  # if it never is
        if end_stream:
            self.push(MessageEnded(), 0)

    # --- from the reader ----------------------------------------------------------

    def push(self, event: object, flow_length: int) -> None:
        if isinstance(event, MessageEnded):
            if self.ended_pushed:
                return
            self.ended_pushed = True
        self.unacked += flow_length
        events = self._events
        # a client's tiny DATA frames cost their bytes, not a queued event each
        if events and self._joined.join(events[-1][0], event):
            events[-1] = (events[-1][0], events[-1][1] + flow_length)
        else:
            events.append((event, flow_length))
        self._arrived.set()

    def abort(self) -> None:
        """The client reset the stream, or the connection is gone."""
        self._aborted = True
        self.finished = True
        self._arrived.set()
        self.window_open.set()
        job = self.job
        if job is None or job.is_current():
            return
        if not job.started:  # reset before it ran: it never will, nothing was sent upstream
            job.kill(block=False)
            self.connection.stream_done(self)
        elif not job.dead:
            job.kill(ClientGone("stream reset"), block=False)

    # --- the stream's greenlet ----------------------------------------------------

    def run(self) -> None:
        connection = self.connection
        try:
            try:
                request = request_from_h2(self.headers, end_stream=self.end_stream)
            except DownstreamError as err:
                self.reject(err)
                return
            self.conn.requests += 1
            self._head_only = request.method == b"HEAD"
            Exchange(connection.services, self, request).serve()
        except ClientGone:
            pass
        except h2.exceptions.ProtocolError as exc:  # e.g. the stream closed under us
            log.debug("h2 stream %d: %s", self.stream_id, exc)
        finally:
            try:
                if not self.response_ended:
                    # the exchange gave up mid-response (the client's window stayed shut
                    # past the write timeout, the upstream failed after the head): the
                    # client must learn that this stream is over
                    if not self._aborted and not connection._dead:
                        log.info("h2 stream %d from %s ended before its response did",
                                 self.stream_id, self.conn.remote_addr)
                    self._reset(self._reset_code)
                elif not self.ended_pushed:
                    # answered before the request body ended (RFC 9113 §8.1)
                    self._reset(h2.errors.ErrorCodes.NO_ERROR)
            finally:
                self.finished = True
                self.busy = False
                connection.stream_done(self)

    def _reset(self, code: int) -> None:
        """RST_STREAM from our side, unless the stream or the connection is gone."""
        connection = self.connection
        if self._aborted or connection._dead:
            return
        try:
            connection.h2.reset_stream(self.stream_id, code)
            connection.flush(self)
        except (h2.exceptions.ProtocolError, ClientGone):  # closed meanwhile
            pass

    def reject(self, err: DownstreamError) -> None:
        body = f"{err.message}\n".encode()
        self.write_head(err.status, [(b"content-type", b"text/plain; charset=utf-8"),
                                     (b"content-length", str(len(body)).encode())])
        self.write_body(body)
        self.write_end(None)
        self.flush()
        log.info("rejected h2 request from %s: %d %s", self.conn.remote_addr, err.status,
                 err.message)

    # --- Downstream hooks ---------------------------------------------------------

    def next_event(self) -> object:
        while not self._events:
            if self._aborted:
                raise ClientGone("stream reset")
            self._arrived.clear()
            self.deadline = time.monotonic() + self.connection.idle_timeout
            try:
                self._arrived.wait()
            except TimeoutError as exc:
                raise DownstreamError("Request Timeout", status=408) from exc
            finally:
                self.deadline = 0.0
        event, flow_length = self._events.popleft()
        event = self._joined.take(event)
        if flow_length:
            self.unacked -= flow_length
            connection = self.connection
            if not connection._dead and not self._aborted:
                connection.h2.acknowledge_received_data(flow_length, self.stream_id)
                connection.flush(self)
        return event

    def write_head(self, status: int, headers: Headers, reason: bytes = b"") -> None:
        self._head = [(b":status", str(status).encode()), *_h2_fields(headers)]
        if status in _NO_BODY_STATUS:
            self._head_only = True

    def _send_head(self, end_stream: bool) -> None:
        head = self._head
        if head is None:
            return
        self._head = None
        self._check()
        self.connection.h2.send_headers(self.stream_id, head, end_stream=end_stream)
        self.response_ended = end_stream

    def write_body(self, data: bytes) -> None:
        self._send_head(False)
        if self._head_only or not data:
            return
        if self._held is not None:
            self._send_held(False)
        self._held = data
        connection = self.connection
        connection.queued += len(data)
        if connection.queued > FLUSH_AT:
            self._send_held(False)
            connection.flush(self)

    def _send_held(self, end_stream: bool) -> None:
        """Hand the held body piece to the state machine in frames the client's window
        allows (waiting for it to open); the last frame ends the stream if asked."""
        data = self._held
        self._held = None
        if data is None:
            return
        connection = self.connection
        conn = connection.h2
        view = memoryview(data)
        while view:
            self._check()
            window = min(conn.local_flow_control_window(self.stream_id),
                         conn.max_outbound_frame_size)
            if window <= 0:
                connection.flush(self)
                self.window_open.clear()
                self.deadline = time.monotonic() + connection.write_timeout
                try:
                    self.window_open.wait()
                except TimeoutError as exc:
                    self._reset_code = h2.errors.ErrorCodes.CANCEL
                    raise ClientGone("client flow-control window stayed closed") from exc
                finally:
                    self.deadline = 0.0
                continue
            if len(view) <= window:
                conn.send_data(self.stream_id, data if len(view) == len(data) else view.tobytes(),
                               end_stream=end_stream)
                return
            conn.send_data(self.stream_id, view[:window].tobytes())
            view = view[window:]

    def write_end(self, trailers: Headers | None) -> None:
        conn = self.connection.h2
        if self._head is not None:
            self._send_head(not trailers or self._head_only)
            if not trailers or self._head_only:
                return
        self._check()
        if trailers and not self._head_only:
            self._send_held(False)
            conn.send_headers(self.stream_id, _h2_fields(trailers), end_stream=True)
        elif self._held is not None:
            self._send_held(True)
        else:
            conn.end_stream(self.stream_id)
        self.response_ended = True

    def flush(self, more: bool = False) -> None:
        if self._held is not None:
            self._send_held(False)
        self.connection.flush_soon()

    def send_informational(self, status: int) -> None:
        self._check()
        self.connection.h2.send_headers(self.stream_id, [(b":status", str(status).encode())])
        self.connection.flush(self)

    def _check(self) -> None:
        if self._aborted or self.connection._dead:
            raise ClientGone("stream reset")


def is_preface(data: bytes) -> bool:
    """Whether the first bytes of a connection start the HTTP/2 preface (h2c)."""
    n = min(len(data), len(PREFACE))
    return n > 0 and data[:n] == PREFACE[:n]

