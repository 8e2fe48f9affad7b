"""Differential test: ``FastServerCodec`` (httptools) against ``H11ServerCodec`` (h11).

The h11 codec is the reference. Both get the same bytes in the same reads, driven the
way the worker drives them (events until NEED_DATA; a response after each request; a new
cycle when the connection is reusable; EOF at the end), and must produce the same
transcript: every event compared field by field, every refusal with its status, what
``request_in_progress``, ``informational``, ``reusable`` and ``detach`` say along the way.

Inputs: every case of ``tests/corpus/*.toml``, then a seeded generator of well-formed
requests (methods, targets, versions, fields, Content-Length and chunked bodies with
extensions and trailers, pipelining, Upgrade, Expect) and of mutations of them (byte
flips; CR, LF, NUL, SP, HTAB, colon, comma inserted; duplicated and reworded
Content-Length and Transfer-Encoding; obs-folds; truncations), each fed whole, in random
reads, and some byte by byte.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pingap.errors import DownstreamError
from pingap.events import (
    NEED_DATA,
    ConnectionEnded,
    MessageEnded,
    RequestReceived,
)
from pingap.http1 import H1Limits, ServerCodec
from pingap.http1_fast import FastServerCodec
from pingap.http1_h11 import H11ServerCodec

CORPUS_DIR = Path(__file__).resolve().parents[1] / "corpus"
SEED = 20240611
GENERATED = 10_500


# --- the driver ---------------------------------------------------------------------------


def transcript(codec: ServerCodec, reads: list[bytes]) -> list[object]:
    """What a codec does with ``reads`` (then EOF), driven like the worker drives it."""
    out: list[object] = []
    stopped = False

    def drain() -> None:
        nonlocal stopped
        while not stopped:
            try:
                event = codec.next_event()
            except DownstreamError as err:
                out.append(("refused", err.status))
                stopped = True
                return
            out.append(event)
            out.append(("in_progress", codec.request_in_progress))
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionEnded):
                stopped = True
                return
            if isinstance(event, RequestReceived) and event.expect_continue:
                out.append(("informational", codec.informational(100)))
            if isinstance(event, MessageEnded):
                out.append(("response", codec.response_head(200, [(b"Content-Length", b"2")])
                            + codec.body(b"ok") + codec.end()))
                reusable = codec.reusable()
                out.append(("reusable", reusable, codec.detach()))
                if reusable:
                    codec.start_next_cycle()
                    out.append(("next", codec.request_in_progress))

    for data in reads:
        codec.receive_data(data)
        drain()
        if stopped:
            break
    if not stopped:
        codec.receive_data(b"")
        drain()
    return out


def compare(data: bytes, reads: list[bytes], limits: H1Limits | None = None) -> None:
    assert b"".join(reads) == data
    reference = transcript(H11ServerCodec(limits), reads)
    fast = transcript(FastServerCodec(limits), reads)
    if fast != reference:
        for index, (a, b) in enumerate(zip(reference, fast, strict=False)):
            if a != b:
                raise AssertionError(
                    f"codecs differ at step {index} for {data!r} in reads "
                    f"{[len(r) for r in reads]}:\n  h11:  {a!r}\n  fast: {b!r}")
        raise AssertionError(f"transcripts differ in length for {data!r}:\n"
                             f"  h11:  {reference[-3:]!r}\n  fast: {fast[-3:]!r}")


def random_reads(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` cut at 1-6 random places."""
    if len(data) < 2:
        return [data]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))] or [b""]


# --- the corpus ---------------------------------------------------------------------------


def corpus_cases() -> list[tuple[str, bytes]]:
    cases = []
    for path in sorted(CORPUS_DIR.glob("*.toml")):
        with path.open("rb") as f:
            for case in tomllib.load(f).get("case", []):
                if "raw" in case:
                    text = case["raw"]
                else:
                    repeat = case["repeat"]
                    text = case.get("raw_prefix", "") + repeat["text"] * repeat["count"] + \
                        case.get("raw_suffix", "")
                cases.append((case["name"], text.encode("latin-1")))
    return cases


CORPUS = corpus_cases()


@pytest.mark.parametrize(("name", "data"), CORPUS, ids=[name for name, _ in CORPUS])
def test_corpus_case_whole_and_in_pieces(name: str, data: bytes) -> None:
    compare(data, [data])
    rng = random.Random(f"{SEED}:{name}")
    for _ in range(3):
        compare(data, random_reads(rng, data))
    if len(data) <= 4096:
        compare(data, byte_by_byte(data))


# --- edges the generator rarely reaches ---------------------------------------------------

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
EDGES = {
    "huge-chunk-size-line": CHUNKED_HEAD + b"5;" + b"e" * 45_000,
    "huge-complete-chunk-line": CHUNKED_HEAD + b"5;" + b"e" * 45_000 + b"\r\nhello\r\n0\r\n\r\n",
    "huge-trailers": CHUNKED_HEAD + b"0\r\n" + b"X-T: " + b"v" * 50_000 + b"\r\n",
    "huge-complete-trailers": CHUNKED_HEAD + b"0\r\n" + b"X-T: " + b"v" * 50_000 + b"\r\n\r\n",
    "twenty-hex-digits": CHUNKED_HEAD + b"00000000000000000005\r\nhello\r\n0\r\n\r\n",
    "chunk-crlf-split": CHUNKED_HEAD + b"1\r\na\r",
    "body-then-eof": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
    "huge-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\nab",
    "length-21-digits": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 000000000000000000005\r\n\r\n",
    "upgrade-then-eof": b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "upgrade-then-bytes": b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: ws\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "close-then-bytes": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nXYZ",
    "http10-then-bytes": b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    "http15-keepalive": b"GET / HTTP/1.5\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "whitespace-only": b" \t \r\n",
    "lone-cr-first": b"\rGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "cr-cr-lf-first": b"\r\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "expect-http10": b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
}


@pytest.mark.parametrize("data", list(EDGES.values()), ids=list(EDGES))
def test_edges_agree(data: bytes) -> None:
    compare(data, [data])
    compare(data, random_reads(random.Random(SEED), data))
    if len(data) < 200:
        compare(data, byte_by_byte(data))


# --- the generator ------------------------------------------------------------------------

# (valid choices, odd ones): a request draws from the odd lists one time in four
METHODS = ([b"GET"] * 6 + [b"POST"] * 4 + [b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS",
                                            b"PROPFIND", b"TRACE", b"get", b"FOO", b"M-SEARCH"],
           [b"PRI", b"CONNECT", b"loGET", b"QUERY", b"G:T", b"G\x80T", b"GE T"])
TARGETS = ([b"/"] * 4 + [b"/a/b?x=1&y=2", b"/%41%2f", b"http://example.com/p?q=1",
                         b"https://Example.com:8443", b"http://[::1]:80/v6", b"/~u/(x);p=1",
                         b"/" + b"a" * 300, b"/?", b"//double", b"/x?a=%20"],
           [b"*", b"/%zz", b"/a#f", b"http://user@h/", b"example.com:443", b"ftp://h/", b"/a b",
            b"/\x80", b"", b"http://", b"HTTP://h"])
VERSIONS = ([b"1.1"] * 6 + [b"1.0"], [b"1.5", b"2.0", b"0.9", b"1.01", b"11", b"1.x"])
HOSTS = ([b"example.com", b"Example.com:8080", b"[::1]:80", b"localhost", b"h%41", b"a.b:"],
         [b"a b", b"x:port", b"", b"a@b", b"a/b", b"[::1", b"\xff"])
NAMES = ([b"X-Test", b"Accept", b"User-Agent", b"Cookie", b"x-lower", b"Content-Type",
          b"Accept-Encoding", b"X_Under", b"Te", b"Trailer", b"Keep-Alive"],
         [b"X Test", b"X\x80", b"", b"X:Y", b"(x)", b"X\x00"])
VALUE_BYTES = (b"abcxyz0129 ;,=/-_.:\"'()\t\x80\xff", b"\x01\x7f\x0b\x0c\x00\r")


def pick(rng: random.Random, choices: tuple[list[bytes], list[bytes]], odd: float = 0.06) -> bytes:
    return rng.choice(choices[1] if rng.random() < odd else choices[0])


def field_value(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 3, 8, 20, 60])
    alphabet = VALUE_BYTES[0] + (VALUE_BYTES[1] if rng.random() < 0.05 else b"")
    value = bytes(rng.choice(alphabet) for _ in range(size))
    if rng.random() < 0.1:
        value = b" " * rng.randint(1, 3) + value + b"\t" * rng.randint(0, 2)
    return value


def chunked_body(rng: random.Random, payload: bytes) -> bytes:
    parts = []
    pos = 0
    while pos < len(payload):
        size = rng.randint(1, max(1, len(payload) - pos))
        piece = payload[pos:pos + size]
        pos += size
        size_text = b"%x" % len(piece)
        roll = rng.random()
        if roll < 0.1:
            size_text = size_text.upper().rjust(rng.randint(1, 22), b"0")
        elif roll < 0.2:
            size_text += rng.choice([b";ext", b";a=b;c=\"d e\"", b"; x", b";\x01", b"  ", b"\t",
                                     b";", b";a\rb"])
        parts.append(size_text + b"\r\n" + piece + b"\r\n")
    last = b"0"
    if rng.random() < 0.1:
        last = rng.choice([b"000", b"0;end", b"0 "])
    trailers = b""
    if rng.random() < 0.3:
        trailer_fields = [(rng.choice([b"X-Checksum", b"Content-Length", b"Transfer-Encoding",
                                       b"Host", b"x-t", b"Connection"]), field_value(rng))
                          for _ in range(rng.randint(1, 3))]
        trailers = b"".join(n + b": " + v + b"\r\n" for n, v in trailer_fields)
    return b"".join(parts) + last + b"\r\n" + trailers + b"\r\n"


def well_formed(rng: random.Random) -> bytes:
    """A request, mostly valid: random method, target, version, fields and body."""
    method = pick(rng, METHODS)
    target = pick(rng, TARGETS)
    if rng.random() < 0.02:
        method, target = b"CONNECT", rng.choice([b"example.com:443", b"[::1]:8080", b"h"])
    version = pick(rng, VERSIONS)
    fields: list[tuple[bytes, bytes]] = []
    host_count = rng.choices([1, 0, 2], weights=[40, 1, 1])[0]
    for _ in range(host_count):
        fields.append((rng.choice([b"Host", b"host", b"HOST"]), pick(rng, HOSTS)))
    for _ in range(rng.randint(0, 6)):
        fields.append((pick(rng, NAMES, 0.02), field_value(rng)))
    if rng.random() < 0.3:
        fields.append((b"Connection", rng.choice([b"keep-alive", b"close", b"Upgrade",
                                                  b"keep-alive, Close", b"closed", b"upgrade, x"])))
    if rng.random() < 0.1:
        fields.append((b"Upgrade", rng.choice([b"websocket", b"h2c", b" , ", b""])))
    if rng.random() < 0.1:
        fields.append((b"Expect", rng.choice([b"100-continue", b"100-Continue", b"foo"])))
    payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 1, 5, 40, 300])))
    body = b""
    framing = rng.random()
    if framing < 0.35 and (payload or rng.random() < 0.5):
        fields.append((rng.choice([b"Content-Length", b"content-length"]), b"%d" % len(payload)))
        body = payload
    elif framing < 0.6 and version == b"1.1":
        fields.append((rng.choice([b"Transfer-Encoding", b"transfer-encoding"]),
                       rng.choice([b"chunked"] * 12 + [b"Chunked", b"gzip, chunked"])))
        body = chunked_body(rng, payload)
    rng.shuffle(fields)
    eol = b"\r\n" if rng.random() < 0.95 else b"\n"
    head = method + b" " + target + b" HTTP/" + version + eol
    head += b"".join(name + b":" + rng.choice([b" ", b"", b"\t", b"  "]) + value + eol
                     for name, value in fields)
    return head + eol + body


INSERTS = [b"\r", b"\n", b"\x00", b" ", b":", b"\t", b",", b"\r\n", b"\r\n ", b"\x0b"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three random edits of the kinds that find parser disagreements."""
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(9)
        pos = rng.randrange(len(data) + 1)
        if kind == 0 and data:  # flip a byte
            pos = min(pos, len(data) - 1)
            data = data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1:]
        elif kind == 1:  # insert a delimiter
            data = data[:pos] + rng.choice(INSERTS) + data[pos:]
        elif kind == 2:  # truncate
            data = data[:pos]
        elif kind == 3:  # delete a byte
            data = data[:pos] + data[pos + 1:]
        elif kind == 4:  # duplicate or add a framing field
            line = rng.choice([b"Content-Length: 0", b"Content-Length: 5", b"Content-Length: 5, 5",
                               b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity",
                               b"content-length: 05", b"Host: other", b"Content-Length: +5"])
            at = data.find(b"\n") + 1
            data = data[:at] + line + b"\r\n" + data[at:] if at else data
        elif kind == 5:  # obs-fold a field line
            lines = data.split(b"\r\n")
            if len(lines) > 2:
                i = rng.randrange(1, len(lines) - 1)
                if b":" in lines[i]:
                    name, _, value = lines[i].partition(b":")
                    lines[i] = name + b":" + value[:len(value) // 2] + b"\r\n" + \
                        rng.choice([b" ", b"\t", b"  "]) + value[len(value) // 2:]
                    data = b"\r\n".join(lines)
        elif kind == 6:  # reword a framing field
            for old, new in ((b"Content-Length", rng.choice([b"Content-Length ", b"Content_Length",
                                                              b"Content-Length\t"])),
                             (b"chunked", rng.choice([b"chunked ", b"chunk", b"\x0bchunked"]))):
                data = data.replace(old, new, 1)
        elif kind == 7:  # an odd request line: HTTP/0.9 forms, a CR before it, spaces
            line_end = data.find(b"\n")
            if line_end > 0:
                line = data[:line_end].rstrip(b"\r")
                method, _, rest = line.partition(b" ")
                odd = rng.choice([line.rpartition(b" ")[0], b"\r" + line, line.replace(b" ", b"  ", 1),
                                  line.rpartition(b" ")[0] + b"\n" + line.rpartition(b" ")[2],
                                  method + b"  " + rest.rpartition(b" ")[2]])
                data = odd + data[line_end - (data[line_end - 1:line_end] == b"\r"):]
        else:  # repeat a slice (pipelined leftovers, doubled lines)
            end = rng.randrange(pos, len(data) + 1)
            data = data[:end] + data[pos:end] + data[end:]
    return data


def generated_cases() -> Iterator[bytes]:
    rng = random.Random(SEED)
    for _ in range(GENERATED):
        data = b"".join(well_formed(rng) for _ in range(rng.choice([1, 1, 1, 2, 3])))
        if rng.random() < 0.4:
            data = mutate(rng, data)
        yield data


def test_generated_requests_agree() -> None:
    rng = random.Random(SEED + 1)
    count = 0
    for data in generated_cases():
        compare(data, [data])
        compare(data, random_reads(rng, data))
        if count % 25 == 0:
            compare(data, byte_by_byte(data))
        count += 1
    assert count >= 10_000


@pytest.mark.parametrize(
    "limits",
    [H1Limits(max_fields=3), H1Limits(max_head=200, max_header_line=60, max_request_line=50)],
    ids=["few-fields", "small-head"],
)
def test_generated_requests_agree_with_custom_limits(limits: H1Limits) -> None:
    rng = random.Random(SEED + 2)
    for index, data in enumerate(generated_cases()):
        if index >= 1500:
            break
        compare(data, random_reads(rng, data), limits)


# --- a head sent again (the fast codec keeps the last one) ----------------------------------


def test_a_head_sent_again_reads_as_the_first_time() -> None:
    """The fast codec does not parse again a body-less head its connection sent just
    before (``FastServerCodec._read_again``): every corpus case and 2,000 generated ones,
    sent twice in a row on one connection, still give h11's transcript, whole and in
    pieces (refusals, bodies, Upgrade and close included: those heads are never kept)."""
    rng = random.Random(SEED + 3)
    for _, data in CORPUS:
        if len(data) <= 8192:
            twice = data + data
            compare(twice, [twice])
            compare(twice, random_reads(rng, twice))
    for index, data in enumerate(generated_cases()):
        if index >= 2000:
            break
        twice = data + data
        compare(twice, [twice])
        compare(twice, random_reads(rng, twice))


def test_a_head_read_again_has_fields_of_its_own() -> None:
    """Plugins edit a request's field list in place: what they did to the first request
    does not reach the one made from the same head again."""
    codec = FastServerCodec()
    head = b"GET /x?a=1 HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\n\r\n"
    requests = []
    for _ in range(3):
        codec.receive_data(head)
        request = codec.next_event()
        assert isinstance(request, RequestReceived)
        assert isinstance(codec.next_event(), MessageEnded)
        codec.response_head(200, [(b"Content-Length", b"0")])
        codec.end()
        assert codec.reusable()
        codec.start_next_cycle()
        requests.append(request)
        assert request.headers == [(b"Host", b"a.test"), (b"X-A", b"1")]
        assert (request.method, request.path, request.query, request.host) == (
            b"GET", b"/x", b"a=1", b"a.test")
        request.headers.append((b"X-Added", b"by a plugin"))
        request.headers[0] = (b"Host", b"edited")
    assert requests[0] is not requests[1] and requests[1].headers is not requests[2].headers


# --- the harness itself -------------------------------------------------------------------


def test_the_generator_covers_what_it_claims() -> None:
    """Enough accepted and refused requests, bodies of both kinds, folds and bare LFs."""
    outcomes: dict[Any, int] = {}
    features = {"chunked": 0, "length": 0, "fold": 0, "bare-lf": 0, "pipelined": 0}
    for data in generated_cases():
        result = transcript(H11ServerCodec(), [data])
        refused = [item for item in result if isinstance(item, tuple) and item[0] == "refused"]
        key = refused[0][1] if refused else "accepted"
        outcomes[key] = outcomes.get(key, 0) + 1
        requests = sum(1 for item in result if isinstance(item, RequestReceived))
        features["pipelined"] += requests > 1
        features["chunked"] += any(isinstance(i, RequestReceived) and i.chunked for i in result)
        features["length"] += any(isinstance(i, RequestReceived) and bool(i.content_length)
                                  for i in result)
        features["fold"] += b"\r\n " in data or b"\r\n\t" in data
        features["bare-lf"] += b"\n" in data.replace(b"\r\n", b"")
    assert outcomes["accepted"] > 3000, outcomes
    assert sum(v for k, v in outcomes.items() if k != "accepted") > 3000, outcomes
    for status in (400, 501, 505, 405):
        assert outcomes.get(status, 0) > 20, outcomes
    assert all(count > 100 for count in features.values()), features
