"""Drive the upstream connection code for real, under gevent, and print what happened.

The test process is not monkey-patched, and ``workers.pool``/``workers.h2upstream`` need
cooperative sockets, so each scenario runs here in its own interpreter:
``python -m tests.support.h2_scenarios SCENARIO 'JSON args'``. It builds the upstream
from pingap TOML (``upstream`` arg: the body of ``[upstreams.u]``) through the real config
loader and ``build_runtime``, talks to real backends on loopback through ``UpstreamPool``,
and prints one JSON object on the last line of stdout; the tests assert on it.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from pingap.config import load_config_text  # noqa: E402
from pingap.errors import PingapError  # noqa: E402
from pingap.h1client import (  # noqa: E402
    ResponseData,
    ResponseEnded,
    ResponseReader,
    ResponseStarted,
    chunk,
    last_chunk,
    request_head,
)
from pingap.health import parse_health_check  # noqa: E402
from pingap.runtime import UpstreamRuntime, build_runtime  # noqa: E402
from tests.support.backend import pattern  # noqa: E402
from workers.h2upstream import (  # noqa: E402
    STREAM_WINDOW,
    H2StreamError,
    H2UpstreamConnection,
    H2UpstreamStream,
)
from workers.health import probe  # noqa: E402
from workers.pool import UpstreamConnection, UpstreamPool  # noqa: E402

Headers = list[tuple[bytes, bytes]]
TIMEOUT = 10.0


def upstream_of(toml: str) -> UpstreamRuntime:
    config = load_config_text(f"[upstreams.u]\n{toml}\n[locations.l]\nupstream = \"u\"\n"
                              "[servers.s]\naddr = \"127.0.0.1:1\"\nlocations = [\"l\"]\n")
    return build_runtime(config).upstreams["u"]


def collect(stream: H2UpstreamStream) -> dict[str, Any]:
    out: dict[str, Any] = {"body": b""}
    while True:
        for event in stream.next_events(TIMEOUT):
            if isinstance(event, ResponseStarted):
                out["status"] = event.status
                out["headers"] = event.headers
                out["http_version"] = event.http_version
            elif isinstance(event, ResponseData):
                out["body"] += event.data
            elif isinstance(event, ResponseEnded):
                out["trailers"] = event.trailers
                return out


def exchange(pool: UpstreamPool, upstream: UpstreamRuntime, method: bytes, path: bytes, *,
             body: bytes = b"", trailers: Headers | None = None, host: str | None = None,
             headers: Headers | None = None) -> dict[str, Any]:
    """One request through the pool, over whatever protocol it negotiated."""
    backend = upstream.backends[0]
    conn, reused, _ = pool.acquire(upstream, backend, host=host)
    authority = (host or backend.addr).encode()
    extra = list(headers or [])
    if isinstance(conn, H2UpstreamConnection):
        has_body = bool(body or trailers)
        stream = conn.open_stream(method, b"https" if upstream.tls else b"http", authority,
                                  path, extra, end_stream=not has_body)
        if body:
            stream.send_data(body)
        if has_body:
            stream.end(trailers)
        out = collect(stream)
        pool.release(conn, reusable=True)
    else:
        assert isinstance(conn, UpstreamConnection)
        fields = [(b"Host", authority), *extra]
        if trailers:
            fields.append((b"Transfer-Encoding", b"chunked"))
            data = chunk(body) + last_chunk(trailers)
        else:
            fields.append((b"Content-Length", str(len(body)).encode()))
            data = body
        conn.sock.sendall(request_head(method, path, fields) + data)
        reader = ResponseReader(method)
        out = {"body": b""}
        while "trailers" not in out:
            for event in reader.feed(conn.sock.recv(65536)):
                if isinstance(event, ResponseStarted):
                    out.update(status=event.status, headers=event.headers,
                               http_version=event.http_version)
                elif isinstance(event, ResponseData):
                    out["body"] += event.data
                elif isinstance(event, ResponseEnded):
                    out["trailers"] = event.trailers
                    pool.release(conn, reusable=event.keep_alive)
    out["protocol"] = conn.protocol
    out["reused"] = reused
    out["tls_handshake_time"] = conn.tls_handshake_time
    return out


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """JSON-able: headers and trailers as [name, value] strings, the body parsed if JSON."""
    result = {k: v for k, v in out.items() if k not in ("body", "headers", "trailers")}
    for key in ("headers", "trailers"):
        result[key] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in out.get(key, [])]
    body = out.get("body", b"")
    result["length"] = len(body)
    result["sha256"] = hashlib.sha256(body).hexdigest()
    try:
        result["json"] = json.loads(body)
    except ValueError:
        result["text"] = body[:200].decode("latin-1")
    return result


def records(path: str) -> list[dict[str, Any]]:
    text = Path(path).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        gevent.sleep(0.02)


# --- scenarios ---------------------------------------------------------------------------


def request(args: dict[str, Any]) -> dict[str, Any]:
    """One GET (or ``method`` with ``body``): the response, or the error it failed with."""
    upstream = upstream_of(args["upstream"])
    pool = UpstreamPool(8)
    try:
        out = exchange(pool, upstream, args.get("method", "GET").encode(),
                       args.get("path", "/").encode(), body=args.get("body", "").encode(),
                       host=args.get("host"))
    except PingapError as err:
        return {"error": err.message, "type": type(err).__name__, "retryable": err.retryable}
    return summary(out)


def bodies(args: dict[str, Any]) -> dict[str, Any]:
    """Bodies and trailers both ways, a 5 MB upload and keep-alive reuse."""
    upstream = upstream_of(args["upstream"])
    pool = UpstreamPool(8)
    upload = pattern(100_000)
    echoed = exchange(pool, upstream, b"POST", b"/echo?x=1", body=upload,
                      trailers=[(b"X-Sum", b"s1")],
                      headers=[(b"X-Custom", b"yes"), (b"Connection", b"keep-alive"),
                               (b"TE", b"trailers"), (b"Keep-Alive", b"timeout=5")])
    big = pattern(5 * 1024 * 1024)
    uploaded = exchange(pool, upstream, b"PUT", b"/upload", body=big)
    with_trailers = exchange(pool, upstream, b"GET", b"/trailers")
    return {"echo": summary(echoed), "upload": summary(uploaded),
            "expected_upload": {"length": len(big), "sha256": hashlib.sha256(big).hexdigest()},
            "expected_echo_sha256": hashlib.sha256(upload).hexdigest(),
            "trailers": summary(with_trailers)}


def slow_consumer(args: dict[str, Any]) -> dict[str, Any]:
    """A 5 MB response nobody reads for a while: the backend must stall at the window."""
    upstream = upstream_of(args["upstream"])
    pool = UpstreamPool(8)
    size = 5 * 1024 * 1024
    conn, _, _ = pool.acquire(upstream, upstream.backends[0])
    assert isinstance(conn, H2UpstreamConnection)
    stream = conn.open_stream(b"GET", b"http", b"backend", f"/big?n={size}".encode(), [],
                              end_stream=True)

    def blocked() -> dict[str, Any] | None:
        return next((r for r in records(args["record"])
                     if r.get("event") == "blocked" and r["stream"] == stream.stream_id),
                    None)
    first_block = wait_for(blocked, "the backend to block on flow control")
    # the reader greenlet has taken in everything the backend sent before blocking
    wait_for(lambda: stream.buffered >= first_block["sent"], "the sent bytes to arrive")
    buffered_while_stalled = stream.buffered
    body = hashlib.sha256()
    total = 0
    most_buffered = buffered_while_stalled
    done = False
    while not done:
        most_buffered = max(most_buffered, stream.buffered)
        for event in stream.next_events(TIMEOUT):
            if isinstance(event, ResponseData):
                body.update(event.data)
                total += len(event.data)
            elif isinstance(event, ResponseEnded):
                done = True
        gevent.sleep(0.001)  # a slow client: let the backend refill the window
    pool.release(conn, reusable=True)
    blocks = [r for r in records(args["record"])
              if r.get("event") == "blocked" and r["stream"] == stream.stream_id]
    return {"first_block_sent": first_block["sent"], "stream_window": STREAM_WINDOW,
            "buffered_while_stalled": buffered_while_stalled, "most_buffered": most_buffered,
            "blocks": len(blocks), "total": total, "sha256": body.hexdigest(),
            "expected_sha256": hashlib.sha256(pattern(size)).hexdigest()}


def multiplex(args: dict[str, Any]) -> dict[str, Any]:
    """``n`` requests at once, each answered only when ``barrier`` of them wait together."""
    upstream = upstream_of(args["upstream"])
    pool = UpstreamPool(8)
    n, barrier = args["n"], args["barrier"]
    path = f"/barrier?name={args.get('name', 'm')}&n={barrier}".encode()
    jobs = [gevent.spawn(exchange, pool, upstream, b"GET", path) for _ in range(n)]
    gevent.joinall(jobs, timeout=30)
    results = [summary(job.get(block=False)) for job in jobs]
    return {"statuses": [r["status"] for r in results],
            "connections": sorted({r["json"]["connection"] for r in results}),
            "protocols": sorted({r["protocol"] for r in results})}


def burst_failure(args: dict[str, Any]) -> dict[str, Any]:
    """``n`` requests at once to a backend that never starts HTTP/2: how they fail."""
    upstream = upstream_of(args["upstream"])
    pool = UpstreamPool(8)

    def attempt() -> str:
        try:
            exchange(pool, upstream, b"GET", b"/")
        except PingapError as err:
            return f"{type(err).__name__}: {err.message}"
        return "answered"
    started = time.monotonic()
    jobs = [gevent.spawn(attempt) for _ in range(args["n"])]
    gevent.joinall(jobs, timeout=60)
    return {"errors": [job.get(block=False) for job in jobs],
            "elapsed": time.monotonic() - started}


def goaway(args: dict[str, Any]) -> dict[str, Any]:
    """A GOAWAY naming stream 1 as the last: stream 1 finishes, stream 3 is retryable,
    and the pool moves new requests to a new connection."""
    upstream = upstream_of(args["upstream"])
    pool = UpstreamPool(8)
    backend = upstream.backends[0]
    conn, _, _ = pool.acquire(upstream, backend)
    assert isinstance(conn, H2UpstreamConnection)
    held = conn.open_stream(b"GET", b"http", b"b", b"/hold?name=g", [], end_stream=True)
    shared, reused, _ = pool.acquire(upstream, backend)
    assert shared is conn and reused
    doomed = conn.open_stream(b"GET", b"http", b"b", b"/goaway?last=prev&release=g", [],
                              end_stream=True)
    try:
        collect(doomed)
        doomed_error: dict[str, Any] = {"error": None}
    except H2StreamError as err:
        doomed_error = {"error": err.message, "retryable": err.retryable,
                        "response_started": err.response_started}
    available_after_goaway = conn.available
    finished = summary(collect(held))
    pool.release(conn, reusable=True)
    wait_for(lambda: conn.closed, "the GOAWAY'd connection to close after its last stream")
    after = summary(exchange(pool, upstream, b"GET", b"/after"))
    return {"doomed": doomed_error, "available_after_goaway": available_after_goaway,
            "held": finished, "after": after}


def refused(args: dict[str, Any]) -> dict[str, Any]:
    upstream = upstream_of(args["upstream"])
    pool = UpstreamPool(8)
    try:
        exchange(pool, upstream, b"GET", b"/refuse")
    except H2StreamError as err:
        first = {"error": err.message, "retryable": err.retryable}
    else:
        first = {"error": None}
    # the connection survives a reset stream
    second = summary(exchange(pool, upstream, b"GET", b"/again"))
    return {"refused": first, "again": second}


def grpc_probe(args: dict[str, Any]) -> dict[str, Any]:
    """workers.health.probe against a real gRPC server."""
    spec = parse_health_check(args["url"])
    upstream = upstream_of(f'addrs = ["{args["addr"]}"]\n')
    started = time.monotonic()
    healthy = probe(spec, upstream.backends[0])
    return {"healthy": healthy, "elapsed": time.monotonic() - started}


SCENARIOS = {f.__name__: f for f in (request, bodies, slow_consumer, multiplex, goaway,
                                     refused, burst_failure, grpc_probe)}


def main() -> None:
    name, raw = sys.argv[1], sys.argv[2]
    result = SCENARIOS[name](json.loads(raw))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
