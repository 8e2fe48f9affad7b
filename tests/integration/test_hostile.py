"""Hostile clients against the real ``pingap`` (issue 16): one connection never starves a
worker, and every phase of a request has a deadline.

- floods: two HTTP/1 pipelining floods and one HTTP/2 PING flood (each in a process of
  its own, ``tests.support.flood``) run on a one-worker proxy for longer than its
  heartbeat timeout, beside an ordinary keep-alive client; that client gets every
  answer, its p99 stays under 0.5 s, and the worker is never replaced;
- PINGs within the control-frame budget are answered; past it (PING, SETTINGS,
  PRIORITY, crumb WINDOW_UPDATEs, empty DATA) the connection ends with GOAWAY
  ENHANCE_YOUR_CALM;
- a request head trickled one line at a time, each line well within the read timeout,
  is answered 408 once the head as a whole has taken the read timeout;
- a stop (SIGTERM, and QUIT with nobody to take the listeners) under a burst of six
  connecting threads resets no connection: what the kernel had queued is served, later
  clients are refused;
- with ``client_body_buffer_size``, twenty slow uploads (Content-Length and chunked)
  hold no upstream connection while they arrive, then reach the backend intact (memory
  and temp file), trailers included; past ``client_max_body_size`` such an upload gets
  413 with nothing forwarded.

(Content-Length and chunk sizes over 2^63-1 and control characters: the corpus,
``tests/corpus/http1_requests.toml``, run by ``test_corpus.py`` against both codecs and
the recording backend; the HTTP/2 side, and a malformed stream reset beside a sibling
that gets 200: ``test_h2_frames.py``.)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import hpack
import psutil
import pytest
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.support.configs import proxy_config
from tests.support.flood import H2_PREFACE, LatencyProbe, flood_process
from tests.support.h2client import server_frames
from tests.support.proc import PingapProcess, free_port, wait_for

HEARTBEAT_TIMEOUT = 3.0
VOLLEY = 8
FLOOD_SECONDS = 8.0  # longer than the heartbeat timeout: a starved worker would be killed


def test_floods_leave_a_normal_client_served_and_the_worker_alive(pingap, backends) -> None:
    backend = backends()
    port = free_port()
    proc = _serving(pingap(proxy_config(port, backend.addr, basic="threads = 1",
                                        location='plugins = ["pingap:ping"]',
                                        server="enabled_h2 = true"),
                           port=port, args=["--heartbeat-timeout", str(HEARTBEAT_TIMEOUT)]))
    workers = proc.worker_pids()
    assert len(workers) == 1
    floods = [flood_process("pipeline", port, FLOOD_SECONDS),
              flood_process("pipeline", port, FLOOD_SECONDS),
              flood_process("ping", port, FLOOD_SECONDS)]
    probe = LatencyProbe(port, "/ping").start()
    try:
        time.sleep(FLOOD_SECONDS)
    finally:
        probe.stop()
        counts = [json.loads(f.communicate(timeout=30)[0].splitlines()[-1]) for f in floods]
    # the floods really flooded: thousands of pipelined answers, PING connections cut off
    assert counts[0]["rounds"] >= 1 and counts[1]["rounds"] >= 1, counts
    assert counts[2]["connections"] >= 2, counts
    assert probe.failures == [], probe.summary()
    assert len(probe.latencies) >= 50, probe.summary()
    assert probe.percentile(0.99) < 0.5, probe.summary()
    assert proc.worker_pids() == workers
    assert "missed heartbeats" not in proc.log()
    assert "h2 control frame flood" in proc.log()


def test_ping_flood_ends_with_enhance_your_calm(pingap, backends) -> None:
    backend = backends()
    port = free_port()
    _serving(pingap(proxy_config(port, backend.addr, server="enabled_h2 = true"), port=port))
    # within the budget (1000 control frames a second): every PING answered, no GOAWAY
    frames = _burst(port, 500)
    assert len([f for f in frames if isinstance(f, PingFrame)]) == 500
    assert not [f for f in frames if isinstance(f, GoAwayFrame)]
    # past it: the connection ends with ENHANCE_YOUR_CALM
    frames = _burst(port, 1500)
    assert [f.error_code for f in frames if isinstance(f, GoAwayFrame)] == [0xb]


def _control_frames(kind: str, count: int) -> bytes:
    """``count`` control frames of one kind, after what they need (an open stream)."""
    if kind == "settings":
        return SettingsFrame(0).serialize() * count
    if kind == "priority":
        return b"".join(PriorityFrame(2 * i + 1, depends_on=0, stream_weight=15).serialize()
                        for i in range(count))
    if kind == "window-update-crumbs":
        return WindowUpdateFrame(0, window_increment=1).serialize() * count
    # empty DATA on an upload whose body never comes
    head = hpack.Encoder().encode([(b":method", b"POST"), (b":scheme", b"http"),
                                   (b":authority", b"x"), (b":path", b"/empty-data")])
    return (HeadersFrame(1, head, flags=["END_HEADERS"]).serialize()
            + DataFrame(1, b"").serialize() * count)


@pytest.mark.parametrize("kind", ["settings", "priority", "window-update-crumbs",
                                  "empty-data"])
def test_other_control_frame_floods_end_with_enhance_your_calm(pingap, backends,
                                                               kind: str) -> None:
    backend = backends()
    port = free_port()
    _serving(pingap(proxy_config(port, backend.addr, server="enabled_h2 = true"), port=port))
    frames = _burst(port, 0, _control_frames(kind, 1500))
    assert [f.error_code for f in frames if isinstance(f, GoAwayFrame)] == [0xb]
    assert [r for r in backend.requests() if r["target"] == "/empty-data"] == []


def _burst(port: int, pings: int, extra: bytes = b"") -> list[Frame]:
    """Send ``pings`` PINGs (then ``extra``) in one write; the frames the proxy sent back
    until it closed or went quiet for a second."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(H2_PREFACE + SettingsFrame(0).serialize()
                     + b"".join(PingFrame(0, i.to_bytes(8, "big")).serialize()
                                for i in range(pings)) + extra)
        sock.settimeout(1.0)
        received = bytearray()
        while data := _recv(sock):
            received += data
    return server_frames(bytes(received))


def test_a_trickled_head_is_answered_408_within_the_read_timeout(pingap, backends) -> None:
    backend = backends()
    port = free_port()
    _serving(pingap(proxy_config(port, backend.addr, server='downstream_read_timeout = "1s"'),
                    port=port))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        began = time.monotonic()
        sock.sendall(b"GET /trickle HTTP/1.1\r\nHost: x\r\n")
        lines = 0
        answer = b""
        # one header line every 0.3 s: each read is well within the 1 s timeout
        while lines < 30 and not answer:
            sock.settimeout(0.3)
            try:
                answer = sock.recv(4096)
            except TimeoutError:
                sock.sendall(f"X-Line-{lines}: v\r\n".encode())
                lines += 1
        elapsed = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert lines >= 2  # the head was still arriving when it timed out
    assert 0.9 <= elapsed < 2.5, elapsed
    assert [r for r in backend.requests() if r["target"] == "/trickle"] == []


class ConnectBurst:
    """Threads that connect, send one request and read the answer, again and again, and
    sort every attempt: ``ok`` (a 200), ``refused`` (the connect failed or timed out:
    never accepted) or ``reset`` (accepted - the connect succeeded - then cut off)."""

    def __init__(self, port: int, threads: int = 6) -> None:
        self.port = port
        self.outcomes: Counter[str] = Counter()
        self.resets: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def __enter__(self) -> ConnectBurst:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def count(self, outcome: str) -> int:
        with self._lock:
            return self.outcomes[outcome]

    def _run(self, index: int) -> None:
        n = 0
        while not self._stop.is_set():
            # a volley: connect and send eight, then read the eight answers, so the
            # accept queue is seldom empty
            volley = []
            for _ in range(VOLLEY):
                n += 1
                volley.append(self._send(f"/burst/{index}/{n}"))
            outcomes = [self._read(target, sock) if sock is not None else outcome
                        for target, sock, outcome in volley]
            with self._lock:
                self.outcomes.update(outcomes)

    def _send(self, target: str) -> tuple[str, socket.socket | None, str]:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            return target, None, "refused"
        # accepted: the answer may wait for workers the test holds (SIGSTOP) for a while
        sock.settimeout(60)
        try:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n"
                         "Connection: close\r\n\r\n".encode())
        except OSError as exc:
            sock.close()
            return target, None, self._reset(target, f"{type(exc).__name__} on send")
        return target, sock, ""

    def _read(self, target: str, sock: socket.socket) -> str:
        answer = bytearray()
        try:
            with sock:
                while data := sock.recv(65536):
                    answer += data
        except OSError as exc:
            return self._reset(target, f"{type(exc).__name__} after {bytes(answer[:20])!r}")
        if not answer.startswith(b"HTTP/1.1 200 "):
            return self._reset(target, f"closed after {bytes(answer[:20])!r}")
        return "ok"

    def _reset(self, target: str, how: str) -> str:
        with self._lock:
            self.resets.append(f"{target}: {how}")
        return "reset"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT])
def test_a_stop_under_a_connect_burst_resets_no_connection(pingap, backends, tmp_path,
                                                           sig: signal.Signals) -> None:
    backend = backends()
    port = free_port()
    # QUIT: nobody listens on this upgrade_sock, so it becomes a graceful stop
    proc = _serving(pingap(proxy_config(
        port, backend.addr,
        basic=f'threads = 2\nupgrade_sock = "{tmp_path / "nobody.sock"}"'), port=port))
    with ConnectBurst(port) as burst:
        wait_for(lambda: burst.count("ok") >= 100, timeout=60, what="100 answers")
        # Hold the workers still so that connections are certainly queued in the kernel
        # when the stop begins (under load they are: the issue saw 2-5), then stop.
        workers = proc.worker_pids()
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            # the burst's threads may all be waiting on answers from held workers by now
            # (fast workers accept a whole volley at once): queue connections of our own
            queued = [burst._send(f"/queued/{i}") for i in range(8)]
            wait_for(lambda: accept_queue(port) >= 6, timeout=30, what="a queue")
            proc.proc.send_signal(sig)
            # the master has taken the signal (workers still held): TERM begins the stop
            # at once; QUIT waits for a taker, or is deferred while a rollout (the spare's
            # boot) runs, and becomes a stop later, with the workers running by then
            wait_for(lambda: f"{signal.Signals(sig).name}: " in proc.log(), timeout=30,
                     what="the master's answer")
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        proc.proc.wait(60)
        # the queued ones were served before the workers let go of the listener
        assert [burst._read(target, sock) if sock is not None else outcome
                for target, sock, outcome in queued] == ["ok"] * len(queued)
        # until every copy of the listener is closed, new connects wait (their SYN goes
        # unanswered); after it they are refused
        wait_for(lambda: burst.count("refused") >= 6, timeout=30, what="refused connects")
    assert burst.resets == [], burst.resets
    assert burst.count("reset") == 0
    assert proc.proc.returncode == 0


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the loopback listener on ``port``
    (``/proc/net/tcp``: a listening socket's rx_queue is its accept queue)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return int(queues.split(":")[1], 16)
    return 0


def _serving(proc: PingapProcess) -> PingapProcess:
    """Wait until a worker answers (the listener accepts as soon as the master binds it,
    before any worker serves): the timings below start with a worker in place."""
    with socket.create_connection(("127.0.0.1", proc.port), timeout=30) as sock:
        sock.sendall(b"GET /warm-up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(16).startswith(b"HTTP/1.1 ")
    return proc


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:  # quiet (the connection stays open) or closed
        return b""


def upstream_connections(proc: PingapProcess, backend_port: int) -> int:
    """The worker's TCP connections to the backend (its upstream connections)."""
    total = 0
    for pid in proc.worker_pids():
        total += sum(1 for c in psutil.Process(pid).net_connections("tcp")
                     if c.raddr and c.raddr.port == backend_port
                     and c.status == psutil.CONN_ESTABLISHED)
    return total


def _slow_upload(port: int, target: str, body: bytes, *, chunked: bool = False
                 ) -> tuple[socket.socket, bytes]:
    """Send the head and all but the last byte of ``body``; (socket, the rest)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if chunked:
        framing = b"Transfer-Encoding: chunked\r\n"
        wire = f"{len(body) - 1:x}\r\n".encode() + body[:-1] + b"\r\n"
        rest = b"1\r\n" + body[-1:] + b"\r\n0\r\nX-Sum: done\r\n\r\n"
    else:
        framing = f"Content-Length: {len(body)}\r\n".encode()
        wire, rest = body[:-1], body[-1:]
    sock.sendall(f"POST {target} HTTP/1.1\r\nHost: x\r\n".encode() + framing + b"\r\n" + wire)
    return sock, rest


def _answer(sock: socket.socket) -> dict[str, object]:
    data = bytearray()
    with sock:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return json.loads(body)


def test_buffered_uploads_hold_no_upstream_connection(pingap, backends) -> None:
    backend = backends()
    backend_port = int(backend.addr.rsplit(":", 1)[1])
    port = free_port()
    # 16 KiB in memory, the rest of each 100 KB body in a temp file
    proc = _serving(pingap(proxy_config(
        port, backend.addr, basic="threads = 1",
        location='client_body_buffer_size = "16KB"\nclient_max_body_size = "1MB"'),
        port=port))
    before = len(backend.requests())
    bodies = [os.urandom(100_000) for _ in range(20)]
    uploads = [_slow_upload(port, f"/upload?i={i}", body, chunked=i % 2 == 1)
               for i, body in enumerate(bodies)]
    # every body is still arriving: nothing was forwarded, no upstream connection is busy
    time.sleep(0.5)  # a negative observation: give a wrong proxy the time to connect
    assert len(backend.requests()) == before
    busy = upstream_connections(proc, backend_port)
    assert busy <= 1, busy  # (at most the idle pooled connection of the warm-up)
    for sock, rest in uploads:
        sock.sendall(rest)
    answers = [_answer(sock) for sock, _ in uploads]
    for body, answer in zip(bodies, answers, strict=True):
        assert answer["length"] == len(body)
        assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    chunked = [r for r in backend.requests() if r["target"] == "/upload?i=1"]
    assert chunked and chunked[0]["trailers"] == [["X-Sum", "done"]]


def test_buffered_upload_over_the_body_limit_is_refused_before_any_upstream(
        pingap, backends) -> None:
    backend = backends()
    port = free_port()
    _serving(pingap(proxy_config(
        port, backend.addr,
        location='client_body_buffer_size = "4KB"\nclient_max_body_size = "64KB"'),
        port=port))
    sock, rest = _slow_upload(port, "/upload?too-big", b"x" * 100_000)
    with sock:
        sock.sendall(rest)
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert [r for r in backend.requests() if "too-big" in r["target"]] == []
