"""The authentication plugins through the real proxy, with HTTP/1.1 and HTTP/2 (h2c)
clients, a real auth service (forward_auth, JWKS) and pingap's own configs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pingap.plugins.auth import csrf_token
from tests.support.client import Answer, h1_request
from tests.support.h2client import h2c_request
from tests.support.proc import ROOT, AuthServerProcess, PingapProcess, free_port

DATA = Path(__file__).resolve().parents[1] / "data"
CLIENTS: dict[str, Callable[..., Answer]] = {"h1": h1_request, "h2": h2c_request}


@pytest.fixture(params=sorted(CLIENTS))
def fetch(request: pytest.FixtureRequest) -> Callable[..., Answer]:
    return CLIENTS[request.param]


@pytest.fixture
def auth_server(tmp_path: Path) -> Any:
    started: list[AuthServerProcess] = []

    def start(jwks: Path | None = None) -> AuthServerProcess:
        server = AuthServerProcess(tmp_path, jwks)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def serve(pingap: Any, port: int, backend: str, locations: dict[str, tuple[str, list[str]]],
          plugins: str, extra: str = "") -> Any:
    """pingap with one upstream, the given ``{name: (path, plugins)}`` locations and h2c."""
    text = f'[upstreams.u]\naddrs = ["{backend}"]\n{plugins}\n{extra}\n'
    for name, (path, names) in locations.items():
        text += (f'[locations.{name}]\nupstream = "u"\npath = "{path}"\n'
                 f"plugins = {json.dumps(names)}\n")
    text += (f'[servers.s]\naddr = "127.0.0.1:{port}"\nenabled_h2 = true\n'
             f"locations = {json.dumps(list(locations))}\n")
    return pingap(text, port=port)


def echoed_headers(answer: Answer) -> dict[str, str]:
    """The request headers the backend saw (its JSON echo), names in lower case."""
    return {name.lower(): value for name, value in answer.json()["headers"]}


def basic(user_pass: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_pass.encode()).decode()}


# --- basic_auth and key_auth ----------------------------------------------------------

AUTH_PLUGINS = """
[plugins.staging]
category = "basic_auth"
authorizations = ["cGluZ2FwOjEyMzEyMw==", "YWRtaW46c2VjcmV0"]
hide_credentials = true
[plugins.apiKey]
category = "key_auth"
header = "X-API-Key"
keys = ["KOXQaw", "GKvXY2"]
hide_credentials = true
[plugins.queryKey]
category = "key_auth"
query = "api_key"
keys = ["KOXQaw"]
hide_credentials = true
"""


def test_basic_and_key_auth(backends, pingap, port: int, fetch: Callable[..., Answer]) -> None:
    backend = backends()
    serve(pingap, port, backend.addr, {"staging": ("/staging", ["staging"]),
                                       "key": ("/key", ["apiKey"]),
                                       "query": ("/query", ["queryKey"])}, AUTH_PLUGINS)
    missing = fetch(port, "GET", "/staging/x")
    assert (missing.status, missing.body) == (401, b"Authorization is missing")
    assert missing.header("www-authenticate") == 'Basic realm="Access to the staging site"'
    wrong = fetch(port, "GET", "/staging/x", headers=basic("pingap:wrong"))
    assert (wrong.status, wrong.body) == (401, b"Invalid user or password")
    ok = fetch(port, "GET", "/staging/x", headers={**basic("admin:secret"), "X-Keep": "1"})
    assert ok.status == 200
    seen = echoed_headers(ok)
    assert "authorization" not in seen and seen["x-keep"] == "1"  # hide_credentials

    assert fetch(port, "GET", "/key/users").body == b"Key missing"
    assert fetch(port, "GET", "/key/users", headers={"X-API-Key": "nope"}).body == \
        b"Key auth fail"
    ok = fetch(port, "GET", "/key/users", headers={"X-API-Key": "GKvXY2"})
    assert ok.status == 200 and "x-api-key" not in echoed_headers(ok)

    assert fetch(port, "GET", "/query/users?api_key=bad").status == 401
    ok = fetch(port, "GET", "/query/users?a=1&api_key=KOXQaw&b=2")
    assert ok.status == 200 and ok.json()["target"] == "/query/users?a=1&b=2"
    assert len(backend.requests()) == 3  # nothing refused reached the backend


def test_basic_auth_brute_force_meets_delay(backends, pingap, port: int) -> None:
    """Every failed guess waits ``delay``; the wait holds only that request, not the
    worker: a good login sent while four guesses wait is answered first."""
    backend = backends()
    delay = 0.8
    serve(pingap, port, backend.addr, {"staging": ("/", ["staging"])}, f"""
[plugins.staging]
category = "basic_auth"
authorizations = ["cGluZ2FwOjEyMzEyMw=="]
delay = "{int(delay * 1000)}ms"
""")
    for fetch, guess in ((h1_request, "pingap:1"), (h1_request, "pingap:12"),
                         (h2c_request, "admin:admin")):
        answer = fetch(port, headers=basic(guess))
        assert answer.status == 401 and answer.elapsed >= delay, answer.elapsed
    finished: list[tuple[str, float]] = []
    lock = threading.Lock()

    def attempt(label: str, user_pass: str) -> None:
        answer = h1_request(port, headers=basic(user_pass))
        with lock:
            finished.append((label, answer.elapsed))
        assert answer.status == (200 if label == "good" else 401)

    guesses = [threading.Thread(target=attempt, args=("guess", f"pingap:{n}")) for n in range(4)]
    for thread in guesses:
        thread.start()
    attempt("good", "pingap:123123")
    for thread in guesses:
        thread.join()
    assert finished[0][0] == "good", finished
    assert all(elapsed >= delay for label, elapsed in finished if label == "guess"), finished


# --- jwt ------------------------------------------------------------------------------

def rsa_pair() -> tuple[Any, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, pem


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


SECRET = "a-shared-secret-of-32-bytes-or-more!"


def test_jwt_mint_verify_and_attacks(backends, pingap, port: int,
                                     fetch: Callable[..., Answer]) -> None:
    backend = backends()
    private, pem = rsa_pair()
    pem_toml = pem.replace("\n", "\\n")
    serve(pingap, port, backend.addr, {"hs": ("/hs", ["jwtHs"]), "rs": ("/rs", ["jwtRs"])},
          f"""
[plugins.jwtHs]
category = "jwt"
header = "Authorization"
secret = "{SECRET}"
algorithm = "HS256"
auth_path = "/hs/login"
[plugins.jwtRs]
category = "jwt"
cookie = "jwt"
algorithm = "RS256"
public_key = "{pem_toml}"
""")
    # auth_path: the upstream's answer (here its JSON echo) is the claims, signed
    minted = fetch(port, "POST", "/hs/login", body=b'{"user":"u-1"}')
    assert minted.status == 200
    assert minted.header("content-type") == "application/json; charset=utf-8"
    token = minted.json()["token"]
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["method"] == "POST" and claims["target"] == "/hs/login"

    def hs_call(value: str) -> Answer:
        return fetch(port, "GET", "/hs/me", headers={"Authorization": f"Bearer {value}"})

    assert hs_call(token).status == 200
    assert fetch(port, "GET", "/hs/me").body == b"Jwt authorization is missing"
    now = int(time.time())
    expired = jwt.encode({"id": 1, "exp": now - 60}, SECRET, algorithm="HS256")
    assert (hs_call(expired).status, hs_call(expired).body) == \
        (401, b"Jwt authorization is expired")
    wrong = jwt.encode({"id": 1}, "not-the-secret-but-32-bytes-long!!", algorithm="HS256")
    assert hs_call(wrong).body == b"Jwt authorization is invalid"
    none = b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(b'{"id":1}') + "."
    assert hs_call(none).status == 401
    hs512 = jwt.encode({"id": 1}, SECRET, algorithm="HS512")
    assert hs_call(hs512).status == 401  # algorithm = "HS256" is enforced

    def rs_call(value: str) -> Answer:
        return fetch(port, "GET", "/rs/me", headers={"Cookie": f"jwt={value}"})

    assert rs_call(jwt.encode({"id": 1, "exp": now + 60}, private, algorithm="RS256")).status \
        == 200
    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(b'{"id":1}')
    confused = signing + "." + b64(hmac.new(pem.encode(), signing.encode(),
                                            hashlib.sha256).digest())
    assert rs_call(confused).body == b"Jwt authorization is invalid"
    other, _ = rsa_pair()
    assert rs_call(jwt.encode({"id": 1}, other, algorithm="RS256")).status == 401
    targets = [r["target"] for r in backend.requests()]
    assert targets == ["/hs/login", "/hs/me", "/rs/me"]


def test_jwt_jwks_served_and_unreachable(tmp_path: Path, backends, pingap, auth_server,
                                         port: int, fetch: Callable[..., Answer]) -> None:
    backend = backends()
    private, _ = rsa_pair()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk["kid"] = "k1"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    server = auth_server(jwks)
    serve(pingap, port, backend.addr, {"up": ("/up", ["jwksUp"]), "down": ("/down", ["jwksDown"])},
          f"""
[plugins.jwksUp]
category = "jwt"
header = "Authorization"
jwks_url = "{server.url}/jwks"
jwks_ttl = "1h"
[plugins.jwksDown]
category = "jwt"
header = "Authorization"
jwks_url = "http://127.0.0.1:{free_port()}/jwks"
""")
    token = jwt.encode({"id": 1}, private, algorithm="RS256", headers={"kid": "k1"})
    bearer = {"Authorization": f"Bearer {token}"}
    assert fetch(port, "GET", "/up/x", headers=bearer).status == 200
    assert fetch(port, "GET", "/up/x", headers=bearer).status == 200
    assert fetch(port, "GET", "/down/x", headers=bearer).status == 401  # fails closed
    other, _ = rsa_pair()
    forged = jwt.encode({"id": 1}, other, algorithm="RS256", headers={"kid": "k1"})
    assert fetch(port, "GET", "/up/x", headers={"Authorization": f"Bearer {forged}"}).status \
        == 401
    assert [r["target"] for r in backend.requests()] == ["/up/x", "/up/x"]
    # one worker fetched it once and cached it (the other worker may have its own copy)
    assert 1 <= sum(r["path"] == "/jwks" for r in server.requests()) <= 2


# --- forward_auth ---------------------------------------------------------------------

def test_forward_auth(backends, pingap, auth_server, port: int,
                      fetch: Callable[..., Answer]) -> None:
    backend = backends()
    server = auth_server()
    serve(pingap, port, backend.addr, {"app": ("/app", ["fwd"]), "slow": ("/slow", ["fwdSlow"]),
                                       "gone": ("/gone", ["fwdGone"])}, f"""
[plugins.fwd]
category = "forward_auth"
auth_url = "{server.url}/verify"
request_headers = ["Cookie", "Authorization"]
add_headers = ["X-User-Id", "X-User-Role"]
timeout = "3s"
[plugins.fwdSlow]
category = "forward_auth"
auth_url = "{server.url}/slow"
timeout = "300ms"
[plugins.fwdGone]
category = "forward_auth"
auth_url = "http://127.0.0.1:{free_port()}/verify"
""")
    ok = fetch(port, "GET", "/app/dashboard?x=1",
               headers={"Authorization": "Bearer good", "X-Private": "p",
                        "X-User-Id": "spoofed"})
    assert ok.status == 200
    seen = echoed_headers(ok)
    assert (seen["x-user-id"], seen["x-user-role"]) == ("42", "admin")
    assert "x-not-copied" not in seen
    asked = {k.lower(): v for k, v in server.requests()[-1]["headers"]}
    assert server.requests()[-1]["path"] == "/verify"
    assert asked["authorization"] == "Bearer good" and "x-private" not in asked
    assert (asked["x-forwarded-method"], asked["x-forwarded-uri"]) == \
        ("GET", "/app/dashboard?x=1")
    assert asked["x-forwarded-for"] == "127.0.0.1"

    denied = fetch(port, "GET", "/app/dashboard")
    assert (denied.status, denied.body) == (401, b"denied by auth")
    assert denied.header("www-authenticate") == 'Bearer realm="auth"'
    redirect = fetch(port, "GET", "/app/dashboard", headers={"Cookie": "session=expired"})
    assert (redirect.status, redirect.header("location")) == (302, "/login")

    slow = fetch(port, "GET", "/slow/x")
    assert (slow.status, slow.body) == (502, b"Forward auth request failed")
    assert slow.elapsed < 4.0  # the 300 ms timeout, not the auth server's 5 s
    gone = fetch(port, "GET", "/gone/x")
    assert gone.status == 502
    assert [r["target"] for r in backend.requests()] == ["/app/dashboard?x=1"]


# --- combined_auth and csrf -----------------------------------------------------------

def test_combined_auth(backends, pingap, port: int, fetch: Callable[..., Answer]) -> None:
    backend = backends()
    serve(pingap, port, backend.addr, {"api": ("/", ["appAuth"])}, """
[plugins.appAuth]
category = "combined_auth"
[[plugins.appAuth.authorizations]]
app_id = "pingap"
secret = "123123"
deviation = 60
ip_list = ["127.0.0.1", "192.168.1.0/24"]
[[plugins.appAuth.authorizations]]
app_id = "remote"
secret = "456"
deviation = 60
ip_list = ["10.0.0.0/8"]
""")

    def signed(app: str, secret: str, ts: int) -> str:
        digest = hashlib.sha256(f"{secret}:{ts}".encode()).hexdigest()
        return f"/api/orders?app_id={app}&ts={ts}&digest={digest}"

    now = int(time.time())
    assert fetch(port, "GET", signed("pingap", "123123", now)).status == 200
    stale = fetch(port, "GET", signed("pingap", "123123", now - 120))
    assert stale.status == 401
    assert stale.body == b"Plugin combined_auth invalid, message: timestamp deviation is invalid"
    assert stale.header("cache-control") == "private, no-store"
    assert fetch(port, "GET", signed("pingap", "guess", now)).status == 401
    other_ip = fetch(port, "GET", signed("remote", "456", now))
    assert other_ip.body == b"Plugin combined_auth invalid, message: ip is invalid"
    assert len(backend.requests()) == 1


def test_csrf(backends, pingap, port: int, fetch: Callable[..., Answer]) -> None:
    backend = backends()
    serve(pingap, port, backend.addr, {"app": ("/", ["csrf"])}, """
[plugins.csrf]
category = "csrf"
token_path = "/csrf-token"
key = "WjrXUG47wu"
ttl = "1h"
""")
    issued = fetch(port, "GET", "/csrf-token")
    assert issued.status == 204 and issued.header("cache-control") == "private, no-store"
    cookie = issued.header("set-cookie") or ""
    match = re.fullmatch(r"x-csrf-token=([^;]+); Path=/; Max-Age=3600", cookie)
    assert match, cookie
    token = match.group(1)

    def post(header: str | None, cookie_value: str) -> Answer:
        headers = {"Cookie": f"x-csrf-token={cookie_value}"}
        if header is not None:
            headers["X-CSRF-Token"] = header
        return fetch(port, "POST", "/api/orders", headers=headers, body=b"{}")

    assert fetch(port, "GET", "/api/orders").status == 200  # safe method
    assert post(token, token).status == 200
    missing = post(None, token)
    assert (missing.status, missing.body) == (401, b"Csrf token is empty or invalid")
    forged = csrf_token("guessed-key", time.time())
    assert post(forged, forged).status == 401
    expired = csrf_token("WjrXUG47wu", time.time() - 7200)
    assert post(expired, expired).status == 401
    other = csrf_token("WjrXUG47wu", time.time())
    assert post(token, other).status == 401  # header and cookie must match
    assert [r["method"] for r in backend.requests()] == ["GET", "POST"]


# --- pingap's own configs -------------------------------------------------------------

def pingap_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pingap", "-t", "-c", str(conf)], capture_output=True, text=True,
                          timeout=60)


def test_elided_doc_key_is_reported(tmp_path: Path) -> None:
    """jwt's third doc block elides its PEM ("…"): ``-t`` names the plugin and key
    (test_plugin_docs checks the block with a real key in its place)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "block.toml").write_text((DATA / "plugin_docs" / "jwt-3.toml").read_text())
    result = pingap_test(conf)
    assert result.returncode == 1
    assert "plugins.jwtAuth.public_key: invalid public_key" in result.stderr


def test_api_gateway_example(tmp_path: Path, backends, pingap, port: int) -> None:
    """pingap's examples/api-gateway, with only its ports changed: the basic-auth and
    key-auth locations answer 401 without credentials and proxy with them."""
    charts, charts2, orders, common = (backends(n) for n in ("charts", "charts2", "orders",
                                                             "common"))
    ports = {"127.0.0.1:5000": charts.addr, "127.0.0.1:5001": charts2.addr,
             "127.0.0.1:6000": orders.addr, "127.0.0.1:8080": common.addr,
             "127.0.0.1:6118": f"127.0.0.1:{port}"}
    conf = tmp_path / "api-gateway"
    conf.mkdir()
    for source in (DATA / "api-gateway").glob("*.toml"):
        text = source.read_text()
        for old, new in ports.items():
            text = text.replace(f'"{old}"', f'"{new}"')
        (conf / source.name).write_text(text)
    assert pingap_test(conf).returncode == 0
    proc = PingapProcess(conf, port, tmp_path)
    try:
        refused = h1_request(port, path="/api/charts/line")
        assert refused.status == 401 and refused.header("www-authenticate")
        ok = h1_request(port, path="/api/charts/line", headers=basic("pingap:123123"))
        assert ok.status == 200 and ok.json()["target"] == "/line"
        assert ok.json()["backend"] in ("charts", "charts2")
        assert h1_request(port, path="/api/orders/1").status == 401
        ok = h1_request(port, path="/api/orders/1?key=U8nCkeA9U4")
        assert ok.status == 200 and ok.json()["backend"] == "orders"
        assert ok.json()["target"] == "/1"  # the key is hidden from the upstream
        assert h1_request(port, path="/index.html").json()["backend"] == "common"
    finally:
        proc.stop()


def test_plugin_http_client(tmp_path: Path, auth_server) -> None:
    """The worker's plugin HTTP client under gevent: concurrent JWKS downloads share one
    request, a slow answer ends at the deadline, a redirect is not followed, a refused
    connection raises."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    server = auth_server(jwks)
    result = subprocess.run([sys.executable, "-m", "tests.support.plugin_io_scenario",
                             server.url], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["shared_statuses"] == [200] * 5
    assert [r["path"] for r in server.requests()].count("/jwks") == 1
    assert out["slow"] == "TimeoutError" and out["slow_elapsed"] < 2.0
    assert out["redirect"] == [302, "/login"]
    assert out["refused"] == "ConnectionRefusedError"
