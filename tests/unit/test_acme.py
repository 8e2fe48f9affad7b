"""ACME without a CA: the renewal rule, back-off, tokens, storage layout, config checks,
the certificate store's swap, and the renewer's decisions (with a local signer standing in
for the CA; the real CA is exercised in tests/integration/test_acme.py)."""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pingap.acme import (
    LETS_ENCRYPT_DIRECTORY,
    LETS_ENCRYPT_STAGING_DIRECTORY,
    MAX_CHECK_INTERVAL,
    MIN_CHECK_INTERVAL,
    Backoff,
    DnsService,
    IssuedCertificate,
    ca_directory_name,
    certificate_file,
    challenge_answer,
    challenge_token,
    describe_certificate,
    dns_record_name,
    is_valid_token,
    next_check_in,
    parse_dns_service,
    parse_domains,
    renewal_reason,
    renewal_time,
    split_bundle,
    token_file,
    zone_candidates,
)
from pingap.config import ConfigError, load_config_text
from pingap.runtime import CertificateStore, build_runtime
from pingap.tls import CertificateEntry
from workers.acme import AcmeStorage, CertificateRenewer

UTC = datetime.UTC
NOW = datetime.datetime(2030, 1, 1, tzinfo=UTC)


def cert(days: float, *, names: tuple[str, ...] = ("a.test",),
         now: datetime.datetime = NOW, age: float = 0.0) -> IssuedCertificate:
    """A certificate of ``days`` lifetime issued ``age`` days before ``now``."""
    start = now - datetime.timedelta(days=age)
    return IssuedCertificate(names=frozenset(names), not_before=start,
                             not_after=start + datetime.timedelta(days=days), serial=1)


def signed_bundle(names: tuple[str, ...], *, days: float = 90.0,
                  age: float = 0.0) -> bytes:
    """A stored-format bundle (key first, then the certificate), self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime.now(UTC) - datetime.timedelta(days=age)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    leaf = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
            + leaf.public_bytes(serialization.Encoding.PEM))


# --- names and tokens -------------------------------------------------------------------


def test_domains_are_lowercased_unique_and_sorted() -> None:
    assert parse_domains(" B.test, a.test,b.test ,, a.test.") == ("a.test", "b.test")
    assert parse_domains(None) == ()
    assert parse_domains(" , ") == ()


@pytest.mark.parametrize("token, valid", [
    ("abc_DEF-123", True), ("", False), ("a.b", False), ("..", False), ("a/b", False),
    ("a%2Fb", False), ("tok en", False)])
def test_token_rule(token: str, valid: bool) -> None:
    assert is_valid_token(token) is valid


def test_challenge_paths_and_answers() -> None:
    assert challenge_token("/.well-known/acme-challenge/abc") == "abc"
    assert challenge_token("/.well-known/acme-challenge/") == ""
    assert challenge_token("/.well-known/acme-challenge") is None
    assert challenge_token("/index.html") is None
    found = challenge_answer(b"abc.thumb")
    assert (found.status, found.body) == (200, b"abc.thumb")
    assert (b"Content-Type", b"text/plain") in found.headers
    assert (b"Content-Length", b"9") in found.headers
    assert challenge_answer(None).status == 404


def test_storage_paths() -> None:
    assert certificate_file("/s", "site") == "/s/certificates/site.pem"
    odd = certificate_file("/s", "../etc/passwd")
    assert odd.startswith("/s/certificates/___etc_passwd-") and odd.endswith(".pem")
    assert certificate_file("/s", "a/b") != certificate_file("/s", "a_b")
    assert certificate_file("/s", ".hidden") != "/s/certificates/.hidden.pem"
    assert token_file("/s", "tok") == "/s/http-01/tok"
    with pytest.raises(ValueError):
        token_file("/s", "../x")


def test_split_bundle_keeps_the_chain_order_and_wants_one_key() -> None:
    bundle = signed_bundle(("a.test",))
    chain, key = split_bundle(bundle + bundle.split(b"-----END PRIVATE KEY-----\n")[1])
    assert chain.count(b"BEGIN CERTIFICATE") == 2
    assert key.startswith(b"-----BEGIN PRIVATE KEY-----")
    with pytest.raises(ValueError, match="private key"):
        split_bundle(chain)
    with pytest.raises(ValueError, match="no certificate"):
        split_bundle(key)
    with pytest.raises(ValueError, match="exactly one"):
        split_bundle(bundle + key)


def test_describe_certificate() -> None:
    chain, _ = split_bundle(signed_bundle(("B.test", "a.test"), days=10))
    info = describe_certificate(chain)
    assert info.names == {"a.test", "b.test"}
    assert info.not_after - info.not_before == datetime.timedelta(days=10)


# --- renewal rule ------------------------------------------------------------------------


def test_renewal_point_is_the_earlier_of_buffer_days_and_a_third_of_the_lifetime() -> None:
    lets_encrypt = cert(90)
    assert lets_encrypt.not_after - renewal_time(lets_encrypt, None) == \
        datetime.timedelta(days=30)
    assert lets_encrypt.not_after - renewal_time(lets_encrypt, 40) == \
        datetime.timedelta(days=40)
    five_days = cert(5)
    assert five_days.not_after - renewal_time(five_days, 0) == datetime.timedelta(days=2)


def test_a_buffer_longer_than_half_the_lifetime_is_not_used() -> None:
    two_minutes = cert(120 / 86400)
    assert two_minutes.not_after - renewal_time(two_minutes, 2) == \
        datetime.timedelta(seconds=40)
    assert renewal_reason(two_minutes, ("a.test",), NOW, 2) is None


def test_renewal_reasons() -> None:
    domains = ("a.test", "b.test")
    assert renewal_reason(None, domains, NOW, None) == "no certificate is stored"
    other = cert(90, names=("a.test",))
    assert "not a.test, b.test" in (renewal_reason(other, domains, NOW, None) or "")
    fresh = cert(90, names=domains, age=59)
    assert renewal_reason(fresh, domains, NOW, None) is None
    due = cert(90, names=domains, age=60)
    assert "expires at 2030-01-31" in (renewal_reason(due, domains, NOW, None) or "")


def test_next_check_is_the_renewal_point_within_bounds() -> None:
    assert next_check_in(cert(90), NOW, None) == MAX_CHECK_INTERVAL
    short = cert(120 / 86400)
    assert next_check_in(short, NOW, None) == pytest.approx(80.0)
    assert next_check_in(cert(90, age=89), NOW, None) == MIN_CHECK_INTERVAL


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    backoff = Backoff(first=5.0, cap=3600.0)
    delays = [backoff.failed() for _ in range(12)]
    assert delays[:5] == [5.0, 10.0, 20.0, 40.0, 80.0]
    assert delays[-1] == 3600.0 and max(delays) == 3600.0
    backoff.reset()
    assert backoff.failed() == 5.0


# --- config --------------------------------------------------------------------------------


def acme_config(certificate: str, basic: str = "") -> str:
    return f"""
[basic]
{basic}
[certificates.c]
{certificate}
[upstreams.u]
addrs = ["127.0.0.1:9000"]
[locations.l]
upstream = "u"
[servers.s]
addr = "127.0.0.1:8443"
locations = ["l"]
global_certificates = true
"""


def runtime_problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        build_runtime(load_config_text(text, "acme.toml"))
    return {p.key: p.message for p in caught.value.problems}


def test_a_pending_acme_certificate_is_enough_for_a_tls_server() -> None:
    config = load_config_text(acme_config('domains = "a.test"\nacme = "lets_encrypt"'))
    assert config.warnings == ()  # acme and buffer_days are supported now
    runtime = build_runtime(config)
    assert runtime.certificates.entries == []  # nothing issued yet: skipped (spec §10.1)
    assert config.basic.acme_directory_url == \
        "https://acme-v02.api.letsencrypt.org/directory"


def test_acme_values_are_checked() -> None:
    assert runtime_problems(acme_config('domains = "a.test"\nacme = "zerossl"')) == {
        "certificates.c.acme": "unknown ACME provider 'zerossl'; expected 'lets_encrypt'"}
    assert runtime_problems(acme_config('acme = "lets_encrypt"')) == {
        "certificates.c.domains": "required with acme: the names to order"}
    wildcard = runtime_problems(acme_config('domains = "*.a.test"\nacme = "lets_encrypt"'))
    assert "DNS-01" in wildcard["certificates.c.domains"]
    assert runtime_problems(acme_config(
        'domains = "a.test"\nacme = "lets_encrypt"', 'acme_directory_url = "ftp://x"')) == {
        "basic.acme_directory_url": "expected an https:// URL of an ACME directory"}
    # no certificate and no order yet: pingap starts the listener (certificates may come
    # later through the admin or ACME), and so do we, with a warning
    runtime = build_runtime(load_config_text(acme_config('domains = "a.test"')))
    assert runtime.certificates.entries == []
    assert [w.key for w in runtime.warnings] == ["servers.s.global_certificates"]


def test_dns_challenge_config() -> None:
    config = load_config_text(acme_config(
        'domains = "a.test"\nacme = "lets_encrypt"\ndns_challenge = true'), "w.toml")
    assert not config.warnings  # acted on now
    wild = 'domains = "*.a.test,a.test"\nacme = "lets_encrypt"\ndns_challenge = true'
    build_runtime(load_config_text(acme_config(wild)))  # valid: no ConfigError
    assert "dns_challenge = true" in runtime_problems(acme_config(
        'domains = "*.a.test"\nacme = "lets_encrypt"'))["certificates.c.domains"]
    for provider, url, message in (
            ("ali", "", "not supported here"), ("route53", "", "unknown DNS provider"),
            ("cf", "https://api.cloudflare.com", "needs ?token="),
            ("manual", "?resolver=h:x", "is not host[:port]")):
        found = runtime_problems(acme_config(
            f'{wild}\ndns_provider = "{provider}"\ndns_service_url = "{url}"'))
        assert message in found["certificates.c.dns_provider"], provider


def test_dns_service_parsing() -> None:
    env = {"CF": "https://cf.example:8443/x?token=t0k&resolver=10.0.0.1:5353"}
    assert parse_dns_service("", None, env) == DnsService(provider="manual")
    cf = parse_dns_service("Cloudflare", "$ENV:CF", env)
    assert cf == DnsService(provider="cf", endpoint="https://cf.example:8443", token="t0k",
                            resolver=("10.0.0.1", 5353))
    assert "t0k" not in repr(cf)
    assert parse_dns_service("cf", "?token=abc", env).endpoint == "https://api.cloudflare.com"
    assert parse_dns_service("manual", "?resolver=127.0.0.1", env).resolver == \
        ("127.0.0.1", 53)
    assert dns_record_name("*.wild.test") == dns_record_name("wild.test") == \
        "_acme-challenge.wild.test"
    assert zone_candidates("a.b.example.co.uk") == (
        "a.b.example.co.uk", "b.example.co.uk", "example.co.uk", "co.uk")


# --- the store's swap ----------------------------------------------------------------------


def entry(name: str, names: tuple[str, ...], *, is_default: bool = False,
          tag: bytes = b"") -> CertificateEntry:
    return CertificateEntry(name, tag, b"", names, is_default, NOW)


def test_store_put_replaces_by_name_and_adds_new_entries() -> None:
    store = CertificateStore()
    store.add(entry("static", ("s.test",), is_default=True))
    store.put(entry("site", ("a.test", "b.test"), tag=b"v1"))
    assert store.select("b.test").cert_pem == b"v1"
    store.put(entry("site", ("a.test",), tag=b"v2"))
    assert store.select("a.test").cert_pem == b"v2"
    assert store.select("b.test").name == "static"  # a name the new one dropped
    assert [e.name for e in store.entries] == ["static", "site"]
    assert store.select(None).name == "static"


# --- storage and the renewer ---------------------------------------------------------------


def test_storage_writes_private_files_and_sweeps_old_tokens(tmp_path: Path) -> None:
    storage = AcmeStorage(str(tmp_path / "acme"))
    assert storage.read_certificate("site") is None
    storage.write_certificate("site", b"bundle")
    assert storage.read_certificate("site") == b"bundle"
    assert os.stat(storage.certificate_path("site")).st_mode & 0o777 == 0o600
    assert os.stat(storage.root).st_mode & 0o777 == 0o700
    storage.write_token("old", b"old.k")
    storage.write_token("new", b"new.k")
    assert storage.read_token("new") == b"new.k"
    assert storage.read_token("../new") is None
    with pytest.raises(ValueError):
        storage.write_token("a/b", b"x")
    day_ago = time.time() - 2 * 86400
    os.utime(os.path.join(storage.root, "http-01", "old"), (day_ago, day_ago))
    storage.sweep_tokens()
    assert storage.read_token("old") is None and storage.read_token("new") == b"new.k"
    storage.remove_token("new")
    assert os.listdir(os.path.join(storage.root, "http-01")) == []
    assert [p for p in os.listdir(os.path.dirname(storage.certificate_path("site")))
            if p.startswith(".tmp")] == []


def test_certificates_and_account_belong_to_their_ca(tmp_path: Path) -> None:
    staging = ca_directory_name(LETS_ENCRYPT_STAGING_DIRECTORY)
    assert staging.startswith("acme-staging-v02.api.letsencrypt.org_directory-")
    assert staging != ca_directory_name(LETS_ENCRYPT_DIRECTORY)
    assert ca_directory_name("https://127.0.0.1:14000/dir") != \
        ca_directory_name("https://127.0.0.1:14001/dir")
    first = AcmeStorage(str(tmp_path), LETS_ENCRYPT_STAGING_DIRECTORY)
    first.write_certificate("site", b"staging bundle")
    account = first.account_key()
    assert (tmp_path / staging / "directory").read_text() == \
        LETS_ENCRYPT_STAGING_DIRECTORY + "\n"
    assert os.stat(first.ca_root).st_mode & 0o777 == 0o700
    other = AcmeStorage(str(tmp_path), LETS_ENCRYPT_DIRECTORY)
    assert other.read_certificate("site") is None
    assert other.account_key() != account
    again = AcmeStorage(str(tmp_path), LETS_ENCRYPT_STAGING_DIRECTORY)
    assert (again.read_certificate("site"), again.account_key()) == (b"staging bundle", account)


def test_renewer_orders_anew_when_the_directory_changes(tmp_path: Path) -> None:
    """A certificate stored for one CA is not served for another (issue 13.14)."""
    signer = LocalSigner()
    job, storage = renewer(tmp_path, signer)
    job.check("c")
    assert len(signer.orders) == 1
    config = load_config_text(acme_config('domains = "b.test,a.test"\nacme = "lets_encrypt"'))
    moved = AcmeStorage(str(tmp_path), "https://other-ca.invalid/directory")
    other = CertificateRenewer(config.certificates, moved, signer)  # type: ignore[arg-type]
    assert other.current("c") is None
    other.check("c")
    assert len(signer.orders) == 2
    assert moved.read_certificate("c") != storage.read_certificate("c")
    assert job.check("c") == MAX_CHECK_INTERVAL and len(signer.orders) == 2


def test_renewer_orders_anew_when_the_ca_forgot_the_account(tmp_path: Path) -> None:
    """A CA reset at the same URL (issue 13.14): the certificate it issued before is not
    kept until its renewal."""
    signer = LocalSigner()
    job, storage = renewer(tmp_path, signer)
    job.check("c")
    first = storage.read_certificate("c")
    assert storage.issued_under("c") == signer.account
    again, _ = renewer(tmp_path, signer)  # a restart, same CA: nothing ordered
    again.check("c")
    assert len(signer.orders) == 1
    signer.account = "https://ca.invalid/acct/99"  # the CA no longer knows our account
    reset, _ = renewer(tmp_path, signer)
    reset.check("c")
    assert len(signer.orders) == 2
    assert storage.read_certificate("c") != first
    assert storage.issued_under("c") == signer.account
    reset.check("c")
    assert len(signer.orders) == 2  # ordered once, then current again


def test_storage_lock_is_exclusive(tmp_path: Path) -> None:
    storage = AcmeStorage(str(tmp_path))
    with storage.lock() as first:
        with storage.lock() as second:
            assert (first, second) == (True, False)
    with storage.lock() as again:
        assert again


class LocalSigner:
    """Stands in for the CA: a fresh self-signed bundle per order, or a failure."""

    directory_url = "https://ca.invalid/directory"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.orders: list[tuple[str, ...]] = []

    account: str | None = "https://ca.invalid/acct/1"

    def account_uri(self) -> str | None:
        return self.account

    def issue(self, domains: tuple[str, ...], dns: object = None, name: str = "") -> bytes:
        self.orders.append(domains)
        if self.fail:
            raise ConnectionRefusedError("connection refused")
        return signed_bundle(domains)


def renewer(tmp_path: Path, signer: LocalSigner) -> tuple[CertificateRenewer, AcmeStorage]:
    config = load_config_text(acme_config('domains = "b.test,a.test"\nacme = "lets_encrypt"'))
    storage = AcmeStorage(str(tmp_path), signer.directory_url)
    return CertificateRenewer(config.certificates, storage, signer), storage  # type: ignore[arg-type]


def test_renewer_orders_what_is_missing_and_then_waits(tmp_path: Path) -> None:
    signer = LocalSigner()
    job, storage = renewer(tmp_path, signer)
    wait = job.check("c")
    assert signer.orders == [("a.test", "b.test")]
    stored = storage.read_certificate("c")
    assert stored is not None
    assert describe_certificate(split_bundle(stored)[0]).names == {"a.test", "b.test"}
    assert wait == MAX_CHECK_INTERVAL
    assert job.check("c") == MAX_CHECK_INTERVAL
    assert len(signer.orders) == 1  # current: nothing ordered


def test_renewer_renews_a_certificate_in_its_window(tmp_path: Path) -> None:
    signer = LocalSigner()
    job, storage = renewer(tmp_path, signer)
    storage.write_certificate("c", signed_bundle(("a.test", "b.test"), days=90, age=61))
    job.check("c")
    assert len(signer.orders) == 1


def test_renewer_backs_off_and_keeps_the_stored_certificate(tmp_path: Path) -> None:
    signer = LocalSigner(fail=True)
    job, storage = renewer(tmp_path, signer)
    old = signed_bundle(("a.test", "b.test"), days=90, age=89)
    storage.write_certificate("c", old)
    assert [job.check("c") for _ in range(3)] == [5.0, 10.0, 20.0]
    assert storage.read_certificate("c") == old
    signer.fail = False
    job.check("c")
    assert storage.read_certificate("c") != old
    assert job.backoff["c"].failures == 0
