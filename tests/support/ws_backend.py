"""A real WebSocket echo server (the ``websockets`` library) for pass-through tests.

``python -m tests.support.ws_backend --port P``: on each connection it first sends the
request headers it received (JSON), then echoes every message back.
"""

from __future__ import annotations

import argparse
import json

from websockets.sync.server import ServerConnection, serve


def handler(connection: ServerConnection) -> None:
    assert connection.request is not None
    connection.send(json.dumps(list(connection.request.headers.raw_items())))
    for message in connection:
        connection.send(message)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with serve(handler, "127.0.0.1", args.port, compression=None) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
