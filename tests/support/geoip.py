"""A tiny MaxMind-format country database for the geo_restriction tests, written at test
time with ``mmdb-writer`` (the real ``maxminddb`` reader opens it)."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

#: network -> ISO country code in the test database
NETWORKS = {
    "10.1.0.0/16": "CN",
    "10.2.0.0/16": "US",
    "127.0.0.0/8": "HK",
    "2001:db8::/32": "DE",
}


def write_country_db(path: Path) -> Path:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country")
    for network, code in NETWORKS.items():
        writer.insert_network(IPSet([network]), {"country": {"iso_code": code}})
    writer.to_db_file(str(path))
    return path
