"""ip/ua/referer/geo restriction decisions, driven through the session, and their `-t`
reports (plugin name and key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pingap.actions import Forward, Respond
from pingap.config import load_config_text
from pingap.context import ConnectionInfo
from pingap.errors import ConfigError
from pingap.events import RequestReceived
from pingap.runtime import Runtime, build_runtime
from pingap.session import ProxySession
from tests.support.geoip import write_country_db


def runtime_of(plugin: str, basic: str = "") -> Runtime:
    return build_runtime(load_config_text(
        f"[basic]\n{basic}\n"
        '[servers.web]\naddr = "127.0.0.1:8080"\nlocations = ["lo"]\n'
        '[locations.lo]\nupstream = "up"\nplugins = ["guard"]\n'
        f"[plugins.guard]\n{plugin}\n"
        '[upstreams.up]\naddrs = ["127.0.0.1:9000"]\n'))


def route(rt: Runtime, *, peer: str = "10.0.0.1",
          headers: list[tuple[bytes, bytes]] | None = None) -> Respond | Forward:
    req = RequestReceived(method=b"GET", target=b"/", headers=[(b"Host", b"h"), *(headers or [])],
                          http_version=b"1.1", keep_alive=True, expect_continue=False,
                          content_length=None, chunked=False, host=b"h", path=b"/", query=b"")
    conn = ConnectionInfo(connection_id=1, remote_addr=peer, remote_port=1, server_addr="127.0.0.1",
                          server_port=8080, accepted_at=0.0)
    return ProxySession(rt, rt.servers["web"], conn, req, now=1.0, wall=1.0).route()


def status(answer: Respond | Forward) -> int:
    return answer.status if isinstance(answer, Respond) else 0


def problems_of(plugin: str, basic: str = "") -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        runtime_of(plugin, basic)
    return {p.key: p.message for p in caught.value.problems}


# --- ip_restriction ----------------------------------------------------------------------

IP_ALLOW = 'category = "ip_restriction"\ntype = "allow"\n' \
           'ip_list = ["192.168.1.1", "10.0.0.0/24", "2001:db8::/32"]\n'


@pytest.mark.parametrize(("peer", "expected"), [
    ("192.168.1.1", 0), ("10.0.0.200", 0), ("2001:db8::9", 0),
    ("::ffff:10.0.0.7", 0),            # IPv4-mapped IPv6 is the IPv4 address
    ("192.168.1.2", 403), ("10.0.1.1", 403), ("2001:db9::1", 403),
    ("::ffff:192.168.1.2", 403),
])
def test_ip_allow_list(peer: str, expected: int) -> None:
    assert status(route(runtime_of(IP_ALLOW), peer=peer)) == expected


def test_ip_deny_list_and_message() -> None:
    rt = runtime_of('category = "ip_restriction"\ntype = "deny"\nip_list = ["10.0.0.0/8"]\n'
                    'message = "no internal"\n')
    answer = route(rt, peer="::ffff:10.9.9.9")
    assert isinstance(answer, Respond) and (answer.status, answer.body) == (403, b"no internal")
    assert isinstance(route(rt, peer="8.8.8.8"), Forward)


def test_ip_default_message_and_type() -> None:
    rt = runtime_of('category = "ip_restriction"\nip_list = ["1.2.3.4"]\n')  # type: allow
    answer = route(rt, peer="8.8.8.8")
    assert isinstance(answer, Respond) and answer.body == b"Request is forbidden"


def test_ip_mapped_network_in_the_list_covers_ipv4_clients() -> None:
    rt = runtime_of('category = "ip_restriction"\nip_list = ["::ffff:10.0.0.0/104"]\n')
    assert isinstance(route(rt, peer="10.3.4.5"), Forward)
    assert status(route(rt, peer="11.0.0.1")) == 403


def test_ip_spoofed_forwarded_for_from_untrusted_peer_is_ignored() -> None:
    basic = 'trusted_proxies = ["127.0.0.1"]'
    rt = runtime_of('category = "ip_restriction"\nip_list = ["10.0.0.0/8"]\n', basic)
    spoof = [(b"X-Forwarded-For", b"10.0.0.5"), (b"X-Real-IP", b"10.0.0.5")]
    assert status(route(rt, peer="203.0.113.9", headers=spoof)) == 403
    # from the trusted proxy, the forwarded client counts
    assert isinstance(route(rt, peer="127.0.0.1", headers=spoof), Forward)
    # the client prepends an allowed address; the proxy appends the real one: real wins
    chain = [(b"X-Forwarded-For", b"10.0.0.5, 203.0.113.9")]
    assert status(route(rt, peer="127.0.0.1", headers=chain)) == 403
    # an IPv4-mapped trusted peer is the trusted proxy
    assert isinstance(route(rt, peer="::ffff:127.0.0.1", headers=spoof), Forward)


def test_ip_unparseable_client_ip_is_a_bad_request() -> None:
    rt = runtime_of(IP_ALLOW)
    answer = route(rt, headers=[(b"X-Forwarded-For", b"not-an-ip")])
    assert status(answer) == 400


def test_ip_bad_entries_reported_with_key() -> None:
    problems = problems_of('category = "ip_restriction"\n'
                           'ip_list = ["10.0.0.0/33", "1.2.3.4", "bogus"]\n')
    assert set(problems) >= {"plugins.guard.ip_list[0]", "plugins.guard.ip_list[2]"}
    assert "bogus" in problems["plugins.guard.ip_list[2]"]


# --- ua_restriction ----------------------------------------------------------------------

UA = 'category = "ua_restriction"\ntype = "deny"\n' \
     'ua_list = ["go-http-client/1.1", "(Twitterspider)/(\\\\d+)\\\\.(\\\\d+)"]\n'


@pytest.mark.parametrize(("ua", "expected"), [
    (b"go-http-client/1.1", 403), (b"x Twitterspider/2.1 y", 403),
    (b"Mozilla/5.0", 0), (None, 0),
])
def test_ua_deny(ua: bytes | None, expected: int) -> None:
    headers = [(b"User-Agent", ua)] if ua is not None else []
    assert status(route(runtime_of(UA), headers=headers)) == expected


def test_ua_allow_refuses_missing_agent() -> None:
    rt = runtime_of('category = "ua_restriction"\ntype = "allow"\nua_list = ["^curl/"]\n')
    assert isinstance(route(rt, headers=[(b"User-Agent", b"curl/8.0")]), Forward)
    assert status(route(rt)) == 403


def test_ua_bad_regex_reported_with_key() -> None:
    problems = problems_of('category = "ua_restriction"\nua_list = ["ok", "(unclosed"]\n')
    assert "plugins.guard.ua_list[1]" in problems
    assert "regex" in problems["plugins.guard.ua_list[1]"]


def test_restriction_bad_type_reported() -> None:
    problems = problems_of('category = "referer_restriction"\ntype = "maybe"\n')
    assert "plugins.guard.type" in problems


# --- referer_restriction -----------------------------------------------------------------

REFERER = 'category = "referer_restriction"\ntype = "allow"\n' \
          'referer_list = ["github.com", "*.example.com"]\n'


@pytest.mark.parametrize(("referer", "expected"), [
    (b"https://github.com/vicanso/pingap", 0), (b"https://a.b.example.com/x", 0),
    (b"https://example.com/", 403),       # "*.example.com" is subdomains only, as pingap
    (b"https://github.com.evil.test/", 403), (b"https://evilexample.com/", 403),
    (b"not a url", 403), (None, 403),
])
def test_referer_allow(referer: bytes | None, expected: int) -> None:
    headers = [(b"Referer", referer)] if referer is not None else []
    assert status(route(runtime_of(REFERER), headers=headers)) == expected


# --- geo_restriction ---------------------------------------------------------------------


@pytest.fixture
def geo_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_country_db(tmp_path / "country.mmdb")
    monkeypatch.setenv("PINGAP_GEOIP_DB", str(path))
    return path


@pytest.mark.parametrize(("kind", "peer", "expected"), [
    ("allow", "10.1.2.3", 0), ("allow", "10.2.0.1", 403), ("allow", "8.8.8.8", 403),
    ("allow", "2001:db8::1", 0), ("deny", "10.1.2.3", 403), ("deny", "10.2.0.1", 0),
    ("deny", "8.8.8.8", 0), ("deny", "::ffff:10.1.0.1", 403), ("reporting", "10.1.2.3", 0),
])
def test_geo(geo_db: Path, kind: str, peer: str, expected: int) -> None:
    rt = runtime_of(f'category = "geo_restriction"\ntype = "{kind}"\n'
                    'country_codes = ["cn", "DE"]\n')
    answer = route(rt, peer=peer)
    assert status(answer) == expected
    if expected:
        assert isinstance(answer, Respond)
        assert answer.body == b"Access from your country is not allowed"


def test_geo_codes_in_one_string_and_bad_codes(geo_db: Path) -> None:
    rt = runtime_of('category = "geo_restriction"\ntype = "deny"\ncountry_codes = ["US, HK"]\n')
    assert status(route(rt, peer="10.2.3.4")) == 403
    problems = problems_of('category = "geo_restriction"\ntype = "deny"\n'
                           'country_codes = ["USA", "C1"]\n')
    assert set(problems) == {"plugins.guard.country_codes[0]", "plugins.guard.country_codes[1]"}


def test_geo_without_database_is_a_config_error(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("PINGAP_GEOIP_DB", str(tmp_path / "missing.mmdb"))
    problems = problems_of('category = "geo_restriction"\ntype = "allow"\n'
                           'country_codes = ["CN"]\n')
    assert "GeoIP database" in problems["plugins.guard.type"]


def test_geo_type_is_required(geo_db: Path) -> None:
    problems = problems_of('category = "geo_restriction"\ncountry_codes = ["CN"]\n')
    assert "plugins.guard.type" in problems


def test_geo_lookup_failure_fails_closed(geo_db: Path) -> None:
    data = bytearray(geo_db.read_bytes())
    data[:200] = b"\xff" * 200  # the search tree is damaged; the metadata still opens
    geo_db.write_bytes(bytes(data))
    rt = runtime_of('category = "geo_restriction"\ntype = "deny"\ncountry_codes = ["US"]\n')
    assert status(route(rt, peer="10.1.2.3")) == 403
