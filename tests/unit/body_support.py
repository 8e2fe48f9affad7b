"""Shared helpers for the body-plugin unit tests: a request context and header lookup."""

from __future__ import annotations

from pingap.context import ConnectionInfo, RequestContext


def make_ctx(path: str = "/", *, method: str = "GET", query: str = "",
             headers: dict[str, str] | None = None, client_ip: str = "10.0.0.1") -> RequestContext:
    conn = ConnectionInfo(connection_id=1, remote_addr=client_ip, remote_port=40000,
                          server_addr="127.0.0.1", server_port=8080, accepted_at=0.0)
    items = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return RequestContext(conn=conn, method=method, path=path, query=query, http_version="1.1",
                          host="example.com", request_headers=items, client_ip=client_ip,
                          start=0.0, start_wall=0.0)


def header(headers: list[tuple[bytes, bytes]], name: str) -> bytes | None:
    for key, value in headers:
        if key.lower() == name.lower().encode():
            return value
    return None


def run(body_filter: object, chunks: list[bytes]) -> bytes:
    out = b"".join(body_filter.feed(c) for c in chunks)  # type: ignore[attr-defined]
    return out + body_filter.end()  # type: ignore[attr-defined]
