"""Request-smuggling / malformed-HTTP/1 conformance corpus against the real pingap.

Every case in ``tests/corpus/*.toml`` is sent as raw bytes on a fresh connection to a
real pingap in front of a real recording backend (both on loopback), once with each HTTP/1
codec (``http1_codec = "fast"``, the default, and ``"h11"``, the reference). A case is either
rejected (the given 4xx/5xx status, nothing reaches the backend) or forwarded in
normalised form (the backend sees exactly ``forwarded`` well-framed requests). For every
case no request the backend recorded may carry another request line in its target or
body: that would be a desync. See reliability.md §2.1 and acceptance list B.

Corpus keys (one ``[[case]]`` table each):

``name``             unique id (the pytest parameter id)
``raw``              the exact bytes (TOML basic string; only U+0000..U+00FF, sent latin-1)
``raw_prefix``, ``repeat = {text, count}``, ``raw_suffix``
                     generated form for big heads: prefix + text * count + suffix
``expect_status``    status of the first response
``expect_statuses``  statuses of all responses, in order (pipelined cases)
``forwarded``        requests the backend must see (0 rejected, 1 accepted, 2 pipelined pair)
``expect_closed``    the proxy must close the connection after its answer(s)
``expect_target``    target of the (first) forwarded request
``expect_targets``   targets of all forwarded requests, in order
``expect_method``    method of the (first) forwarded request
``expect_length``    body length of the (first) forwarded request
``expect_body``      body bytes of the (first) forwarded request (compared by sha256)
``expect_headers``   {name = value}: headers (case-insensitive name) the forwarded request
                     must carry with exactly that single value
``forbid_headers``   header names the forwarded request must not carry
``expect_trailers``  {name = value}: trailers the forwarded request must carry
``forbid_trailers``  trailer names the forwarded request must not carry
``xfail``            reason: a known proxy bug, turned into ``xfail(strict=True)``
``note``             free text
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest

from tests.support.proc import BackendProcess, PingapProcess, free_port, wait_for

CORPUS_DIR = Path(__file__).resolve().parents[1] / "corpus"
READ_TIMEOUT = 3.0
# A request line anywhere in a target or body means two framings disagreed (a desync).
REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ +[^\s]+ +HTTP/[0-9]")

KNOWN_KEYS = {
    "name", "raw", "raw_prefix", "repeat", "raw_suffix", "expect_status", "expect_statuses",
    "forwarded", "expect_closed", "expect_target", "expect_targets", "expect_method",
    "expect_length", "expect_body", "expect_headers", "forbid_headers", "expect_trailers",
    "forbid_trailers", "xfail", "note",
}


def load_corpus() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(CORPUS_DIR.glob("*.toml")):
        with path.open("rb") as f:
            for case in tomllib.load(f).get("case", []):
                cases.append({**case, "_file": path.name})
    return cases


CASES = load_corpus()


def case_bytes(case: dict[str, Any]) -> bytes:
    if "raw" in case:
        return case["raw"].encode("latin-1")
    repeat = case["repeat"]
    text = case.get("raw_prefix", "") + repeat["text"] * repeat["count"] + \
        case.get("raw_suffix", "")
    return text.encode("latin-1")


def params() -> list[Any]:
    out = []
    for case in CASES:
        marks = []
        if case.get("xfail"):
            marks.append(pytest.mark.xfail(reason=case["xfail"], strict=True))
        out.append(pytest.param(case, id=case["name"], marks=marks))
    return out


# --- fixtures -----------------------------------------------------------------------------


@dataclass
class Stack:
    backend: BackendProcess
    proxy: PingapProcess
    port: int
    #: backend request count when the last passing case ended, and that case's name:
    #: a request arriving after its case ended is caught by the next case.
    settled: int | None = None
    last_case: str = ""


@pytest.fixture(scope="module", params=["fast", "h11"])
def stack(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The proxy and its backend, once per HTTP/1 codec: every case runs against both."""
    codec = request.param
    tmp = tmp_path_factory.mktemp(f"corpus-{codec}")
    backend = BackendProcess(tmp, "corpus")
    proxy: PingapProcess | None = None
    try:
        port = free_port()
        config = tmp / "pingap.toml"
        config.write_text(f"""
[upstreams.u]
addrs = ["{backend.addr}"]
[locations.all]
upstream = "u"
path = "/"
client_max_body_size = "64KB"
[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
http1_codec = "{codec}"
""")
        proxy = PingapProcess(config, port, tmp)
        yield Stack(backend, proxy, port)
    finally:
        if proxy is not None:
            proxy.stop()
        backend.stop()


# --- a raw client that knows when the answers are complete ------------------------------


@dataclass
class Exchange:
    raw: bytes
    statuses: list[int]
    closed: bool


def exchange(port: int, data: bytes, *, responses: int, wait_close: bool) -> Exchange:
    """Send ``data`` at once; read until the proxy closes or READ_TIMEOUT passes.

    Reading stops early once ``responses`` complete responses have arrived, unless
    ``wait_close`` asks to see the connection closed (rejections always close).
    """
    parser = h11.Connection(h11.CLIENT)
    statuses: list[int] = []
    chunks: list[bytes] = []
    closed = False
    broken = False

    def prime() -> None:  # h11 only parses a response to a request it has sent
        parser.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        parser.send(h11.EndOfMessage())

    prime()
    deadline = time.monotonic() + READ_TIMEOUT
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy answered and closed before reading it all: read the answer
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
            if broken:
                continue
            try:
                parser.receive_data(chunk)
                while True:
                    event = parser.next_event()
                    if event is h11.NEED_DATA or event is h11.PAUSED:
                        break
                    if isinstance(event, h11.Response):
                        statuses.append(event.status_code)
                    elif isinstance(event, h11.EndOfMessage):
                        if parser.our_state is h11.DONE and parser.their_state is h11.DONE:
                            parser.start_next_cycle()
                            prime()
                        else:
                            break
            except h11.ProtocolError:
                broken = True  # keep the raw bytes; status check below will explain
            if not wait_close and len(statuses) >= responses and \
                    parser.their_state in (h11.IDLE, h11.SEND_RESPONSE, h11.DONE):
                break
    return Exchange(b"".join(chunks), statuses, closed)


# --- checks on what the backend recorded ------------------------------------------------


def header_values(record: dict[str, Any], name: str, key: str = "headers") -> list[str]:
    return [v for n, v in record[key] if n.lower() == name.lower()]


def body_of(record: dict[str, Any], raw: bytes, case: dict[str, Any]) -> bytes | None:
    """The body bytes the backend saw, when they can be identified from its sha256."""
    length = record["length"]
    if length == 0:
        return b""
    digest = record["sha256"]
    expected = case.get("expect_body")
    if expected is not None and hashlib.sha256(expected.encode("latin-1")).hexdigest() == digest:
        return expected.encode("latin-1")
    for start in range(len(raw) - length + 1):  # a Content-Length body is a slice of raw
        window = raw[start:start + length]
        if hashlib.sha256(window).hexdigest() == digest:
            return window
    return None


def assert_not_smuggled(records: list[dict[str, Any]], raw: bytes,
                        case: dict[str, Any]) -> None:
    for record in records:
        target = record["target"].encode("latin-1")
        assert not re.search(rb"\s", target) and b"HTTP/" not in target, \
            f"request line inside a forwarded target: {record['target']!r}"
        assert re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", record["method"]), record
        body = body_of(record, raw, case)
        assert body is not None, (
            f"forwarded body of {record['length']} bytes is not a slice of the payload and "
            f"no expect_body matches it: {record}")
        assert not REQUEST_LINE.search(body), f"request line inside a forwarded body: {body!r}"
        for name, value in record["headers"] + record["trailers"]:
            assert not REQUEST_LINE.search(f"{name}: {value}".encode("latin-1")), record


def check_forwarded(record: dict[str, Any], case: dict[str, Any], raw: bytes) -> None:
    if "expect_target" in case:
        assert record["target"] == case["expect_target"]
    if "expect_method" in case:
        assert record["method"] == case["expect_method"]
    if "expect_length" in case:
        assert record["length"] == case["expect_length"]
    if "expect_body" in case:
        assert body_of(record, raw, case) == case["expect_body"].encode("latin-1")
    for name, value in case.get("expect_headers", {}).items():
        assert header_values(record, name) == [value], (name, record["headers"])
    for name in case.get("forbid_headers", []):
        assert not header_values(record, name), (name, record["headers"])
    for name, value in case.get("expect_trailers", {}).items():
        assert header_values(record, name, "trailers") == [value], (name, record["trailers"])
    for name in case.get("forbid_trailers", []):
        assert not header_values(record, name, "trailers"), (name, record["trailers"])


# --- tests -----------------------------------------------------------------------------


def test_corpus_is_big_enough_and_well_formed() -> None:
    assert len(CASES) >= 40, f"only {len(CASES)} corpus cases"
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for case in CASES:
        unknown = set(case) - KNOWN_KEYS - {"_file"}
        assert not unknown, f"{case['name']}: unknown keys {unknown}"
        assert ("raw" in case) != ("repeat" in case), case["name"]
        assert isinstance(case["expect_status"], int) and isinstance(case["forwarded"], int)
        if case["expect_status"] >= 400:
            assert case["forwarded"] == 0 or "expect_statuses" in case, case["name"]


@pytest.mark.parametrize("case", params())
def test_case(stack: Stack, case: dict[str, Any]) -> None:
    backend = stack.backend
    raw = case_bytes(case)
    before = len(backend.requests())
    if stack.settled is not None:
        assert before == stack.settled, \
            f"{before - stack.settled} request(s) reached the backend after {stack.last_case!r}"
    stack.settled = None
    stack.last_case = case["name"]
    forwarded = case["forwarded"]
    statuses = case.get("expect_statuses", [case["expect_status"]])
    rejected = case["expect_status"] >= 400 and forwarded == 0

    result = exchange(stack.port, raw, responses=len(statuses),
                      wait_close=rejected or bool(case.get("expect_closed")))

    assert result.statuses[:1] == [case["expect_status"]], \
        f"first response: {result.raw[:300]!r}"
    assert result.statuses[:len(statuses)] == statuses, result.raw[:600]
    if case.get("expect_closed"):
        assert result.closed, "the proxy kept the connection open"

    if forwarded:
        wait_for(lambda: len(backend.requests()) >= before + forwarded, timeout=5.0,
                 what=f"{forwarded} request(s) at the backend")
    records = backend.requests()[before:]
    assert len(records) == forwarded, records
    assert_not_smuggled(records, raw, case)
    if records:
        check_forwarded(records[0], case, raw)
    if "expect_targets" in case:
        assert [r["target"] for r in records] == case["expect_targets"]
    stack.settled = before + forwarded
