"""The floor for serving a file under gevent, for the same bench run as pingap's
``directory`` plugin: what no amount of trimming pingap's request path can beat.

Per request: read the request head, parse it with httptools (llhttp, as pingap's fast
codec does), ``open`` + ``fstat`` the file under the root, send the head (Date,
Content-Type, Content-Length, Last-Modified, ETag) with ``MSG_MORE``, ``sendfile`` the
body, ``close``: the six syscalls pingap makes too. No routing, no plugins, no access log,
no metrics, no path checks beyond refusing ``..``; the Date of the current second and
each file's other head fields are formatted once, as pingap caches them.
``scripts/bench-body.sh static`` runs it beside pingap (``NO_BASELINE=1`` skips it).

    python3 scripts/bench/static_floor.py --listen 127.0.0.1:8080 --root /srv/www
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from email.utils import formatdate  # noqa: E402

import httptools  # noqa: E402
from gevent.server import StreamServer  # noqa: E402
from gevent.socket import wait_write  # noqa: E402

NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

#: the Date header of the current second, and each file's other head fields by
#: (path, mtime, size): formatted once, as pingap caches them too
_date: tuple[int, bytes] = (0, b"")
_heads: dict[tuple[str, float, int], bytes] = {}


def _now() -> bytes:
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, formatdate(second, usegmt=True).encode())
    return _date[1]


def _head(path: str, st: os.stat_result) -> bytes:
    key = (path, st.st_mtime, st.st_size)
    fields = _heads.get(key)
    if fields is None:
        fields = _heads[key] = (
            b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
            b"Last-Modified: %s\r\nETag: \"%x-%x\"\r\n\r\n" % (
                st.st_size, formatdate(st.st_mtime, usegmt=True).encode(),
                int(st.st_mtime), st.st_size))
    return b"HTTP/1.1 200 OK\r\nDate: %s\r\n%s" % (_now(), fields)


class _Head:
    """httptools callbacks: the target of each complete request, in order."""

    def __init__(self) -> None:
        self.targets: list[bytes] = []
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        self.targets.append(self._url)
        self._url = b""


def send_file(sock: socket.socket, root: str, target: bytes) -> None:
    path = target.split(b"?", 1)[0].decode("latin-1")
    if ".." in path:
        sock.sendall(NOT_FOUND)
        return
    try:
        fd = os.open(root + path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        sock.sendall(NOT_FOUND)
        return
    try:
        st = os.fstat(fd)
        sock.sendall(_head(path, st), socket.MSG_MORE)
        offset = 0
        while offset < st.st_size:
            try:
                offset += os.sendfile(sock.fileno(), fd, offset, st.st_size - offset)
            except BlockingIOError:
                wait_write(sock.fileno())
    finally:
        os.close(fd)


def handle(sock: socket.socket, root: str) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = _Head()
    parser = httptools.HttpRequestParser(head)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            parser.feed_data(data)
            for target in head.targets:
                send_file(sock, root, target)
            head.targets.clear()
    except (OSError, httptools.HttpParserError):
        return  # the client went away (the bench's end) or sent garbage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--root", required=True, help="the directory files are served from")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    root = os.path.abspath(args.root)
    StreamServer((host, int(port)), lambda sock, _addr: handle(sock, root),
                 backlog=4096).serve_forever()


if __name__ == "__main__":
    main()
