"""The directory plugin on a real temporary tree: path security, headers, ranges,
conditionals, autoindex, precompressed siblings; and the range/conditional helpers."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pingap import conditional
from pingap.actions import FilePart, Respond
from pingap.plugins.static import Directory, Refused, relative_parts
from tests.unit.body_support import header, make_ctx
from workers.files import LocalFiles


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "a.txt").write_bytes(b"0123456789" * 10)
    (root / "app.js").write_bytes(b"console.log(1);" * 100)
    (root / "app.js.gz").write_bytes(gzip.compress(b"console.log(1);" * 100))
    (root / "app.js.br").write_bytes(b"fake-brotli")
    (root / ".secret").write_text("hidden")
    (root / "sub" / "b.css").write_text("body{}")
    (root / "sub" / "<x>.txt").write_text("x")
    (tmp_path / "outside.txt").write_text("SECRET-OUTSIDE")
    os.symlink(tmp_path / "outside.txt", root / "escape.txt")
    os.symlink(root / "a.txt", root / "inner-link.txt")
    return root


def serve(root: Path, path: str, *, method: str = "GET", req: dict[str, str] | None = None,
          **options: object) -> Respond:
    plugin = Directory("d", {"path": str(root), **options})
    plugin.bind(SimpleNamespace(files=LocalFiles()))
    answer = plugin.handle_request("request", make_ctx(path, method=method, headers=req))
    assert isinstance(answer, Respond)
    return answer


def body_of(answer: Respond) -> bytes:
    out = bytearray(answer.body)
    for piece in answer.stream:
        if isinstance(piece, FilePart):
            out += os.pread(piece.file.fileno(), piece.length, piece.offset)
        else:
            out += piece
    return bytes(out)


# --- path security ------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/../outside.txt", "/sub/../../outside.txt", "/%2e%2e/outside.txt", "/%2E%2E/outside.txt",
    "/sub/%2e%2e/a.txt", "/..%2foutside.txt", "/sub%2f..%2f..%2foutside.txt",
    "/%2fetc%2fpasswd", "/a.txt%00.html", "/a%00", "/..\\outside.txt", "/sub\\b.css",
    "/%5c..%5coutside.txt", "/%ff%fe",
])
def test_traversal_and_encoding_tricks_are_refused(tree: Path, path: str) -> None:
    answer = serve(tree, path)
    assert answer.status == 403
    assert b"SECRET" not in body_of(answer)


@pytest.mark.parametrize("path", ["//etc/passwd", "/etc/passwd", "///a.txt"])
def test_absolute_looking_paths_stay_under_the_root(tree: Path, path: str) -> None:
    answer = serve(tree, path)
    if path.endswith("a.txt"):
        assert answer.status == 200 and body_of(answer) == b"0123456789" * 10
    else:
        assert answer.status == 404


def test_symlink_out_of_root_refused_without_follow_symlinks(tree: Path) -> None:
    assert serve(tree, "/escape.txt", follow_symlinks=False).status == 403
    inner = serve(tree, "/inner-link.txt", follow_symlinks=False)
    assert inner.status == 200  # a link that stays inside is fine
    followed = serve(tree, "/escape.txt")  # pingap's default follows links
    assert followed.status == 200 and body_of(followed) == b"SECRET-OUTSIDE"


class _SwappingFiles(LocalFiles):
    """``realpath`` answers, then the symlink at that path is pointed out of the root:
    the race between checking a path and opening it, made to happen every time."""

    def __init__(self, outside: Path) -> None:
        self.outside = outside

    def realpath(self, path: str) -> str:
        real = super().realpath(path)
        if os.path.islink(path):
            os.remove(path)
            os.symlink(self.outside, path)
        return real


def test_a_symlink_swapped_after_the_check_is_refused(tree: Path) -> None:
    """With ``follow_symlinks = false`` what was opened is checked too, not only the path
    before: a link swapped in between gets 403 (the file) or is skipped (a precompressed
    sibling), and the secret outside is never sent."""
    outside = tree.parent / "outside.txt"
    os.symlink(tree / "a.txt", tree / "swap.txt")
    os.symlink(tree / "app.js.gz", tree / "other.js.gz")
    (tree / "other.js").write_text("plain")
    plugin = Directory("d", {"path": str(tree), "follow_symlinks": False})
    plugin.bind(SimpleNamespace(files=_SwappingFiles(outside)))
    before = len(os.listdir("/proc/self/fd"))
    answer = plugin.handle_request("request", make_ctx("/swap.txt"))
    assert isinstance(answer, Respond) and answer.status == 403
    assert len(os.listdir("/proc/self/fd")) == before  # the escaped handle was closed
    answer = plugin.handle_request(
        "request", make_ctx("/other.js", headers={"accept-encoding": "gzip"}))
    assert isinstance(answer, Respond) and answer.status == 200
    assert header(answer.headers, "content-encoding") is None
    assert body_of(answer) == b"plain"


def test_relative_parts_normalises_only_harmless_segments() -> None:
    assert relative_parts("/a//./b/%63.txt") == ["a", "b", "c.txt"]
    with pytest.raises(Refused):
        relative_parts("/a/%2E./b")
    assert relative_parts("/a/..b/c..") == ["a", "..b", "c.."]


# --- files --------------------------------------------------------------------------

def test_file_headers(tree: Path) -> None:
    answer = serve(tree, "/a.txt", charset="utf-8", max_age="1h",
                   headers=["X-Content-Type-Options: nosniff"])
    st = (tree / "a.txt").stat()
    assert answer.status == 200
    assert header(answer.headers, "content-type") == b"text/plain; charset=utf-8"
    assert header(answer.headers, "etag") == f'W/"{st.st_size:x}-{int(st.st_mtime):x}"'.encode()
    assert header(answer.headers, "last-modified") == conditional.http_date(st.st_mtime).encode()
    assert header(answer.headers, "accept-ranges") == b"bytes"
    assert header(answer.headers, "cache-control") == b"public, max-age=3600"
    assert header(answer.headers, "content-length") == b"100"
    assert header(answer.headers, "x-content-type-options") == b"nosniff"
    assert body_of(answer) == b"0123456789" * 10


def test_html_gets_no_max_age_and_private_download(tree: Path) -> None:
    html = serve(tree, "/index.html", max_age="1h")
    assert header(html.headers, "cache-control") is None
    private = serve(tree, "/a.txt", max_age="10s", private=True, download=True)
    assert header(private.headers, "cache-control") == b"private, max-age=10"
    assert header(private.headers, "content-disposition") == b'attachment; filename="a.txt"'


def test_index_for_root_and_404s(tree: Path) -> None:
    root = serve(tree, "/")
    assert root.status == 200 and body_of(root) == b"<h1>home</h1>"
    assert header(root.headers, "content-type") == b"text/html"
    assert serve(tree, "/sub/").status == 404          # no autoindex: directories 404
    assert serve(tree, "/missing.txt").status == 404
    assert serve(tree, "/a.txt/x").status == 404


def test_fifos_sockets_and_directories_are_404_and_leave_no_descriptor_open(
        tree: Path) -> None:
    """The plugin opens first and looks at what it opened: a FIFO must not block the
    worker (O_NONBLOCK), a socket cannot be opened at all (ENXIO), and neither they nor a
    directory leave their descriptor behind."""
    import socket
    os.mkfifo(tree / "pipe")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tree / "sock"))
    try:
        before = len(os.listdir("/proc/self/fd"))
        for path in ("/pipe", "/sock", "/sub", "/sub/"):
            assert serve(tree, path).status == 404, path
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        listener.close()


def test_relative_parts_without_escapes_equal_the_decoding_path() -> None:
    """The shortcut for paths with no ``%`` gives what decoding them gives: the same path
    with an encoded ``.`` segment added (dropped either way) takes the decoding path."""
    for path in ("/a/b.txt", "//a//./b/", "/é/x", "/.hidden/./", "/a b/c+d", "/", ""):
        assert relative_parts(path) == relative_parts(path + "/%2E"), path
    for path in ("/a/../b", "/..", "/x/.."):
        with pytest.raises(Refused):
            relative_parts(path)


def test_mime_types(tree: Path) -> None:
    assert header(serve(tree, "/sub/b.css").headers, "content-type") == b"text/css"
    js = header(serve(tree, "/app.js").headers, "content-type")
    assert js in (b"text/javascript", b"application/javascript")


def test_head_has_the_get_headers(tree: Path) -> None:
    answer = serve(tree, "/a.txt", method="HEAD")
    assert answer.status == 200 and header(answer.headers, "content-length") == b"100"


# --- conditionals and ranges --------------------------------------------------------

def test_if_none_match_and_if_modified_since_give_304(tree: Path) -> None:
    first = serve(tree, "/a.txt")
    etag = header(first.headers, "etag")
    assert etag is not None
    modified = header(first.headers, "last-modified")
    assert modified is not None
    assert serve(tree, "/a.txt", req={"If-None-Match": etag.decode()}).status == 304
    assert serve(tree, "/a.txt", req={"If-None-Match": '"other", ' + etag.decode()}).status == 304
    assert serve(tree, "/a.txt", req={"If-None-Match": '"other"'}).status == 200
    assert serve(tree, "/a.txt", req={"If-Modified-Since": modified.decode()}).status == 304
    assert serve(tree, "/a.txt",
                 req={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).status == 200
    # If-None-Match wins over If-Modified-Since
    assert serve(tree, "/a.txt", req={"If-None-Match": '"x"',
                                          "If-Modified-Since": modified.decode()}).status == 200


def test_single_range(tree: Path) -> None:
    answer = serve(tree, "/a.txt", req={"Range": "bytes=10-19"})
    assert answer.status == 206
    assert header(answer.headers, "content-range") == b"bytes 10-19/100"
    assert header(answer.headers, "content-length") == b"10"
    assert body_of(answer) == b"0123456789"
    suffix = serve(tree, "/a.txt", req={"Range": "bytes=-5"})
    assert body_of(suffix) == b"56789" and header(suffix.headers, "content-range") == b"bytes 95-99/100"
    open_end = serve(tree, "/a.txt", req={"Range": "bytes=98-"})
    assert body_of(open_end) == b"89"


def test_multiple_ranges_are_multipart(tree: Path) -> None:
    answer = serve(tree, "/a.txt", req={"Range": "bytes=0-1, 50-52"})
    assert answer.status == 206
    content_type = header(answer.headers, "content-type")
    assert content_type is not None and content_type.startswith(b"multipart/byteranges; boundary=")
    boundary = content_type.split(b"boundary=")[1]
    body = body_of(answer)
    assert int(header(answer.headers, "content-length") or 0) == len(body)
    parts = body.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n"
    assert b"Content-Range: bytes 0-1/100\r\n\r\n01\r\n" in parts[1]
    assert b"Content-Range: bytes 50-52/100\r\n\r\n012\r\n" in parts[2]


def test_unsatisfiable_range_is_416(tree: Path) -> None:
    answer = serve(tree, "/a.txt", req={"Range": "bytes=200-300"})
    assert answer.status == 416
    assert header(answer.headers, "content-range") == b"bytes */100"


def test_malformed_range_is_ignored(tree: Path) -> None:
    for value in ("bytes=5-2", "items=0-1", "bytes=a-b", "bytes="):
        answer = serve(tree, "/a.txt", req={"Range": value})
        assert answer.status == 200, value


def test_if_range(tree: Path) -> None:
    modified = header(serve(tree, "/a.txt").headers, "last-modified")
    assert modified is not None
    ok = serve(tree, "/a.txt", req={"Range": "bytes=0-1", "If-Range": modified.decode()})
    assert ok.status == 206
    stale = serve(tree, "/a.txt", req={"Range": "bytes=0-1",
                                           "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert stale.status == 200
    weak = serve(tree, "/a.txt", req={"Range": "bytes=0-1", "If-Range": 'W/"x"'})
    assert weak.status == 200  # a weak validator never satisfies If-Range


@pytest.mark.parametrize(("value", "size", "expected"), [
    ("bytes=0-0", 10, [(0, 0)]),
    ("bytes=0-3,2-5", 10, [(0, 5)]),
    ("bytes=0-3,4-5", 10, [(0, 5)]),
    ("bytes=8-100", 10, [(8, 9)]),
    ("bytes=-100", 10, [(0, 9)]),
    ("bytes=1-2," * 40, 10, None),
])
def test_parse_ranges(value: str, size: int, expected: object) -> None:
    assert conditional.parse_ranges(value.rstrip(","), size) == expected


def test_parse_ranges_unsatisfiable() -> None:
    for value, size in (("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0)):
        with pytest.raises(conditional.Unsatisfiable):
            conditional.parse_ranges(value, size)


# --- autoindex and precompressed ----------------------------------------------------

def test_autoindex_lists_escaped_names_without_dotfiles(tree: Path) -> None:
    answer = serve(tree, "/sub", autoindex=True)
    page = answer.body.decode()
    assert answer.status == 200 and header(answer.headers, "content-type") == b"text/html; charset=utf-8"
    assert 'href="sub/b.css"' in page
    assert "&lt;x&gt;.txt" in page and "<x>" not in page
    root = serve(tree, "/", autoindex=True).body.decode()
    assert 'href="sub/"' in root and 'href="a.txt"' in root
    assert ".secret" not in root


def test_precompressed_sibling_when_accepted(tree: Path) -> None:
    gz = serve(tree, "/app.js", req={"Accept-Encoding": "gzip"})
    assert header(gz.headers, "content-encoding") == b"gzip"
    assert header(gz.headers, "vary") == b"Accept-Encoding"
    assert gzip.decompress(body_of(gz)) == b"console.log(1);" * 100
    assert header(gz.headers, "content-type") in (b"text/javascript", b"application/javascript")
    br = serve(tree, "/app.js", req={"Accept-Encoding": "gzip, br"})
    assert header(br.headers, "content-encoding") == b"br" and body_of(br) == b"fake-brotli"
    plain = serve(tree, "/app.js", req={"Accept-Encoding": "gzip;q=0"})
    assert header(plain.headers, "content-encoding") is None
    assert body_of(plain) == b"console.log(1);" * 100


def test_path_option_is_required() -> None:
    with pytest.raises(ValueError):
        Directory("d", {})


# --- the plain-file path (Directory.plain_file) ---------------------------------------

def _plain(root: Path, **options: object) -> Directory:
    plugin = Directory("d", {"path": str(root), **options})
    plugin.bind(SimpleNamespace(files=LocalFiles()))
    return plugin


@pytest.mark.parametrize("options", [{}, {"max_age": "1h", "charset": "utf-8"},
                                     {"private": True, "download": True,
                                      "headers": ["X-Served: files"]},
                                     {"follow_symlinks": False}])
@pytest.mark.parametrize("path", ["/a.txt", "/", "/index.html", "/sub/b.css",
                                  "/sub/%3Cx%3E.txt", "/inner-link.txt", "/app.js"])
def test_plain_file_answers_what_handle_request_answers(tree: Path, path: str,
                                                        options: dict[str, object]) -> None:
    """For a GET with no Range, conditional or Accept-Encoding field, the plain answer is
    the plugin's 200: the same fields in the same order, and the same file."""
    plugin = _plain(tree, **options)
    opened = plugin.plain_file(path)
    assert opened is not None
    handle, plain = opened
    try:
        answer = serve(tree, path, **options)
        assert answer.status == 200
        assert list(plain.headers) == answer.headers
        assert plain.size == len(body_of(answer)) > 0
        assert os.pread(handle.fileno(), plain.size + 1, 0) == body_of(answer)
    finally:
        handle.close()


@pytest.mark.parametrize("path", ["/../outside.txt", "/%2e%2e/outside.txt", "/a%00",
                                  "/missing.txt", "/sub", "/sub/", "/a.txt/x", "/empty.txt"])
def test_plain_file_leaves_every_other_answer_to_handle_request(tree: Path,
                                                                path: str) -> None:
    """Refused, missing, directories and empty files: None, and no descriptor left open
    (the general path then gives its 403 or 404, or the empty 200)."""
    (tree / "empty.txt").write_bytes(b"")
    plugin = _plain(tree)
    before = len(os.listdir("/proc/self/fd"))
    assert plugin.plain_file(path) is None
    assert len(os.listdir("/proc/self/fd")) == before
    assert serve(tree, path).status in (200, 403, 404)


def test_plain_file_leaves_listings_and_escaping_symlinks_to_handle_request(
        tree: Path) -> None:
    assert _plain(tree, autoindex=True).plain_file("/") is None
    assert _plain(tree, follow_symlinks=False).plain_file("/escape.txt") is None
    assert serve(tree, "/escape.txt", follow_symlinks=False).status == 403


def test_plain_file_heads_follow_the_file(tree: Path) -> None:
    """The fields kept for a file are those of the version opened: rewritten with another
    size and time, it gets a new Content-Length, ETag and Last-Modified."""
    plugin = _plain(tree)
    handle, first = plugin.plain_file("/a.txt")  # type: ignore[misc]
    handle.close()
    handle, again = plugin.plain_file("/a.txt")  # type: ignore[misc]
    handle.close()
    assert again is first
    (tree / "a.txt").write_bytes(b"changed")
    os.utime(tree / "a.txt", (1_000_000, 1_000_000))
    handle, changed = plugin.plain_file("/a.txt")  # type: ignore[misc]
    handle.close()
    assert dict(changed.headers)[b"Content-Length"] == b"7"
    assert dict(changed.headers)[b"ETag"] == b'W/"7-f4240"'
    assert dict(changed.headers)[b"Last-Modified"] == b"Mon, 12 Jan 1970 13:46:40 GMT"
    assert list(changed.headers) == serve(tree, "/a.txt").headers


def test_plain_file_with_accept_encoding(tree: Path) -> None:
    """An Accept-Encoding that takes a ``.gz``/``.br`` sibling leaves the request to
    ``handle_request`` (which sends the sibling); one that takes none changes nothing."""
    plugin = _plain(tree)
    before = len(os.listdir("/proc/self/fd"))
    assert plugin.plain_file("/app.js", "gzip, br") is None
    assert plugin.plain_file("/app.js", "br;q=0, gzip") is None
    assert len(os.listdir("/proc/self/fd")) == before
    assert dict(serve(tree, "/app.js", req={"accept-encoding": "gzip"}).headers)[
        b"Content-Encoding"] == b"gzip"
    for accept in ("gzip, br", "identity", "gzip;q=0, br;q=0", "zstd"):
        handle, plain = plugin.plain_file("/a.txt", accept)  # type: ignore[misc]
        handle.close()
        assert list(plain.headers) == serve(tree, "/a.txt",
                                            req={"accept-encoding": accept}).headers
    handle, plain = plugin.plain_file("/app.js", "zstd, identity")  # type: ignore[misc]
    handle.close()
    assert b"Content-Encoding" not in dict(plain.headers)
