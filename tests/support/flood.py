"""Hostile clients and a latency probe, for fairness tests and ``scripts/fairness.py``.

``PipelineFlood``: a thread that keeps one HTTP/1.1 connection's input full — ``batch``
pipelined requests per write, written again and again while a second thread reads the
answers (reconnecting when the proxy closes). ``PingFlood``: a thread that writes HTTP/2 PING frames on an h2c
connection as fast as the socket takes them, reconnecting when the proxy ends it.
``LatencyProbe``: one ordinary client sending sequential keep-alive GETs and timing each
answer; any error, timeout or non-200 is a failure with its reason. ``flood_process``
runs a flood in a process of its own.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hyperframe.frame import PingFrame, SettingsFrame

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ROOT = Path(__file__).resolve().parents[2]


class _Looper:
    """A daemon thread running ``_round`` until stopped; counts rounds and errors."""

    def __init__(self) -> None:
        self.rounds = 0
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> _Looper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._connect() as sock:
                    self.connections += 1
                    while not self._stop.is_set():
                        if not self._round(sock):
                            break
                        self.rounds += 1
            except OSError:
                time.sleep(0.01)

    def _connect(self) -> socket.socket:
        raise NotImplementedError

    def _round(self, sock: socket.socket) -> bool:
        raise NotImplementedError


class PipelineFlood(_Looper):
    """Writes pipelined requests without ever waiting for answers (a second thread reads
    and counts them), so the proxy's input stays full whenever it is slower than us."""

    def __init__(self, port: int, path: str = "/ping", batch: int = 2000) -> None:
        super().__init__()
        self.port = port
        self.payload = f"GET {path} HTTP/1.1\r\nHost: flood\r\n\r\n".encode() * batch
        self.answered = 0

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        threading.Thread(target=self._read, args=(sock,), daemon=True).start()
        return sock

    def _read(self, sock: socket.socket) -> None:
        """Discard the answers in the kernel (splice to /dev/null), so reading never
        slows the flood down; ``answered`` counts their bytes."""
        pipe_r, pipe_w = os.pipe()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            while moved := os.splice(sock.fileno(), pipe_w, 1 << 20):
                os.splice(pipe_r, devnull, moved)
                self.answered += moved
        except OSError:
            pass
        finally:
            for fd in (pipe_r, pipe_w, devnull):
                os.close(fd)

    def _round(self, sock: socket.socket) -> bool:
        sock.sendall(self.payload)
        return True


class PingFlood(_Looper):
    def __init__(self, port: int, frames: int = 4000) -> None:
        super().__init__()
        self.port = port
        self.payload = b"".join(PingFrame(0, i.to_bytes(8, "big")).serialize()
                                for i in range(frames))
        self.sent = 0

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.sendall(H2_PREFACE + SettingsFrame(0).serialize())
        sock.setblocking(False)
        return sock

    def _round(self, sock: socket.socket) -> bool:
        try:
            sock.send(self.payload)
            self.sent += len(self.payload)
        except BlockingIOError:
            time.sleep(0.001)
        try:  # keep our side readable so the proxy's acks never block it on us
            while sock.recv(1 << 16):
                pass
            return False  # the proxy closed
        except BlockingIOError:
            return True


@dataclass
class LatencyProbe:
    """Sequential GETs on one keep-alive connection, one every ``interval`` seconds."""

    port: int
    path: str = "/"
    interval: float = 0.01
    timeout: float = 10.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> LatencyProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.failures.append(f"status {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                  timeout=self.timeout)
            else:
                self.latencies.append(time.monotonic() - began)
            self._stop.wait(self.interval)
        conn.close()

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("inf")
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

    def summary(self) -> str:
        return (f"{len(self.latencies)} answers, {len(self.failures)} failures, "
                f"p50 {self.percentile(0.5) * 1000:.1f} ms, "
                f"p99 {self.percentile(0.99) * 1000:.1f} ms, "
                f"max {max(self.latencies, default=0) * 1000:.1f} ms")


def flood_process(kind: str, port: int, seconds: float) -> subprocess.Popen[str]:
    """A flood (``pipeline`` or ``ping``) for ``seconds`` in a child process; its stdout
    ends with a JSON count of rounds and connections."""
    return subprocess.Popen([sys.executable, "-m", "tests.support.flood", kind, str(port),
                             str(seconds)], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def main() -> None:
    """``python3 -m tests.support.flood pipeline|ping PORT SECONDS``: one flood in its own
    process (so the flooder's work never slows the measuring client), then a count."""
    kind, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    flood: PipelineFlood | PingFlood = (PipelineFlood(port) if kind == "pipeline"
                                        else PingFlood(port))
    flood.start()
    time.sleep(seconds)
    flood.stop()
    print(json.dumps({"rounds": flood.rounds, "connections": flood.connections,
                      "answered": getattr(flood, "answered", 0)}), flush=True)


if __name__ == "__main__":
    main()
