"""The plain-file path: which locations and requests take it (``LocationRuntime.plain_files``,
``workers.h1.H1Connection.serve_plain_file``), checked on a real connection loop over a
gevent socket pair, with the exchange it skips watched; and the kept head the writer
sends again (``ResponseWriter.head_again``). That both paths give the same bytes, metrics
and access-log lines is checked through the real pingap in
``tests/integration/test_static_files.py``."""

from __future__ import annotations

import gzip
import socket as stdlib_socket
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from gevent import socket

from pingap.config import load_config_text
from pingap.context import ConnectionInfo
from pingap.errors import DownstreamError
from pingap.h1writer import ResponseWriter
from pingap.runtime import Runtime, build_runtime
from workers import h1
from workers.cache_store import CacheStores
from workers.pool import UpstreamPool
from workers.services import RequestServices, bind_plugins, plugin_services

BODY = b"0123456789" * 1000


def _config(root: Path, location_extra: str = "", extra: str = "") -> str:
    return f"""
[plugins.files]
category = "directory"
path = "{root}"
[plugins.ping]
category = "ping"
path = "/never-asked"
[locations.files]
path = "/"
{location_extra}
[servers.s]
addr = "127.0.0.1:8080"
locations = ["files"]
{extra}
"""


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "data.bin").write_bytes(BODY)
    (tmp_path / "index.html").write_text("<h1>home</h1>")
    (tmp_path / "page.js").write_text("let page = 1;\n" * 100)
    (tmp_path / "page.js.gz").write_bytes(gzip.compress(b"let page = 1;\n" * 100))
    return tmp_path


def _runtime(text: str) -> Runtime:
    return build_runtime(load_config_text(text, "pingap.toml"))


# --- which locations ------------------------------------------------------------------

def test_a_location_with_only_directory_takes_the_plain_path(root: Path) -> None:
    runtime = _runtime(_config(root, 'plugins = ["files"]'))
    location = runtime.servers["s"].matcher.routes[0].payload
    assert location.plain_files is not None  # type: ignore[attr-defined]
    assert runtime.servers["s"].plain_files


@pytest.mark.parametrize("location_extra", [
    'plugins = ["ping", "files"]',                       # another plugin acts on requests
    'plugins = ["files"]\nrewrite = "^/(.*)$ /$1"',      # the path changes before the plugin
    'plugins = ["pingap:compression", "files"]',         # a body filter
    'upstream = "u"',                                    # no directory plugin at all
])
def test_other_locations_do_not(root: Path, location_extra: str) -> None:
    text = _config(root, location_extra) + '[upstreams.u]\naddrs = ["127.0.0.1:9"]\n'
    runtime = _runtime(text)
    location = runtime.servers["s"].matcher.routes[0].payload
    assert location.plain_files is None  # type: ignore[attr-defined]
    assert not runtime.servers["s"].plain_files


def test_a_server_with_conditional_routes_does_not(root: Path) -> None:
    """Matching by header, query or cookie needs the whole request context."""
    text = _config(root, 'plugins = ["files"]').replace(
        'locations = ["files"]', 'locations = ["files", "other"]') + """
[locations.other]
path = "/"
match_headers = ["x-beta:1"]
plugins = ["files"]
"""
    assert not _runtime(text).servers["s"].plain_files


# --- which requests, on a real connection loop ---------------------------------------------

class _Served:
    """A connection loop over a socket pair, with the exchanges it starts counted."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        plugins = plugin_services(runtime, None, 0, lambda ctx: {}, CacheStores())
        bind_plugins(runtime, plugins)
        services = RequestServices(runtime, UpstreamPool(1), plugins=plugins)
        self.exchanges = 0
        real = h1.Exchange

        def counted(*args: object) -> object:
            self.exchanges += 1
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(h1, "Exchange", counted)
        ours, self.client = socket.socketpair(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
        info = ConnectionInfo(connection_id=1, remote_addr="10.0.0.1", remote_port=4000,
                              server_addr="127.0.0.1", server_port=8080, accepted_at=0.0)
        self.conn = h1.H1Connection(services, runtime.servers["s"], ours, info)
        self.loop = gevent.spawn(self.conn.run)

    def get(self, head: bytes) -> tuple[bytes, bytes]:
        """Send one request head; its response head and body."""
        self.client.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv()
        response, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in response.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)  # 0: a 304
        while len(body) < length:
            body += self._recv()
        return response, body

    def _recv(self) -> bytes:
        with gevent.Timeout(5):
            data = self.client.recv(1 << 20)
        assert data, "the connection closed"
        return data

    def close(self) -> None:
        self.client.close()
        self.loop.join(timeout=5)


@pytest.fixture()
def served(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Served]:
    conn = _Served(_runtime(_config(root, 'plugins = ["files"]')), monkeypatch)
    yield conn
    conn.close()


def test_plain_gets_skip_the_exchange_and_the_rest_take_it(served: _Served) -> None:
    host = b"Host: files.test\r\n"
    for _ in range(3):  # the kept head, sent again
        head, body = served.get(b"GET /data.bin HTTP/1.1\r\n" + host + b"\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == BODY
        assert b"Content-Length: 10000" in head
    head, body = served.get(b"GET / HTTP/1.1\r\n" + host + b"\r\n")  # the index file
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"<h1>home</h1>"
    # no sibling takes the coding: the file itself, on the plain path
    head, body = served.get(b"GET /data.bin HTTP/1.1\r\naccept-encoding: gzip, br\r\n"
                            + host + b"\r\n")
    assert body == BODY and b"Content-Encoding" not in head
    assert served.exchanges == 0
    others = [
        (b"GET /data.bin HTTP/1.1\r\nRange: bytes=0-9\r\n", b"206", b"0123456789"),
        (b"GET /data.bin HTTP/1.1\r\nIf-None-Match: *\r\n", b"304", b""),
        (b"GET /page.js HTTP/1.1\r\nAccept-Encoding: gzip\r\n", b"200",
         gzip.compress(b"let page = 1;\n" * 100)),  # the sibling, from the plugin
        (b"HEAD /data.bin HTTP/1.1\r\n", b"200", b""),
        (b"GET /missing HTTP/1.1\r\n", b"404", b"Not Found"),
        (b"GET /../etc/passwd HTTP/1.1\r\n", b"403", None),
    ]
    for count, (request, status, expected) in enumerate(others, start=1):
        if request.startswith(b"HEAD"):
            served.client.sendall(request + host + b"\r\n")
            response = b""
            while b"\r\n\r\n" not in response:
                response += served._recv()
            head, body = response.partition(b"\r\n\r\n")[0], b""
        else:
            head, body = served.get(request + host + b"\r\n")
        assert head.split(b" ")[1] == status, request
        if expected is not None:
            assert body == expected, request
        assert served.exchanges == count, request


def test_a_request_that_closes_takes_the_exchange(served: _Served) -> None:
    """Connection: close (and HTTP/1.0) get ``Connection: close`` on the general path."""
    head, body = served.get(b"GET /data.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert b"Connection: close" in head and body == BODY
    assert served.exchanges == 1


def test_a_full_location_takes_the_exchange(root: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_processing`` is checked as the general path checks it: the request that
    would pass the limit goes there (and is refused there)."""
    runtime = _runtime(_config(root, 'plugins = ["files"]\nmax_processing = 1'))
    location = runtime.servers["s"].matcher.routes[0].payload
    location.processing = 1  # type: ignore[attr-defined]  # another request in flight
    conn = _Served(runtime, monkeypatch)
    try:
        head, _ = conn.get(b"GET /data.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        assert head.split(b" ")[1] == b"429" and conn.exchanges == 1
    finally:
        conn.close()
    location.processing = 0  # type: ignore[attr-defined]  # ... and it is over
    conn = _Served(runtime, monkeypatch)
    try:
        head, body = conn.get(b"GET /data.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        assert body == BODY and conn.exchanges == 0
    finally:
        conn.close()
    assert location.processing == 0  # type: ignore[attr-defined]


# --- the kept head ----------------------------------------------------------------------

def test_a_kept_head_leaves_the_writer_as_head_did() -> None:
    fields = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")]
    writer = ResponseWriter()
    writer.start(b"GET", b"1.1", True)
    wire = writer.head(200, fields)
    writer.raw_sent(5)
    writer.end()
    writer.start(b"GET", b"1.1", True)
    assert writer.head_again(wire, 5) == wire
    assert writer.raw_owed() == 5 and writer.head_sent and not writer.must_close
    with pytest.raises(DownstreamError):
        writer.end()  # five bytes still owed
    writer.raw_sent(5)
    assert writer.end() == b""


@pytest.mark.parametrize(("method", "version", "keep_alive"), [
    (b"HEAD", b"1.1", True), (b"GET", b"1.1", False), (b"GET", b"1.0", True)])
def test_a_kept_head_is_refused_where_it_would_be_wrong(method: bytes, version: bytes,
                                                         keep_alive: bool) -> None:
    """A HEAD has no body to follow, a closing connection needs ``Connection: close``."""
    writer = ResponseWriter()
    writer.start(method, version, keep_alive)
    with pytest.raises(DownstreamError):
        writer.head_again(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 5)
