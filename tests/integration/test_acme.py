"""Let's Encrypt (ACME) certificates against a real CA: ``pebble`` on loopback.

The real ``pingap`` orders certificates from pebble (``basic.acme_directory_url``), answers
pebble's HTTP-01 validation on its own plaintext listener, stores what it gets, serves it
over TLS, keeps it across a restart, renews it before it expires while clients keep
connecting, and keeps serving the old one when the CA cannot be reached.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pingap.acme import ca_directory_name
from tests.integration.test_webhook import Receiver
from tests.support.client import request
from tests.support.cloudflare import FakeCloudflare
from tests.support.pebble import PebbleServer
from tests.support.proc import free_port, wait_for

NAMES = ("a.pingap.test", "b.pingap.test")


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Callable[..., PebbleServer]]:
    started: list[PebbleServer] = []

    def start(http_port: int, validity: int | None = None) -> PebbleServer:
        server = PebbleServer(tmp_path, http_port, validity=validity)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def acme_config(tmp: Path, http: int, https: int, directory_url: str, *,
                ca_bundle: Path | None = None, backend: str = "127.0.0.1:9",
                threads: int = 1) -> str:
    bundle = f'acme_ca_bundle = "{ca_bundle}"' if ca_bundle else ""
    return f"""
[basic]
grace_period = "1s"
threads = {threads}
acme_directory_url = "{directory_url}"
{bundle}
acme_storage = "{tmp / 'acme'}"

[certificates.site]
domains = "{','.join(NAMES)}"
acme = "lets_encrypt"

[upstreams.u]
addrs = ["{backend}"]

[locations.all]
upstream = "u"

[servers.http]
addr = "127.0.0.1:{http}"
locations = ["all"]

[servers.https]
addr = "127.0.0.1:{https}"
locations = ["all"]
global_certificates = true
"""


def served_certificate(port: int, name: str, root: str | None = None) -> x509.Certificate:
    """The leaf served for SNI ``name``; with ``root``, the handshake also verifies the
    chain against it and the name against the certificate (as a browser would)."""
    if root is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cadata=root)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def san(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(ext.value.get_values_for_type(x509.DNSName))


def try_serial(port: int, name: str, root: str) -> int | None:
    try:
        return served_certificate(port, name, root).serial_number
    except (OSError, ssl.SSLError):
        return None


def stored(tmp: Path, directory_url: str) -> Path:
    """Where the certificate ``site`` issued by the CA at ``directory_url`` is kept."""
    return tmp / "acme" / ca_directory_name(directory_url) / "certificates" / "site.pem"


def test_two_name_certificate_is_issued_served_kept_and_ordered_anew_from_a_new_ca(
        tmp_path: Path, pebble, pingap) -> None:
    http, https = free_port(), free_port()
    ca = pebble(http)
    config = acme_config(tmp_path, http, https, ca.directory_url, ca_bundle=ca.ca_bundle)
    started = time.monotonic()
    first = pingap(config, port=http)
    root = ca.root_pem()
    serial = wait_for(lambda: try_serial(https, NAMES[0], root), timeout=10, interval=0.05,
                      what="the ACME certificate to be served")
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"issued and served after {elapsed:.1f}s"
    for name in NAMES:  # verified against pebble's root, for each name
        cert = served_certificate(https, name, root)
        assert cert.serial_number == serial
        assert san(cert) == set(NAMES)
    assert ca.orders() == 1
    assert os.listdir(tmp_path / "acme" / "http-01") == []  # used tokens are removed
    assert (stored(tmp_path, ca.directory_url).stat().st_mode & 0o777) == 0o600

    # restart: the stored certificate is served again, and nothing is ordered
    mtime = stored(tmp_path, ca.directory_url).stat().st_mtime_ns
    before = len(first.log())
    first.stop()
    second = pingap(config, port=http)
    wait_for(lambda: f"serial {serial:x} is valid until" in second.log()[before:],
             what="the renewer to find the stored certificate current")
    assert served_certificate(https, NAMES[1], root).serial_number == serial
    assert ca.orders() == 1
    assert stored(tmp_path, ca.directory_url).stat().st_mtime_ns == mtime
    assert "ordering" not in second.log()[before:]

    # the same storage, another CA (issue 13.14): a certificate of the new CA is ordered
    # and served, instead of the old CA's until its renewal
    second.stop()
    (tmp_path / "other-ca").mkdir()
    other = PebbleServer(tmp_path / "other-ca", http)
    try:
        other_root = other.root_pem()
        third = pingap(acme_config(tmp_path, http, https, other.directory_url,
                                   ca_bundle=other.ca_bundle), port=http)
        new_serial = wait_for(lambda: try_serial(https, NAMES[0], other_root), timeout=15,
                              interval=0.05, what="a certificate of the new CA")
        assert new_serial != serial and other.orders() == 1
    finally:
        other.stop()
    assert stored(tmp_path, ca.directory_url).stat().st_mtime_ns == mtime  # kept for later
    assert "no certificate is stored" in third.log()


def test_an_issued_certificate_sends_one_lets_encrypt_webhook_per_host(
        tmp_path: Path, pebble, pingap) -> None:
    """Two workers, one renewer: the receiver gets pingap's lets_encrypt event once."""
    http, https = free_port(), free_port()
    ca = pebble(http)
    hook = Receiver()
    try:
        config = acme_config(tmp_path, http, https, ca.directory_url, ca_bundle=ca.ca_bundle,
                             threads=2).replace("[basic]\n", f"""[basic]
webhook = "{hook.url}"
webhook_notifications = ["lets_encrypt", "reload_config"]
""")
        proc = pingap(config, port=http)
        wait_for(lambda: "lets_encrypt" in hook.categories(), timeout=15,
                 what="the lets_encrypt event")
        assert hook.posts[0] == {
            "name": "pingap", "level": "info", "hostname": hook.posts[0]["hostname"],
            "ip": hook.posts[0]["ip"], "category": "lets_encrypt",
            "message": 'Domains: ["a.pingap.test", "b.pingap.test"]'}
        # the sender is one FIFO thread: a second lets_encrypt would come before this
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload_config" in hook.categories(), timeout=20,
                 what="the reload event")
        assert hook.categories() == ["lets_encrypt", "reload_config"]
        assert ca.orders() == 1
    finally:
        hook.stop()


def test_a_ca_reset_at_the_same_url_orders_anew(tmp_path: Path, pingap) -> None:
    """A fresh pebble on the same directory URL (issue 13.14: a test CA restarted) no
    longer knows the account: the earlier pebble's certificate is replaced at start-up."""
    http, https = free_port(), free_port()
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first_ca = PebbleServer(tmp_path / "first", http)
    try:
        config = acme_config(tmp_path, http, https, first_ca.directory_url,
                             ca_bundle=first_ca.ca_bundle)
        proc = pingap(config, port=http)
        old = wait_for(lambda: try_serial(https, NAMES[0], first_ca.root_pem()), timeout=15,
                       interval=0.05, what="the first CA's certificate")
        proc.stop()
    finally:
        first_ca.stop()
    second_ca = PebbleServer(tmp_path / "second", http, port=first_ca.port)
    try:
        assert second_ca.directory_url == first_ca.directory_url
        root = second_ca.root_pem()
        again = pingap(acme_config(tmp_path, http, https, second_ca.directory_url,
                                   ca_bundle=second_ca.ca_bundle), port=http,
                       name="again.toml")
        new = wait_for(lambda: try_serial(https, NAMES[0], root), timeout=20, interval=0.05,
                       what="the reset CA's certificate")
        assert new != old and second_ca.orders() == 1
        assert "no longer knows" in again.log()
    finally:
        second_ca.stop()


class HandshakeClient(threading.Thread):
    """Opens verified TLS connections one after another, recording each leaf's serial
    and every failure, until stopped (or 300 s pass)."""

    def __init__(self, port: int, root: str, name: str) -> None:
        super().__init__(daemon=True)
        self.port, self.root, self.name = port, root, name
        self.serials: list[int] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                self.serials.append(served_certificate(self.port, self.name,
                                                       self.root).serial_number)
            except (OSError, ssl.SSLError) as exc:
                self.failures.append(f"{time.monotonic():.3f} {exc!r}")
            self.stopping.wait(0.02)  # pace: ~50 handshakes a second per client


@pytest.mark.timeout(300)
def test_short_lived_certificate_is_renewed_with_no_failed_handshake(
        tmp_path: Path, pebble, pingap) -> None:
    http, https = free_port(), free_port()
    ca = pebble(http, validity=120)
    proc = pingap(acme_config(tmp_path, http, https, ca.directory_url,
                              ca_bundle=ca.ca_bundle, threads=2), port=http)
    root = ca.root_pem()
    first = wait_for(lambda: try_serial(https, NAMES[0], root), timeout=30, interval=0.05,
                     what="the first certificate")
    # every worker picks the stored certificate up at its next check (1 s): wait until
    # each one says so (a run of good handshakes may all land on the same worker)
    wait_for(lambda: all(f"[{pid}] pingap.acme: certificate site: serving the stored"
                         in proc.log() for pid in proc.worker_pids()),
             timeout=10, interval=0.1, what="every worker serving the first certificate")
    cert = served_certificate(https, NAMES[0], root)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(seconds=120)
    clients = [HandshakeClient(https, root, name) for name in NAMES]
    for client in clients:
        client.start()
    try:
        # renewal is due a third of the lifetime before expiry (~80 s after issuance)
        wait_for(lambda: any(s != first for c in clients for s in c.serials), timeout=150,
                 interval=0.2, what="a renewed certificate to be served")
        # every worker swaps within its next stat (1 s): soon only the new one is served
        wait_for(lambda: all(len(c.serials) > 20 and first not in c.serials[-20:]
                             for c in clients), timeout=10, interval=0.1,
                 what="every client to see only the renewed certificate")
    finally:
        for client in clients:
            client.stopping.set()
        for client in clients:
            client.join(10)
    assert [f for c in clients for f in c.failures] == []
    assert sum(len(c.serials) for c in clients) > 1000  # connecting throughout
    assert time.time() < cert.not_valid_after_utc.timestamp(), "renewed only after expiry"
    second = served_certificate(https, NAMES[1], root)
    assert second.serial_number != first and san(second) == set(NAMES)
    assert ca.orders() >= 2
    assert "ordering a.pingap.test, b.pingap.test" in proc.log()
    assert "(the certificate expires at" in proc.log()


def self_signed_bundle(names: tuple[str, ...], *, days_left: float) -> tuple[bytes, int]:
    """A stored-format bundle (key, then certificate) and the certificate's serial."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=80))
            .not_valid_after(now + datetime.timedelta(days=days_left))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem + cert.public_bytes(serialization.Encoding.PEM), cert.serial_number


def test_unreachable_ca_keeps_the_old_certificate_and_backs_off(tmp_path: Path,
                                                                pingap) -> None:
    http, https = free_port(), free_port()
    bundle, serial = self_signed_bundle(NAMES, days_left=1)  # inside the renewal window
    nothing_there = f"https://127.0.0.1:{free_port()}/directory"
    stored(tmp_path, nothing_there).parent.mkdir(parents=True)
    stored(tmp_path, nothing_there).write_bytes(bundle)
    proc = pingap(acme_config(tmp_path, http, https, nothing_there), port=http)
    assert served_certificate(https, NAMES[0]).serial_number == serial
    wait_for(lambda: "retry in 5s (failure 1)" in proc.log(), what="the first failure")
    wait_for(lambda: "retry in 10s (failure 2)" in proc.log(), timeout=20,
             what="the second failure, after backing off")
    assert "keeping the current certificate" in proc.log()
    assert proc.proc.poll() is None
    for name in NAMES:
        assert served_certificate(https, name).serial_number == serial
    assert stored(tmp_path, nothing_there).read_bytes() == bundle


def test_challenge_answers_and_a_server_with_only_a_pending_certificate(
        tmp_path: Path, pingap, backends) -> None:
    backend = backends()
    http, https = free_port(), free_port()
    nothing_there = f"https://127.0.0.1:{free_port()}/directory"
    proc = pingap(acme_config(tmp_path, http, https, nothing_there, backend=backend.addr),
                  port=http)
    tokens = tmp_path / "acme" / "http-01"
    wait_for(lambda: "ACME order failed" in proc.log(), what="the renewer to try once")
    tokens.mkdir(parents=True, exist_ok=True)
    (tokens / "tok_EN-1").write_bytes(b"tok_EN-1.thumbprint")
    reply = request(http, path="/.well-known/acme-challenge/tok_EN-1",
                    headers={"Host": NAMES[0]})
    assert (reply.status, reply.body) == (200, b"tok_EN-1.thumbprint")
    assert reply.header("Content-Type") == "text/plain"
    for path in ("/.well-known/acme-challenge/unknown", "/.well-known/acme-challenge/a.b",
                 "/.well-known/acme-challenge/", "/.well-known/acme-challenge/..%2Fx"):
        assert request(http, path=path).status == 404, path
    assert backend.requests() == []  # challenge paths never reach the upstream
    assert request(http, path="/other").status == 200  # everything else routes as usual
    # nothing issued yet: the TLS server is up, but has no certificate to offer
    with pytest.raises(ssl.SSLError):
        served_certificate(https, NAMES[0])


WILD = ("*.wild.pingap.test", "wild.pingap.test")


def dns01_config(tmp: Path, https: int, directory_url: str, ca_bundle: Path,
                 provider: str, service_url: str) -> str:
    return f"""
[basic]
grace_period = "1s"
threads = 1
acme_directory_url = "{directory_url}"
acme_ca_bundle = "{ca_bundle}"
acme_storage = "{tmp / 'acme'}"

[certificates.wild]
domains = "{','.join(WILD)}"
acme = "lets_encrypt"
dns_challenge = true
dns_provider = "{provider}"
dns_service_url = "{service_url}"

[upstreams.u]
addrs = ["127.0.0.1:9"]

[locations.all]
upstream = "u"

[servers.https]
addr = "127.0.0.1:{https}"
locations = ["all"]
global_certificates = true
"""


def test_dns01_manual_wildcard_certificate(tmp_path: Path, pebble, pingap) -> None:
    """The manual provider logs the TXT record and waits until it resolves; the test
    plays the operator, setting it in pebble's DNS. No HTTP listener: DNS-01 only."""
    https = free_port()
    ca = pebble(free_port())
    resolver = f"?resolver=127.0.0.1:{ca.dns_port}"
    proc = pingap(dns01_config(tmp_path, https, ca.directory_url, ca.ca_bundle, "manual",
                               resolver), port=https)
    root = ca.root_pem()
    wanted = re.compile(r"set the DNS record (\S+) IN TXT (\S+) \(waiting")
    records = wait_for(lambda: wanted.findall(proc.log()) if len(
        set(wanted.findall(proc.log()))) == 2 else None, timeout=30,
        what="both TXT records to be asked for")
    assert {name for name, _ in records} == {"_acme-challenge.wild.pingap.test"}
    for name, value in set(records):  # the wildcard and the bare name: two values, one name
        ca.set_txt(name, value)
    serial = wait_for(lambda: try_serial(https, "a.wild.pingap.test", root), timeout=60,
                      interval=0.1, what="the wildcard certificate")
    cert = served_certificate(https, "wild.pingap.test", root)
    assert cert.serial_number == serial and san(cert) == set(WILD)
    assert "IN TXT" in proc.log() and "is served" in proc.log()


def test_dns01_cloudflare_provider(tmp_path: Path, pebble, pingap) -> None:
    """Cloudflare's API (a stand-in that writes pebble's DNS): zone lookup, record
    creation, validation, and the records removed afterwards; the token is not logged."""
    https = free_port()
    ca = pebble(free_port())
    token = "cf-secret-token-1"
    fake = FakeCloudflare(ca, "pingap.test", token)
    try:
        # the URL with its token comes from the environment, as pingap's $ENV: allows
        config = dns01_config(tmp_path, https, ca.directory_url, ca.ca_bundle, "cloudflare",
                              "$ENV:CF_SERVICE")
        proc = pingap(config, port=https, env={
            "CF_SERVICE": f"{fake.url}?token={token}&resolver=127.0.0.1:{ca.dns_port}"})
        root = ca.root_pem()
        serial = wait_for(lambda: try_serial(https, "x.wild.pingap.test", root),
                          timeout=60, interval=0.1, what="the certificate over DNS-01")
        assert san(served_certificate(https, "wild.pingap.test", root)) == set(WILD)
        assert serial
        assert len(fake.records) == 2
        assert {r["name"] for r in fake.records.values()} == {
            "_acme-challenge.wild.pingap.test"}
        assert "GET /client/v4/zones?name=wild.pingap.test" in fake.calls  # longest first
        wait_for(lambda: sorted(fake.deleted) == sorted(fake.records),
                 what="the records to be removed")
        assert token not in proc.log()
    finally:
        fake.stop()
