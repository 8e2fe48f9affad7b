"""The admin's pure side: pingap's login token, lock-out, routes, masking, --admin."""

from __future__ import annotations

import base64
import json
import tomllib

import pytest

from master.admin import admin_document
from pingap.actions import Respond
from pingap.admin.api import MASK, AdminRequest, MasterCall, entry_digest, mask, route, unmask
from pingap.admin.auth import AdminAuth, make_token
from pingap.state import SIZE as STATE_SIZE
from pingap.state import SharedState, ShmCounters

CONFIG = {"basic": {"threads": 1}, "upstreams": {"u": {"addrs": ["127.0.0.1:1"]}},
          "certificates": {"c": {"tls_cert": "x", "tls_key": "KEY"}}}


def test_token_is_pingaps_and_expires_after_max_age() -> None:
    auth = AdminAuth([base64.b64encode(b"admin:pw").decode()], max_age=60, ip_fail_limit=3)
    assert auth.valid(make_token("admin", "pw", 1000), now=1030)
    assert not auth.valid(make_token("admin", "pw", 1000), now=1061)
    assert not auth.valid(make_token("admin", "other", 1000), now=1000)
    assert not auth.valid("garbage", now=1000) and not auth.valid("", now=1000)
    assert AdminAuth(["admin:pw"], 60, 3).valid(make_token("admin", "pw", 5), now=5)


def test_lockout_after_ip_fail_limit_within_the_window() -> None:
    clock = [100.0]
    shared = SharedState(bytearray(STATE_SIZE))
    shared.initialise()
    # two workers' plugins over one shared region: failures count for the host
    workers = []
    for owner in (0, 1):
        auth = AdminAuth(["a:b"], 60, 3, "admin")
        auth.counters = ShmCounters(shared, owner, lambda: clock[0])
        workers.append(auth)
    for attempt in range(3):
        assert not workers[attempt % 2].locked("1.2.3.4")
        workers[attempt % 2].failed("1.2.3.4")
    clock[0] = 101.0
    assert all(w.locked("1.2.3.4") and not w.locked("5.6.7.8") for w in workers)
    other = AdminAuth(["a:b"], 60, 3, "another-admin")
    other.counters = ShmCounters(shared, 0, lambda: clock[0])
    assert not other.locked("1.2.3.4")  # each admin plugin keeps its own count
    clock[0] = 100.0 + 301
    assert not workers[0].locked("1.2.3.4")


def test_an_unbound_admin_refuses_to_guess() -> None:
    with pytest.raises(RuntimeError):
        AdminAuth(["a:b"], 60, 3).locked("1.2.3.4")


def _get(path: str) -> Respond:
    answer = route(AdminRequest(method="GET", path=path), CONFIG)
    assert isinstance(answer, Respond)
    return answer


def test_reads_mask_secrets_and_carry_an_etag() -> None:
    full = json.loads(_get("/api/configs").body)
    assert full["certificates"]["c"]["tls_key"] == MASK
    one = _get("/api/configs/upstream/u")
    assert json.loads(one.body) == {"addrs": ["127.0.0.1:1"]}
    assert (b"ETag", f'"{entry_digest(CONFIG["upstreams"]["u"])}"'.encode()) in one.headers
    assert _get("/api/configs/upstream/missing").status == 404
    assert _get("/api/configs/nonsense").status == 400


def test_writes_become_master_calls() -> None:
    call = route(AdminRequest(method="POST", path="/api/configs/upstream/u",
                              headers={"content-type": "application/json", "if-match": '"ab"'},
                              body=b'{"addrs": []}'), CONFIG)
    assert call == MasterCall(op="save", category="upstreams", name="u", values={"addrs": []},
                              expected="ab")
    deleted = route(AdminRequest(method="DELETE", path="/api/configs/location/x"), CONFIG)
    assert deleted == MasterCall(op="delete", category="locations", name="x")
    form = route(AdminRequest(method="POST", path="/api/configs/upstream/u",
                              headers={"content-type": "application/x-www-form-urlencoded"},
                              body=b"a=b"), CONFIG)
    assert isinstance(form, Respond) and form.status == 415
    history = route(AdminRequest(method="GET", path="/api/config-history/upstream/u"), CONFIG)
    assert history == MasterCall(op="history", category="upstreams", name="u")


def test_mask_round_trip_keeps_the_stored_secret() -> None:
    stored = {"tls_key": "KEY", "tls_cert": "x"}
    assert unmask(mask(stored), stored) == stored
    assert unmask({"tls_key": "NEW"}, stored) == {"tls_key": "NEW"}


def test_admin_flag_becomes_pingaps_admin_server() -> None:
    doc = tomllib.loads(admin_document("admin:pw@127.0.0.1:3018/pingap").data.decode())
    assert doc["servers"]["pingap:admin"] == {"addr": "127.0.0.1:3018",
                                              "locations": ["pingap:admin"]}
    plugin = doc["plugins"]["pingap:admin"]
    assert plugin["path"] == "/pingap" and plugin["category"] == "admin"
    assert plugin["authorizations"] == [base64.b64encode(b"admin:pw").decode()]


def test_schema_and_toml_views() -> None:
    schema = json.loads(_get("/api/schema").body)
    assert schema["upstreams"]["addrs"]["kind"] == "str_list"
    assert "admin" in schema["plugin_categories"]
    text = json.loads(_get("/api/configs/toml").body)["toml"]
    parsed = tomllib.loads(text)
    assert parsed["upstreams"]["u"]["addrs"] == ["127.0.0.1:1"]
    assert parsed["certificates"]["c"]["tls_key"] == MASK


def test_route_tester_explains_every_location() -> None:
    from pingap.admin.route_test import explain
    from pingap.config import load_config_text
    from pingap.runtime import build_runtime

    runtime = build_runtime(load_config_text("""
[upstreams.u]
addrs = ["127.0.0.1:1"]
[upstreams.v]
addrs = ["127.0.0.1:2"]
[locations.api]
upstream = "v"
path = "/api"
rewrite = "^/api/(.*)$ /$1"
match_headers = ["X-Env:beta"]
[locations.h]
upstream = "v"
host = "x.example"
[locations.all]
upstream = "u"
[servers.s]
addr = "127.0.0.1:1"
locations = ["api", "h", "all"]
"""))
    matcher = runtime.servers["s"].matcher
    hit = explain(matcher, "/api/users?a=1", {"X-Env": "beta"})
    assert (hit["location"], hit["path"], hit["upstream"]) == ("api", "/users", "v")
    assert [s["result"] for s in hit["steps"]][1:] == [
        "not tried: a location before it matched"] * 2
    miss = explain(matcher, "/api/users", {"Host": "y.example"})
    assert miss["location"] == "all" and miss["upstream"] == "u"
    results = {s["location"]: s["result"] for s in miss["steps"]}
    assert results["api"] == "conditions not met (needs header X-Env=beta)"
    assert results["h"] == "host 'y.example' does not match"
