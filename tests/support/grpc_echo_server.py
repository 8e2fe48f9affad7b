"""A real gRPC server (grpcio) for end-to-end tests: raw-bytes methods, no generated code.

``python -m tests.support.grpc_echo_server --port P`` prints ``ready`` once serving.

- ``/echo.Echo/Unary``: answers ``echo:<request>`` with trailing metadata
  ``x-trailer: t-<request>``; a request of ``fail`` ends with INVALID_ARGUMENT and the
  details ``bad request``.
- ``/echo.Echo/Stream``: the request is a count N; answers N messages ``part-<i>`` and
  trailing metadata ``x-count: N``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc

from tests.support.proc import Process, free_port, port_open, wait_for


class GrpcEchoServer(Process):
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        super().__init__([sys.executable, "-m", "tests.support.grpc_echo_server", "--port",
                          str(self.port)], log=tmp / f"grpc-echo-{self.port}.log")
        wait_for(lambda: port_open(self.port), what="grpc echo server")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == b"fail":
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
    context.set_trailing_metadata((("x-trailer", "t-" + request.decode()),))
    return b"echo:" + request


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    count = int(request)
    context.set_trailing_metadata((("x-count", str(count)),))
    for i in range(count):
        yield f"part-{i}".encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler("echo.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    })
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
