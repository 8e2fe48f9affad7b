"""Tests for pingap.h1writer.ResponseWriter: HTTP/1.1 response framing, no I/O."""

from __future__ import annotations

import pytest

from pingap.errors import DownstreamError
from pingap.h1writer import ResponseWriter

Headers = list[tuple[bytes, bytes]]


def writer(method: bytes = b"GET", version: bytes = b"1.1",
           keep_alive: bool = True) -> ResponseWriter:
    w = ResponseWriter()
    w.start(method, version, keep_alive)
    return w


def header_lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")[1:]


def names(head: bytes) -> list[bytes]:
    return [line.split(b":", 1)[0].lower() for line in header_lines(head)]


def refused(call: object, *args: object) -> DownstreamError:
    with pytest.raises(DownstreamError) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.status == 500
    return caught.value


# --- Content-Length ----------------------------------------------------------------------


def test_content_length_kept_and_body_as_is() -> None:
    w = writer()
    head = w.head(200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"11")])
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
    assert w.body(b"hello ") == b"hello "
    assert w.body(b"") == b""
    assert w.body(b"world") == b"world"
    assert w.end() == b""
    assert w.done and w.head_sent and not w.must_close


def test_content_length_zero() -> None:
    w = writer()
    w.head(200, [(b"Content-Length", b"0")])
    assert w.end() == b""


@pytest.mark.parametrize("pieces", [[b"hello!"], [b"hel", b"lo!"], [b"hello", b"!"]])
def test_body_longer_than_content_length(pieces: list[bytes]) -> None:
    w = writer()
    w.head(200, [(b"Content-Length", b"5")])
    with pytest.raises(DownstreamError) as caught:
        for piece in pieces:
            w.body(piece)
    assert caught.value.status == 500


@pytest.mark.parametrize("pieces", [[], [b"hell"], [b"he", b"l"]])
def test_body_shorter_than_content_length(pieces: list[bytes]) -> None:
    w = writer()
    w.head(200, [(b"Content-Length", b"5")])
    for piece in pieces:
        w.body(piece)
    refused(w.end)


@pytest.mark.parametrize("value", [b"abc", b"", b"0x10", b"5, 5", b"1.5"])
def test_bad_content_length_refused(value: bytes) -> None:
    refused(writer().head, 200, [(b"Content-Length", value)])


@pytest.mark.parametrize("value", [b"-1", b"+5", b"1_0"])
def test_non_digit_content_length_refused(value: bytes) -> None:
    refused(writer().head, 200, [(b"Content-Length", value)])


def test_conflicting_content_lengths_refused() -> None:
    refused(writer().head, 200, [(b"Content-Length", b"5"), (b"Content-Length", b"7")])


# --- chunked / close-delimited -----------------------------------------------------------


def test_no_length_on_http11_is_chunked() -> None:
    w = writer()
    head = w.head(200, [(b"Content-Type", b"text/plain")])
    assert head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
    assert w.body(b"hello") == b"5\r\nhello\r\n"
    assert w.body(b"") == b""  # never a premature last chunk
    assert w.body(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert w.end() == b"0\r\n\r\n"
    assert not w.must_close


@pytest.mark.parametrize("given", [b"chunked", b"gzip, chunked", b"identity"])
def test_given_transfer_encoding_is_replaced(given: bytes) -> None:
    w = writer()
    head = w.head(200, [(b"Transfer-Encoding", given), (b"X-A", b"1")])
    assert names(head).count(b"transfer-encoding") == 1
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert given not in head or given == b"chunked"
    assert w.body(b"ab") == b"2\r\nab\r\n"


def test_given_transfer_encoding_dropped_when_content_length_set() -> None:
    w = writer()
    head = w.head(200, [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"2")])
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    assert w.body(b"ab") == b"ab"
    assert w.end() == b""


@pytest.mark.parametrize("keep_alive", [True, False])
def test_no_length_on_http10_is_close_delimited(keep_alive: bool) -> None:
    w = writer(version=b"1.0", keep_alive=keep_alive)
    head = w.head(200, [(b"Content-Type", b"text/plain"), (b"Transfer-Encoding", b"chunked")])
    assert head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    b"Connection: close\r\n\r\n")
    assert w.body(b"hello") == b"hello"
    assert w.end() == b""
    assert w.must_close


def test_http10_with_content_length_still_closes() -> None:
    w = writer(version=b"1.0", keep_alive=True)
    head = w.head(200, [(b"Content-Length", b"2")])
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    assert not w.keep_alive and w.must_close


# --- no body -----------------------------------------------------------------------------


@pytest.mark.parametrize("method, status, headers", [
    (b"HEAD", 200, [(b"Content-Length", b"1234")]),
    (b"HEAD", 200, []),
    (b"HEAD", 404, [(b"Transfer-Encoding", b"chunked")]),
    (b"GET", 204, []),
    (b"GET", 304, [(b"Content-Length", b"1234")]),
    (b"GET", 304, [(b"ETag", b'"x"')]),
    (b"POST", 204, [(b"Transfer-Encoding", b"chunked")]),
])
def test_no_body_bytes(method: bytes, status: int, headers: Headers) -> None:
    w = writer(method=method)
    head = w.head(status, headers)
    assert b"transfer-encoding" not in names(head)
    assert w.body(b"some body bytes") == b""
    assert w.end() == b""
    assert w.end([(b"X-T", b"1")]) == b""
    assert not w.must_close  # no body: the connection stays usable


def test_head_keeps_content_length_header() -> None:
    w = writer(method=b"HEAD")
    head = w.head(200, [(b"Content-Length", b"1234")])
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"


# --- Connection --------------------------------------------------------------------------


def test_keep_alive_false_adds_connection_close_once() -> None:
    w = writer(keep_alive=False)
    head = w.head(200, [(b"Content-Length", b"0")])
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert w.must_close


@pytest.mark.parametrize("given", [b"close", b"Close", b"keep-alive, close"])
@pytest.mark.parametrize("keep_alive", [True, False])
def test_caller_connection_close_not_duplicated(given: bytes, keep_alive: bool) -> None:
    w = writer(keep_alive=keep_alive)
    head = w.head(200, [(b"Connection", given), (b"Content-Length", b"0")])
    assert names(head).count(b"connection") == 1
    assert b"Connection: " + given + b"\r\n" in head
    assert w.must_close


def test_close_delimited_with_caller_connection_close() -> None:
    w = writer(version=b"1.0")
    head = w.head(200, [(b"Connection", b"close")])
    assert head == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"


def test_keep_alive_true_adds_no_connection_header() -> None:
    head = writer().head(200, [(b"Content-Length", b"0")])
    assert b"connection" not in names(head)


def test_caller_keep_alive_header_does_not_hide_the_close() -> None:
    w = writer(keep_alive=False)
    head = w.head(200, [(b"Connection", b"keep-alive"), (b"Content-Length", b"0")])
    assert w.must_close
    connection = [line for line in header_lines(head) if line.lower().startswith(b"connection:")]
    assert any(b"close" in line.lower() for line in connection)
    assert not any(b"keep-alive" in line.lower() for line in connection)


# --- header checks -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [b"", b"Bad Name", b"X:Y", b"X\r\nY", b"X\nY", b"X\x00",
                                  b"\xff", b"X(Y)", b"X\tY", b"\"q\""])
def test_bad_header_name(name: bytes) -> None:
    refused(writer().head, 200, [(name, b"v"), (b"Content-Length", b"0")])


@pytest.mark.parametrize("value", [b"a\rb", b"a\nb", b"a\x00b", b"a\r\nSet-Cookie: x=1",
                                   b"\r\n", b"\n"])
def test_bad_header_value(value: bytes) -> None:
    refused(writer().head, 200, [(b"X-Ok", b"1"), (b"X-Value", value)])


@pytest.mark.parametrize("reason", [b"OK\r\nSet-Cookie: x=1", b"OK\n", b"O\x00K"])
def test_bad_reason_phrase(reason: bytes) -> None:
    """The whole head is scanned: a reason phrase cannot split the response either, and
    the writer stays as it was (a refused head sends nothing)."""
    w = writer()
    err = refused(w.head, 200, [(b"Content-Length", b"0")], reason)
    assert "reason phrase" in err.message
    assert not w.head_sent and not w.must_close


@pytest.mark.parametrize("name", [b"Connection", b"Content-Length", b"Transfer-Encoding"])
def test_bad_value_of_framing_headers(name: bytes) -> None:
    refused(writer().head, 200, [(name, b"close\r\nX: y")])


@pytest.mark.parametrize("value", [b"", b"a b", b"\tx", b"\x7f\x80\xff", b"a=b; c=\"d\""])
def test_acceptable_header_values(value: bytes) -> None:
    head = writer().head(200, [(b"X-V", value), (b"Content-Length", b"0")])
    assert b"X-V: " + value + b"\r\n" in head


def test_good_header_names_keep_their_case() -> None:
    head = writer().head(200, [(b"x-CUSTOM", b"1"), (b"!#$%&'*+-.^_`|~09az", b"2"),
                               (b"Content-Length", b"0")])
    assert head.startswith(b"HTTP/1.1 200 OK\r\nx-CUSTOM: 1\r\n!#$%&'*+-.^_`|~09az: 2\r\n")


def test_bad_header_after_a_good_one_in_another_response() -> None:
    # names found good are cached: a cache must not let a bad one through
    w = writer()
    w.head(200, [(b"X-Name", b"1"), (b"Content-Length", b"0")])
    w.start(b"GET", b"1.1", True)
    refused(w.head, 200, [(b"X-Name ", b"1")])


# --- trailers ----------------------------------------------------------------------------


def test_trailers_sent_with_chunked() -> None:
    w = writer()
    w.head(200, [])
    w.body(b"x")
    assert w.end([(b"X-Checksum", b"abc"), (b"X-Other", b"1")]) == \
        b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"


@pytest.mark.parametrize("trailers", [None, []])
def test_no_trailers(trailers: Headers | None) -> None:
    w = writer()
    w.head(200, [])
    assert w.end(trailers) == b"0\r\n\r\n"


@pytest.mark.parametrize("version, headers", [
    (b"1.1", [(b"Content-Length", b"1")]),
    (b"1.0", []),
])
def test_trailers_dropped_without_chunked(version: bytes, headers: Headers) -> None:
    w = writer(version=version)
    w.head(200, headers)
    w.body(b"x")
    assert w.end([(b"X-T", b"1")]) == b""


@pytest.mark.parametrize("trailer", [(b"Bad Name", b"v"), (b"X-T", b"a\r\nb"),
                                     (b"X-T", b"\x00"), (b"", b"v")])
def test_bad_trailers(trailer: tuple[bytes, bytes]) -> None:
    w = writer()
    w.head(200, [])
    refused(w.end, [trailer])


# --- status line -------------------------------------------------------------------------


@pytest.mark.parametrize("status, line", [
    (200, b"HTTP/1.1 200 OK\r\n"),
    (404, b"HTTP/1.1 404 Not Found\r\n"),
    (502, b"HTTP/1.1 502 Bad Gateway\r\n"),
    (418, b"HTTP/1.1 418 I'm a Teapot\r\n"),
    (299, b"HTTP/1.1 299 \r\n"),
    (999, b"HTTP/1.1 999 \r\n"),
])
def test_reason_phrase_defaults(status: int, line: bytes) -> None:
    head = writer().head(status, [(b"Content-Length", b"0")])
    assert head.startswith(line)


def test_reason_phrase_given() -> None:
    head = writer().head(200, [(b"Content-Length", b"0")], b"Fine Thanks")
    assert head.startswith(b"HTTP/1.1 200 Fine Thanks\r\n")


def test_status_line_is_http11_for_http10_clients() -> None:
    head = writer(version=b"1.0").head(200, [(b"Content-Length", b"0")])
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("status", [0, 100, 101, 199, 1000, -200])
def test_bad_status(status: int) -> None:
    refused(writer().head, status, [])


# --- informational -----------------------------------------------------------------------


@pytest.mark.parametrize("status, data", [
    (100, b"HTTP/1.1 100 Continue\r\n\r\n"),
    (103, b"HTTP/1.1 103 Early Hints\r\n\r\n"),
])
def test_informational_bytes(status: int, data: bytes) -> None:
    assert writer().informational(status) == data


def test_informational_not_for_http10() -> None:
    assert writer(version=b"1.0").informational(100) == b""


def test_informational_not_after_the_head() -> None:
    w = writer()
    assert w.informational(100)
    w.head(200, [(b"Content-Length", b"0")])
    assert w.informational(100) == b""


# --- one writer, several responses -------------------------------------------------------


def test_start_resets_between_responses() -> None:
    w = writer()
    w.head(200, [])
    assert w.body(b"ab") == b"2\r\nab\r\n"
    w.end()
    w.start(b"GET", b"1.1", True)
    assert not w.head_sent and not w.done and not w.must_close
    head = w.head(200, [(b"Content-Length", b"2")])
    assert b"transfer-encoding" not in names(head)
    assert w.body(b"ab") == b"ab"
    assert w.end() == b""
    w.start(b"HEAD", b"1.1", True)
    w.head(200, [(b"Content-Length", b"2")])
    assert w.body(b"ab") == b""
    w.start(b"GET", b"1.1", True)
    w.head(200, [(b"Content-Length", b"1")])
    refused(w.end)


def test_connection_close_from_one_response_does_not_leak_into_the_next() -> None:
    w = writer()
    w.head(200, [(b"Connection", b"close"), (b"Content-Length", b"0")])
    assert w.must_close
    w.start(b"GET", b"1.1", True)
    head = w.head(200, [(b"Content-Length", b"0")])
    assert not w.must_close
    assert b"connection" not in names(head)


def test_default_writer_is_http11_get_not_keep_alive() -> None:
    w = ResponseWriter()
    assert w.http11 and not w.is_head and not w.keep_alive and w.must_close
