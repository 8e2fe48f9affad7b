"""A real gRPC server (grpcio) with the standard health service, driven over stdin.

Run as ``python -m tests.support.grpc_health_server --port P [--tls CERT KEY]``; it prints
``ready`` once serving. Each stdin line ``<service> <SERVING|NOT_SERVING|SERVICE_UNKNOWN>``
sets that service's status (``""`` names the whole server) and is answered with ``ok``.
``GrpcHealthServer`` starts it from a test and sets statuses.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent import futures
from pathlib import Path

from tests.support.proc import ROOT, free_port


class GrpcHealthServer:
    """The server as a child process; ``set`` changes a status and waits for the ack."""

    def __init__(self, log: Path, *, tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "tests.support.grpc_health_server", "--port",
               str(self.port)]
        if tls:
            cmd += ["--tls", str(tls[0]), str(tls[1])]
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True)
        self._expect("ready")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _expect(self, word: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the server answers every command
        if line != word:
            raise AssertionError(f"grpc health server said {line!r}, expected {word!r}")

    def set(self, service: str, status: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{service or '-'} {status}\n")
        self.proc.stdin.flush()
        self._expect("ok")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._log.close()


def main() -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = parser.parse_args()
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = f"127.0.0.1:{args.port}"
    if args.tls:
        pair = (Path(args.tls[1]).read_bytes(), Path(args.tls[0]).read_bytes())
        server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
    else:
        server.add_insecure_port(address)
    server.start()
    print("ready", flush=True)
    statuses = health_pb2.HealthCheckResponse.ServingStatus
    for line in sys.stdin:
        service, _, status = line.strip().partition(" ")
        servicer.set("" if service == "-" else service, statuses.Value(status))
        print("ok", flush=True)
    server.stop(0)


if __name__ == "__main__":
    main()
