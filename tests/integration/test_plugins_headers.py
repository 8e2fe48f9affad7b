"""request_id, response_headers, cors and accept_encoding through the real pingap, with
HTTP/1.1 and HTTP/2 (h2c) clients getting the same result."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.integration.test_plugins_access import plugins_config
from tests.support.h2c import both
from tests.support.proc import free_port, wait_for

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def backend_headers(answer_body: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(answer_body)["headers"]}


def test_request_id_reaches_upstream_response_and_access_log(tmp_path: Path, backends,
                                                             pingap) -> None:
    backend = backends()
    port = free_port()
    log_file = tmp_path / "access.log"
    config = plugins_config(port, backend.addr, """
[plugins.rid]
category = "request_id"
""", ["rid"]).replace('enabled_h2 = true',
                      f'enabled_h2 = true\naccess_log = "{log_file} {{uri}} {{request_id}}"')
    pingap(config, port=port)
    ids = []
    for answer in both(port, "GET", "/rid"):
        assert answer.status == 200
        sent = backend_headers(answer.body)["x-request-id"]
        assert UUID7.match(sent)
        assert answer.header("x-request-id") == sent
        ids.append(sent)
    assert ids[0] != ids[1]
    for answer in both(port, "GET", "/kept", {"X-Request-Id": "client-id-1"}):
        assert backend_headers(answer.body)["x-request-id"] == "client-id-1"
        assert answer.header("x-request-id") == "client-id-1"
    lines = wait_for(lambda: log_file.exists() and len(log_file.read_text().splitlines()) == 4
                     and log_file.read_text().splitlines(), what="four access-log lines")
    assert sorted(lines) == sorted([f"/rid {ids[0]}", f"/rid {ids[1]}",
                                    "/kept client-id-1", "/kept client-id-1"])


def test_response_headers(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(plugins_config(port, backend.addr, """
[plugins.resp]
category = "response_headers"
set_headers = ["X-Frame-Options: DENY", "X-Client: $client_ip"]
set_headers_not_exists = ["Cache-Control: no-cache", "Content-Type: text/plain"]
add_headers = ["X-Served-By: pingap"]
remove_headers = ["X-Hop"]
rename_headers = ["X-Backend: X-Origin-Name"]
""", ["resp"]), port=port)
    for answer in both(port):
        assert answer.status == 200
        assert answer.header("x-frame-options") == "DENY"
        assert answer.header("x-client") == "127.0.0.1"
        assert answer.header("cache-control") == "no-cache"
        assert answer.header("content-type") == "application/json"  # it existed
        assert answer.header("x-served-by") == "pingap"
        assert answer.header("x-hop") is None
        assert answer.header("x-backend") is None
        assert answer.header("x-origin-name") == "backend"


CORS = """
[plugins.cors]
category = "cors"
path = "^/api/"
allow_origin = "https://app.example.com"
allow_methods = "GET, POST, PUT, DELETE, OPTIONS"
allow_headers = "Content-Type, Authorization"
expose_headers = "X-Request-Id"
allow_credentials = true
max_age = "1h"
"""


def test_cors_preflight_actual_and_non_listed_origin(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(plugins_config(port, backend.addr, CORS, ["cors"]), port=port)
    app = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    for answer in both(port, "OPTIONS", "/api/users", app):
        assert answer.status == 204 and answer.body == b""
        assert answer.header("access-control-allow-origin") == "https://app.example.com"
        assert answer.header("access-control-allow-methods") == "GET, POST, PUT, DELETE, OPTIONS"
        assert answer.header("access-control-allow-credentials") == "true"
        assert answer.header("access-control-max-age") == "3600"
        assert answer.header("vary") == "Origin"
    assert backend.requests() == []  # preflights never reach the upstream
    for answer in both(port, "GET", "/api/users", {"Origin": "https://app.example.com"}):
        assert answer.status == 200
        assert answer.header("access-control-allow-origin") == "https://app.example.com"
        assert answer.header("access-control-expose-headers") == "X-Request-Id"
    evil = {"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}
    for answer in both(port, "OPTIONS", "/api/users", evil):
        assert answer.status == 403
        assert answer.header("access-control-allow-origin") is None
    for answer in both(port, "GET", "/api/users", {"Origin": "https://evil.example.net"}):
        assert answer.status == 200
        assert not [h for h in answer.headers if h.startswith("access-control-")]
    # outside `path` an OPTIONS goes to the upstream
    before = len(backend.requests())
    for answer in both(port, "OPTIONS", "/other", app):
        assert answer.status == 200
    assert len(backend.requests()) == before + 2


def test_accept_encoding_rewrites_what_the_upstream_sees(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(plugins_config(port, backend.addr, "", ["pingap:acceptEncodingAdjustment"]),
           port=port)
    for sent, forwarded in (("gzip, deflate, br", "br"), ("br;q=0, gzip", "gzip"),
                            ("deflate", None)):
        for answer in both(port, "GET", "/", {"Accept-Encoding": sent}):
            assert backend_headers(answer.body).get("accept-encoding") == forwarded
