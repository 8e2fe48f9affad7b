"""The fast server-side HTTP/1.1 codec: llhttp (httptools) reads request heads — no I/O.

``FastServerCodec`` implements ``pingap.http1.ServerCodec`` with the same events, the same
accept/reject decisions and statuses and the same event fields as ``H11ServerCodec``, the
reference (``tests/unit/test_codec_differential.py`` holds them to that over the corpus
and >10,000 generated and mutated requests), at a fraction of its cost. Shared with the
h11 codec, so they cannot differ: the head limits (``HeadScanner``), the proxy's checks on
a parsed head (``BaseServerCodec``: version, framing, Host, target), the response side.

How a request is read, and why:

* **The head** is handed over whole: ``HeadScanner`` applies the limits and finds its end,
  then llhttp in strict mode tokenises it in C (request line and fields, one callback per
  field) — about three times cheaper than the per-line regexes of a Python parser. The
  request line is split here (llhttp knows a fixed list of methods; we take the bytes).
* **Where llhttp is stricter than h11** — an obs-fold (h11 unfolds it to SP, as RFC 9112
  §5.2 allows), bare LF line ends (§2.2), a method that is a token but not one llhttp
  knows (``get``), any ``HTTP/d.d``, repeated identical Content-Length, Content-Length
  with Transfer-Encoding — llhttp's error only means "not plain": the head is read again
  by ``parse_head``, a small Python parser of h11's grammar, which gives h11's verdict
  or fields. Such heads are rare, so that path costs nothing in practice. llhttp's
  error never decides anything by itself.
* **Where llhttp is more lenient than h11**, the checks are here: request lines it reads
  its own way (HTTP/0.9 lines, a CR skipped before the line, doubled spaces, an empty
  CONNECT target — all sent to ``parse_head``), a value's trailing whitespace (kept by
  llhttp, dropped by h11), Content-Length lists, more than one Transfer-Encoding or one
  that is not exactly ``chunked`` (501), more than one Host, a missing Host on HTTP/1.1 —
  in ``_head_fields``, in h11's order, so that the first problem decides the status as it
  does there. A count of fields against the head's lines proves llhttp saw the lines the
  scanner did.
* **Bodies** are framed here, not by llhttp: a Content-Length body is sliced off the
  buffer; a chunked body goes through a small state machine with h11's grammar (chunk
  size of 1-20 hex digits, extensions accepted and dropped — they are never forwarded,
  since bodies are re-chunked upstream — exactly CRLF after the data, a trailer section
  read like a head), so body events split exactly where h11's do, pipelined requests stay
  in the buffer, and a request whose body is cut short fails the same way.
* **A head sent again**, byte for byte, right after the same head on the same connection
  (a poller, a health check, a benchmark's client) gives the request the first reading
  gave, with fields of its own, without parsing it again (``_read_again``); only a
  body-less head of at most ``LAST_HEAD_MAX`` bytes that kept the connection open is
  kept, one per connection. A browser's requests differ from each other and gain nothing.
* **After the message** the codec behaves as h11's client state would: a request that
  asked for an Upgrade leaves the connection waiting (never reused unless the switch is
  taken); one that disabled h11's keep-alive refuses further bytes.
"""

from __future__ import annotations

import re

import httptools

from pingap.errors import DownstreamError
from pingap.events import (
    NEED_DATA,
    BodyReceived,
    ConnectionEnded,
    Event,
    MessageEnded,
    NeedData,
    RequestReceived,
)
from pingap.headers import Headers
from pingap.http1 import (
    MAX_BODY_LENGTH,
    BaseServerCodec,
    H1Limits,
    check_field_values,
    closed_before_head,
    forwardable_trailers,
)

__all__ = ["FastServerCodec", "parse_head"]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VCHARS = re.compile(rb"[\x21-\x7e]+")
_PROTOCOL = re.compile(rb"HTTP/[0-9]\.[0-9]")
# h11's field values: SP/HTAB inside, never NUL, CR, LF, VT or FF (the other control
# characters are refused after, by ``check_field_values``, in h11's order)
_BAD_VALUE = re.compile(rb"[\x00\r\n\x0b\x0c]")
# chunk-size [ ";" anything but LF ] OWS CRLF - h11 accepts (and drops) any extension text
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*\r\n")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_OWS = (b" ", b"\t")
_MAX_LENGTH_DIGITS = 20

# what the client side of the connection is doing
_HEAD = 0          # waiting for a complete request head
_END = 1           # head read, body complete: MessageEnded is next
_LENGTH = 2        # a Content-Length body, ``_remaining`` bytes to come
_CHUNK_SIZE = 3    # chunked: a chunk-size line is next
_CHUNK_DATA = 4    # chunked: ``_remaining`` bytes of the current chunk
_CHUNK_CRLF = 5    # chunked: the CRLF after chunk data (``_discard``: what is left of it)
_TRAILERS = 6      # chunked: the trailer section
_DONE = 7          # the request is complete
_CLOSED = 8        # the client closed after a complete request
_ERROR = 9         # the request was refused

# what follows a complete request (h11's client states after EndOfMessage)
_KEEP = 0          # DONE: bytes after it wait for the next cycle
_MUST_CLOSE = 1    # keep-alive off (Connection: close, HTTP/1.0): more bytes are an error
_SWITCH = 2        # Upgrade asked: nothing more is read as HTTP

#: the longest head a connection keeps to recognise when it comes again (a browser's
#: with its cookies may be longer: it is then parsed every time)
LAST_HEAD_MAX = 2048

_HeadFacts = tuple[Headers, int | None, bool, bytes | None, int, bool, bool, bool, bool]


class _FieldCollector:
    """llhttp's callback target: the (name, value) pairs of one head, in order."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: Headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))


def _bad(message: str, status: int = 400) -> DownstreamError:
    return DownstreamError(message, status=status)


def parse_fields(lines: list[bytes]) -> Headers:
    """Field lines (terminators removed) read as h11 reads them: an obs-fold line joins
    the previous one with a single SP; ``token ":" OWS value OWS``; a value holds no NUL,
    CR, LF, VT or FF. DownstreamError(400) otherwise."""
    joined: list[bytes] = []
    for line in lines:
        if line[:1] in _OWS:
            if not joined:
                raise _bad("continuation line at start of headers")
            joined[-1] += b" " + line.lstrip(b" \t")
        else:
            joined.append(line)
    fields: Headers = []
    for line in joined:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _bad("illegal header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise _bad("illegal header line")
        fields.append((name, value))
    return fields


def _lines(block: bytes) -> list[bytes]:
    """The lines of a head or trailer block that ends with its empty line (LF or CRLF
    terminated, one CR removed from each), the empty line left out."""
    lines = block.split(b"\n")
    del lines[-2:]
    return [line[:-1] if line[-1:] == b"\r" else line for line in lines]


def parse_head(head: bytes) -> tuple[bytes, bytes, bytes, Headers]:
    """h11's reading of a complete head: ``(method, target, version, fields)``, or
    DownstreamError(400) - and no control character but HTAB in a value (the rule of
    both codecs; strict llhttp refuses them too). The slow path, for heads strict llhttp
    refuses."""
    lines = _lines(head)
    if not lines:
        raise _bad("no request line received")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _bad("illegal request line")
    method, target, protocol = parts
    if not (_TOKEN.fullmatch(method) and _VCHARS.fullmatch(target)
            and _PROTOCOL.fullmatch(protocol)):
        raise _bad("illegal request line")
    fields = parse_fields(lines[1:])
    check_field_values(fields)
    return method, target, protocol[5:], fields


# the fields _head_fields looks at; every other field passes through untouched
_F_LENGTH, _F_CODING, _F_HOST, _F_CONNECTION, _F_EXPECT, _F_UPGRADE = range(6)
_SPECIAL = {b"content-length": _F_LENGTH, b"transfer-encoding": _F_CODING,
            b"host": _F_HOST, b"connection": _F_CONNECTION, b"expect": _F_EXPECT,
            b"upgrade": _F_UPGRADE}
# field names (as sent) known to be none of those: most clients repeat the same few
_plain_names: set[bytes] = set()


def _head_fields(fields: Headers) -> _HeadFacts:
    """Normalise fields as h11 does and collect what the codec needs from them.

    Content-Length: a list of identical values becomes one, decimal of at most 20
    digits, repeats must agree (only the first is kept); Transfer-Encoding: one field,
    exactly ``chunked`` after lower-casing (else 501). Values must already be stripped.
    Returns (fields, content_length, chunked, host, hosts, close, close_token, expect,
    upgrade): ``close`` is the proxy's "close anywhere in Connection", ``close_token``
    h11's "a close element", ``upgrade`` an Upgrade field with an element.
    """
    headers: Headers = []
    keep = headers.append
    special = _SPECIAL.get
    content_length: int | None = None
    seen_length = b""
    chunked = False
    host: bytes | None = None
    hosts = 0
    close = close_token = expect = upgrade = False
    for field in fields:
        name = field[0]
        if name in _plain_names:
            keep(field)
            continue
        kind = special(name.lower())
        if kind is None:
            if len(_plain_names) < 1024:
                _plain_names.add(name)
            keep(field)
            continue
        value = field[1]
        if kind == _F_LENGTH:
            values = {item.strip() for item in value.split(b",")}
            if len(values) != 1:
                raise _bad("conflicting Content-Length headers")
            value = values.pop()
            if not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                raise _bad("bad Content-Length")
            if content_length is None:
                content_length = int(value)
                seen_length = value
                keep((name, value))
            elif value != seen_length:
                raise _bad("conflicting Content-Length headers")
            continue
        if kind == _F_CODING:
            if chunked:
                raise _bad("multiple Transfer-Encoding headers", 501)
            value = value.lower()
            if value != b"chunked":
                raise _bad("Only Transfer-Encoding: chunked is supported", 501)
            chunked = True
            field = (name, value)
        elif kind == _F_HOST:
            hosts += 1
            host = value
        elif kind == _F_CONNECTION:
            lowered = value.lower()
            if b"close" in lowered:
                close = True
                close_token = close_token or b"close" in [t.strip() for t in lowered.split(b",")]
        elif kind == _F_EXPECT:
            expect = expect or value.lower() == b"100-continue"
        else:
            upgrade = upgrade or any(t.strip() for t in value.split(b","))
        keep(field)
    return headers, content_length, chunked, host, hosts, close, close_token, expect, upgrade


class FastServerCodec(BaseServerCodec):
    """llhttp for heads, Python for framing; h11's decisions (see the module doc)."""

    def __init__(self, limits: H1Limits | None = None) -> None:
        super().__init__(limits)
        self._state = _HEAD
        self._after = _KEEP
        self._remaining = 0       # body bytes still to come (Content-Length or chunk)
        self._discard = b""       # the part of a chunk's CRLF still to come
        self._search = 0          # where to resume looking for a line end in _buf
        self._max_incomplete = self.limits.max_head + 8192  # as h11's buffer limit
        self._collector = _FieldCollector()
        # reused while requests come without bodies on a kept-alive connection
        self._parser: httptools.HttpRequestParser | None = None
        #: the last head read whole without a body (``LAST_HEAD_MAX``), the request it
        #: made and that request's fields as they were: a client repeating it exactly
        #: (a poller, a health check, a benchmark) is not parsed again
        self._last: tuple[bytes, RequestReceived, tuple[tuple[bytes, bytes], ...]] | None = None

    # --- input ----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if data:
            self._buf += data
        else:
            self._closed = True

    @property
    def request_in_progress(self) -> bool:
        """True while part of a request (head or body) has been received."""
        state = self._state
        if state == _HEAD:
            return bool(self._buf.strip(b"\r\n"))
        return _END <= state <= _TRAILERS

    def next_event(self) -> Event | NeedData:
        state = self._state
        if state == _HEAD:
            buf = self._buf
            end = self._scanner.scan(buf)
            if not end:
                if self._closed:
                    return closed_before_head(buf)
                return NEED_DATA
            self._informational_sent = False
            self._state = _ERROR  # until the head is accepted
            return self._read_head(end)
        if state == _END:
            self._state = _DONE
            return MessageEnded(trailers=[])
        if state == _DONE:
            return self._after_message()
        try:
            if state == _LENGTH:
                return self._length_body()
            if state == _CHUNK_SIZE or state == _CHUNK_DATA or state == _CHUNK_CRLF \
                    or state == _TRAILERS:
                return self._chunked_body()
        except DownstreamError:
            self._state = _ERROR
            raise
        if state == _CLOSED:
            return ConnectionEnded()
        raise _bad("Can't receive data when peer state is ERROR")

    # --- the head -------------------------------------------------------------

    def _read_head(self, end: int) -> RequestReceived:
        buf = self._buf
        if end == len(buf):
            head = bytes(buf)
            buf.clear()
        else:
            head = bytes(buf[:end])
            del buf[:end]
        last = self._last
        if last is not None and last[0] == head:
            return self._read_again(last[1], last[2])
        request = self._read_new_head(head)
        if self._state == _END and self._after == _KEEP and request.keep_alive \
                and end <= LAST_HEAD_MAX:
            self._last = (head, request, tuple(request.headers))
        return request

    def _read_again(self, request: RequestReceived,
                    headers: tuple[tuple[bytes, bytes], ...]) -> RequestReceived:
        """The connection's last head, sent again byte for byte: the same verdict and
        the same request (its own copy of the fields, which plugins may edit), without
        parsing it again. Only heads of body-less requests that keep the connection open
        are kept (``_read_head``), so this is where their reading leaves the codec."""
        self._writer.start(request.method, request.http_version, request.keep_alive)
        self._after = _KEEP
        self._state = _END
        return RequestReceived(
            method=request.method, target=request.target, headers=list(headers),
            http_version=request.http_version, keep_alive=request.keep_alive,
            expect_continue=request.expect_continue, content_length=request.content_length,
            chunked=False, host=request.host, path=request.path, query=request.query)

    def _read_new_head(self, head: bytes) -> RequestReceived:
        fields = self._llhttp_fields(head)
        parts: list[bytes] = []
        if fields is not None:
            # llhttp skips a CR before the request line, takes HTTP/0.9 lines ("GET /"
            # ended by LF or CRLF), extra spaces and an empty CONNECT target: only
            # "method SP target SP HTTP/d.d CRLF" as the very first line is its reading
            # of an h11 request line
            line_end = head.find(b"\n") - 1
            if head[line_end] == 13 and head[0] != 13:
                parts = head[:line_end].split(b" ")
        if fields is not None and len(parts) == 3 and parts[1] and parts[2][:5] == b"HTTP/" \
                and len(parts[2]) == 8:
            method, target, protocol = parts
            version = protocol[5:]
        else:  # a head strict llhttp refuses or reads otherwise: h11's grammar decides
            method, target, version, fields = parse_head(head)
        (headers, content_length, chunked, host, hosts, close, close_token, expect,
         upgrade) = _head_fields(fields)
        if hosts == 0 and version == b"1.1":
            raise _bad("Missing mandatory Host: header")
        if hosts > 1:
            raise _bad("Found multiple Host: headers")
        request = self._checked_request(
            method, target, version, headers, content_length=content_length,
            chunked=chunked, host=host, close=close, expect_continue=expect)
        if upgrade:
            self._after = _SWITCH
        elif close_token or version < b"1.1":
            self._after = _MUST_CLOSE
        else:
            self._after = _KEEP
        if chunked:
            self._state = _CHUNK_SIZE
            self._search = 0
            self._parser = None
        elif content_length:
            self._state = _LENGTH
            self._remaining = content_length
            self._parser = None
        else:
            self._state = _END
        return request

    def _llhttp_fields(self, head: bytes) -> Headers | None:
        """The head's fields as strict llhttp reads them; None when it refuses the head
        (or reads other lines than the scanner did)."""
        collector = self._collector
        fields = collector.fields = []
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(collector)
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            self._parser = None  # paused on Upgrade/CONNECT; the head itself was read
        except httptools.HttpParserError:
            self._parser = None
            return None
        else:
            if not parser.should_keep_alive():
                self._parser = None
        if len(fields) != head.count(b"\n") - 2:
            self._parser = None
            return None
        if b" \r\n" in head or b"\t\r\n" in head:  # llhttp keeps trailing OWS; h11 does not
            return [(name, value.rstrip(b" \t")) for name, value in fields]
        return fields

    # --- bodies ---------------------------------------------------------------

    def _need(self) -> NeedData:
        """More bytes are needed to finish the current body element (h11's limits)."""
        if len(self._buf) > self._max_incomplete:
            raise _bad("Receive buffer too long", 431)
        if self._closed:
            raise _bad("peer closed connection without sending complete message body")
        return NEED_DATA

    def _length_body(self) -> BodyReceived | NeedData:
        buf = self._buf
        if not buf:
            return self._need()
        data = self._take_body(buf)
        if not self._remaining:
            self._state = _END
        return BodyReceived(data=data)

    def _take_body(self, buf: bytearray) -> bytes:
        """Up to ``_remaining`` body bytes off the front of the buffer."""
        remaining = self._remaining
        if len(buf) <= remaining:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:remaining])
            del buf[:remaining]
        self._remaining = remaining - len(data)
        return data

    def _chunked_body(self) -> BodyReceived | MessageEnded | NeedData:
        buf = self._buf
        state = self._state
        if state == _CHUNK_CRLF:
            want = self._discard
            got = bytes(buf[:len(want)])
            if not got:
                return self._need()
            if got != want[:len(got)]:
                raise _bad("malformed chunk footer")
            del buf[:len(got)]
            self._discard = want = want[len(got):]
            if want:
                return self._need()
            state = self._state = _CHUNK_SIZE
        if state == _CHUNK_SIZE:
            nl = buf.find(b"\r\n", self._search)
            if nl < 0:
                self._search = max(0, len(buf) - 1)
                return self._need()
            self._search = 0
            line = bytes(buf[:nl + 2])
            del buf[:nl + 2]
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                raise _bad("illegal chunk header")
            size = int(match[1], 16)
            if size > MAX_BODY_LENGTH:
                raise _bad("chunk size too large")
            if size:
                self._remaining = size
                state = self._state = _CHUNK_DATA
            else:
                state = self._state = _TRAILERS
        if state == _CHUNK_DATA:
            if not buf:
                return self._need()
            data = self._take_body(buf)
            if not self._remaining:
                self._state = _CHUNK_CRLF
                self._discard = b"\r\n"
            return BodyReceived(data=data)
        return self._trailers()

    def _trailers(self) -> MessageEnded | NeedData:
        buf = self._buf
        if buf[:1] == b"\n":
            del buf[:1]
            lines: list[bytes] = []
        elif buf[:2] == b"\r\n":
            del buf[:2]
            lines = []
        else:
            found = _BLANK_LINE.search(buf, self._search)
            if found is None:
                self._search = max(0, len(buf) - 2)
                return self._need()
            self._search = 0
            end = found.end()
            lines = _lines(bytes(buf[:end]))
            del buf[:end]
        trailers: Headers = []
        if lines:
            fields = _head_fields(parse_fields(lines))[0]
            check_field_values(fields)
            trailers = forwardable_trailers(fields)
        self._state = _DONE
        return MessageEnded(trailers=trailers)

    def _after_message(self) -> NeedData | ConnectionEnded:
        after = self._after
        if after == _SWITCH:
            return NEED_DATA  # the rest belongs to the new protocol, if the switch happens
        if self._buf:
            if after == _MUST_CLOSE:
                self._state = _ERROR
                raise _bad("Got data when expecting EOF")
            return NEED_DATA  # the next request: read after start_next_cycle
        if self._closed:
            self._state = _CLOSED
            return ConnectionEnded()
        return NEED_DATA

    # --- output and cycles ----------------------------------------------------

    def informational(self, status: int) -> bytes:
        if self._informational_sent or self._state == _HEAD:
            return b""
        self._informational_sent = True
        return self._writer.informational(status)

    def detach(self) -> bytes:
        """After a 101: the bytes the client sent past its request (new protocol)."""
        return bytes(self._buf)

    def reusable(self) -> bool:
        writer = self._writer
        return (self._state == _DONE and self._after == _KEEP and writer.done
                and not writer.must_close and not self._closed)

    def start_next_cycle(self) -> None:
        self._scanner.reset()
        self._state = _HEAD
        self._search = 0
        self._writer.start(b"GET", b"1.1", False)
