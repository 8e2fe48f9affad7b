"""The plugins that decide who may pass: ``basic_auth``, ``key_auth``, ``jwt``,
``combined_auth``, ``forward_auth`` and ``csrf``, with pingap's options, answers and steps.

Every secret is compared with ``hmac.compare_digest`` and never logged. A plugin that
cannot decide (a malformed credential, an unreachable auth server or JWKS) denies.
The decisions are pure; the two that need the network (forward_auth's sub-request, the
JWKS download) go through the worker's ``Services.http`` lent at bind time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from pingap.actions import CONTINUE, Continue, Respond
from pingap.context import BodyFilter, RequestContext, header_value
from pingap.headers import Headers
from pingap.plugins import (
    FetchedResponse,
    HttpFetcher,
    OptionProblems,
    Plugin,
    Services,
    parse_ip,
    plugin_response,
    register,
    set_request_headers,
)
from pingap.units import parse_duration

if TYPE_CHECKING:
    import jwt

log = logging.getLogger("pingap.plugins")


_NO_STORE = (b"Cache-Control", b"private, no-store")


def _str(options: Mapping[str, Any], key: str) -> str:
    value = options.get(key, "")
    return value if isinstance(value, str) else ""


def _duration(options: Mapping[str, Any], key: str, problems: OptionProblems,
              default: float | None = None) -> float | None:
    text = _str(options, key)
    if not text:
        return default
    try:
        return parse_duration(text)
    except ValueError as exc:
        problems.add(key, str(exc))
        return default


def _denied(status: int, body: str, headers: Headers | None = None,
            delay: float | None = None) -> Respond:
    answer = plugin_response(status, body.encode(), headers=headers)
    if not delay:
        return answer
    return Respond(status=answer.status, headers=answer.headers, body=answer.body,
                   delay=delay)


def _matches_any(value: bytes, accepted: list[bytes]) -> bool:
    """Constant time per candidate, and every candidate is tried."""
    found = False
    for candidate in accepted:
        found |= hmac.compare_digest(candidate, value)
    return found


# --- basic_auth -----------------------------------------------------------------------

@register
class BasicAuth(Plugin):
    """``Authorization: Basic`` against ``authorizations`` (base64 ``user:pass``)."""

    category = "basic_auth"
    steps = ("request",)
    REALM = (b"WWW-Authenticate", b'Basic realm="Access to the staging site"')
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        problems = OptionProblems()
        self.delay = _duration(options, "delay", problems)
        self.hide_credentials = options.get("hide_credentials") is True
        self.authorizations: list[bytes] = []
        for index, item in enumerate(options.get("authorizations") or ()):
            try:
                base64.b64decode(str(item), validate=True)
            except (binascii.Error, ValueError):
                # the value is a credential: never echo it
                problems.add(f"authorizations[{index}]", "is not valid base64")
                continue
            self.authorizations.append(b"Basic " + str(item).encode())
        if not self.authorizations and not problems.problems:
            problems.add("authorizations", "basic authorizations can't be empty")
        problems.check()
        self.missing = _denied(401, "Authorization is missing", [self.REALM])
        self.invalid = _denied(401, "Invalid user or password", [self.REALM], self.delay)

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        value = header_value(ctx.request_headers, b"authorization")
        if not value:
            return self.missing
        if not _matches_any(value, self.authorizations):
            return self.invalid
        if self.hide_credentials:
            set_request_headers(ctx, [(b"authorization", None)])
        return CONTINUE


# --- key_auth -------------------------------------------------------------------------

@register
class KeyAuth(Plugin):
    """A key in ``header`` or ``query`` (query wins when both are set) against ``keys``."""

    category = "key_auth"
    steps = ("request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        problems = OptionProblems()
        self.delay = _duration(options, "delay", problems)
        self.hide_credentials = options.get("hide_credentials") is True
        self.query = _str(options, "query")
        header = _str(options, "header")
        self.header = b"" if self.query else header.lower().encode("latin-1")
        if not self.query and not header:
            problems.add("header", "auth key is not allowed empty (set header or query)")
        self.keys = [str(k).encode() for k in options.get("keys") or () if str(k)]
        if not self.keys:
            problems.add("keys", "auth keys can't be empty")
        problems.check()
        self.missing = _denied(401, "Key missing")
        self.invalid = _denied(401, "Key auth fail", delay=self.delay)

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        if self.query:
            value = (ctx.query_param(self.query) or "").encode("latin-1")
        else:
            value = header_value(ctx.request_headers, self.header) or b""
        if not value:
            return self.missing
        if not _matches_any(value, self.keys):
            return self.invalid
        if self.hide_credentials:
            if self.query:
                ctx.query = "&".join(part for part in ctx.query.split("&")
                                     if part.partition("=")[0] != self.query)
            else:
                set_request_headers(ctx, [(self.header, None)])
        return CONTINUE


# --- jwt ------------------------------------------------------------------------------

# PyJWT and cryptography (~17 MB) are imported by the jwt plugin's constructor, so only a
# config with a jwt plugin loads them, and a broken install still fails at load (pingap -t)

_HMAC_ALGORITHMS = ("HS256", "HS512")
_ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                          "ES256", "ES384", "ES512", "EdDSA")


def _key_types() -> dict[str, tuple[type, ...]]:
    """Asymmetric algorithm -> the public key types that can verify it."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    return {alg: (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey) if alg == "EdDSA"
            else (ec.EllipticCurvePublicKey,) if alg.startswith("ES")
            else (rsa.RSAPublicKey,)
            for alg in _ASYMMETRIC_ALGORITHMS}

#: the most a signed claims body (``auth_path``) may hold
MAX_CLAIMS_SIZE = 64 * 1024


class JwksKeys:
    """The keys of a JWKS endpoint by ``kid``: fresh for ``ttl``, refetched at most once
    per ``cooldown`` (so unknown ``kid`` values cannot hammer the endpoint)."""

    def __init__(self, url: str, ttl: float, clock: Callable[[], float] = time.monotonic,
                 timeout: float = 10.0) -> None:
        self.url = url
        self.ttl = ttl
        self.cooldown = min(ttl, 10.0)
        self.timeout = timeout
        self.clock = clock
        self.fetcher: HttpFetcher | None = None
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at: float | None = None
        self.tried_at: float | None = None

    def key_for(self, kid: str) -> jwt.PyJWK | None:
        now = self.clock()
        key = self.keys.get(kid)
        if key is not None and self.fetched_at is not None and now - self.fetched_at <= self.ttl:
            return key
        if self.tried_at is None or now - self.tried_at >= self.cooldown:
            self.tried_at = now
            self.refresh()
        return self.keys.get(kid)  # a stale key still verifies while the endpoint is away

    def refresh(self) -> None:
        import jwt

        if self.fetcher is None:
            return
        try:
            reply = self.fetcher.get_shared(self.url, self.timeout)
            if reply.status != 200:
                raise ValueError(f"status {reply.status}")
            found = jwt.PyJWKSet.from_json(reply.body.decode("utf-8")).keys
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            log.error("jwt: fetching the JWKS %s failed: %s", self.url, exc)
            return
        self.keys = {k.key_id: k for k in found if k.key_id}
        self.fetched_at = self.clock()


class ClaimsSigner:
    """``auth_path``'s body filter: the upstream's body (the claims) becomes
    ``{"token": "<jws>"}``, signed with the plugin's HMAC secret."""

    def __init__(self, secret: bytes, algorithm: str) -> None:
        self.secret = secret
        self.algorithm = algorithm
        self.buffer = bytearray()

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        if len(self.buffer) > MAX_CLAIMS_SIZE:
            raise ValueError(f"claims body larger than {MAX_CLAIMS_SIZE} bytes")
        return b""

    def end(self) -> bytes:
        import jwt

        token = jwt.api_jws.encode(bytes(self.buffer), self.secret, algorithm=self.algorithm)
        return json.dumps({"token": token}).encode()


@register
class JwtAuth(Plugin):
    """A JWT from ``header`` (``Bearer``), ``cookie`` or ``query``, verified with the HMAC
    ``secret``, a PEM ``public_key`` or a ``jwks_url``; ``auth_path`` mints tokens."""

    category = "jwt"
    steps = ("request", "response")
    #: after the cache (which keeps the upstream's claims), before every body rewrite
    filter_rank = 8

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        from jwt.warnings import InsecureKeyLengthWarning

        # pingap accepts short HMAC secrets (its docs use "123123"); PyJWT would warn on
        # every token, so a short secret is reported once, below
        warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
        # verification runs at request, minting at the response: one instance does both
        super().__init__(name, options, None)
        self.acts_in = frozenset({"request"})
        self.key_types = _key_types()
        problems = OptionProblems()
        self.header = _str(options, "header").lower().encode("latin-1")
        self.cookie = _str(options, "cookie")
        self.query = _str(options, "query")
        if not (self.header or self.cookie or self.query):
            problems.add("header", "set one of header, cookie, query")
        self.delay = _duration(options, "delay", problems)
        self.auth_path = _str(options, "auth_path")
        self.secret = _str(options, "secret").encode()
        self.algorithm = _str(options, "algorithm")
        self.public_key: Any = None
        self.jwks: JwksKeys | None = None
        public_key = _str(options, "public_key")
        jwks_url = _str(options, "jwks_url")
        if self.algorithm in _ASYMMETRIC_ALGORITHMS:
            if not public_key and not jwks_url:
                problems.add("public_key", f"required for algorithm {self.algorithm}")
            elif public_key:
                self.public_key = _load_public_key(self.key_types[self.algorithm],
                                                   self.algorithm, public_key, problems)
        elif public_key and not jwks_url:
            problems.add("algorithm", "a public_key needs an asymmetric algorithm "
                         f"({', '.join(_ASYMMETRIC_ALGORITHMS)})")
        if jwks_url:
            parts = urlsplit(jwks_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.add("jwks_url", "expected an http:// or https:// URL")
            ttl = _duration(options, "jwks_ttl", problems, 3600.0)
            assert ttl is not None
            self.jwks = JwksKeys(jwks_url, max(ttl, 1.0))
        if self.public_key is None and self.jwks is None:
            if not self.secret and not problems.problems:
                problems.add("secret", "Jwt secret is not allowed empty")
            if self.algorithm not in ("", *_HMAC_ALGORITHMS, *_ASYMMETRIC_ALGORITHMS):
                problems.add("algorithm", f"Jwt algorithm({self.algorithm}) is not supported, "
                             "expect HS256 or HS512, or set public_key/jwks_url")
        problems.check()
        if self.secret and len(self.secret) < 32:
            log.warning("jwt plugin %s: the secret is shorter than 32 bytes (RFC 7518 §3.2)",
                        name)
        self.hmac_algorithms = [self.algorithm] if self.algorithm in _HMAC_ALGORITHMS \
            else list(_HMAC_ALGORITHMS)
        self.sign_algorithm = "HS512" if self.algorithm == "HS512" else "HS256"

    def bind(self, services: Services) -> None:
        if self.jwks is not None:
            if services.http is None:
                raise ValueError("the jwt plugin's jwks_url needs the worker's HTTP client")
            self.jwks.fetcher = services.http

    def _token(self, ctx: RequestContext) -> str:
        if self.header:
            value = (header_value(ctx.request_headers, self.header) or b"").decode("latin-1")
            return value[7:] if value.startswith("Bearer ") else value
        if self.cookie:
            return ctx.cookie(self.cookie) or ""
        return ctx.query_param(self.query) or ""

    def _fail(self, message: str, delay: bool = True) -> Respond:
        return _denied(401, f"Jwt authorization {message}",
                       delay=self.delay if delay else None)

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != "request" or (self.auth_path and ctx.path == self.auth_path):
            return CONTINUE
        token = self._token(ctx)
        if not token:
            return _denied(401, "Jwt authorization is missing")
        if token.count(".") != 2:
            return self._fail("format is invalid", delay=False)
        import jwt  # loaded when the plugin was built

        options: jwt.types.Options = {"verify_aud": False}
        try:
            if self.public_key is not None:
                jwt.decode(token, self.public_key, algorithms=[self.algorithm],
                           options=options)
            elif self.jwks is not None:
                header = jwt.get_unverified_header(token)
                alg, kid = header.get("alg"), header.get("kid")
                if alg not in self.key_types or not isinstance(kid, str):
                    return self._fail("is invalid")
                key = self.jwks.key_for(kid)
                if key is None or not isinstance(key.key, self.key_types[alg]):
                    return self._fail("is invalid")
                # the raw key, not the PyJWK: a JWK without "alg" verifies any algorithm
                # of its key type (as pingap), which the isinstance check above bounds
                jwt.decode(token, cast(Any, key.key), algorithms=[alg], options=options)
            else:
                jwt.decode(token, self.secret, algorithms=self.hmac_algorithms,
                           options=options)
        except jwt.ExpiredSignatureError:
            return self._fail("is expired", delay=False)
        except (jwt.PyJWTError, ValueError, TypeError):
            return self._fail("is invalid")
        return CONTINUE

    def body_filter(self, ctx: RequestContext, status: int,
                    headers: Headers) -> BodyFilter | None:
        if not self.auth_path or ctx.path != self.auth_path or not 200 <= status < 300 \
                or status == 204 or ctx.method == "HEAD":
            return None  # an error answer is passed through, never signed
        headers[:] = [(n, v) for n, v in headers
                      if n.lower() not in (b"content-length", b"content-type", b"etag")]
        headers.append((b"Content-Type", b"application/json; charset=utf-8"))
        return ClaimsSigner(self.secret, self.sign_algorithm)


def _load_public_key(key_types: tuple[type, ...], algorithm: str, pem: str,
                     problems: OptionProblems) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        problems.add("public_key", f"invalid public_key: {exc}")
        return None
    if not isinstance(key, key_types):
        problems.add("public_key", f"a {type(key).__name__} cannot verify {algorithm}")
        return None
    return key


# --- combined_auth --------------------------------------------------------------------

class _App:
    __slots__ = ("deviation", "networks", "secret")

    def __init__(self, secret: str, deviation: int,
                 networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self.secret = secret
        self.deviation = deviation
        self.networks = networks


@register
class CombinedAuth(Plugin):
    """pingap's app scheme: ``?app_id=&ts=&digest=hex(sha256("secret:ts"))`` within
    ``deviation`` seconds, from an address of the app's ``ip_list``; ``secret = "*"``
    admits the app unchecked."""

    category = "combined_auth"
    steps = ("request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name, options, step)
        problems = OptionProblems()
        self.clock = clock
        self.apps: dict[str, _App] = {}
        for index, table in enumerate(options.get("authorizations") or ()):
            if not isinstance(table, Mapping) or not table.get("app_id"):
                continue
            networks = []
            for i, item in enumerate(table.get("ip_list") or ()):
                try:
                    networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
                except ValueError as exc:
                    problems.add(f"authorizations[{index}].ip_list[{i}]", str(exc))
            secret = str(table.get("secret", ""))
            deviation = table.get("deviation", 0)
            if secret != "*" and (not isinstance(deviation, int) or deviation <= 0):
                problems.add(f"authorizations[{index}].deviation",
                             f"deviation of app({table['app_id']}) must be greater than 0 "
                             "seconds")
            self.apps[str(table["app_id"])] = _App(secret, int(deviation or 0), networks)
        if not self.apps and not problems.problems:
            problems.add("authorizations", "authorizations is empty")
        problems.check()

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        reason = self.refusal(ctx)
        if reason is None:
            return CONTINUE
        return _denied(401, f"Plugin combined_auth invalid, message: {reason}", [_NO_STORE])

    def refusal(self, ctx: RequestContext) -> str | None:
        """Why the request is refused, in pingap's words, or None."""
        app_id = ctx.query_param("app_id")
        if app_id is None:
            return "app id is empty"
        app = self.apps.get(app_id)
        if app is None:
            return "app id is invalid"
        if app.secret == "*":
            return None
        if app.networks:
            ip = parse_ip(ctx.client_ip)  # an IPv4-mapped client matches IPv4 entries
            if ip is None or not any(ip in net for net in app.networks):
                return "ip is invalid"
        ts = ctx.query_param("ts") or ""
        if not ts:
            return "timestamp is empty"
        try:
            value = int(ts)
        except ValueError:
            return "timestamp is invalid"
        if abs(int(self.clock()) - value) > app.deviation:
            return "timestamp deviation is invalid"
        digest = ctx.query_param("digest") or ""
        if not digest:
            return "digest is empty"
        expected = hashlib.sha256(f"{app.secret}:{ts}".encode()).hexdigest()
        if not hmac.compare_digest(digest.lower().encode("latin-1"), expected.encode()):
            return "digest is invalid"
        return None


# --- forward_auth ---------------------------------------------------------------------

#: never copied into the sub-request: it is a new GET with its own framing and Host
_NOT_SUBREQUESTED = frozenset({
    b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
    b"te", b"upgrade", b"proxy-connection", b"expect", b"http2-settings",
})
#: not relayed from a refusing auth answer: the proxy frames its own response
_NOT_RELAYED = frozenset({b"content-length", b"transfer-encoding", b"connection",
                          b"keep-alive"})


@register
class ForwardAuth(Plugin):
    """A GET to ``auth_url`` decides: 2xx admits (copying ``add_headers`` from its answer
    onto the upstream request), any other answer goes to the client as it is, and an
    auth server that cannot be asked gives 502."""

    category = "forward_auth"
    steps = ("request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None) -> None:
        super().__init__(name, options, step)
        problems = OptionProblems()
        self.auth_url = _str(options, "auth_url")
        parts = urlsplit(self.auth_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.add("auth_url", "invalid auth_url: expected an http:// or https:// URL")
        timeout = _duration(options, "timeout", problems, 10.0)
        self.timeout = timeout if timeout and timeout > 0 else 10.0
        self.request_headers = {str(h).strip().lower().encode("latin-1")
                                for h in options.get("request_headers") or ()}
        self.add_headers = [str(h).strip().encode("latin-1")
                            for h in options.get("add_headers") or () if str(h).strip()]
        problems.check()
        self.http: HttpFetcher | None = None
        self.unavailable = _denied(502, "Forward auth request failed")

    def bind(self, services: Services) -> None:
        if services.http is None:
            raise ValueError("the forward_auth plugin needs the worker's HTTP client")
        self.http = services.http

    def subrequest_headers(self, ctx: RequestContext) -> Headers:
        wanted = self.request_headers
        out = [(n, v) for n, v in ctx.request_headers
               if n.lower() not in _NOT_SUBREQUESTED and (not wanted or n.lower() in wanted)]
        out += [(b"X-Forwarded-Method", ctx.method.encode("latin-1")),
                (b"X-Forwarded-Uri", ctx.uri.encode("latin-1")),
                (b"X-Forwarded-Host", ctx.host.encode("latin-1")),
                (b"X-Forwarded-For", ctx.client_ip.encode("latin-1"))]
        return out

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        if self.http is None:
            return self.unavailable
        try:
            reply = self.http.request("GET", self.auth_url, self.subrequest_headers(ctx),
                                      self.timeout)
        except (OSError, ValueError) as exc:
            log.error("forward_auth %s: the auth request failed: %s", self.name, exc)
            return self.unavailable
        return self.decide(ctx, reply)

    def decide(self, ctx: RequestContext, reply: FetchedResponse) -> Continue | Respond:
        if 200 <= reply.status < 300:
            found = [(name, header_value(reply.headers, name.lower()))
                     for name in self.add_headers]
            set_request_headers(ctx, [(n, v) for n, v in found if v is not None])
            return CONTINUE
        status = reply.status if 100 <= reply.status <= 999 else 403
        headers = [(n, v) for n, v in reply.headers if n.lower() not in _NOT_RELAYED]
        headers.append((b"Content-Length", str(len(reply.body)).encode()))
        return Respond(status=status, headers=headers, body=reply.body)


# --- csrf -----------------------------------------------------------------------------

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(key: str, now: float) -> str:
    """pingap's token: ``<12-char id>.<unix seconds, hex>.<base64(sha256(id.ts ‖ key))>``."""
    prefix = f"{secrets.token_urlsafe(9)}.{int(now):x}"
    return f"{prefix}.{_csrf_signature(prefix, key)}"


def _csrf_signature(prefix: str, key: str) -> str:
    return base64.b64encode(hashlib.sha256(prefix.encode() + key.encode()).digest()).decode()


def csrf_token_valid(key: str, ttl: int, token: str, now: float) -> bool:
    parts = token.split(".")
    if len(parts) != 3:
        return False
    if ttl > 0:
        try:
            issued = int(parts[1], 16)
        except ValueError:
            issued = 0  # as pingap: an unreadable time counts as long expired
        if int(now) - issued > ttl:
            return False
    expected = _csrf_signature(f"{parts[0]}.{parts[1]}", key)
    return hmac.compare_digest(parts[2].encode("latin-1"), expected.encode())


@register
class Csrf(Plugin):
    """Double-submit cookie: ``token_path`` issues a signed token as cookie ``name``;
    unsafe methods must echo it in header ``name``, matching the cookie and unexpired."""

    category = "csrf"
    steps = ("request",)
    own_step_only = True

    def __init__(self, name: str, options: Mapping[str, Any], step: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name, options, step)
        problems = OptionProblems()
        self.clock = clock
        self.token_path = _str(options, "token_path")
        self.key = _str(options, "key")
        self.cookie_name = _str(options, "name") or "x-csrf-token"
        ttl = _duration(options, "ttl", problems)
        self.ttl = int(ttl or 0)
        if not self.token_path:
            problems.add("token_path", "Token path is not allowed empty")
        if not self.key:
            problems.add("key", "Key is not allowed empty")
        problems.check()
        self.header = self.cookie_name.lower().encode("latin-1")
        self.invalid = _denied(401, "Csrf token is empty or invalid")

    def handle_request(self, step: str, ctx: RequestContext) -> Continue | Respond:
        if step != self.step:
            return CONTINUE
        if ctx.path == self.token_path:
            cookie = f"{self.cookie_name}={csrf_token(self.key, self.clock())}; Path=/"
            if self.ttl > 0:
                cookie += f"; Max-Age={self.ttl}"
            return Respond(status=204, body=b"", headers=[
                _NO_STORE, (b"Set-Cookie", cookie.encode("latin-1"))])
        if ctx.method in _SAFE_METHODS:
            return CONTINUE
        value = (header_value(ctx.request_headers, self.header) or b"").decode("latin-1")
        if not value:
            return self.invalid
        cookie_value = ctx.cookie(self.cookie_name) or ""
        if not hmac.compare_digest(value.encode("latin-1"), cookie_value.encode("latin-1")) \
                or not csrf_token_valid(self.key, self.ttl, value, self.clock()):
            return self.invalid
        return CONTINUE
