"""DNS discovery: which upstreams it covers (pingap's guess), pingap's
service_discover_fail messages, and the master's check sending each failure once."""

from __future__ import annotations

import socket

from master.discovery import DiscoveryWatch
from pingap.config import load_config_text
from pingap.discovery import DnsDiscovery, discover_fail_message, dns_discoveries

CONFIG = """
[upstreams.ips]
addrs = ["127.0.0.1:80", "[::1]:81"]
[upstreams.names]
addrs = ["a.test:8080", "b.test 2", "127.0.0.1:1"]
update_frequency = "5s"
[upstreams.tls]
addrs = ["c.test"]
sni = "c.test"
discovery = "dns"
[upstreams.fixed]
addrs = ["d.test:80"]
discovery = "static"
[locations.all]
upstream = "ips"
[servers.s]
addr = "127.0.0.1:1"
locations = ["all"]
"""


def test_dns_discovery_follows_pingaps_guess() -> None:
    found = dns_discoveries(load_config_text(CONFIG))
    assert found == [
        DnsDiscovery(upstream="names", hosts=(("a.test", 8080), ("b.test", 80),
                                              ("127.0.0.1", 1)), every=5.0),
        DnsDiscovery(upstream="tls", hosts=(("c.test", 443),), every=60.0)]


def test_messages_for_some_or_all_names_failing() -> None:
    names = DnsDiscovery(upstream="u", hosts=(("a.test", 80), ("b.test", 80)), every=1)
    assert discover_fail_message(names, [], "") is None
    assert discover_fail_message(names, ["b.test"], "no such name") == \
        'dns discovery resolve failed: ["b.test"] (upstream u)'
    assert discover_fail_message(names, ["a.test", "b.test"], "no such name") == \
        'dns discovery ["a.test:80", "b.test:80"], error: no such name (upstream u)'


def test_a_lasting_failure_is_sent_once_and_again_after_a_recovery() -> None:
    sent: list[tuple[str, str, str, str]] = []
    broken = {"b.test"}

    def resolve(host: str, port: int) -> object:
        if host in broken:
            raise socket.gaierror(-2, "Name or service not known")
        return [("ok",)]

    watch = DiscoveryWatch(lambda *event: sent.append(event), resolve)
    names = DnsDiscovery(upstream="u", hosts=(("a.test", 80), ("b.test", 80)), every=1)
    for _ in range(3):
        watch.check(names)
    assert sent == [("service_discover_fail", "warn", "",
                     'dns discovery resolve failed: ["b.test"] (upstream u)')]
    broken.add("a.test")  # a different failure is news
    watch.check(names)
    broken.clear()
    watch.check(names)
    broken.add("b.test")  # failing again after resolving
    watch.check(names)
    assert [event[3] for event in sent] == [
        'dns discovery resolve failed: ["b.test"] (upstream u)',
        'dns discovery ["a.test:80", "b.test:80"], error: [Errno -2] Name or service not '
        'known (upstream u)',
        'dns discovery resolve failed: ["b.test"] (upstream u)']
