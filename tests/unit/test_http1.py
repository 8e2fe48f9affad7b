"""Tests for pingap.http1.H11ServerCodec: request events, head limits, strictness, responses."""

from __future__ import annotations

import pytest

from pingap.errors import DownstreamError
from pingap.events import (
    NEED_DATA,
    BodyReceived,
    ConnectionEnded,
    MessageEnded,
    RequestReceived,
)
from pingap.http1 import H1Limits, validate_target
from pingap.http1_h11 import H11ServerCodec


def drain(codec: H11ServerCodec) -> list[object]:
    """Events until the codec needs data or the connection ended."""
    out: list[object] = []
    while True:
        event = codec.next_event()
        out.append(event)
        if event is NEED_DATA or isinstance(event, ConnectionEnded):
            return out


def feed(data: bytes, *, eof: bool = False, codec: H11ServerCodec | None = None) -> list[object]:
    codec = codec or H11ServerCodec()
    codec.receive_data(data)
    if eof:
        codec.receive_data(b"")
    return drain(codec)


def rejection(data: bytes, *, eof: bool = False) -> DownstreamError:
    with pytest.raises(DownstreamError) as caught:
        feed(data, eof=eof)
    return caught.value


def first_request(data: bytes) -> RequestReceived:
    event = feed(data)[0]
    assert isinstance(event, RequestReceived)
    return event


def respond_ok(codec: H11ServerCodec) -> bytes:
    return codec.response_head(200, [(b"Content-Length", b"0")]) + codec.end()


def head_with_fields(count: int, *, target: bytes = b"/") -> bytes:
    """A complete request head with ``count`` header fields (Host included)."""
    fields = [b"Host: x"] + [b"X-%d: v" % i for i in range(count - 1)]
    return b"GET " + target + b" HTTP/1.1\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def head_of_size(size: int) -> bytes:
    """Request head bytes (up to, not including, the final CRLF CRLF) of exactly ``size`` bytes."""
    start = b"GET / HTTP/1.1\r\nHost: x"
    lines = []
    remaining = size - len(start)
    while remaining > 0:
        n = min(remaining - 2, 8000)  # "\r\n" + line
        if 0 < remaining - 2 - n < 12:
            n -= 12
        line = b"X-%04d: " % len(lines)
        lines.append(line + b"a" * (n - len(line)))
        remaining -= n + 2
    head = start + b"".join(b"\r\n" + line for line in lines)
    assert len(head) == size
    return head


def line_by_line(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def outcome_whole(data: bytes) -> object:
    try:
        return type(feed(data)[0]).__name__
    except DownstreamError as err:
        return err.status


def outcome_incremental(data: bytes) -> object:
    codec = H11ServerCodec()
    result: object = None
    try:
        for piece in line_by_line(data):
            codec.receive_data(piece)
            event = codec.next_event()
            if event is not NEED_DATA:
                return type(event).__name__
    except DownstreamError as err:
        return err.status
    return result


# --- simple requests -------------------------------------------------------------------


def test_simple_get_event_fields() -> None:
    events = feed(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: Example.com:8080\r\nX-Custom-Case: v\r\n\r\n")
    request, end, need = events
    assert isinstance(request, RequestReceived)
    assert request.method == b"GET"
    assert request.target == b"/a/b?x=1&y=2"
    assert request.path == b"/a/b"
    assert request.query == b"x=1&y=2"
    assert request.host == b"Example.com:8080"
    assert request.http_version == b"1.1"
    assert request.headers == [(b"Host", b"Example.com:8080"), (b"X-Custom-Case", b"v")]
    assert request.keep_alive is True
    assert request.expect_continue is False
    assert request.content_length is None
    assert request.chunked is False
    assert request.has_body is False
    assert end == MessageEnded(trailers=[])
    assert need is NEED_DATA


def test_content_length_body() -> None:
    events = feed(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    request = events[0]
    assert isinstance(request, RequestReceived)
    assert request.content_length == 5
    assert request.has_body
    assert events[1:] == [BodyReceived(data=b"hello"), MessageEnded(trailers=[]), NEED_DATA]


def test_head_arriving_in_pieces() -> None:
    codec = H11ServerCodec()
    for piece in (b"GET / HT", b"TP/1.1\r\nHo", b"st: x\r\n"):
        codec.receive_data(piece)
        assert codec.next_event() is NEED_DATA
        assert codec.request_in_progress
    codec.receive_data(b"\r\n")
    assert isinstance(codec.next_event(), RequestReceived)


def test_request_in_progress() -> None:
    codec = H11ServerCodec()
    assert not codec.request_in_progress
    codec.receive_data(b"\r\n")
    assert not codec.request_in_progress  # a stray CRLF is not a request
    codec.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
    assert isinstance(codec.next_event(), RequestReceived)
    assert codec.request_in_progress  # body still to come
    codec.receive_data(b"ok")
    assert codec.next_event() == BodyReceived(data=b"ok")
    assert codec.next_event() == MessageEnded(trailers=[])
    assert not codec.request_in_progress


# --- pipelining and keep-alive ---------------------------------------------------------


def test_pipelined_requests_across_start_next_cycle() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b?q HTTP/1.1\r\nHost: y\r\n\r\n")
    first = drain(codec)
    assert isinstance(first[0], RequestReceived) and first[0].path == b"/a"
    assert first[1:] == [MessageEnded(trailers=[]), NEED_DATA]
    assert respond_ok(codec) == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert codec.reusable()
    codec.start_next_cycle()
    assert codec.request_in_progress
    second = drain(codec)
    assert isinstance(second[0], RequestReceived)
    assert (second[0].path, second[0].query, second[0].host) == (b"/b", b"q", b"y")
    assert second[1:] == [MessageEnded(trailers=[]), NEED_DATA]
    respond_ok(codec)
    codec.start_next_cycle()
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"")
    assert isinstance(codec.next_event(), ConnectionEnded)


def test_pipelined_request_with_body_then_request() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                       b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    events = drain(codec)
    assert events[1:] == [BodyReceived(data=b"abc"), MessageEnded(trailers=[]), NEED_DATA]
    respond_ok(codec)
    codec.start_next_cycle()
    request = codec.next_event()
    assert isinstance(request, RequestReceived) and request.path == b"/b"


def test_leading_crlf_is_ignored() -> None:
    events = feed(b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(events[0], RequestReceived)


def test_crlf_between_pipelined_requests_is_ignored() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(codec)
    respond_ok(codec)
    codec.start_next_cycle()
    request = codec.next_event()
    assert isinstance(request, RequestReceived) and request.path == b"/b"


def test_clean_eof_is_connection_ended() -> None:
    assert feed(b"", eof=True) == [ConnectionEnded()]
    assert feed(b"\r\n", eof=True) == [ConnectionEnded()]


def test_eof_after_a_complete_exchange() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(codec)
    respond_ok(codec)
    codec.start_next_cycle()
    codec.receive_data(b"")
    assert isinstance(codec.next_event(), ConnectionEnded)


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\nHost: x\r\n", b"GET / HT", b"GET / HTTP/1.1\r\n"])
def test_incomplete_head_then_eof_is_400(data: bytes) -> None:
    assert rejection(data, eof=True).status == 400


def test_reusable_after_a_full_exchange() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(codec)
    assert not codec.reusable()  # response not sent yet
    codec.response_head(200, [(b"Content-Length", b"2")])
    assert not codec.reusable()
    codec.body(b"ok")
    codec.end()
    assert codec.reusable()


def test_not_reusable_after_connection_close() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    request = codec.next_event()
    assert isinstance(request, RequestReceived)
    assert request.keep_alive is False
    drain(codec)
    head = codec.response_head(200, [(b"Content-Length", b"0")])
    assert b"Connection: close\r\n" in head
    codec.end()
    assert not codec.reusable()


def test_not_reusable_with_unread_body() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    drain(codec)
    respond_ok(codec)
    assert not codec.reusable()


def test_not_reusable_after_eof() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    codec.receive_data(b"")
    drain(codec)
    respond_ok(codec)
    assert not codec.reusable()


@pytest.mark.parametrize("connection", [b"", b"Connection: keep-alive\r\n"])
def test_http10_is_not_kept_alive(connection: bytes) -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.0\r\n" + connection + b"\r\n")
    request = codec.next_event()
    assert isinstance(request, RequestReceived)
    assert request.http_version == b"1.0"
    assert request.keep_alive is False
    assert request.host == b""  # Host is optional on HTTP/1.0
    drain(codec)
    respond_ok(codec)
    assert not codec.reusable()


@pytest.mark.parametrize("value", [b"close", b"Close", b"keep-alive, close", b"upgrade,CLOSE"])
def test_connection_close_tokens(value: bytes) -> None:
    request = first_request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: " + value + b"\r\n\r\n")
    assert request.keep_alive is False


# --- chunked bodies --------------------------------------------------------------------


def test_chunked_body_events() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    request = codec.next_event()
    assert isinstance(request, RequestReceived)
    assert request.chunked and request.has_body and request.content_length is None
    assert codec.next_event() is NEED_DATA
    codec.receive_data(b"3\r\nabc\r\n")
    assert codec.next_event() == BodyReceived(data=b"abc")
    codec.receive_data(b"4\r\nde")
    assert codec.next_event() == BodyReceived(data=b"de")
    codec.receive_data(b"fg\r\n0\r\n\r\n")
    assert codec.next_event() == BodyReceived(data=b"fg")
    assert codec.next_event() == MessageEnded(trailers=[])


def test_chunked_trailers_keep_case_and_drop_framing_fields() -> None:
    events = feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nContent-Length: 5\r\nHost: evil\r\n"
                  b"Connection: close\r\nTransfer-Encoding: chunked\r\nx-lower: v\r\n\r\n")
    assert events[1] == BodyReceived(data=b"abc")
    assert events[2] == MessageEnded(trailers=[(b"X-Checksum", b"123"), (b"x-lower", b"v")])


def test_chunked_bad_framing_is_400() -> None:
    assert rejection(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").status == 400


# --- framing strictness ---------------------------------------------------------------


def test_content_length_with_transfer_encoding_is_400() -> None:
    err = rejection(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\nabc")
    assert err.status == 400


def test_transfer_encoding_on_http10_is_400() -> None:
    assert rejection(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").status == 400


def test_missing_host_on_http11_is_400() -> None:
    assert rejection(b"GET / HTTP/1.1\r\n\r\n").status == 400


@pytest.mark.parametrize("host", [b"a b", b"x:port", b"a/b", b"a@b"])
def test_malformed_host_is_400(host: bytes) -> None:
    assert rejection(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n").status == 400


def test_http_major_version_other_than_1_is_505() -> None:
    assert rejection(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n").status == 505


def test_garbage_request_line_is_400() -> None:
    assert rejection(b"GARBAGE\r\n\r\n").status == 400


# --- request targets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        (b"GET", b"!", 400),
        (b"GET", b"abc", 400),
        (b"GET", b"/%zz", 400),
        (b"GET", b"/a%2", 400),
        (b"GET", b"/a#frag", 400),
        (b"GET", b"*", 400),
        (b"POST", b"*", 400),
        (b"CONNECT", b"example.com:443", 405),
        (b"CONNECT", b"example.com", 400),
        (b"CONNECT", b"*", 400),
        (b"GET", b"ftp://example.com/", 400),
        (b"GET", b"http://user@example.com/", 400),
        (b"GET", b"http:///path", 400),
    ],
)
def test_invalid_targets(method: bytes, target: bytes, status: int) -> None:
    err = rejection(method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert err.status == status
    with pytest.raises(DownstreamError) as caught:
        validate_target(method, target)
    assert caught.value.status == status


@pytest.mark.parametrize("target", [b"/", b"/x", b"http://example.com/"])
def test_connect_with_a_non_authority_target_is_rejected(target: bytes) -> None:
    # CONNECT must never be proxied as an ordinary request, whatever its target form
    err = rejection(b"CONNECT " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert err.status == 400


@pytest.mark.parametrize(
    "target",
    [b"/", b"/a!b", b"/a%20b", b"/a;b=c", b"/~u/(x)", b"/a?b=c?d", b"/?"],
)
def test_valid_origin_form_targets(target: bytes) -> None:
    request = first_request(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert request.target == target
    path, _, query = target.partition(b"?")
    assert (request.path, request.query) == (path, query)


def test_asterisk_with_options_is_ok() -> None:
    request = first_request(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    assert request.method == b"OPTIONS"
    assert request.path == b"*"
    assert request.query == b""


@pytest.mark.parametrize(
    ("target", "host", "path", "query"),
    [
        (b"http://example.com:81/p?q=1", b"example.com:81", b"/p", b"q=1"),
        (b"https://Example.com/a/b", b"Example.com", b"/a/b", b""),
        (b"http://example.com", b"example.com", b"/", b""),
        (b"http://example.com?x=1", b"example.com", b"/", b"x=1"),
        (b"HTTP://example.com/", b"example.com", b"/", b""),
        (b"http://[::1]:8080/v6", b"[::1]:8080", b"/v6", b""),
    ],
)
def test_absolute_form_takes_host_path_and_query_from_the_uri(
        target: bytes, host: bytes, path: bytes, query: bytes) -> None:
    request = first_request(b"GET " + target + b" HTTP/1.1\r\nHost: other.org\r\nX-A: 1\r\n\r\n")
    assert (request.host, request.path, request.query) == (host, path, query)
    assert request.target == target
    # the URI's authority replaces the Host header
    assert request.headers == [(b"Host", host), (b"X-A", b"1")]


# --- head limits -----------------------------------------------------------------------


def long_request_line(length: int) -> bytes:
    fixed = len(b"GET / HTTP/1.1")
    return b"GET /" + b"a" * (length - fixed) + b" HTTP/1.1"


def test_limits_defaults() -> None:
    assert H1Limits() == H1Limits(max_request_line=8192, max_header_line=8192,
                                  max_head=32768, max_fields=100)


def test_request_line_too_long_is_414() -> None:
    assert rejection(long_request_line(9000) + b"\r\nHost: x\r\n\r\n").status == 414


def test_request_line_too_long_without_newline_yet_is_414() -> None:
    assert rejection(long_request_line(8300)).status == 414


def test_request_line_under_the_limit_is_ok() -> None:
    request = first_request(long_request_line(8000) + b"\r\nHost: x\r\n\r\n")
    assert len(request.target) == 8000 - len(b"GET  HTTP/1.1")


def test_request_line_of_exactly_the_limit_is_ok() -> None:
    line = long_request_line(8192)
    assert len(line) == 8192
    assert isinstance(feed(line + b"\r\nHost: x\r\n\r\n")[0], RequestReceived)


def test_header_line_too_long_is_431() -> None:
    field = b"X-Big: " + b"a" * 9000
    assert rejection(b"GET / HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n\r\n").status == 431
    assert rejection(b"GET / HTTP/1.1\r\n" + field + b"\r\nHost: x\r\n\r\n").status == 431


def test_header_line_too_long_before_its_end_arrives_is_431() -> None:
    assert rejection(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8300).status == 431


def test_header_line_of_exactly_the_limit_is_ok_anywhere() -> None:
    field = b"X-Big: " + b"a" * (8192 - 7)
    assert len(field) == 8192
    assert isinstance(feed(b"GET / HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n\r\n")[0], RequestReceived)
    assert isinstance(feed(b"GET / HTTP/1.1\r\n" + field + b"\r\nHost: x\r\n\r\n")[0], RequestReceived)


def test_head_too_large_in_one_receive_data_call_is_431() -> None:
    head = head_of_size(40_000)
    codec = H11ServerCodec()
    codec.receive_data(head + b"\r\n\r\n")  # complete, in one call, no line over 8 KiB
    with pytest.raises(DownstreamError) as caught:
        codec.next_event()
    assert caught.value.status == 431


def test_head_too_large_arriving_in_pieces_is_431() -> None:
    assert outcome_incremental(head_of_size(40_000) + b"\r\n\r\n") == 431


def test_head_just_over_the_limit_is_431() -> None:
    assert outcome_whole(head_of_size(32769) + b"\r\n\r\n") == 431


def test_head_under_the_limit_is_ok() -> None:
    assert outcome_whole(head_of_size(32000) + b"\r\n\r\n") == "RequestReceived"


def test_too_many_fields_is_431() -> None:
    assert outcome_whole(head_with_fields(100)) == "RequestReceived"
    assert outcome_whole(head_with_fields(101)) == 431
    assert outcome_incremental(head_with_fields(101)) == 431


@pytest.mark.parametrize(
    "head",
    [
        head_with_fields(100),
        head_of_size(32768) + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8192 - 7) + b"\r\n\r\n",
    ],
    ids=["100-fields", "32KiB-head", "8KiB-last-line"],
)
def test_limits_do_not_depend_on_how_bytes_arrive(head: bytes) -> None:
    assert outcome_whole(head) == "RequestReceived"
    assert outcome_incremental(head) == "RequestReceived"


@pytest.mark.parametrize(
    ("second", "status"),
    [
        (long_request_line(9000) + b"\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (head_of_size(40_000) + b"\r\n\r\n", 431),
        (head_with_fields(101), 431),
    ],
    ids=["request-line", "header-line", "head-size", "field-count"],
)
def test_same_limits_on_a_pipelined_second_request(second: bytes, status: int) -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + second)
    events = drain(codec)
    assert isinstance(events[0], RequestReceived) and events[0].path == b"/first"
    respond_ok(codec)
    codec.start_next_cycle()
    with pytest.raises(DownstreamError) as caught:
        codec.next_event()
    assert caught.value.status == status


def test_custom_limits() -> None:
    codec = H11ServerCodec(H1Limits(max_fields=2))
    codec.receive_data(head_with_fields(3))
    with pytest.raises(DownstreamError) as caught:
        codec.next_event()
    assert caught.value.status == 431


# --- Expect: 100-continue and responses --------------------------------------------------


def test_expect_100_continue() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"POST /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    request = codec.next_event()
    assert isinstance(request, RequestReceived)
    assert request.expect_continue is True
    assert codec.next_event() is NEED_DATA
    interim = codec.informational(100)
    assert interim.startswith(b"HTTP/1.1 100")
    assert interim.endswith(b"\r\n\r\n")
    assert codec.informational(100) == b""  # only once per request
    codec.receive_data(b"abc")
    assert codec.next_event() == BodyReceived(data=b"abc")
    assert codec.next_event() == MessageEnded(trailers=[])
    respond_ok(codec)
    assert codec.reusable()


def test_expect_other_value_or_http10_is_not_continue() -> None:
    assert first_request(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: foo\r\nContent-Length: 0\r\n\r\n"
                         ).expect_continue is False
    assert first_request(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"
                         ).expect_continue is False


def test_informational_before_any_request_is_empty() -> None:
    assert H11ServerCodec().informational(100) == b""


@pytest.mark.parametrize(
    ("status", "reason", "line"),
    [
        (200, b"", b"HTTP/1.1 200 OK\r\n"),
        (404, b"", b"HTTP/1.1 404 Not Found\r\n"),
        (502, b"", b"HTTP/1.1 502 Bad Gateway\r\n"),
        (404, b"Nope", b"HTTP/1.1 404 Nope\r\n"),
        (599, b"", b"HTTP/1.1 599 \r\n"),
    ],
)
def test_response_head_reason_phrase(status: int, reason: bytes, line: bytes) -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(codec)
    head = codec.response_head(status, [(b"Content-Length", b"0"), (b"X-Case", b"v")], reason)
    assert head.startswith(line)
    assert b"\r\nX-Case: v\r\n" in head  # header-name case kept


def test_response_body_chunked_without_content_length() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(codec)
    head = codec.response_head(200, [])
    assert b"Transfer-Encoding: chunked" in head
    assert codec.body(b"abc") == b"3\r\nabc\r\n"
    assert codec.body(b"") == b""
    assert codec.end([(b"X-Trailer", b"1")]) == b"0\r\nX-Trailer: 1\r\n\r\n"
    assert codec.reusable()


def test_response_head_before_any_request_closes() -> None:
    codec = H11ServerCodec()
    head = codec.response_head(414, [(b"Content-Length", b"0")])
    assert head.startswith(b"HTTP/1.1 414 ")
    assert b"Connection: close\r\n" in head
    assert not codec.reusable()


def test_response_after_rejected_head() -> None:
    codec = H11ServerCodec()
    codec.receive_data(long_request_line(9000) + b"\r\n\r\n")
    with pytest.raises(DownstreamError):
        codec.next_event()
    head = codec.response_head(414, [(b"Content-Length", b"0")])
    assert head.startswith(b"HTTP/1.1 414 ")
    assert not codec.reusable()


def test_response_body_beyond_content_length_is_an_error() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(codec)
    codec.response_head(200, [(b"Content-Length", b"1")])
    with pytest.raises(DownstreamError):
        codec.body(b"too long")


@pytest.mark.parametrize(
    "headers",
    [[(b"X-A", b"a\r\nX-Injected: b")], [(b"Bad Name", b"v")]],
    ids=["crlf-in-value", "bad-name"],
)
def test_unsendable_response_head_raises_a_pingap_error(headers: list[tuple[bytes, bytes]]) -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(codec)
    with pytest.raises(DownstreamError) as caught:
        codec.response_head(200, headers)
    assert caught.value.status == 500


def test_unsendable_trailers_raise_a_pingap_error() -> None:
    codec = H11ServerCodec()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(codec)
    codec.response_head(200, [])
    with pytest.raises(DownstreamError):
        codec.end([(b"X-T", b"a\nb")])
