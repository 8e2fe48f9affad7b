"""ip/ua/referer/geo restrictions through the real pingap, HTTP/1.1 and HTTP/2 (h2c)
clients alike, including the spoofing attacks (forged X-Forwarded-For, IPv4-mapped IPv6)."""

from __future__ import annotations

from pathlib import Path

from tests.support.configs import proxy_config
from tests.support.geoip import write_country_db
from tests.support.h2c import both
from tests.support.proc import free_port


def plugins_config(port: int, backend: str, plugins: str, names: list[str], *,
                   basic: str = "") -> str:
    return proxy_config(port, backend, basic=basic, server="enabled_h2 = true",
                        location=f"plugins = {names!r}".replace("'", '"')) + plugins


def assert_both(port: int, status: int, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> None:
    for answer in both(port, "GET", "/", headers):
        assert answer.status == status
        if body is not None:
            assert answer.body == body


def test_ip_restriction_trusted_proxies_and_spoofing(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(plugins_config(port, backend.addr, """
[plugins.internal]
category = "ip_restriction"
type = "allow"
ip_list = ["10.0.0.0/8", "2001:db8::/32"]
message = "internal only"
""", ["internal"], basic='trusted_proxies = ["127.0.0.1"]'), port=port)
    # the loopback peer is the trusted proxy: its X-Forwarded-For names the client
    assert_both(port, 200, {"X-Forwarded-For": "10.1.2.3"})
    assert_both(port, 200, {"X-Forwarded-For": "2001:db8::7"})
    assert_both(port, 200, {"X-Forwarded-For": "::ffff:10.0.0.9"})
    assert_both(port, 403, {"X-Forwarded-For": "192.0.2.1"}, b"internal only")
    # a client writes an allowed address in front; the proxy appended the real one
    assert_both(port, 403, {"X-Forwarded-For": "10.0.0.1, 192.0.2.1"})
    assert_both(port, 403, {}, b"internal only")  # the proxy itself is not internal
    seen = [r for r in backend.requests() if r["target"] == "/"]
    assert len(seen) == 6


def test_ip_restriction_forwarded_for_from_untrusted_peer_is_ignored(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(plugins_config(port, backend.addr, """
[plugins.block]
category = "ip_restriction"
type = "deny"
ip_list = ["127.0.0.0/8"]
""", ["block"], basic='trusted_proxies = ["10.9.9.9"]'), port=port)
    # the peer (127.0.0.1) is not a trusted proxy: forged headers do not hide it
    assert_both(port, 403, {"X-Forwarded-For": "198.51.100.1"}, b"Request is forbidden")
    assert_both(port, 403, {"X-Real-IP": "198.51.100.1"})
    assert backend.requests() == []


def test_ip_restriction_ipv4_mapped_client_cannot_evade_a_deny(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(plugins_config(port, backend.addr, """
[plugins.block]
category = "ip_restriction"
type = "deny"
ip_list = ["192.0.2.0/24"]
""", ["block"]), port=port)
    assert_both(port, 403, {"X-Forwarded-For": "::ffff:192.0.2.10"})
    assert_both(port, 403, {"X-Forwarded-For": "::FFFF:c000:20a"})
    assert_both(port, 200, {"X-Forwarded-For": "::ffff:198.51.100.1"})


def test_ua_and_referer_restrictions(backends, pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(plugins_config(port, backend.addr, r"""
[plugins.noBots]
category = "ua_restriction"
type = "deny"
ua_list = ["go-http-client/1.1", "(Twitterspider)/(\\d+)\\.(\\d+)"]
message = "no bots"

[plugins.hotlink]
category = "referer_restriction"
type = "allow"
referer_list = ["*.example.com", "github.com"]
""", ["noBots", "hotlink"]), port=port)
    ok = {"Referer": "https://www.example.com/page", "User-Agent": "Mozilla/5.0"}
    assert_both(port, 200, ok)
    assert_both(port, 403, {**ok, "User-Agent": "Twitterspider/1.0"}, b"no bots")
    assert_both(port, 403, {"Referer": "https://example.com/", "User-Agent": "x"})
    assert_both(port, 403, {"User-Agent": "x"})
    assert_both(port, 200, {"Referer": "https://github.com/x", "User-Agent": "x"})


def test_geo_restriction_with_a_real_mmdb(tmp_path: Path, backends, pingap,
                                          monkeypatch) -> None:
    db = write_country_db(tmp_path / "country.mmdb")
    monkeypatch.setenv("PINGAP_GEOIP_DB", str(db))  # the pingap child inherits it
    backend = backends()
    port = free_port()
    pingap(plugins_config(port, backend.addr, """
[plugins.geoDeny]
category = "geo_restriction"
type = "deny"
country_codes = ["US, DE"]
message = "Service unavailable in your region"
""", ["geoDeny"]), port=port)
    assert_both(port, 200, {"X-Forwarded-For": "10.1.0.1"})                 # CN
    assert_both(port, 403, {"X-Forwarded-For": "10.2.0.1"},
                b"Service unavailable in your region")                        # US
    assert_both(port, 403, {"X-Forwarded-For": "2001:db8::1"})              # DE
    assert_both(port, 200, {"X-Forwarded-For": "192.0.2.1"})                # unknown
