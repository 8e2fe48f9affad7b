"""gRPC through the proxy with real grpcio on both ends, and gRPC-Web from a plain
HTTP/1.1 client bridged to the same gRPC backend."""

from __future__ import annotations

import base64
import http.client
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pingap.grpcweb import parse_trailer_frame
from tests.support.configs import proxy_config
from tests.support.grpc_echo_server import GrpcEchoServer
from tests.support.proc import free_port


@pytest.fixture
def grpc_backend(tmp_path: Path) -> Iterator[GrpcEchoServer]:
    server = GrpcEchoServer(tmp_path)
    yield server
    server.stop()


def grpc_proxy(pingap, backend: GrpcEchoServer) -> int:
    port = free_port()
    pingap(proxy_config(port, backend.addr, upstream='alpn = "H2"', location="grpc_web = true",
                        server='enabled_h2 = true\nmodules = ["grpc-web"]'), port=port)
    return port


def test_grpcio_unary_and_server_streaming_through_the_proxy(grpc_backend, pingap) -> None:
    port = grpc_proxy(pingap, grpc_backend)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary("/echo.Echo/Unary")
        reply, call = unary.with_call(b"hello", timeout=10)
        assert reply == b"echo:hello"
        assert call.code() == grpc.StatusCode.OK
        assert ("x-trailer", "t-hello") in call.trailing_metadata()

        with pytest.raises(grpc.RpcError) as failed:
            unary(b"fail", timeout=10)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.details() == "bad request"

        stream = channel.unary_stream("/echo.Echo/Stream")
        call = stream(b"50", timeout=10)
        parts = list(call)
        assert parts == [f"part-{i}".encode() for i in range(50)]
        assert call.code() == grpc.StatusCode.OK
        assert ("x-count", "50") in call.trailing_metadata()


def frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def split_frames(body: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while body:
        flag, length = struct.unpack(">BI", body[:5])
        frames.append((flag, body[:5 + length]))
        body = body[5 + length:]
    return frames


def grpc_web_call(port: int, path: str, body: bytes, content_type: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={
            "Content-Type": content_type, "X-Grpc-Web": "1", "Accept": content_type})
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


def test_grpc_web_from_a_plain_http1_client(grpc_backend, pingap) -> None:
    port = grpc_proxy(pingap, grpc_backend)
    status, headers, body = grpc_web_call(port, "/echo.Echo/Unary", frame(b"web"),
                                          "application/grpc-web+proto")
    assert status == 200
    assert headers["content-type"] == "application/grpc-web+proto"
    (flag, message), (trailer_flag, trailer) = split_frames(body)
    assert (flag, message[5:]) == (0, b"echo:web")
    assert trailer_flag == 0x80
    fields = dict(parse_trailer_frame(trailer))
    assert fields[b"grpc-status"] == b"0"
    assert fields[b"x-trailer"] == b"t-web"

    # a failing call: the status travels in the trailer frame (or a trailers-only head)
    status, headers, body = grpc_web_call(port, "/echo.Echo/Unary", frame(b"fail"),
                                          "application/grpc-web+proto")
    assert status == 200
    trailers = dict(parse_trailer_frame(split_frames(body)[-1][1])) if body else {
        k.encode(): v.encode() for k, v in headers.items()}
    assert trailers[b"grpc-status"] == b"3"
    assert trailers[b"grpc-message"] == b"bad request"

    # the base64 text variant, server streaming
    status, headers, body = grpc_web_call(
        port, "/echo.Echo/Stream", base64.b64encode(frame(b"3")),
        "application/grpc-web-text")
    assert status == 200 and headers["content-type"] == "application/grpc-web-text"
    decoded = b"".join(base64.b64decode(piece + b"=" * (-len(piece) % 4))
                       for piece in body.split(b"=") if piece)
    frames = split_frames(decoded)
    assert [m[5:] for f, m in frames if f == 0] == [b"part-0", b"part-1", b"part-2"]
    assert dict(parse_trailer_frame(frames[-1][1]))[b"x-count"] == b"3"
