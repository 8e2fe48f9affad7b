"""pingap's webhook payloads: wecom and dingtalk markdown, the generic JSON form, the
diff_config message, and which certificates tls_validity names."""

from __future__ import annotations

import datetime
from pathlib import Path

from pingap.config.model import (
    BasicConfig,
    CertificateConfig,
    LocationConfig,
    PingapConfig,
    UpstreamConfig,
)
from pingap.errors import Problem
from pingap.tls import invalid_soon
from pingap.webhook import (
    CATEGORIES,
    Notification,
    certificate_parse_failures,
    config_diff,
    payload,
)
from tests.support.h2_backend import make_certificates

NOTE = Notification(category="backend_status", level="error",
                    title="Upstream backend status changed",
                    message="upstream u(127.0.0.1:1) becomes unhealthy")


def test_generic_form_has_pingaps_fields() -> None:
    assert payload("", NOTE, "host1", "10.0.0.1") == {
        "name": "pingap", "level": "error", "hostname": "host1", "ip": "10.0.0.1",
        "category": "backend_status", "message": NOTE.message}


def test_wecom_and_dingtalk_are_markdown() -> None:
    wecom = payload("WeCom", NOTE, "host1", "10.0.0.1")
    assert wecom["msgtype"] == "markdown"
    content = wecom["markdown"]["content"]
    assert '<font color="warning">pingap(error)</font>' in content
    assert ">hostname: host1" in content and f">message: {NOTE.message}" in content
    ding = payload("dingtalk", NOTE, "host1", "10.0.0.1")
    assert ding["markdown"]["title"] == "backend_status"
    assert ding["markdown"]["text"] == content


def test_categories_are_pingaps() -> None:
    assert {"backend_status", "reload_config", "reload_config_fail", "lets_encrypt",
            "service_discover_fail"} <= set(CATEGORIES)


def test_config_diff_names_added_removed_and_changed_keys_hiding_secrets() -> None:
    old = PingapConfig(
        basic=BasicConfig(),
        upstreams={"u": UpstreamConfig(name="u", addrs=("127.0.0.1:1",))},
        locations={"gone": LocationConfig(name="gone", upstream="u")},
        certificates={"c": CertificateConfig(name="c", tls_key="SECRETKEY1")})
    new = PingapConfig(
        basic=BasicConfig(),
        upstreams={"u": UpstreamConfig(name="u", addrs=("127.0.0.1:2",))},
        locations={"new": LocationConfig(name="new", upstream="u")},
        certificates={"c": CertificateConfig(name="c", tls_key="SECRETKEY22")})
    lines = config_diff(old, new)
    assert lines == [
        "++ [ADDED] location:new", "-- [REMOVED] location:gone",
        "[MODIFIED] upstream:u", "- addrs = ('127.0.0.1:1',)", "+ addrs = ('127.0.0.1:2',)",
        "[MODIFIED] certificate:c", "- tls_key = '<hidden, 10 chars>'",
        "+ tls_key = '<hidden, 11 chars>'"]
    assert not any("SECRET" in line for line in lines)
    assert config_diff(new, new) == []


def test_invalid_soon_uses_buffer_days_default_seven_and_skips_acme(tmp_path: Path) -> None:
    pem = make_certificates(tmp_path)["cert"].read_text()  # valid from yesterday for 30 days

    def config(**certs: CertificateConfig) -> PingapConfig:
        return PingapConfig(certificates=certs)

    now = datetime.datetime.now(datetime.UTC)
    fine = CertificateConfig(name="fine", tls_cert=pem)
    close = CertificateConfig(name="close", tls_cert=pem, buffer_days=40)
    acme = CertificateConfig(name="acme", tls_cert=pem, buffer_days=40, acme="lets_encrypt")
    assert invalid_soon(config(fine=fine, close=close, acme=acme), now) == ["close"]
    assert invalid_soon(config(fine=fine), now + datetime.timedelta(days=22)) == []
    assert invalid_soon(config(fine=fine), now + datetime.timedelta(days=24)) == ["fine"]
    assert invalid_soon(config(fine=fine), now - datetime.timedelta(days=2)) == ["fine"]


def test_parse_certificate_fail_names_each_unreadable_certificate() -> None:
    problems = [Problem("a.toml", "certificates.site.tls_cert", "no PEM data"),
                Problem("a.toml", "upstreams.u.addrs", "bad"),
                Problem("a.toml", "certificates.api.tls_key", "the key does not belong to "
                        "the certificate"),
                Problem("a.toml", "certificates.x.acme", "unknown ACME provider")]
    assert certificate_parse_failures(problems) == (
        "tls_cert: no PEM data(site);tls_key: the key does not belong to the "
        "certificate(api)")
    assert certificate_parse_failures(problems[1:2]) == ""
