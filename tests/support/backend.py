"""A real HTTP/1.1 test backend (stdlib sockets + h11, one thread per connection).

Run as ``python -m tests.support.backend --port P --name N [--record FILE]``. Every request
it parses is appended to the record file as one JSON line (method, target, headers,
body sha256/length), so tests can count exactly what reached the backend.

Endpoints:
  /stall?s=SECONDS      sleep before answering
  /big?n=BYTES          stream a deterministic body of n bytes (chunked unless cl=1)
  /upload               read the whole body, answer {"length", "sha256"}
  /trailers             chunked response with a trailer
  /status?code=N        answer with that status
  /arm-drop             answer, then drop the next request on this connection unanswered
  anything else         JSON echo: backend name, method, target, headers, body length
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import h11

CHUNK = 65536


def pattern(n: int) -> bytes:
    """Deterministic bytes the tests can re-create to compare bodies."""
    block = bytes(range(256)) * 256  # 64 KiB
    out = bytearray()
    while len(out) < n:
        out += block
    return bytes(out[:n])


class Backend:
    def __init__(self, name: str, record: str | None) -> None:
        self.name = name
        self.record = record
        self.lock = threading.Lock()

    def log(self, entry: dict[str, object]) -> None:
        if not self.record:
            return
        with self.lock, open(self.record, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def serve(self, sock: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER)
        sock.settimeout(30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        drop_next = False
        try:
            while True:
                request = self.next_event(sock, conn)
                if not isinstance(request, h11.Request):
                    return
                if drop_next:
                    # Simulates a keep-alive connection the backend closed just as the
                    # proxy reused it: the request is read, never answered.
                    self.log({"backend": self.name, "event": "dropped",
                              "target": request.target.decode("latin-1")})
                    return
                drop_next = request.target.startswith(b"/arm-drop")
                body = hashlib.sha256()
                length = 0
                trailers: list[tuple[str, str]] = []
                while True:
                    event = self.next_event(sock, conn)
                    if isinstance(event, h11.Data):
                        body.update(event.data)
                        length += len(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        trailers = [(k.decode(), v.decode())
                                    for k, v in event.headers.raw_items()]
                        break
                    else:
                        return
                headers = [(k.decode("latin-1"), v.decode("latin-1"))
                           for k, v in request.headers.raw_items()]
                info = {"backend": self.name, "method": request.method.decode(),
                        "target": request.target.decode("latin-1"), "headers": headers,
                        "length": length, "sha256": body.hexdigest(),
                        "trailers": trailers, "http_version": request.http_version.decode(),
                        "time": time.time()}
                self.log(info)
                self.respond(sock, conn, request, info)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError):
            return
        finally:
            sock.close()

    @staticmethod
    def next_event(sock: socket.socket, conn: h11.Connection) -> object:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(CHUNK))
                continue
            return event

    def respond(self, sock: socket.socket, conn: h11.Connection, request: h11.Request,
                info: dict[str, object]) -> None:
        url = urlsplit(request.target.decode("latin-1"))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        send = sock.sendall
        if url.path == "/stall":
            time.sleep(float(query.get("s", "5")))
        if url.path == "/big":
            n = int(query.get("n", "0"))
            headers = [("Content-Type", "application/octet-stream"),
                       ("X-Backend", self.name)]
            if query.get("cl"):
                headers.append(("Content-Length", str(n)))
            send(conn.send(h11.Response(status_code=200, headers=headers)))
            data = pattern(n)
            if query.get("cut"):  # die after this many body bytes (a backend crash)
                send(data[:int(query["cut"])])
                raise OSError("cut")
            for i in range(0, n, CHUNK):
                send(conn.send(h11.Data(data=data[i:i + CHUNK])))
            send(conn.send(h11.EndOfMessage()))
            return
        if url.path == "/trailers":
            send(conn.send(h11.Response(status_code=200, headers=[
                ("Transfer-Encoding", "chunked"), ("Trailer", "X-Checksum")])))
            send(conn.send(h11.Data(data=b"hello")))
            send(conn.send(h11.EndOfMessage(headers=[("X-Checksum", "abc123")])))
            return
        status = int(query.get("code", "200")) if url.path == "/status" else 200
        payload = json.dumps(info).encode()
        if url.path == "/upload":
            payload = json.dumps({"length": info["length"], "sha256": info["sha256"],
                                  "trailers": info["trailers"]}).encode()
        send(conn.send(h11.Response(status_code=status, headers=[
            ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
            ("X-Backend", self.name), ("X-Hop", "kept")])))
        if request.method != b"HEAD":
            send(conn.send(h11.Data(data=payload)))
        send(conn.send(h11.EndOfMessage()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="backend")
    parser.add_argument("--record", default=None)
    args = parser.parse_args()
    backend = Backend(args.name, args.record)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(512)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=backend.serve, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
