"""The ``directory`` plugin: static files from a root directory, safely.

The request path is checked before it touches the file system: any ``..`` segment
(also percent-encoded), an encoded slash or backslash, a raw backslash or NUL byte is
refused with 403, so no path can leave the root lexically; with
``follow_symlinks = false`` the resolved real path must stay under the root's too, both
before the file is opened and, for what was opened, after (a symlink swapped in between).
Files are answered with pingap's headers (MIME type, weak ETag ``W/"<size>-<mtime>"``,
``Accept-Ranges``, ``Cache-Control`` from ``max_age``/``private``, ``charset``,
``download``, ``headers``), plus what pingap lacks: ``Last-Modified``, 304 for
``If-None-Match``/``If-Modified-Since``, ``If-Range``, multiple ranges as
``multipart/byteranges``, and a ``.br``/``.gz`` sibling when the client accepts it.
The body is streamed from the open file (sendfile where the socket allows); the file
system is reached only through the worker's ``StaticFiles`` service.
"""

from __future__ import annotations

import errno
import functools
import mimetypes
import os
import secrets
import stat as stat_mod
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, unquote_to_bytes

from pingap import conditional
from pingap.actions import CONTINUE, Continue, FilePart, Respond
from pingap.context import RequestContext
from pingap.headers import Headers
from pingap.plugins import Plugin, plugin_response, register
from pingap.plugins.compression import parse_accept_encoding, weight_of
from pingap.units import parse_bytesize, parse_duration
from pingap.variables import parse_header_rule

MIN_CHUNK = 4096
_PRECOMPRESSED = (("br", ".br"), ("gzip", ".gz"))


class Entry(NamedTuple):
    """One directory listing row."""

    name: str
    is_dir: bool
    size: int
    mtime: float


class StaticFiles(Protocol):
    """The file-system calls the plugin needs (``workers.files.LocalFiles``)."""

    def realpath(self, path: str) -> str: ...
    def open(self, path: str) -> tuple[Any, os.stat_result]: ...
    def opened_path(self, handle: Any) -> str | None: ...
    def listdir(self, path: str) -> list[Entry]: ...


class PlainFile:
    """A file's 200 answer to a plain GET (``Directory.plain_file``): its head's fields
    (Content-Length included) and size. ``wire``: that head as an HTTP/1.1 connection
    writes it, kept here by the connection after its first use."""

    __slots__ = ("headers", "size", "wire")

    def __init__(self, headers: tuple[tuple[bytes, bytes], ...], size: int) -> None:
        self.headers = headers
        self.size = size
        self.wire: bytes | None = None


#: files whose plain answers (and request paths whose file paths) a ``directory`` plugin
#: keeps (then it starts over)
PLAIN_HEADS_MAX = 1024


class Refused(Exception):
    """The request path may not be served (403)."""


def relative_parts(raw_path: str) -> list[str]:
    """The decoded segments of a raw request path, or Refused.

    Empty and ``.`` segments are dropped; ``..``, encoded ``/`` or ``\\``, backslashes,
    NUL bytes and invalid UTF-8 are refused rather than normalised: a file server has
    no business resolving them, and each is a classic traversal vector."""
    if "\\" in raw_path or "\x00" in raw_path:
        raise Refused("backslash or NUL in the path")
    if "%" not in raw_path:  # nothing encoded: the segments are the names
        parts = [name for name in raw_path.split("/") if name and name != "."]
        if ".." in parts:
            raise Refused("'..' in the path")
        return parts
    parts = []
    for segment in raw_path.split("/"):
        raw = unquote_to_bytes(segment)
        if b"/" in raw or b"\\" in raw or b"\x00" in raw:
            raise Refused("encoded separator or NUL in the path")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Refused("the path is not UTF-8") from exc
        if name in ("", "."):
            continue
        if name == "..":
            raise Refused("'..' in the path")
        parts.append(name)
    return parts


def load_types() -> None:
    """Read the system's MIME type tables (``/etc/mime.types`` and the other places
    ``mimetypes`` looks) now. ``mimetypes`` would read them at its first lookup otherwise:
    ~13 ms inside the first file request of every worker started, and each reload starts
    new ones."""
    if not mimetypes.inited:
        mimetypes.init()


@functools.lru_cache(maxsize=1024)
def content_type(name: str, charset: str | None) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    value = guessed or "application/octet-stream"
    if charset and value.startswith("text/"):
        value = f"{value}; charset={charset}"
    return value


def weak_etag(st: os.stat_result) -> str:
    return f'W/"{st.st_size:x}-{int(st.st_mtime):x}"'


def render_index(request_path: str, entries: list[Entry]) -> bytes:
    """The autoindex page: dotfiles hidden, names escaped, directories first."""
    import html  # its entity table (~0.4 MB) only where a listing is rendered

    # links are relative to the listed directory, which is the request path's last
    # segment when the path has no trailing slash
    base = "" if request_path.endswith("/") else \
        quote(request_path.rstrip("/").rsplit("/", 1)[-1]) + "/"
    rows = []
    for entry in sorted(entries, key=lambda e: (not e.is_dir, e.name)):
        if not entry.name or entry.name.startswith("."):
            continue
        href = base + quote(entry.name) + ("/" if entry.is_dir else "")
        size = "" if entry.is_dir else _human_size(entry.size)
        modified = "" if entry.is_dir else conditional.http_date(entry.mtime)
        label = html.escape(entry.name) + ("/" if entry.is_dir else "")
        rows.append(f'<tr><td class="name"><a href="{html.escape(href)}">{label}</a></td>'
                    f'<td class="size">{size}</td><td class="lastModified">{modified}</td></tr>')
    title = html.escape(request_path)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\" />"
            f"<title>Index of {title}</title><style>table{{width:100%}}th,td{{padding:6px;"
            f"text-align:left}}tr:nth-child(even){{background:#f0f0f0}}</style></head>"
            f"<body><h1>Index of {title}</h1><table><thead><tr><th>File Name</th>"
            f"<th>Size</th><th>Last Modified</th></tr></thead><tbody>\n"
            + "\n".join(rows) + "\n</tbody></table></body></html>\n").encode("utf-8")


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _flag(options: Mapping[str, Any], key: str, default: bool = False) -> bool:
    return bool(options.get(key, default))


@register
class Directory(Plugin):
    """Serves files under ``path`` (see the module docstring)."""

    category = "directory"
    steps = ("request", "proxy_upstream")
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        path = str(options.get("path", "")).strip()
        if not path:
            raise ValueError("`path` is required")
        self.root = os.path.abspath(os.path.expanduser(path))
        index = str(options.get("index", "") or "index.html")
        self.index = index.lstrip("/")
        self.autoindex = _flag(options, "autoindex")
        chunk = options.get("chunk_size")
        self.chunk_size = max(parse_bytesize(chunk) if chunk else MIN_CHUNK, MIN_CHUNK)
        max_age = options.get("max_age")
        self.max_age = int(parse_duration(max_age)) if max_age else None
        self.private = _flag(options, "private")
        charset = options.get("charset")
        self.charset = str(charset) if charset else None
        self.download = _flag(options, "download")
        self.follow_symlinks = _flag(options, "follow_symlinks", True)
        self.extra: Headers = []
        for item in options.get("headers", ()) or ():
            rule = parse_header_rule(str(item))  # the checks; the value is taken as it is
            value = str(item).partition(":")[2].strip()
            self.extra.append((rule.name, value.encode("latin-1", "replace")))
        self.files: StaticFiles | None = None
        self.real_root = self.root
        self._plain: dict[tuple[str, int, int, int, int], PlainFile] = {}
        #: request paths and the file paths they name (``_file_path``, lexical only)
        self._paths: dict[str, str] = {}

    def bind(self, services: Any) -> None:
        self.files = services.files
        if self.files is not None:
            try:
                self.real_root = self.files.realpath(self.root)
            except OSError:
                self.real_root = self.root

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        files = self.files
        if files is None:
            return plugin_response(500, b"File access error")
        try:
            path = self._file_path(ctx.path)
        except Refused:
            return self._forbidden(ctx)
        try:
            # open, then look at what was opened (as nginx does): one ``stat`` fewer than
            # asking first, and the answer describes the very bytes this handle reads
            opened = self._open_inside(files, path)
            if opened is None:
                return self._forbidden(ctx)
            handle, st = opened
            if not stat_mod.S_ISREG(st.st_mode):
                handle.close()
                if not stat_mod.S_ISDIR(st.st_mode) or not self.autoindex:
                    return plugin_response(404, b"Not Found")
                body = render_index(ctx.path, files.listdir(path))
                return plugin_response(200, body, b"text/html; charset=utf-8")
            ctx.on_finish(handle.close)
            return self._file(ctx, files, path, handle, st)
        except FileNotFoundError:
            return plugin_response(404, b"Not Found")
        except NotADirectoryError:
            return plugin_response(404, b"Not Found")
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a socket or a device with no driver: not a file
                return plugin_response(404, b"Not Found")
            return plugin_response(500, b"File access error")

    def _file_path(self, raw_path: str) -> str:
        """The file-system path a request path names under the root (the index for the
        root itself unless ``autoindex`` lists it), or Refused (``relative_parts``). The
        answer is lexical only, so it is kept per request path (``PLAIN_HEADS_MAX``);
        refusals are not kept."""
        path = self._paths.get(raw_path)
        if path is None:
            parts = relative_parts(raw_path)
            if not parts and not self.autoindex:
                parts = [p for p in self.index.split("/") if p]
            path = os.path.join(self.root, *parts)
            if len(self._paths) >= PLAIN_HEADS_MAX:
                self._paths.clear()
            self._paths[raw_path] = path
        return path

    def _open_inside(self, files: StaticFiles,
                     path: str) -> tuple[Any, os.stat_result] | None:
        """``path`` opened, with its stat; None when ``follow_symlinks = false`` and it
        lies outside the root. Then the real path is checked before opening, and what was
        opened after: that catches a symlink swapped in between, which a check of the
        path alone cannot. OSError from the file system passes through."""
        if self.follow_symlinks:
            return files.open(path)
        if not self._inside(files.realpath(path)):
            return None
        handle, st = files.open(path)
        real = files.opened_path(handle)
        if real is not None and not self._inside(real):
            handle.close()
            return None
        return handle, st

    def _inside(self, real: str) -> bool:
        root = self.real_root
        return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

    def _forbidden(self, ctx: RequestContext) -> Respond:
        return plugin_response(
            403, f"You do not have permission to access this resource, file: {ctx.path}"
            .encode("utf-8", "replace"), headers=[(b"Cache-Control", b"private, no-store")])

    def _sibling(self, ctx: RequestContext, files: StaticFiles,
                 path: str) -> tuple[Any, os.stat_result, str] | None:
        return self._sibling_for(ctx.request_header("accept-encoding"), files, path)

    def _sibling_for(self, accept: str | None, files: StaticFiles,
                     path: str) -> tuple[Any, os.stat_result, str] | None:
        """The ``.br``/``.gz`` file next to ``path`` that ``accept`` (the request's
        Accept-Encoding) takes, opened, with its stat and coding; None if none."""
        if not accept:
            return None
        weights = parse_accept_encoding(accept)
        for coding, suffix in _PRECOMPRESSED:
            if weight_of(weights, coding) <= 0:
                continue
            try:
                opened = self._open_inside(files, path + suffix)
            except OSError:
                continue
            if opened is None:
                continue
            handle, st = opened
            if stat_mod.S_ISREG(st.st_mode):
                return handle, st, coding
            handle.close()
        return None

    def _file(self, ctx: RequestContext, files: StaticFiles, path: str, handle: Any,
              st: os.stat_result) -> Respond:
        """The answer for the regular file ``path``, opened as ``handle`` (closed when the
        request finishes): its precompressed sibling instead when the client takes it."""
        name = os.path.basename(path)
        mime = content_type(name, self.charset)
        coding = None
        sibling = self._sibling(ctx, files, path)
        if sibling is not None:
            handle, st, coding = sibling
            ctx.on_finish(handle.close)
        etag = weak_etag(st)
        headers = self._headers(name, mime, etag, st, coding)
        size = st.st_size
        if ctx.method in ("GET", "HEAD") and conditional.not_modified(
                ctx.request_header("if-none-match"), ctx.request_header("if-modified-since"),
                etag, st.st_mtime):
            return Respond(status=304, headers=headers, body=b"")
        range_value = ctx.request_header("range")
        if range_value is not None and ctx.method in ("GET", "HEAD") and \
                conditional.if_range_allows(ctx.request_header("if-range"), etag, st.st_mtime):
            try:
                ranges = conditional.parse_ranges(range_value, size)
            except conditional.Unsatisfiable:
                return plugin_response(416, b"Range Not Satisfiable",
                                       headers=[(b"Content-Range", f"bytes */{size}".encode())])
            if ranges is not None:
                return self._partial(handle, headers, mime, ranges, size)
        headers.append((b"Content-Length", str(size).encode()))
        return Respond(status=200, headers=headers, body=b"",
                       stream=(FilePart(file=handle, offset=0, length=size,
                                        chunk_size=self.chunk_size),) if size else ())

    def _headers(self, name: str, mime: str, etag: str, st: os.stat_result,
                 coding: str | None) -> Headers:
        """A file's response fields but its length (and range): pingap's, in its order."""
        headers: Headers = [(b"Content-Type", mime.encode("latin-1"))]
        headers.append((b"ETag", etag.encode()))
        headers.append((b"Last-Modified", conditional.http_date(st.st_mtime).encode()))
        headers.append((b"Accept-Ranges", b"bytes"))
        if coding is not None:
            headers.append((b"Content-Encoding", coding.encode()))
            headers.append((b"Vary", b"Accept-Encoding"))
        if self.max_age is not None and "text/html" not in mime:
            scope = "private" if self.private else "public"
            headers.append((b"Cache-Control", f"{scope}, max-age={self.max_age}".encode()))
        elif self.private:
            headers.append((b"Cache-Control", b"private"))
        if self.download:
            headers.append((b"Content-Disposition",
                            f"attachment; filename=\"{quote(name)}\"".encode("latin-1")))
        headers.extend(self.extra)
        return headers

    # --- the plain-file path ----------------------------------------------------------

    def plain_file(self, raw_path: str,
                   accept_encoding: str | None = None) -> tuple[Any, PlainFile] | None:
        """The file a plain GET of ``raw_path`` is answered with, opened, and its 200
        head: for a request with no Range and no conditional field, so that no 206, 304
        or 416 can apply, and whose Accept-Encoding (``accept_encoding``, its first
        value) takes no precompressed sibling of the file, the answer of
        ``handle_request`` (a test holds the two to the same bytes). None, with nothing
        left open, for any other answer (refused, missing, a directory, an empty file, a
        sibling to send instead, an error): the caller then asks ``handle_request``,
        which decides. The head's fields are kept per file and version (device, inode,
        size, modification time), so a changed file gets new ones."""
        files = self.files
        if files is None:
            return None
        try:
            path = self._file_path(raw_path)
            opened = self._open_inside(files, path)
        except (Refused, OSError):
            return None
        if opened is None:
            return None
        handle, st = opened
        if not stat_mod.S_ISREG(st.st_mode) or not st.st_size:
            handle.close()
            return None
        if accept_encoding:  # looked for as ``handle_request`` looks, every time
            sibling = self._sibling_for(accept_encoding, files, path)
            if sibling is not None:
                sibling[0].close()
                handle.close()
                return None
        key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        plain = self._plain.get(key)
        if plain is None:
            if len(self._plain) >= PLAIN_HEADS_MAX:
                self._plain.clear()
            name = os.path.basename(path)
            headers = self._headers(name, content_type(name, self.charset), weak_etag(st),
                                    st, None)
            headers.append((b"Content-Length", str(st.st_size).encode()))
            plain = self._plain[key] = PlainFile(tuple(headers), st.st_size)
        return handle, plain

    def _partial(self, handle: Any, headers: Headers, mime: str,
                 ranges: list[tuple[int, int]], size: int) -> Respond:
        if len(ranges) == 1:
            first, last = ranges[0]
            headers.append((b"Content-Range", f"bytes {first}-{last}/{size}".encode()))
            headers.append((b"Content-Length", str(last - first + 1).encode()))
            return Respond(status=206, headers=headers, body=b"",
                           stream=(FilePart(file=handle, offset=first, length=last - first + 1,
                                            chunk_size=self.chunk_size),))
        boundary = secrets.token_hex(12)
        stream: list[bytes | FilePart] = []
        total = 0
        for first, last in ranges:
            part_head = (f"\r\n--{boundary}\r\nContent-Type: {mime}\r\n"
                         f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n").encode("latin-1")
            stream.append(part_head)
            stream.append(FilePart(file=handle, offset=first, length=last - first + 1,
                                   chunk_size=self.chunk_size))
            total += len(part_head) + last - first + 1
        tail = f"\r\n--{boundary}--\r\n".encode()
        stream.append(tail)
        total += len(tail)
        for i, (key, _) in enumerate(headers):
            if key == b"Content-Type":
                headers[i] = (key, f"multipart/byteranges; boundary={boundary}".encode())
        headers.append((b"Content-Length", str(total).encode()))
        return Respond(status=206, headers=headers, body=b"", stream=tuple(stream))
