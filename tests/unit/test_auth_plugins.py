"""The authentication plugins' decisions (pingap.plugins.auth), without sockets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pingap.actions import CONTINUE, Respond
from pingap.context import ConnectionInfo, RequestContext
from pingap.errors import ConfigError
from pingap.plugins import FetchedResponse, PluginOptionError, Services, build_plugin
from pingap.plugins.auth import (
    ClaimsSigner,
    CombinedAuth,
    Csrf,
    ForwardAuth,
    JwtAuth,
    csrf_token,
)
from tests.unit.test_plugins import runtime_of


def ctx_of(target: str = "/", *, method: str = "GET", headers: Mapping[str, str] | None = None,
           client_ip: str = "10.0.0.1") -> RequestContext:
    path, _, query = target.partition("?")
    conn = ConnectionInfo(connection_id=1, remote_addr=client_ip, remote_port=40000,
                          server_addr="127.0.0.1", server_port=8080, accepted_at=0.0)
    return RequestContext(
        conn=conn, method=method, path=path, query=query, http_version="1.1",
        host="example.com",
        request_headers=[(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        client_ip=client_ip, start=0.0, start_wall=0.0)


def plugin(category: str, **options: Any) -> Any:
    built = build_plugin("p", category, options)
    assert built is not None
    return built


def header(answer: Respond, name: bytes) -> bytes | None:
    return next((v for n, v in answer.headers if n.lower() == name), None)


def run(p: Any, ctx: RequestContext) -> Any:
    return p.handle_request("request", ctx)


# --- basic_auth -----------------------------------------------------------------------

PINGAP = base64.b64encode(b"pingap:123123").decode()


def test_basic_auth_missing_wrong_right_and_hidden() -> None:
    p = plugin("basic_auth", authorizations=[PINGAP], delay="200ms", hide_credentials=True)
    missing = run(p, ctx_of())
    assert isinstance(missing, Respond) and missing.status == 401
    assert missing.body == b"Authorization is missing" and not missing.delay
    assert header(missing, b"www-authenticate") == b'Basic realm="Access to the staging site"'
    wrong = run(p, ctx_of(headers={"Authorization": "Basic " + base64.b64encode(
        b"pingap:nope").decode()}))
    assert isinstance(wrong, Respond) and wrong.status == 401
    assert wrong.body == b"Invalid user or password" and wrong.delay == 0.2
    assert header(wrong, b"www-authenticate") is not None
    ctx = ctx_of(headers={"Authorization": f"Basic {PINGAP}", "X-Other": "1"})
    assert run(p, ctx) is CONTINUE
    assert ctx.request_headers == [(b"X-Other", b"1")]


def test_basic_auth_keeps_credentials_unless_hidden() -> None:
    p = plugin("basic_auth", authorizations=[PINGAP])
    ctx = ctx_of(headers={"authorization": f"Basic {PINGAP}"})
    assert run(p, ctx) is CONTINUE
    assert ctx.request_header("Authorization") == f"Basic {PINGAP}"


def test_basic_auth_bad_base64_names_the_key_not_the_value() -> None:
    with pytest.raises(PluginOptionError) as caught:
        plugin("basic_auth", authorizations=[PINGAP, "not base64!!"], delay="1x")
    keys = dict(caught.value.problems)
    assert set(keys) == {"authorizations[1]", "delay"}
    assert "not base64" not in str(caught.value)
    with pytest.raises(ConfigError) as config_error:
        runtime_of('[locations.lo]\nupstream = "up"\nplugins = ["b"]\n',
                   '[plugins.b]\ncategory = "basic_auth"\nauthorizations = ["%%%"]\n')
    assert [p.key for p in config_error.value.problems] == ["plugins.b.authorizations[0]"]


# --- key_auth -------------------------------------------------------------------------

def test_key_auth_header() -> None:
    p = plugin("key_auth", header="X-API-Key", keys=["KOXQaw", "GKvXY2"], delay="500ms",
               hide_credentials=True)
    missing = run(p, ctx_of())
    assert (missing.status, missing.body, missing.delay) == (401, b"Key missing", None)
    wrong = run(p, ctx_of(headers={"X-API-Key": "KOXQa"}))
    assert (wrong.status, wrong.body, wrong.delay) == (401, b"Key auth fail", 0.5)
    ctx = ctx_of(headers={"x-api-key": "GKvXY2"})
    assert run(p, ctx) is CONTINUE and ctx.request_headers == []


def test_key_auth_query_wins_and_is_hidden() -> None:
    p = plugin("key_auth", header="X-API-Key", query="api_key", keys=["KOXQaw"],
               hide_credentials=True)
    assert run(p, ctx_of(headers={"X-API-Key": "KOXQaw"})).status == 401
    ctx = ctx_of("/api/users?a=1&api_key=KOXQaw&b=2")
    assert run(p, ctx) is CONTINUE
    assert ctx.uri == "/api/users?a=1&b=2"


def test_key_auth_needs_keys_and_a_place() -> None:
    with pytest.raises(PluginOptionError) as caught:
        plugin("key_auth", keys=[])
    assert {k for k, _ in caught.value.problems} == {"header", "keys"}


# --- jwt ------------------------------------------------------------------------------

def bearer(token: str) -> RequestContext:
    return ctx_of(headers={"Authorization": f"Bearer {token}"})


def hs(claims: dict[str, Any], secret: str = "123123", alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_jwt_hmac_valid_missing_format_wrong_expired() -> None:
    p = plugin("jwt", header="Authorization", secret="123123", delay="1s")
    assert run(p, bearer(hs({"id": 1, "exp": int(time.time()) + 60}))) is CONTINUE
    assert run(p, bearer(hs({"id": 1}, alg="HS512"))) is CONTINUE  # no algorithm: either
    missing = run(p, ctx_of())
    assert (missing.status, missing.body) == (401, b"Jwt authorization is missing")
    assert run(p, bearer("abc.def")).body == b"Jwt authorization format is invalid"
    wrong = run(p, bearer(hs({"id": 1}, secret="other")))
    assert (wrong.status, wrong.body, wrong.delay) == (401, b"Jwt authorization is invalid", 1.0)
    expired = run(p, bearer(hs({"id": 1, "exp": int(time.time()) - 10})))
    assert (expired.status, expired.body) == (401, b"Jwt authorization is expired")
    early = run(p, bearer(hs({"id": 1, "nbf": int(time.time()) + 600})))
    assert early.status == 401


def test_jwt_cookie_and_query_sources() -> None:
    token = hs({"id": 1})
    by_cookie = plugin("jwt", cookie="jwt", secret="123123")
    assert run(by_cookie, ctx_of(headers={"Cookie": f"a=1; jwt={token}"})) is CONTINUE
    assert run(by_cookie, ctx_of(headers={"Authorization": f"Bearer {token}"})).status == 401
    by_query = plugin("jwt", query="token", secret="123123")
    assert run(by_query, ctx_of(f"/x?token={token}")) is CONTINUE


def test_jwt_configured_algorithm_is_enforced_and_none_is_refused() -> None:
    p = plugin("jwt", header="Authorization", secret="123123", algorithm="HS256")
    assert run(p, bearer(hs({"id": 1}, alg="HS512"))).status == 401
    none_token = b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(b'{"id":1}') + "."
    assert run(p, bearer(none_token)).body == b"Jwt authorization is invalid"
    assert run(plugin("jwt", header="Authorization", secret="123123"),
               bearer(none_token)).status == 401


def keypair(kind: str) -> tuple[Any, str]:
    private: Any
    if kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ec":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, pem


@pytest.mark.parametrize(("kind", "alg"), [("rsa", "RS256"), ("rsa", "PS384"),
                                           ("ec", "ES256"), ("ed", "EdDSA")])
def test_jwt_public_key_algorithms(kind: str, alg: str) -> None:
    private, pem = keypair(kind)
    p = plugin("jwt", header="Authorization", algorithm=alg, public_key=pem)
    assert run(p, bearer(jwt.encode({"id": 1}, private, algorithm=alg))) is CONTINUE
    expired = jwt.encode({"exp": int(time.time()) - 5}, private, algorithm=alg)
    assert run(p, bearer(expired)).body == b"Jwt authorization is expired"
    other, _ = keypair(kind)
    assert run(p, bearer(jwt.encode({"id": 1}, other, algorithm=alg))).status == 401


def test_jwt_hs256_signed_with_the_public_key_is_refused() -> None:
    """The algorithm-confusion attack: the public PEM used as an HMAC secret."""
    _, pem = keypair("rsa")
    p = plugin("jwt", header="Authorization", algorithm="RS256", public_key=pem)
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(b'{"id":1}')
    sig = b64(hmac.new(pem.encode(), signing.encode(), hashlib.sha256).digest())
    answer = run(p, bearer(f"{signing}.{sig}"))
    assert (answer.status, answer.body) == (401, b"Jwt authorization is invalid")


def test_jwt_bad_options_are_reported_by_key() -> None:
    with pytest.raises(PluginOptionError) as caught:
        plugin("jwt", header="Authorization", algorithm="RS256", public_key="-----BEGIN x")
    assert [k for k, _ in caught.value.problems] == ["public_key"]
    _, ec_pem = keypair("ec")
    with pytest.raises(PluginOptionError) as caught:
        plugin("jwt", header="Authorization", algorithm="RS256", public_key=ec_pem)
    assert [k for k, _ in caught.value.problems] == ["public_key"]
    with pytest.raises(PluginOptionError) as caught:
        plugin("jwt", secret="x")
    assert [k for k, _ in caught.value.problems] == ["header"]
    with pytest.raises(PluginOptionError) as caught:
        plugin("jwt", header="Authorization")
    assert [k for k, _ in caught.value.problems] == ["secret"]
    with pytest.raises(PluginOptionError) as caught:
        plugin("jwt", header="Authorization", secret="x", algorithm="HS384")
    assert [k for k, _ in caught.value.problems] == ["algorithm"]


class FakeHttp:
    """A stand-in fetcher for the pure tests (the real one is tested end to end)."""

    def __init__(self, replies: list[FetchedResponse | Exception]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, str, list[tuple[bytes, bytes]]]] = []

    def request(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                timeout: float) -> FetchedResponse:
        self.calls.append((method, url, headers))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def get_shared(self, url: str, timeout: float) -> FetchedResponse:
        return self.request("GET", url, [], timeout)


def jwks_body(private: Any, kid: str) -> bytes:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk["kid"] = kid
    return json.dumps({"keys": [jwk]}).encode()


def test_jwt_jwks_fetch_cache_and_fail_closed() -> None:
    private, _ = keypair("rsa")
    now = [1000.0]
    p: JwtAuth = plugin("jwt", header="Authorization", jwks_url="https://idp.test/jwks",
                        jwks_ttl="1h")
    assert p.jwks is not None
    p.jwks.clock = lambda: now[0]
    http = FakeHttp([OSError("connection refused"),
                     FetchedResponse(status=200, headers=[], body=jwks_body(private, "k1"))])
    services = Services()
    services.http = http
    p.bind(services)
    token = jwt.encode({"id": 1}, private, algorithm="RS256", headers={"kid": "k1"})
    assert run(p, bearer(token)).status == 401  # JWKS unreachable: denied
    assert run(p, bearer(token)).status == 401  # within the cooldown: not asked again
    assert len(http.calls) == 1
    now[0] += 11
    assert run(p, bearer(token)) is CONTINUE
    assert run(p, bearer(token)) is CONTINUE  # cached
    assert len(http.calls) == 2
    hs_token = hs({"id": 1}, secret="anything")
    assert run(p, bearer(hs_token)).status == 401  # HMAC never accepted from a JWKS config
    no_kid = jwt.encode({"id": 1}, private, algorithm="RS256")
    assert run(p, bearer(no_kid)).status == 401


def test_jwt_auth_path_is_open_and_signs_the_claims() -> None:
    p = plugin("jwt", header="Authorization", secret="123123", algorithm="HS512",
               auth_path="/login")
    ctx = ctx_of("/login", method="POST")
    assert run(p, ctx) is CONTINUE
    headers = [(b"Content-Length", b"25"), (b"Content-Type", b"text/plain")]
    signer = p.body_filter(ctx, 200, headers)
    assert signer is not None
    ctx.add_body_filter(signer)
    assert headers == [(b"Content-Type", b"application/json; charset=utf-8")]
    claims = b'{"id":"u-1","exp":1893456000}'
    body = ctx.filter_body(claims[:10]) + ctx.filter_body(claims[10:]) + ctx.end_body()
    token = json.loads(body)["token"]
    assert jwt.decode(token, "123123", algorithms=["HS512"]) == {"id": "u-1", "exp": 1893456000}
    assert run(p, bearer(token)) is CONTINUE
    assert p.body_filter(ctx_of("/login", method="POST"), 401, []) is None  # never signed
    assert p.body_filter(ctx_of("/other", method="POST"), 200, []) is None


def test_claims_signer_is_bounded() -> None:
    signer = ClaimsSigner(b"k", "HS256")
    with pytest.raises(ValueError):
        signer.feed(b"x" * (64 * 1024 + 1))


# --- combined_auth --------------------------------------------------------------------

def combined(clock: float = 1_700_000_000.0) -> CombinedAuth:
    return CombinedAuth("c", {"authorizations": [
        {"app_id": "pingap", "secret": "123123", "deviation": 60,
         "ip_list": ["127.0.0.1", "192.168.1.0/24"]},
        {"app_id": "internal", "secret": "*"},
    ]}, clock=lambda: clock)


def signed(ts: int, secret: str = "123123", app: str = "pingap") -> str:
    digest = hashlib.sha256(f"{secret}:{ts}".encode()).hexdigest()
    return f"/api?app_id={app}&ts={ts}&digest={digest}"


def test_combined_auth_steps() -> None:
    p = combined()
    now = 1_700_000_000
    assert run(p, ctx_of(signed(now - 30), client_ip="192.168.1.7")) is CONTINUE
    upper = signed(now).replace("digest=", "DIGEST=").upper().replace("DIGEST=", "digest=")
    assert run(p, ctx_of(upper.replace("/API?APP_ID=PINGAP&TS=", "/api?app_id=pingap&ts="),
                         client_ip="127.0.0.1")) is CONTINUE  # digest case-insensitive
    cases = {
        "app id is empty": ctx_of("/api"),
        "app id is invalid": ctx_of("/api?app_id=nope"),
        "ip is invalid": ctx_of(signed(now), client_ip="10.1.1.1"),
        "timestamp is empty": ctx_of("/api?app_id=pingap", client_ip="127.0.0.1"),
        "timestamp deviation is invalid": ctx_of(signed(now - 61), client_ip="127.0.0.1"),
        "digest is invalid": ctx_of(signed(now, secret="guess"), client_ip="127.0.0.1"),
    }
    for reason, ctx in cases.items():
        answer = run(p, ctx)
        assert answer.status == 401, reason
        assert answer.body == f"Plugin combined_auth invalid, message: {reason}".encode()
        assert header(answer, b"cache-control") == b"private, no-store"
    assert run(p, ctx_of("/api?app_id=internal", client_ip="10.9.9.9")) is CONTINUE


def test_combined_auth_options() -> None:
    with pytest.raises(PluginOptionError) as caught:
        CombinedAuth("c", {"authorizations": [
            {"app_id": "a", "secret": "s", "deviation": 0, "ip_list": ["10.0.0.0/33"]}]})
    assert {k for k, _ in caught.value.problems} == {
        "authorizations[0].ip_list[0]", "authorizations[0].deviation"}


# --- forward_auth ---------------------------------------------------------------------

def test_forward_auth_subrequest_and_decisions() -> None:
    p: ForwardAuth = plugin("forward_auth", auth_url="http://auth.test:9000/verify",
                            request_headers=["Cookie", "Authorization"],
                            add_headers=["X-User-Id"], timeout="3s")
    http = FakeHttp([
        FetchedResponse(status=200, headers=[(b"X-User-Id", b"42"), (b"X-Other", b"1")],
                        body=b""),
        FetchedResponse(status=302, headers=[(b"Location", b"/login"),
                                             (b"Content-Length", b"0"),
                                             (b"Connection", b"close")], body=b""),
        TimeoutError("no answer within 3s"),
    ])
    services = Services()
    services.http = http
    p.bind(services)
    ctx = ctx_of("/dashboard?x=1", headers={"Cookie": "s=1", "Host": "example.com",
                                            "X-User-Id": "spoofed", "Accept": "*/*"})
    assert run(p, ctx) is CONTINUE
    method, url, sent = http.calls[0]
    assert (method, url) == ("GET", "http://auth.test:9000/verify")
    assert sent == [(b"Cookie", b"s=1"), (b"X-Forwarded-Method", b"GET"),
                    (b"X-Forwarded-Uri", b"/dashboard?x=1"),
                    (b"X-Forwarded-Host", b"example.com"), (b"X-Forwarded-For", b"10.0.0.1")]
    assert ctx.request_header("X-User-Id") == "42"
    assert [n for n, _ in ctx.request_headers].count(b"X-User-Id") == 1
    assert ctx.request_header("X-Other") is None
    redirect = run(p, ctx_of("/dashboard"))
    assert redirect.status == 302
    assert redirect.headers == [(b"Location", b"/login"), (b"Content-Length", b"0")]
    down = run(p, ctx_of("/dashboard"))
    assert (down.status, down.body) == (502, b"Forward auth request failed")


def test_forward_auth_needs_a_url() -> None:
    with pytest.raises(PluginOptionError) as caught:
        plugin("forward_auth", auth_url="auth-service:9000/verify", timeout="3")
    assert {k for k, _ in caught.value.problems} == {"auth_url", "timeout"}


# --- csrf -----------------------------------------------------------------------------

def test_csrf_issue_and_check() -> None:
    now = [1_700_000_000.0]
    p = Csrf("c", {"token_path": "/csrf-token", "key": "WjrXUG47wu", "ttl": "1h"},
             clock=lambda: now[0])
    issued = run(p, ctx_of("/csrf-token", method="POST"))
    assert issued.status == 204 and issued.body == b""
    assert header(issued, b"cache-control") == b"private, no-store"
    cookie = header(issued, b"set-cookie")
    assert cookie is not None and cookie.endswith(b"; Path=/; Max-Age=3600")
    token = cookie.split(b";")[0].split(b"=", 1)[1].decode()
    assert run(p, ctx_of("/api", method="GET")) is CONTINUE

    def post(value: str | None, cookie_value: str | None = None) -> Any:
        headers = {"Cookie": f"x-csrf-token={cookie_value or value}"}
        if value is not None:
            headers["X-CSRF-Token"] = value
        return run(p, ctx_of("/api", method="POST", headers=headers))

    assert post(token) is CONTINUE
    assert post(None, token).body == b"Csrf token is empty or invalid"
    other = csrf_token("WjrXUG47wu", now[0])
    assert post(token, other).status == 401  # header and cookie differ
    forged = csrf_token("not-the-key", now[0])
    assert post(forged).status == 401
    tampered = token.rsplit(".", 2)
    assert post(f"{tampered[0]}.{int(now[0] + 5000):x}.{tampered[2]}").status == 401
    now[0] += 3601
    assert post(token).status == 401  # expired


def test_csrf_options() -> None:
    with pytest.raises(PluginOptionError) as caught:
        plugin("csrf", ttl="1h")
    assert {k for k, _ in caught.value.problems} == {"token_path", "key"}
