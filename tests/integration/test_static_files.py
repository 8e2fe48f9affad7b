"""The directory plugin through the real pingap: files over HTTP/1.1 (sendfile) and
HTTP/2, ranges, conditionals, autoindex, precompressed siblings, compression of static
text, and the attacks a file server must refuse (raw request bytes, no client-side
normalisation)."""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.client import raw_exchange, read_responses, request
from tests.support.h2c import http1, http2
from tests.support.proc import PingapProcess, free_port, wait_for

SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "big.bin").write_bytes(os.urandom(300_000))
    (root / "app.css").write_bytes(b"body { color: red; }\n" * 2000)
    (root / "app.js").write_bytes(b"console.log('x');\n" * 1000)
    (root / "app.js.gz").write_bytes(gzip.compress(b"console.log('x');\n" * 1000))
    (root / ".env").write_text("hidden")
    (root / "docs" / "a.txt").write_text("a")
    (tmp_path / "secret.txt").write_bytes(SECRET)
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    return root


def serve(pingap: Callable[..., PingapProcess], site: Path, extra: str = "",
          plugins: str = '["static"]') -> int:
    port = free_port()
    pingap(f"""
[plugins.static]
category = "directory"
path = "{site}"
chunk_size = "64kb"
max_age = "1h"
{extra}
[plugins.comp]
category = "compression"
gzip_level = 6

[locations.files]
path = "/"
plugins = {plugins}

[servers.s]
addr = "127.0.0.1:{port}"
locations = ["files"]
enabled_h2 = true
""", port=port)
    return port


def test_files_over_http1_and_http2(pingap: Callable[..., PingapProcess], site: Path) -> None:
    port = serve(pingap, site)
    big = (site / "big.bin").read_bytes()
    for get in (http1, http2):
        answer = get(port, path="/big.bin")
        assert answer.status == 200
        assert hashlib.sha256(answer.body).digest() == hashlib.sha256(big).digest()
        assert answer.header("content-length") == str(len(big))
        assert answer.header("cache-control") == "public, max-age=3600"
        assert answer.header("accept-ranges") == "bytes"
        home = get(port, path="/")
        assert home.body == b"<h1>home</h1>" and home.header("cache-control") is None
        assert get(port, path="/missing").status == 404
        assert get(port, path="/docs/").status == 404
    head = http1(port, "HEAD", "/big.bin")
    assert head.status == 200 and head.body == b""
    assert head.header("content-length") == str(len(big))


def test_pipelined_files_come_back_whole_and_in_order(
        pingap: Callable[..., PingapProcess], site: Path) -> None:
    """A file's head and ``sendfile`` wait for the end of the loop turn like any response
    end: pipelined requests for large and small files, a range, a 404 and a 304 still get
    their answers in request order, each whole."""
    port = serve(pingap, site)
    big = (site / "big.bin").read_bytes()
    css = (site / "app.css").read_bytes()
    first = http1(port, path="/app.css")
    etag = first.header("etag")
    requests = [("/big.bin", {}), ("/index.html", {}), ("/missing", {}),
                ("/app.css", {"If-None-Match": etag}), ("/big.bin", {"Range": "bytes=10-19"}),
                ("/app.css", {})] * 3
    wire = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: files.test\r\n".encode()
        + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
        for path, headers in requests)
    want = [(200, big), (200, b"<h1>home</h1>"), (404, None), (304, b""), (206, big[10:20]),
            (200, css)] * 3
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire)
        replies = read_responses(sock, len(requests))
    for (path, _), (status, body), (reply, got) in zip(requests, want, replies, strict=True):
        assert reply.status == status, path
        if body is not None:
            assert got == body, path


def test_ranges_and_conditionals(pingap: Callable[..., PingapProcess], site: Path) -> None:
    port = serve(pingap, site)
    big = (site / "big.bin").read_bytes()
    for get in (http1, http2):
        part = get(port, path="/big.bin", headers={"Range": "bytes=1000-1999"})
        assert part.status == 206 and part.body == big[1000:2000]
        assert part.header("content-range") == f"bytes 1000-1999/{len(big)}"
        multi = get(port, path="/big.bin", headers={"Range": "bytes=0-9,-10"})
        assert multi.status == 206
        assert (multi.header("content-type") or "").startswith("multipart/byteranges")
        assert big[:10] in multi.body and big[-10:] in multi.body
        bad = get(port, path="/big.bin", headers={"Range": "bytes=999999-"})
        assert bad.status == 416 and bad.header("content-range") == f"bytes */{len(big)}"
        first = get(port, path="/app.css")
        etag = first.header("etag")
        assert etag is not None and etag.startswith('W/"')
        assert get(port, path="/app.css", headers={"If-None-Match": etag}).status == 304
        since = first.header("last-modified")
        assert since is not None
        assert get(port, path="/app.css", headers={"If-Modified-Since": since}).status == 304


ATTACKS = [
    b"/../secret.txt", b"/docs/../../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2E/secret.txt",
    b"/docs/%2e%2e/%2e%2e/secret.txt", b"/..%2fsecret.txt", b"/docs%2f..%2f..%2fsecret.txt",
    b"/..%5csecret.txt", b"/..\\secret.txt", b"/docs\\a.txt", b"/a.txt%00.html",
    b"/%2fetc%2fpasswd", b"/%252e%252e/secret.txt",
]


def test_traversal_attacks_are_refused(pingap: Callable[..., PingapProcess],
                                       site: Path) -> None:
    port = serve(pingap, site, "follow_symlinks = false")
    for target in ATTACKS:
        reply = raw_exchange(port, b"GET " + target
                             + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status = int(reply.split(b" ", 2)[1])
        assert status in (400, 403, 404), (target, reply[:200])
        assert SECRET not in reply, target


def test_symlinks_and_absolute_paths(pingap: Callable[..., PingapProcess], site: Path) -> None:
    strict = serve(pingap, site, "follow_symlinks = false")
    assert http1(strict, path="/link.txt").status == 403
    absolute = raw_exchange(strict, b"GET //etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert absolute.startswith(b"HTTP/1.1 404") and b"root:" not in absolute
    following = serve(pingap, site)  # pingap's default follows links
    assert http1(following, path="/link.txt").body == SECRET


def test_autoindex_hides_dotfiles(pingap: Callable[..., PingapProcess], site: Path) -> None:
    port = serve(pingap, site, "autoindex = true")
    listing = http1(port, path="/")
    assert listing.status == 200
    assert b'href="docs/"' in listing.body and b'href="big.bin"' in listing.body
    assert b".env" not in listing.body


def test_precompressed_sibling_and_compression(pingap: Callable[..., PingapProcess],
                                               site: Path) -> None:
    port = serve(pingap, site, plugins='["static", "comp"]')
    for get in (http1, http2):
        js = get(port, path="/app.js", headers={"Accept-Encoding": "gzip"})
        assert js.header("content-encoding") == "gzip"
        assert js.body == (site / "app.js.gz").read_bytes()  # the sibling, as it is
        css = get(port, path="/app.css", headers={"Accept-Encoding": "gzip"})
        assert css.header("content-encoding") == "gzip"
        assert gzip.decompress(css.body) == (site / "app.css").read_bytes()
        plain = get(port, path="/app.css")
        assert plain.header("content-encoding") is None
        assert plain.body == (site / "app.css").read_bytes()


def test_the_plain_file_path_answers_counts_and_logs_as_the_general_path(
        pingap: Callable[..., PingapProcess], site: Path, tmp_path: Path) -> None:
    """A location whose only plugin is ``directory`` answers plain GETs on the plain-file
    path (``workers.h1``); one with another plugin sends every request through the
    exchange. The same pipelined requests to each give byte-identical responses (files
    small and large, the index, a followed symlink, and what the plain path leaves to the
    general one: 404, 403, a directory), the same metrics and the same access-log lines
    but for the location's name."""
    port = free_port()
    log_file = tmp_path / "access.log"
    template = ("{method} {uri} {status} {:location} {size} {payload_size} {client_ip} "
                "{remote} {:processing} {:connection_reused} {host} {>x-tag} {<etag} "
                "{<content-length}")
    pingap(f"""
[plugins.static]
category = "directory"
path = "{site}"
max_age = "1h"
[plugins.noop]
category = "ping"
path = "/never-asked"

[locations.plain]
host = "plain.test"
plugins = ["static"]
[locations.general]
host = "general.test"
plugins = ["noop", "static"]

[servers.s]
addr = "127.0.0.1:{port}"
locations = ["plain", "general"]
prometheus_metrics = "/metrics"
access_log = "{log_file} {template}"
""", port=port)
    paths = ["/app.css", "/big.bin", "/index.html", "/", "/docs/a.txt", "/app.js",
             "/link.txt", "/missing", "/docs", "/%2e%2e/secret.txt", "/app.css"]
    # a second /app.js and the last /app.css accept gzip: app.js.gz is sent for the
    # first (the plugin, on the general path); app.css has no sibling (the plain path)
    paths.insert(9, "/app.js")
    accepts = {9: "\r\nAccept-Encoding: gzip, br", 11: "\r\nAccept-Encoding: gzip"}

    def fetch(host: str) -> bytes:
        wire = b"".join(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Tag: t{accepts.get(i, '')}"
                        "\r\n\r\n".encode() for i, path in enumerate(paths))
        wire += f"GET /app.css HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        return raw_exchange(port, wire, timeout=10)

    plain, general = fetch("plain.test"), fetch("general.test")
    assert plain == general
    assert plain.count(b"HTTP/1.1 200 OK\r\n") == 10
    assert plain.count(b"Content-Encoding: gzip\r\n") == 1
    assert (site / "big.bin").read_bytes() in plain

    metrics = request(port, path="/metrics", headers={"Host": "plain.test"}).body.decode()
    for location in ("plain", "general"):
        for series in (f'pingap_http_requests_total{{server="s",location="{location}"}} 13',
                       f'pingap_http_responses_codes{{server="s",location="{location}",'
                       'code="2xx"} 10',
                       f'pingap_http_responses_codes{{server="s",location="{location}",'
                       'code="4xx"} 3',
                       f'pingap_http_response_time_seconds_count{{server="s",'
                       f'location="{location}"}} 13',
                       f'pingap_http_requests_current{{server="s",location="{location}"}} 0'):
            assert series in metrics, series
    sent = {line.split('location="')[1].split('"')[0]: int(line.split()[-1])
            for line in metrics.splitlines() if line.startswith("pingap_http_sent_bytes{")}
    assert sent["plain"] == sent["general"] > (site / "big.bin").stat().st_size, sent

    lines = wait_for(lambda: log_file.exists() and len(log_file.read_text().splitlines()) >= 26
                     and log_file.read_text().splitlines(), what="26 access-log lines")
    by_location: dict[str, list[str]] = {"plain": [], "general": []}
    for line in lines[:26]:
        fields = line.split(" ")
        location = fields.pop(3)
        fields.pop(9)  # the host
        by_location[location].append(" ".join(fields))
    assert by_location["plain"] == by_location["general"]
    assert by_location["plain"][0].startswith("GET /app.css 200 ")
