"""Tests for pingap.h1client: request serialisation and ResponseReader (httptools)."""

from __future__ import annotations

import gc

import pytest

from pingap.h1client import (
    ResponseData,
    ResponseEnded,
    ResponseEvent,
    ResponseReader,
    ResponseStarted,
    UpstreamProtocolError,
    chunk,
    last_chunk,
    request_head,
)
from tests.support.collector import collector_off

# --- request side ------------------------------------------------------------------------


def test_request_head_bytes() -> None:
    head = request_head(b"POST", b"/a/b?x=1&y=%20", [(b"Host", b"example.com"),
                                                     (b"Content-Length", b"3"),
                                                     (b"X-Multi", b"a, b")])
    assert head == (b"POST /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\n"
                    b"Content-Length: 3\r\nX-Multi: a, b\r\n\r\n")


def test_request_head_without_headers() -> None:
    assert request_head(b"GET", b"/", []) == b"GET / HTTP/1.1\r\n\r\n"


def test_request_head_keeps_order_case_and_duplicates() -> None:
    head = request_head(b"OPTIONS", b"*", [(b"x-A", b"1"), (b"X-a", b"2"), (b"x-A", b"3")])
    assert head == b"OPTIONS * HTTP/1.1\r\nx-A: 1\r\nX-a: 2\r\nx-A: 3\r\n\r\n"


@pytest.mark.parametrize("data, framed", [
    (b"", b""),
    (b"a", b"1\r\na\r\n"),
    (b"hello", b"5\r\nhello\r\n"),
    (b"x" * 15, b"f\r\n" + b"x" * 15 + b"\r\n"),
    (b"x" * 16, b"10\r\n" + b"x" * 16 + b"\r\n"),
    (b"x" * 255, b"ff\r\n" + b"x" * 255 + b"\r\n"),
    (b"x" * 4096, b"1000\r\n" + b"x" * 4096 + b"\r\n"),
    (b"\r\n0\r\n\r\n", b"7\r\n\r\n0\r\n\r\n\r\n"),
])
def test_chunk(data: bytes, framed: bytes) -> None:
    assert chunk(data) == framed


@pytest.mark.parametrize("trailers, framed", [
    (None, b"0\r\n\r\n"),
    ([], b"0\r\n\r\n"),
    ([(b"X-Checksum", b"abc")], b"0\r\nX-Checksum: abc\r\n\r\n"),
    ([(b"A", b"1"), (b"B", b"2")], b"0\r\nA: 1\r\nB: 2\r\n\r\n"),
])
def test_last_chunk(trailers: list[tuple[bytes, bytes]] | None, framed: bytes) -> None:
    assert last_chunk(trailers) == framed


def test_chunks_written_here_are_read_back() -> None:
    body = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"hello ")
            + chunk(b"") + chunk(b"world") + last_chunk([(b"X-T", b"v")]))
    events = feed_all(ResponseReader(b"GET"), body)
    assert data_of(events) == b"hello world"
    assert events[-1] == ResponseEnded(trailers=[(b"X-T", b"v")], keep_alive=True)


# --- helpers -----------------------------------------------------------------------------


def feed_all(reader: ResponseReader, *pieces: bytes) -> list[ResponseEvent]:
    out: list[ResponseEvent] = []
    for piece in pieces:
        out += reader.feed(piece)
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def data_of(events: list[ResponseEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ResponseData))


def check_shape(events: list[ResponseEvent]) -> tuple[ResponseStarted, ResponseEnded]:
    """One Started first, one Ended last, only Data between."""
    assert isinstance(events[0], ResponseStarted)
    assert isinstance(events[-1], ResponseEnded)
    assert all(isinstance(e, ResponseData) and e.data for e in events[1:-1])
    return events[0], events[-1]


# --- ResponseReader: framing -------------------------------------------------------------

CL_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
               b"hello world")
CHUNKED_RESPONSE = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Sum: 42\r\n"
                    b"X-Other: a b\r\n\r\n")


@pytest.mark.parametrize("pieces", [
    [CL_RESPONSE],
    [CL_RESPONSE[:20], CL_RESPONSE[20:]],
    [CL_RESPONSE[:-11], CL_RESPONSE[-11:-5], CL_RESPONSE[-5:]],
    bytewise(CL_RESPONSE),
], ids=["whole", "split-head", "split-body", "bytewise"])
def test_content_length_body_in_pieces(pieces: list[bytes]) -> None:
    reader = ResponseReader(b"GET")
    events = feed_all(reader, *pieces)
    started, ended = check_shape(events)
    # (the reason phrase of a split status line: see test_reason_phrase_split_across_feeds)
    assert (started.status, started.http_version) == (200, "1.1")
    assert started.headers == [(b"Content-Type", b"text/plain"), (b"Content-Length", b"11")]
    assert data_of(events) == b"hello world"
    assert ended == ResponseEnded(trailers=[], keep_alive=True)
    assert reader.started and reader.done and reader.keep_alive


def test_head_event_comes_before_the_body_arrives() -> None:
    reader = ResponseReader(b"GET")
    head, body = CL_RESPONSE.split(b"\r\n\r\n", 1)
    events = reader.feed(head + b"\r\n\r\n")
    assert [type(e) for e in events] == [ResponseStarted]
    assert reader.started and not reader.done
    events = reader.feed(body[:3])
    assert events == [ResponseData(data=b"hel")]
    events = reader.feed(body[3:])
    assert events == [ResponseData(data=b"lo world"), ResponseEnded(trailers=[],
                                                                      keep_alive=True)]


@pytest.mark.parametrize("pieces", [
    [CHUNKED_RESPONSE],
    bytewise(CHUNKED_RESPONSE),
    [CHUNKED_RESPONSE[:60], CHUNKED_RESPONSE[60:90], CHUNKED_RESPONSE[90:]],
], ids=["whole", "bytewise", "thirds"])
def test_chunked_with_trailers(pieces: list[bytes]) -> None:
    reader = ResponseReader(b"GET")
    events = feed_all(reader, *pieces)
    started, ended = check_shape(events)
    assert started.status == 201
    assert started.headers == [(b"Transfer-Encoding", b"chunked")]
    assert data_of(events) == b"hello world"
    assert ended.trailers == [(b"X-Sum", b"42"), (b"X-Other", b"a b")]
    assert ended.keep_alive


def test_chunked_without_trailers() -> None:
    events = feed_all(ResponseReader(b"GET"),
                      b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    started, ended = check_shape(events)
    assert len(events) == 2
    assert ended == ResponseEnded(trailers=[], keep_alive=True)


def test_zero_content_length() -> None:
    reader = ResponseReader(b"GET")
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert len(events) == 2
    check_shape(events)
    assert reader.done


@pytest.mark.parametrize("interim", [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n",
])
@pytest.mark.parametrize("split", [False, True])
def test_informational_responses_are_skipped(interim: bytes, split: bool) -> None:
    final = b"HTTP/1.1 200 Fine\r\nContent-Length: 2\r\n\r\nok"
    reader = ResponseReader(b"POST")
    if split:
        assert reader.feed(interim) == []
        assert not reader.started
        events = reader.feed(final)
    else:
        events = reader.feed(interim + final)
    started, ended = check_shape(events)
    assert started == ResponseStarted(status=200, reason=b"Fine",
                                      headers=[(b"Content-Length", b"2")], http_version="1.1")
    assert data_of(events) == b"ok"
    assert ended.trailers == []


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
])
def test_switching_protocols_is_an_error(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ResponseReader(b"GET").feed(data)


@pytest.mark.parametrize("headers", [
    b"Content-Length: 1234\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 0\r\n",
])
def test_head_response_ends_at_the_head(headers: bytes) -> None:
    reader = ResponseReader(b"HEAD")
    events = reader.feed(b"HTTP/1.1 200 OK\r\n" + headers + b"\r\n")
    started, ended = check_shape(events)
    assert len(events) == 2
    assert started.headers[0][0] in (b"Content-Length", b"Transfer-Encoding")
    assert ended.keep_alive and reader.done and reader.keep_alive
    assert reader.feed(b"") == []


def test_head_response_with_content_length_fed_bytewise() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n"
    reader = ResponseReader(b"HEAD")
    events = feed_all(reader, *bytewise(data))
    check_shape(events)
    assert len(events) == 2


def test_head_response_without_length_is_reusable() -> None:
    reader = ResponseReader(b"HEAD")
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n")
    _, ended = check_shape(events)
    assert ended.keep_alive


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("extra", [b"", b"Content-Length: 10\r\n"])
def test_no_body_statuses(status: int, extra: bytes) -> None:
    reader = ResponseReader(b"GET")
    events = reader.feed(b"HTTP/1.1 %d X\r\n%s\r\n" % (status, extra))
    started, ended = check_shape(events)
    assert len(events) == 2
    assert started.status == status
    assert ended.keep_alive and reader.done


def test_close_delimited_body_ends_on_eof() -> None:
    reader = ResponseReader(b"GET")
    events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc")
    assert [type(e) for e in events] == [ResponseStarted, ResponseData]
    assert reader.feed(b"def") == [ResponseData(data=b"def")]
    assert not reader.done
    assert reader.feed(b"") == [ResponseEnded(trailers=[], keep_alive=False)]
    assert reader.done and not reader.keep_alive
    assert reader.feed(b"") == []


def test_close_delimited_empty_body() -> None:
    reader = ResponseReader(b"GET")
    events = feed_all(reader, b"HTTP/1.0 200 OK\r\n\r\n", b"")
    started, ended = check_shape(events)
    assert len(events) == 2
    assert started.http_version == "1.0"
    assert not ended.keep_alive


def test_non_chunked_transfer_encoding_is_close_delimited() -> None:
    reader = ResponseReader(b"GET")
    events = feed_all(reader, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", b"")
    _, ended = check_shape(events)
    assert data_of(events) == b"abc"
    assert not ended.keep_alive


# --- ResponseReader: end of input and errors ---------------------------------------------


@pytest.mark.parametrize("before", [
    b"",
    b"HTTP/1.1 2",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
], ids=["nothing", "status", "status-line", "headers", "after-100"])
def test_eof_before_the_head_is_an_error(before: bytes) -> None:
    reader = ResponseReader(b"GET")
    if before:
        assert reader.feed(before) == []
    with pytest.raises(UpstreamProtocolError):
        reader.feed(b"")
    assert not reader.started


@pytest.mark.parametrize("partial", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n",
])
def test_eof_mid_body_is_an_error(partial: bytes) -> None:
    reader = ResponseReader(b"GET")
    events = reader.feed(partial)
    assert isinstance(events[0], ResponseStarted)
    assert reader.started and not reader.done
    with pytest.raises(UpstreamProtocolError):
        reader.feed(b"")


@pytest.mark.parametrize("head, keep_alive", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n", True),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
     b"1\r\nx\r\n0\r\n\r\n", False),
])
def test_keep_alive(head: bytes, keep_alive: bool) -> None:
    reader = ResponseReader(b"GET")
    data = head if head.endswith(b"0\r\n\r\n") else head + b"x"
    events = reader.feed(data)
    _, ended = check_shape(events)
    assert data_of(events) == b"x"
    assert ended.keep_alive is keep_alive
    assert reader.keep_alive is keep_alive


def test_keep_alive_false_for_connection_close_on_204() -> None:
    reader = ResponseReader(b"GET")
    events = reader.feed(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    _, ended = check_shape(events)
    assert not ended.keep_alive


@pytest.mark.parametrize("data", [
    b"NOT HTTP\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/9.9 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",                  # obsolete line folding
    b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",                       # space before colon
    b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
    b"\x00\x01\x02\x03",
])
def test_invalid_response_bytes(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        ResponseReader(b"GET").feed(data)


@pytest.mark.parametrize("lengths", [
    (b"5", b"5"),
    (b"5", b"6"),
])
def test_duplicate_content_length_rejected(lengths: tuple[bytes, bytes]) -> None:
    data = (b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\nContent-Length: %s\r\n\r\nhello"
            % lengths)
    with pytest.raises(UpstreamProtocolError):
        ResponseReader(b"GET").feed(data)


def test_content_length_with_transfer_encoding_rejected() -> None:
    data = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n")
    with pytest.raises(UpstreamProtocolError):
        ResponseReader(b"GET").feed(data)


def test_data_after_the_end_in_a_later_feed_is_an_error() -> None:
    reader = ResponseReader(b"GET")
    reader.feed(CL_RESPONSE)
    assert reader.done
    with pytest.raises(UpstreamProtocolError):
        reader.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    assert reader.feed(b"") == []


@pytest.mark.parametrize("extra", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Injected: 1\r\n",
])
def test_extra_response_after_the_end_in_the_same_feed(extra: bytes) -> None:
    reader = ResponseReader(b"GET")
    try:
        events = reader.feed(CL_RESPONSE + extra)
    except UpstreamProtocolError:
        return  # refusing the whole read is acceptable
    _, ended = check_shape(events)  # nothing after the end of this response
    assert ended.trailers == []
    assert not ended.keep_alive  # the connection holds unsolicited bytes: not reusable


def test_garbage_after_the_end_in_the_same_feed() -> None:
    reader = ResponseReader(b"GET")
    try:
        events = reader.feed(CL_RESPONSE + b"garbage\r\n\r\n")
    except UpstreamProtocolError:
        return
    _, ended = check_shape(events)
    assert not ended.keep_alive


def test_events_are_not_returned_twice() -> None:
    reader = ResponseReader(b"GET")
    first = reader.feed(CL_RESPONSE[:-3])
    second = reader.feed(CL_RESPONSE[-3:])
    assert isinstance(first[0], ResponseStarted)
    assert not any(isinstance(e, ResponseStarted) for e in second)
    assert data_of(first + second) == b"hello world"


def test_reason_phrase() -> None:
    events = ResponseReader(b"GET").feed(CL_RESPONSE)
    started, _ = check_shape(events)
    assert started.reason == b"OK"
    events = ResponseReader(b"GET").feed(CHUNKED_RESPONSE)
    started, _ = check_shape(events)
    assert started.reason == b"Created"


@pytest.mark.parametrize("split", [len(b"HTTP/1.1 200 All Go"), len(b"HTTP/1.1 200 A"), 1])
def test_reason_phrase_split_across_feeds(split: int) -> None:
    data = b"HTTP/1.1 200 All Good\r\nContent-Length: 0\r\n\r\n"
    reader = ResponseReader(b"GET")
    events = feed_all(reader, *([data[:split], data[split:]] if split > 1 else bytewise(data)))
    started, _ = check_shape(events)
    assert started.reason == b"All Good"


def test_reason_phrase_may_be_empty() -> None:
    events = ResponseReader(b"GET").feed(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")
    started, _ = check_shape(events)
    assert started.reason == b""


def test_101_to_an_upgrade_request_ends_http_and_keeps_the_leftover() -> None:
    reader = ResponseReader(b"GET", may_upgrade=True)
    events = reader.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n\x81\x05hello")
    assert isinstance(events[0], ResponseStarted) and events[0].status == 101
    assert reader.upgraded and reader.leftover == b"\x81\x05hello"
    assert reader.feed(b"more frames") == []  # the new protocol is not parsed


# --- memory --------------------------------------------------------------------------------

@pytest.mark.parametrize("method, data, eof", [
    (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong", False),
    (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npong\r\n0\r\n\r\n",
     False),
    (b"GET", b"HTTP/1.1 200 OK\r\n\r\npong", True),
    (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", False),
], ids=["length", "chunked", "close-delimited", "head"])
def test_a_finished_reader_is_freed_without_the_garbage_collector(
        method: bytes, data: bytes, eof: bool) -> None:
    """The parser and the reader hold each other until the response ends: after it, both
    go as soon as the last reference does, not at the collector's next pass."""
    gc.collect()
    with collector_off():
        reader = ResponseReader(method)
        events = reader.feed(data) + (reader.feed(b"") if eof else [])
        assert isinstance(events[-1], ResponseEnded) and reader.done
        del reader, events
        assert gc.collect() == 0


def test_a_reader_whose_body_went_around_it_is_freed_too() -> None:
    gc.collect()
    with collector_off():
        reader = ResponseReader(b"GET")
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        assert isinstance(reader.body_skipped(), ResponseEnded)
        del reader
        assert gc.collect() == 0
