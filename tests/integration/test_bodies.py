"""Bodies stream both ways: large, chunked, trailers, 100-continue, size limits."""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
from collections.abc import Iterator

import psutil

from tests.support.backend import pattern
from tests.support.client import raw_exchange, request, status_of
from tests.support.configs import proxy_config
from tests.support.proc import free_port, wait_for

MB20 = 20 * 1000 * 1000


def config(port: int, backend: str, location_extra: str = "") -> str:
    return proxy_config(port, backend, location=location_extra)


class PeakRss:
    """Samples a process's RSS in a thread; ``peak`` is the largest value seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_20mb_response_and_upload_stream_with_bounded_memory(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    proxy = pingap(config(port, backend.addr), port=port)
    assert request(port, path="/warm").status == 200
    worker = wait_for(proxy.worker_pids, what="worker pid")[0]
    baseline = psutil.Process(worker).memory_info().rss
    expected = hashlib.sha256(pattern(MB20)).hexdigest()

    def chunks() -> Iterator[bytes]:
        data = pattern(MB20)
        for i in range(0, MB20, 1 << 16):
            yield data[i:i + (1 << 16)]

    with PeakRss(worker) as rss:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", f"/big?n={MB20}")
        resp = conn.getresponse()
        digest = hashlib.sha256()
        total = 0
        while block := resp.read(1 << 16):
            digest.update(block)
            total += len(block)
        assert resp.status == 200
        assert total == MB20 and digest.hexdigest() == expected
        conn.request("POST", "/upload", body=chunks(), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        resp = conn.getresponse()
        info = __import__("json").loads(resp.read())
        conn.close()
    assert resp.status == 200
    assert info["length"] == MB20 and info["sha256"] == expected
    growth = rss.peak - baseline
    assert growth < 30 * 1024 * 1024, f"worker RSS grew by {growth / 1e6:.1f} MB"


def test_content_length_response_passes_exact(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(config(port, backend.addr), port=port)
    reply = request(port, path="/big?n=300000&cl=1")
    assert reply.status == 200
    assert reply.header("Content-Length") == "300000"
    assert reply.body == pattern(300000)


def test_large_content_length_bodies_keep_the_connection(backends, pingap) -> None:
    """Content-Length bodies past 32 KiB go upstream socket → client socket with splice(2)
    on plaintext connections: every byte arrives and the connections stay reusable."""
    backend = backends()
    port = free_port()
    pingap(config(port, backend.addr), port=port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for n in (5_000_000, 40_000, 32_768 + 1):
            conn.request("GET", f"/big?n={n}&cl=1")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200 and resp.getheader("Content-Length") == str(n)
            assert body == pattern(n)
        conn.request("GET", "/after")
        resp = conn.getresponse()
        assert resp.status == 200 and b'"/after"' in resp.read()
    finally:
        conn.close()


def test_backend_dying_mid_body_cuts_the_client_off(backends, pingap) -> None:
    """A Content-Length body the backend stops sending halfway: the client gets the bytes
    that came and then a closed connection, never a silently short keep-alive response."""
    backend = backends()
    port = free_port()
    pingap(config(port, backend.addr), port=port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /big?n=2000000&cl=1&cut=100000 HTTP/1.1\r\nHost: t\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):  # a timeout here fails the test: no EOF came
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert b"Content-Length: 2000000" in head
    assert 0 < len(body) < 2_000_000
    assert body == pattern(2_000_000)[:len(body)]
    assert request(port, path="/still-fine").status == 200


def test_request_trailers_reach_the_backend(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(config(port, backend.addr), port=port)
    raw = (b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n")
    reply = raw_exchange(port, raw)
    assert status_of(reply) == 200
    body = reply.split(b"\r\n\r\n", 1)[1]
    assert b'"length": 5' in body and b'"X-Sum", "42"' in body


def test_response_trailers_reach_the_client(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(config(port, backend.addr), port=port)
    reply = raw_exchange(port, b"GET /trailers HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n"
                               b"Connection: close\r\n\r\n")
    assert status_of(reply) == 200
    assert b"Transfer-Encoding: chunked" in reply
    assert reply.endswith(b"0\r\nX-Checksum: abc123\r\n\r\n")
    forwarded = backend.requests()[-1]
    assert ["TE", "trailers"] in forwarded["headers"]


def test_expect_100_continue_gets_interim_response_before_body(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(config(port, backend.addr), port=port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"ping")
        final = b""
        while b'"sha256"' not in final:
            final += sock.recv(65536)
    assert status_of(final) == 200 and b'"length": 4' in final
    assert not any(h[0].lower() == "expect" for h in backend.requests()[-1]["headers"])


def test_client_max_body_size_by_length_and_by_stream(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(config(port, backend.addr, 'client_max_body_size = "1kb"'), port=port)
    reply = request(port, "POST", "/upload", body=b"x" * 1001)
    assert reply.status == 413
    assert request(port, "POST", "/upload", body=b"x" * 1000).status == 200
    raw = (b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           + (b"200\r\n" + b"y" * 512 + b"\r\n") * 3 + b"0\r\n\r\n")
    assert status_of(raw_exchange(port, raw)) == 413
    uploads = [r for r in backend.requests() if r.get("target") == "/upload"]
    assert [r["length"] for r in uploads] == [1000]   # the streamed one never completed


def test_max_processing_answers_429(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(config(port, backend.addr, "max_processing = 1"), port=port)
    slow = threading.Thread(target=request, args=(port,), kwargs={"path": "/stall?s=2"})
    slow.start()
    wait_for(lambda: any(r.get("target") == "/stall?s=2" for r in backend.requests()),
             what="the slow request to reach the backend")
    assert request(port, path="/second").status == 429
    slow.join()
    assert request(port, path="/third").status == 200
