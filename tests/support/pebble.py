"""A real ACME CA for the tests: Let's Encrypt's ``pebble`` (Debian package) on loopback.

Pebble validates HTTP-01 challenges by resolving each name and fetching
``http://<name>:<httpPort>/.well-known/acme-challenge/<token>``. Names are resolved by
``pebble-challtestsrv`` (from the same package) acting as a DNS server that answers
``A 127.0.0.1`` for every name and no AAAA, so validation reaches the pingap listener on
``http_port``. Pebble serves its API over HTTPS with a certificate we mint here from a
throw-away CA: ``ca_bundle`` is what pingap's ``basic.acme_ca_bundle`` must trust.

Pebble's random behaviours are turned off so every test is deterministic: no validation
sleep (``PEBBLE_VA_NOSLEEP``), no rejected nonces (``PEBBLE_WFE_NONCEREJECT=0``) and no
reused authorizations (``PEBBLE_AUTHZREUSE=0``: every order is validated through pingap).
``validity`` sets pebble's ``certificateValidityPeriod`` (seconds; default 5 years).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.proc import Process, free_port, port_open, wait_for


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_api_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """``(ca.pem, cert.pem, key.pem)``: a test CA and a certificate for 127.0.0.1 and
    localhost that it signed, for pebble's HTTPS API."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pingap test ACME API CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "pebble-api-ca.pem", directory / "pebble-api-cert.pem",
             directory / "pebble-api-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, paths[2])
    return paths


class PebbleServer:
    """pebble + its DNS on free loopback ports; ``stop()`` ends both."""

    def __init__(self, tmp: Path, http_port: int, *, validity: int | None = None,
                 port: int | None = None) -> None:
        self.tmp = tmp
        self.http_port = http_port
        self.port = port or free_port()  # a given port: a "reset" CA at the same URL
        self.management_port = free_port()
        self.dns_port = free_port()
        #: challtestsrv's management API (``/set-txt``, ``/clear-txt``): DNS-01 records
        self.dns_api = f"http://127.0.0.1:{free_port()}"
        self.ca_bundle, cert, key = make_api_certificate(tmp)
        self.dns = Process(
            ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{self.dns_port}",
             "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", self.dns_api.removeprefix("http://"),
             "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            log=tmp / "challtestsrv.log")
        settings: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": free_port(),  # TLS-ALPN-01: unused, nothing listens
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if validity is not None:
            settings["certificateValidityPeriod"] = validity
        config = tmp / "pebble-config.json"
        config.write_text(json.dumps({"pebble": settings}, indent=1))
        self.process = Process(
            ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            log=tmp / "pebble.log",
            env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                 "PEBBLE_AUTHZREUSE": "0"})
        wait_for(lambda: port_open(self.port) and port_open(self.management_port)
                 and "Creating TCP and UDP DNS" in self.dns.log(),
                 what="pebble and its DNS to listen")

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def log(self) -> str:
        return self.process.log()

    def orders(self) -> int:
        """How many orders pebble has been asked for so far (from its request log)."""
        return self.log().count("POST /order-plz")

    def root_pem(self) -> str:
        """The root that signs this pebble run's certificates (new on every start)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=ctx, timeout=5) as reply:
            return str(reply.read().decode())

    def set_txt(self, name: str, value: str) -> None:
        """Serve ``name IN TXT value`` from pebble's DNS (what a DNS provider does)."""
        self._dns_api("/set-txt", {"host": name.rstrip(".") + ".", "value": value})

    def clear_txt(self, name: str) -> None:
        self._dns_api("/clear-txt", {"host": name.rstrip(".") + "."})

    def _dns_api(self, path: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(self.dns_api + path, data=json.dumps(body).encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert reply.status == 200, reply.status

    def stop(self) -> None:
        self.process.stop()
        self.dns.stop()
