"""A minimal blocking HTTP/2 client (h2c prior knowledge, the ``h2`` library) for
integration tests: one request per connection, the whole answer returned; and
``server_frames``, the frames a server sent, for tests that read the wire themselves."""

from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events
from hyperframe.frame import Frame

from tests.support.client import Answer


def h2c_request(port: int, method: str = "GET", path: str = "/", *,
                headers: dict[str, str] | None = None, body: bytes = b"",
                timeout: float = 10.0) -> Answer:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        fields = [(":method", method), (":scheme", "http"), (":authority", f"127.0.0.1:{port}"),
                  (":path", path), *((k.lower(), v) for k, v in (headers or {}).items())]
        conn.send_headers(1, fields, end_stream=not body)
        if body:
            conn.send_data(1, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        status = 0
        got: list[tuple[str, str]] = []
        data = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the response ended")
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    for name, value in event.headers:
                        name_s = name.decode() if isinstance(name, bytes) else name
                        value_s = value.decode() if isinstance(value, bytes) else value
                        if name_s == ":status":
                            status = int(value_s)
                        else:
                            got.append((name_s, value_s))
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    return Answer(status, got, bytes(data), time.monotonic() - start)
                elif isinstance(event, h2.events.StreamReset):
                    raise ConnectionError(f"stream reset: {event.error_code}")
            sock.sendall(conn.data_to_send())


def server_frames(data: bytes) -> list[Frame]:
    """The whole frames at the start of ``data``, bytes a server sent (no preface); an
    incomplete last frame is left out."""
    out = []
    offset = 0
    while offset + 9 <= len(data):
        frame, length = Frame.parse_frame_header(memoryview(data[offset:offset + 9]))
        if offset + 9 + length > len(data):
            break
        frame.parse_body(memoryview(data[offset + 9:offset + 9 + length]))
        out.append(frame)
        offset += 9 + length
    return out
