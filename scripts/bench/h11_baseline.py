"""The floor the core issue sets: a bare gevent + h11 reverse proxy, for the same bench run.

No routing, no logging, no limits: accept, parse the request with h11, forward it over one
keep-alive upstream connection per client connection (h11 client), relay the response.
``scripts/bench.sh`` runs it beside pingap so both are measured on the same machine state.

    python3 scripts/bench/h11_baseline.py --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402

import gevent  # noqa: E402
import h11  # noqa: E402
from gevent.server import StreamServer  # noqa: E402


def events(conn: h11.Connection, sock: socket.socket):
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        yield event
        if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return


def handle(client: socket.socket, upstream_addr: tuple[str, int]) -> None:
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    upstream = socket.create_connection(upstream_addr)
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    down = h11.Connection(h11.SERVER)
    try:
        while True:
            up = h11.Connection(h11.CLIENT)
            for event in events(down, client):
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    headers = [(k, v) for k, v in event.headers.raw_items()
                               if k.lower() != b"connection"]
                    event = h11.Request(method=event.method, target=event.target,
                                        headers=headers)
                upstream.sendall(up.send(event) or b"")
            for event in events(up, upstream):
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Response):
                    headers = [(k, v) for k, v in event.headers.raw_items()
                               if k.lower() not in (b"connection", b"keep-alive")]
                    event = h11.Response(status_code=event.status_code, headers=headers,
                                         reason=event.reason)
                client.sendall(down.send(event) or b"")
            if down.our_state is h11.MUST_CLOSE:
                return
            down.start_next_cycle()
    except (OSError, h11.ProtocolError):
        return
    finally:
        client.close()
        upstream.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    up_host, up_port = args.upstream.rsplit(":", 1)
    server = StreamServer((host, int(port)),
                          lambda sock, _: handle(sock, (up_host, int(up_port))))
    server.serve_forever()


if __name__ == "__main__":
    gevent.get_hub()
    main()
