"""Tests for pingap.http1_fast.FastServerCodec (httptools), and for choosing the codec.

What the h11 codec does is pinned by tests/unit/test_http1.py and the equivalence of the two
by tests/unit/test_codec_differential.py; these tests state the fast codec's behaviour
directly: pipelining, reads split anywhere, chunked bodies and trailers, limits,
100-continue, Upgrade, keep-alive, and the heads strict llhttp refuses but h11 accepts.
"""

from __future__ import annotations

import pytest

from pingap.config import ConfigError, load_config_text
from pingap.errors import DownstreamError
from pingap.events import (
    NEED_DATA,
    BodyReceived,
    ConnectionEnded,
    MessageEnded,
    RequestReceived,
)
from pingap.http1 import H1Limits
from pingap.http1_fast import FastServerCodec, parse_head
from pingap.http1_h11 import H11ServerCodec
from pingap.runtime import build_runtime


def drain(codec: FastServerCodec) -> list[object]:
    """Events until the codec needs data or the connection ended."""
    out: list[object] = []
    while True:
        event = codec.next_event()
        out.append(event)
        if event is NEED_DATA or isinstance(event, ConnectionEnded):
            return out


def feed(data: bytes, *, eof: bool = False, codec: FastServerCodec | None = None) -> list[object]:
    codec = codec or FastServerCodec()
    codec.receive_data(data)
    if eof:
        codec.receive_data(b"")
    return drain(codec)


def rejection(data: bytes, *, eof: bool = False) -> int:
    with pytest.raises(DownstreamError) as caught:
        feed(data, eof=eof)
    return caught.value.status


def first_request(data: bytes) -> RequestReceived:
    event = feed(data)[0]
    assert isinstance(event, RequestReceived)
    return event


def respond_ok(codec: FastServerCodec) -> bytes:
    return codec.response_head(200, [(b"Content-Length", b"0")]) + codec.end()


def exchange(reads: list[bytes]) -> list[object]:
    """Requests (RequestReceived, body bytes, trailers) read from ``reads`` then EOF, the
    connection reused after each; body pieces are joined, so any split compares equal."""
    codec = FastServerCodec()
    out: list[object] = []
    body = bytearray()

    def run() -> bool:
        while True:
            try:
                event = codec.next_event()
            except DownstreamError as err:
                out.append(("refused", err.status))
                return False
            if event is NEED_DATA:
                return True
            if isinstance(event, ConnectionEnded):
                out.append("end")
                return False
            if isinstance(event, BodyReceived):
                body.extend(event.data)
            elif isinstance(event, MessageEnded):
                out.append((bytes(body), event.trailers))
                body.clear()
                respond_ok(codec)
                if not codec.reusable():
                    out.append("not reusable")
                    return False
                codec.start_next_cycle()
            else:
                out.append(event)

    for data in reads:
        codec.receive_data(data)
        if not run():
            return out
    codec.receive_data(b"")
    run()
    return out


SAMPLES = [
    b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Case: Value \r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Sum: 9\r\nHost: evil\r\n\r\n"
    b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    b"get /lower HTTP/1.1\nHost: x\nX-Fold: a\n  b\n\n",
]


# --- one request -----------------------------------------------------------------------


def test_simple_get_event_fields() -> None:
    events = feed(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: Example.com:8080\r\nX-Custom-Case: v\r\n\r\n")
    request, end, need = events
    assert request == RequestReceived(
        method=b"GET", target=b"/a/b?x=1&y=2",
        headers=[(b"Host", b"Example.com:8080"), (b"X-Custom-Case", b"v")],
        http_version=b"1.1", keep_alive=True, expect_continue=False, content_length=None,
        chunked=False, host=b"Example.com:8080", path=b"/a/b", query=b"x=1&y=2")
    assert end == MessageEnded(trailers=[])
    assert need is NEED_DATA


def test_content_length_body_in_pieces() -> None:
    codec = FastServerCodec()
    codec.receive_data(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhel")
    request = codec.next_event()
    assert isinstance(request, RequestReceived) and request.content_length == 10
    assert codec.next_event() == BodyReceived(data=b"hel")
    assert codec.next_event() is NEED_DATA
    assert codec.request_in_progress
    codec.receive_data(b"lo")
    codec.receive_data(b" worldGET")  # two reads before the next event: one piece
    assert codec.next_event() == BodyReceived(data=b"lo worl")
    assert codec.next_event() == MessageEnded(trailers=[])
    assert not codec.request_in_progress
    assert codec.next_event() is NEED_DATA  # "dGET" waits for the next cycle
    assert codec.detach() == b"dGET"


def test_body_cut_short_by_eof_is_400() -> None:
    assert rejection(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab", eof=True) == 400
    assert rejection(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                     eof=True) == 400


@pytest.mark.parametrize("data", [b"", b"\r\n", b" \t"])
def test_clean_eof_is_connection_ended(data: bytes) -> None:
    assert feed(data, eof=True) == [ConnectionEnded()]


def test_incomplete_head_then_eof_is_400() -> None:
    assert rejection(b"GET / HTTP/1.1\r\nHost: x\r\n", eof=True) == 400


# --- pipelining and split reads ----------------------------------------------------------


def test_pipelined_requests_across_cycles() -> None:
    result = exchange([SAMPLES[1] + SAMPLES[0]])
    first, body, second = result[0], result[1], result[2]
    assert isinstance(first, RequestReceived) and first.path == b"/u"
    assert body == (b"hello", [])
    assert isinstance(second, RequestReceived) and second.path == b"/next"
    assert second.keep_alive is False
    assert result[3:] == [(b"", []), "not reusable"]


def test_three_pipelined_requests_with_a_chunked_body() -> None:
    result = exchange([SAMPLES[2] + SAMPLES[0]])
    paths = [e.path for e in result if isinstance(e, RequestReceived)]
    assert paths == [b"/c", b"/after", b"/a"]
    assert result[1] == (b"abc0123456789abcdef", [(b"X-Sum", b"9")])
    assert result[-1] == "end"


@pytest.mark.parametrize("data", SAMPLES, ids=["get", "length-then-close", "chunked", "lenient"])
def test_every_split_point_gives_the_same_requests(data: bytes) -> None:
    whole = exchange([data])
    assert any(isinstance(e, RequestReceived) for e in whole)
    for cut in range(1, len(data)):
        assert exchange([data[:cut], data[cut:]]) == whole, cut
    assert exchange([data[i:i + 1] for i in range(len(data))]) == whole


def test_crlf_before_and_between_requests_is_ignored() -> None:
    result = exchange([b"\r\n\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"])
    assert [e.path for e in result if isinstance(e, RequestReceived)] == [b"/a", b"/b"]


def test_many_keep_alive_requests_on_one_codec() -> None:
    """The llhttp parser is reused between body-less requests: it must stay in step."""
    codec = FastServerCodec()
    requests = [b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20)]
    requests[7] = b"POST /7 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
    requests[11] = b"get /11 HTTP/1.1\r\nHost: x\r\n\r\n"  # refused by llhttp, read by h11 rules
    for i, data in enumerate(requests):
        codec.receive_data(data)
        events = drain(codec)
        assert isinstance(events[0], RequestReceived) and events[0].path == b"/%d" % i
        respond_ok(codec)
        assert codec.reusable()
        codec.start_next_cycle()


# --- chunked bodies ---------------------------------------------------------------------


def test_chunked_events_match_the_chunks() -> None:
    codec = FastServerCodec()
    codec.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n")
    request = codec.next_event()
    assert isinstance(request, RequestReceived)
    assert request.chunked and request.content_length is None
    assert (b"Transfer-Encoding", b"chunked") in request.headers  # lower-cased, as h11
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"3\r\nabc\r\n4\r\nde")
    assert codec.next_event() == BodyReceived(data=b"abc")
    assert codec.next_event() == BodyReceived(data=b"de")
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"fg\r")
    assert codec.next_event() == BodyReceived(data=b"fg")
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"\n0\r\n\r\n")
    assert codec.next_event() == MessageEnded(trailers=[])


def test_trailers_keep_case_and_drop_framing_fields() -> None:
    events = feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nContent-Length: 5\r\nHost: evil\r\n"
                  b"Connection: close\r\nx-lower:  v \r\n folded\r\n\r\n")
    assert events[1] == BodyReceived(data=b"abc")
    # the fold becomes one SP after what the line had (h11): "v " + " " + "folded"
    assert events[2] == MessageEnded(trailers=[(b"X-Checksum", b"123"), (b"x-lower", b"v  folded")])


@pytest.mark.parametrize(
    ("chunks", "status"),
    [
        (b"0x5\r\nhello\r\n0\r\n\r\n", 400),
        (b"5\r\nhelloXX0\r\n\r\n", 400),
        (b"5\nhello\r\n0\r\n\r\n", 400),
        (b"000000000000000000005\r\nhello\r\n0\r\n\r\n", 400),  # > 20 hex digits
        (b"0\r\nX: a\r\nbad line\r\n\r\n", 400),
        (b"0\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ],
    ids=["0x", "bad-crlf", "bare-lf", "21-digits", "trailer-no-colon", "trailer-te-gzip"],
)
def test_bad_chunked_framing(chunks: bytes, status: int) -> None:
    assert rejection(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunks) == status


def test_chunk_extensions_and_size_whitespace_are_accepted_as_h11_does() -> None:
    events = feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5;name=\"v\" ;x\x01y \t\r\nhello\r\n3 \r\nabc\r\n0;last\r\n\r\n")
    assert events[1:4] == [BodyReceived(data=b"hello"), BodyReceived(data=b"abc"),
                           MessageEnded(trailers=[])]


def test_endless_chunk_size_line_is_431() -> None:
    codec = FastServerCodec()
    codec.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    codec.next_event()
    codec.receive_data(b"5;" + b"x" * 40_000)
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"x" * 2000)
    with pytest.raises(DownstreamError) as caught:
        codec.next_event()
    assert caught.value.status == 431


# --- limits (the shared HeadScanner) -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000)
                                           for i in range(40)) + b"Host: x\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: v\r\n" * 100 + b"\r\n", 431),
    ],
    ids=["request-line", "field-line", "head-size", "field-count"],
)
def test_head_limits_whole_and_line_by_line(data: bytes, status: int) -> None:
    assert rejection(data) == status
    codec = FastServerCodec()
    with pytest.raises(DownstreamError) as caught:
        for piece in data.split(b"\n"):
            codec.receive_data(piece + b"\n")
            codec.next_event()
    assert caught.value.status == status


def test_limits_at_the_edge_are_accepted() -> None:
    assert first_request(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: v\r\n" * 99 + b"\r\n")
    field = b"X-Big: " + b"a" * (8192 - 7)
    assert first_request(b"GET / HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n\r\n")


def test_custom_limits() -> None:
    codec = FastServerCodec(H1Limits(max_fields=2, max_head=64))
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n")
    with pytest.raises(DownstreamError) as caught:
        codec.next_event()
    assert caught.value.status == 431


# --- 100-continue, Upgrade, keep-alive --------------------------------------------------------


def test_expect_100_continue() -> None:
    codec = FastServerCodec()
    assert codec.informational(100) == b""  # no request yet
    codec.receive_data(b"POST /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    request = codec.next_event()
    assert isinstance(request, RequestReceived) and request.expect_continue
    assert codec.next_event() is NEED_DATA
    assert codec.informational(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert codec.informational(100) == b""  # once per request
    codec.receive_data(b"abc")
    assert codec.next_event() == BodyReceived(data=b"abc")
    assert codec.next_event() == MessageEnded(trailers=[])
    respond_ok(codec)
    assert codec.reusable()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: foo\r\nContent-Length: 0\r\n\r\n", False),
        (b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", False),
    ],
)
def test_expect_continue_only_for_http11(head: bytes, expected: bool) -> None:
    assert first_request(head).expect_continue is expected


def test_upgrade_request_detaches_with_the_bytes_after_it() -> None:
    codec = FastServerCodec()
    codec.receive_data(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
                       b"\r\n\x81\x05hello")
    request = codec.next_event()
    assert isinstance(request, RequestReceived)
    assert (b"Upgrade", b"websocket") in request.headers
    assert codec.next_event() == MessageEnded(trailers=[])
    # as h11: nothing after an Upgrade request is read as HTTP, even at EOF
    assert codec.next_event() is NEED_DATA
    head = codec.switching_protocols([(b"Upgrade", b"websocket"), (b"Connection", b"upgrade")])
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert codec.detach() == b"\x81\x05hello"
    assert not codec.reusable()


def test_upgrade_refused_by_the_backend_closes_the_connection() -> None:
    codec = FastServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n")
    drain(codec)
    respond_ok(codec)
    assert not codec.reusable()  # h11's MIGHT_SWITCH_PROTOCOL: never reused


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", b"", True),
        (b"1.1", b"Connection: keep-alive\r\n", True),
        (b"1.1", b"Connection: close\r\n", False),
        (b"1.1", b"Connection: keep-alive, CLOSE\r\n", False),
        (b"1.0", b"", False),
        (b"1.0", b"Connection: keep-alive\r\n", False),
    ],
)
def test_keep_alive_rules(version: bytes, connection: bytes, keep_alive: bool) -> None:
    codec = FastServerCodec()
    codec.receive_data(b"GET / HTTP/" + version + b"\r\nHost: x\r\n" + connection + b"\r\n")
    request = codec.next_event()
    assert isinstance(request, RequestReceived)
    assert request.keep_alive is keep_alive
    drain(codec)
    head = respond_ok(codec)
    assert (b"Connection: close\r\n" in head) is not keep_alive
    assert codec.reusable() is keep_alive


def test_bytes_after_a_closing_request_are_refused_as_h11_does() -> None:
    codec = FastServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n")
    assert isinstance(codec.next_event(), RequestReceived)
    assert codec.next_event() == MessageEnded(trailers=[])
    with pytest.raises(DownstreamError):
        codec.next_event()


def test_not_reusable_after_eof() -> None:
    codec = FastServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    codec.receive_data(b"")
    assert drain(codec)[-1] == ConnectionEnded()
    respond_ok(codec)
    assert not codec.reusable()


# --- where llhttp and h11 differ ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "method", "version", "headers"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n", b"GET", b"1.1",
         [(b"Host", b"x"), (b"X-A", b"a b")]),
        (b"GET / HTTP/1.1\nHost: x\nX-A: a\n\n", b"GET", b"1.1", [(b"Host", b"x"), (b"X-A", b"a")]),
        (b"get / HTTP/1.1\r\nHost: x\r\n\r\n", b"get", b"1.1", [(b"Host", b"x")]),
        (b"loGET / HTTP/1.1\r\nHost: x\r\n\r\n", b"loGET", b"1.1", [(b"Host", b"x")]),
        (b"GET / HTTP/1.5\r\nHost: x\r\n\r\n", b"GET", b"1.5", [(b"Host", b"x")]),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n \tb\x80\r\n\r\n", b"GET", b"1.1",
         [(b"Host", b"x"), (b"X-A", b"a b\x80")]),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \t a  b \t \r\n\r\n", b"GET", b"1.1",
         [(b"Host", b"x"), (b"X-A", b"a  b")]),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\ncontent-length: 0, 0\r\n\r\n",
         b"POST", b"1.1", [(b"Host", b"x"), (b"Content-Length", b"0")]),
    ],
    ids=["obs-fold", "bare-lf", "lowercase-method", "unknown-method", "http-1-5", "fold-obs-text",
         "trailing-ows", "repeated-length"],
)
def test_heads_llhttp_refuses_but_h11_accepts(data: bytes, method: bytes, version: bytes,
                                              headers: list[tuple[bytes, bytes]]) -> None:
    request = first_request(data)
    assert (request.method, request.http_version, request.headers) == (method, version, headers)
    reference = H11ServerCodec()
    reference.receive_data(data)
    assert reference.next_event() == request


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n X-A: b\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET http://1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
        (b"GET / HTTP/2.0\r\nTransfer-Encoding: gzip\r\n\r\n", 501),  # h11's order: 501 first
        # llhttp takes these as HTTP/0.9 or skips the CR; h11 refuses the request line
        (b"POST http://h\nX: 1 HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"GET /\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /  HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT  HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        # RFC 9110 §5.5: control characters but HTAB in a value, on either parsing path
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\x7f\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n \x1fb\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\nX-A: \x08\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"8000000000000000\r\n", 400),
    ],
    ids=["space-before-colon", "nul", "bare-cr", "leading-fold", "two-hosts", "length-list",
         "te-list", "te-twice", "length-and-te", "http2", "http09-line", "connect", "501-before-505",
         "http09-lf", "http09-crlf", "cr-before-line", "double-space", "empty-connect-target",
         "ctl-in-value", "ctl-in-fold", "ctl-before-505-and-501", "length-2-to-the-63",
         "chunk-2-to-the-63"],
)
def test_refusals_and_their_status(data: bytes, status: int) -> None:
    assert rejection(data) == status


def test_parse_head_is_h11_grammar() -> None:
    assert parse_head(b"M-SEARCH * HTTP/1.1\r\nA:\r\nB:  x  y \r\n\r\n") == (
        b"M-SEARCH", b"*", b"1.1", [(b"A", b""), (b"B", b"x  y")])
    for bad in (b"GET  / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1 \r\n\r\n", b"GET / http/1.1\r\n\r\n",
                b"GET /\x80 HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\n:v\r\n\r\n"):
        with pytest.raises(DownstreamError):
            parse_head(bad)


# --- choosing the codec ----------------------------------------------------------------------

CONFIG = """
[upstreams.u]
addrs = ["127.0.0.1:9000"]
[locations.all]
upstream = "u"
[servers.s]
addr = "127.0.0.1:8080"
locations = ["all"]
{extra}
"""


def test_the_fast_codec_is_the_default() -> None:
    runtime = build_runtime(load_config_text(CONFIG.format(extra=""), "pingap.toml"))
    assert runtime.servers["s"].http1_codec == "fast"


def test_h11_can_be_chosen_per_server() -> None:
    runtime = build_runtime(load_config_text(CONFIG.format(extra='http1_codec = "h11"'),
                                             "pingap.toml"))
    assert runtime.servers["s"].http1_codec == "h11"


def test_an_unknown_codec_is_a_config_error_with_file_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        build_runtime(load_config_text(CONFIG.format(extra='http1_codec = "llhttp"'),
                                       "pingap.toml"))
    [problem] = caught.value.problems
    assert (problem.file, problem.key) == ("pingap.toml", "servers.s.http1_codec")
    assert "fast, h11" in problem.message


@pytest.mark.parametrize(("setting", "expected"), [("fast", FastServerCodec), ("h11", H11ServerCodec)])
def test_the_connection_builds_the_chosen_codec(setting: str, expected: type) -> None:
    from workers.h1 import H1Connection

    runtime = build_runtime(load_config_text(
        CONFIG.format(extra=f'http1_codec = "{setting}"'), "pingap.toml"))
    connection = H1Connection(None, runtime.servers["s"], None, None)  # type: ignore[arg-type]
    assert type(connection.codec) is expected
