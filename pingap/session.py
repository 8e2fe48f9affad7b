"""The protocol-agnostic proxy session: one request, from head to access-log record.

A codec adapter (HTTP/1 or HTTP/2, in ``workers``) feeds a ``ProxySession`` the request
head, asks it what to do (``Respond`` locally or ``Forward`` to an upstream), lets it pick
backends, build the upstream request head and filter the response head, then calls
``finish``. The session does no I/O and never blocks.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import replace

from pingap.actions import Forward, Respond
from pingap.context import ConnectionInfo, RequestContext
from pingap.errors import DownstreamError, NoBackendError, PingapError
from pingap.events import RequestReceived
from pingap.headers import (
    HOP_BY_HOP,
    Headers,
    connection_tokens,
    drop_set,
    header_value,
    split_host,
    strip,
    strip_hop_by_hop,
)
from pingap.plugins import Plugin, parse_ip, set_header
from pingap.runtime import LocationRuntime, Runtime, ServerRuntime, UpstreamRuntime
from pingap.upstream import Backend


def client_ip(peer: str, headers: Headers, trusted: tuple[object, ...]) -> str:
    """Spec §3.6: X-Forwarded-For / X-Real-IP honoured only from trusted proxies if set.

    Without ``trusted`` any peer's forwarded headers count and the first X-Forwarded-For
    entry wins (pingap's rule, spoofable by design). With it, only a trusted peer's
    headers count, and X-Forwarded-For is read from the right, skipping trusted proxies,
    so an address the client wrote itself in front of the chain is never taken (pingap
    takes the first entry). An IPv4-mapped IPv6 peer (``::ffff:a.b.c.d``) is its IPv4."""
    if peer[:7].lower() == "::ffff:":
        mapped = parse_ip(peer)
        if mapped is not None and mapped.version == 4:
            peer = str(mapped)
    if trusted:
        addr = parse_ip(peer)
        if addr is None or not _trusted_addr(addr, trusted):
            return peer
    xff = header_value(headers, b"x-forwarded-for")
    if xff:
        parts = [p.strip() for p in xff.decode("latin-1").split(",") if p.strip()]
        if parts and trusted:
            for part in reversed(parts):
                hop = parse_ip(part)
                if hop is None or not _trusted_addr(hop, trusted):
                    return str(hop) if hop is not None else part
            return parts[0]
        if parts:
            return parts[0]
    real = header_value(headers, b"x-real-ip")
    if real and real.strip():
        return real.decode("latin-1").strip()
    return peer


def _trusted_addr(addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
                  trusted: tuple[object, ...]) -> bool:
    return any(addr in net for net in trusted)  # type: ignore[operator]


#: Handled by the proxy itself, never forwarded as such.
_NOT_FORWARDED = frozenset({b"expect"})
_FORWARD_DROP = HOP_BY_HOP | _NOT_FORWARDED


class ProxySession:
    """One request's journey through routing, header rules and backend selection."""

    __slots__ = ("runtime", "server", "request", "ctx", "location", "upstream",
                 "upgrade", "replacement", "_tried", "_counted")

    def __init__(self, runtime: Runtime, server: ServerRuntime, conn: ConnectionInfo,
                 request: RequestReceived, *, now: float, wall: float) -> None:
        self.runtime = runtime
        self.server = server
        self.request = request
        headers = request.headers
        authority = request.host.decode("latin-1")
        host = split_host(authority)
        self.ctx = RequestContext(
            conn=conn,
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            query=request.query.decode("latin-1"),
            http_version=request.http_version.decode("latin-1"),
            host=host,
            request_headers=headers,
            client_ip=client_ip(conn.remote_addr, headers, runtime.trusted_proxies),
            start=now,
            start_wall=wall,
            connection_reused=conn.requests > 1,
            authority=authority,
            connection_time=now - conn.accepted_at,
            processing=server.processing,
        )
        self.location: LocationRuntime | None = None
        self.upstream: UpstreamRuntime | None = None
        #: the protocol a GET asks to switch to (WebSocket & co), passed through; h2c never
        self.upgrade = _upgrade_of(request)
        #: a plugin's answer that replaces the upstream response (the exchange sends
        #: it instead, after reading the upstream response to its end)
        self.replacement: Respond | None = None
        self._tried: set[str] = set()
        self._counted = False

    # --- request ----------------------------------------------------------------

    def route(self) -> Respond | Forward:
        """Match a location and apply its limits and rewrite."""
        ctx = self.ctx
        # OPTIONS * asks about the server as a whole: route it like "/"
        found = self.server.matcher.match(ctx.host, "/" if ctx.path == "*" else ctx.path, ctx)
        if found is None:
            return self.error(PingapError(
                f"No matching location, host:{ctx.host} path:{ctx.path}", status=404))
        route, captures = found
        location: LocationRuntime = route.payload  # type: ignore[assignment]
        self.location = location
        ctx.location = location.name
        ctx.variables.update(captures)
        limit = location.client_max_body_size
        length = self.request.content_length
        if limit and length is not None and length > limit:
            return self.error(DownstreamError(
                f"Request Entity Too Large, max:{limit}", status=413))
        location.processing += 1
        self._counted = True
        if location.max_processing and location.processing > location.max_processing:
            return self.error(DownstreamError(
                f"Too Many Requests, max:{location.max_processing}", status=429))
        answer = self._run_plugins("early_request")
        if answer is not None:
            return answer
        if route.rewrite is not None and ctx.path != "*":
            new_path, groups = route.rewrite.apply(ctx.path, ctx.variables)
            ctx.path = new_path
            ctx.variables.update(groups)
        answer = self._run_plugins("request") or self._run_plugins("proxy_upstream")
        if answer is not None:
            return answer
        name = ctx.upstream_name or location.upstream
        if not name:
            return self.error(PingapError(
                f"No upstream for location {location.name}", status=503))
        if name.startswith("$"):
            name = ctx.variables.get(name[1:], name)
        upstream = self.runtime.upstreams.get(name)
        if upstream is None:
            return self.error(NoBackendError(f"No available upstream for {location.name}"))
        self.upstream = upstream
        return Forward(upstream=upstream)

    def _run_plugins(self, step: str) -> Respond | None:
        location = self.location
        assert location is not None
        for plugin in location.plugin_steps[step]:
            result = plugin.handle_request(step, self.ctx)
            if isinstance(result, Respond):
                self.ctx.status = result.status
                self.ctx.response_headers = result.headers
                return result
        return None

    def check_body_size(self, received: int) -> None:
        """Raise 413 once a streamed body passes ``client_max_body_size``."""
        self.ctx.payload_size = received
        location = self.location
        if location is not None and location.client_max_body_size \
                and received > location.client_max_body_size:
            raise DownstreamError(
                f"Request Entity Too Large, max:{location.client_max_body_size}", status=413)

    def next_backend(self) -> Backend:
        """A backend not tried yet for this request; NoBackendError when none is left."""
        upstream = self.upstream
        assert upstream is not None
        tried = self._tried
        backend = upstream.selector.select(
            self.ctx, lambda b: b.addr not in tried and upstream.is_available(b))
        if backend is None:
            raise NoBackendError(f"No available upstream for {self.ctx.location}")
        tried.add(backend.addr)
        self.ctx.upstream_addr = backend.addr
        return backend

    def forget_backend(self, backend: Backend) -> None:
        """Allow ``backend`` again (its pooled connection was stale, not the backend)."""
        self._tried.discard(backend.addr)

    def may_retry(self, now: float) -> bool:
        location = self.location
        if location is None or len(self._tried) > location.max_retries:
            return False
        window = location.max_retry_window
        return window is None or now - self.ctx.start <= window

    def upstream_request(self) -> tuple[bytes, bytes, Headers]:
        """(method, target, headers) to send upstream: rules applied, hop-by-hop gone."""
        ctx = self.ctx
        request = self.request
        location = self.location
        replaced = location.set_names if location is not None else frozenset()
        # ctx.request_headers: request-phase plugins may have edited them
        headers = strip(ctx.request_headers, drop_set(_NOT_FORWARDED | replaced)
                         if replaced else _FORWARD_DROP)
        te = header_value(request.headers, b"te")
        if te is not None and b"trailers" in te.lower():
            headers.append((b"TE", b"trailers"))
        if request.chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        if self.upgrade is not None:
            headers += [(b"Connection", b"upgrade"), (b"Upgrade", self.upgrade)]
        if location is not None:
            if location.header_set:
                chosen: dict[bytes, tuple[bytes, bytes | None]] = {}
                for rule in location.header_set:  # a later rule for a name replaces earlier
                    low = rule.name.lower()
                    chosen.pop(low, None)  # ... and takes its place at the end
                    chosen[low] = (rule.name, rule.value(ctx))
                headers.extend((n, v) for n, v in chosen.values() if v is not None)
            for rule in location.header_add:
                value = rule.value(ctx)
                if value is not None:
                    headers.append((rule.name, value))
        if header_value(headers, b"host") is None:
            # HTTP/1.0 clients may omit Host; HTTP/1.1 upstream requests must carry one
            headers.append((b"Host", (ctx.host or ctx.upstream_addr or "").encode("latin-1")))
        target = ctx.uri.encode("latin-1") if request.path != b"*" else b"*"
        return request.method, target, headers

    # --- response ---------------------------------------------------------------

    def response_headers(self, status: int, headers: Headers) -> Headers:
        """The upstream response head as the client will see it."""
        ctx = self.ctx
        ctx.upstream_status = status
        ctx.status = status
        out = strip_hop_by_hop(headers)
        # pingap's order: upstream_response plugins, the request id, response plugins
        steps = self.location.plugin_steps if self.location is not None else _NO_STEPS
        for plugin in steps["upstream_response"]:
            plugin.handle_upstream_response(ctx, status, out)
        if ctx.request_id is not None:
            set_header(out, b"X-Request-Id", ctx.request_id.encode("latin-1", "replace"))
        for plugin in steps["response"]:
            replacement = plugin.handle_response(ctx, status, out)
            if replacement is not None:
                self.replacement = replacement
                return out
        if self.location is not None and self.location.filter_plugins:
            self._add_filters(status, out)
        ctx.response_headers = out
        return out

    def local_response(self, answer: Respond) -> Respond:
        """A local answer (a plugin's, a static file) with the location's ranked body
        filters (compression and the like) installed and its head edited for them."""
        if self.location is None or not (answer.body or answer.stream):
            return answer
        headers = list(answer.headers)
        if not self._add_filters(answer.status, headers):
            return answer
        self.ctx.response_headers = headers
        return replace(answer, headers=headers)

    def _add_filters(self, status: int, headers: Headers) -> bool:
        """Ask the plugins with a ``filter_rank``, lowest first, for their body filter;
        True if any was installed (``ctx.add_body_filter``)."""
        assert self.location is not None
        added = False
        for plugin in self.location.filter_plugins:
            body_filter = plugin.body_filter(self.ctx, status, headers)
            if body_filter is not None:
                self.ctx.add_body_filter(body_filter)
                added = True
        return added

    def error(self, err: PingapError) -> Respond:
        """Render ``err`` through the error template (JSON if it starts with ``{``)."""
        template = self.runtime.error_template
        values = {"version": self.runtime.version,
                  "content": _escape(template, err.message or "error"),
                  "error_type": err.error_type}
        # one pass: text substituted in is never scanned again for placeholders
        body = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template).encode("utf-8")
        content_type = (b"application/json; charset=utf-8" if body.lstrip().startswith(b"{")
                        else b"text/html; charset=utf-8")
        headers = [
            (b"Content-Type", content_type),
            (b"Content-Length", str(len(body)).encode()),
            (b"Cache-Control", b"private, no-store"),
            (b"X-Pingap-EType", err.error_type.encode()),
        ]
        self.ctx.status = err.status
        self.ctx.response_headers = headers
        close = err.status >= 500 or err.error_type == "downstream"
        return Respond(status=err.status, headers=headers, body=body, close=close)

    def finish(self, *, now: float, size: int) -> RequestContext:
        """Close the books: counters released; returns the access-log record."""
        if self._counted and self.location is not None:
            self.location.processing -= 1
            self._counted = False
        ctx = self.ctx
        if ctx.cleanups:
            for callback in ctx.cleanups:
                callback()
            ctx.cleanups = None
        ctx.end = now
        ctx.size = size
        return ctx


_NO_STEPS: dict[str, tuple[Plugin, ...]] = {"upstream_response": (), "response": ()}
_PLACEHOLDER = re.compile(r"\{\{(version|content|error_type)\}\}")


def _upgrade_of(request: RequestReceived) -> bytes | None:
    if request.method != b"GET" or request.http_version != b"1.1" or request.has_body:
        return None
    value = header_value(request.headers, b"upgrade")
    if not value or b"h2c" in value.lower():  # h2c smuggling: never (reliability §2)
        return None
    if b"upgrade" not in connection_tokens(request.headers):
        return None
    return value


def _escape(template: str, text: str) -> str:
    """The error text made safe for the template: JSON string content or HTML."""
    if template.lstrip().startswith("{"):
        return json.dumps(text, ensure_ascii=False)[1:-1]
    import html  # its entity table costs every worker ~0.4 MB: loaded by the first error page

    return html.escape(text)
