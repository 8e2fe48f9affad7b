"""pingap's config-less start: a whole config from ``--upstream`` (+ ``--addr``,
``--domain``, ``--cert``, ``--key``), and the ``--template`` config it prints.

The generated config is pingap's: one upstream, location and server named ``pingap``
(``path = "/"``, ``host`` = the domains, ``access_log = "combined"``); a certificate
turns TLS and HTTP/2 on and makes the default address ``0.0.0.0:443`` (else
``0.0.0.0:80``); domains without a certificate ask Let's Encrypt for one.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMPLATE = """
[basic]
log_level = "INFO"
name = "pingap"
pid_file = "/run/pingap.pid"

[locations.httpLocation]
path = "/"
upstream = "httpUpstream"

[servers.httpServer]
access_log = "combined"
addr = "0.0.0.0:80"
locations = ["httpLocation"]

[upstreams.httpUpstream]
addrs = ["127.0.0.1:5000"]
"""
"""What ``pingap --template`` prints (pingap's text)."""

NAME = "pingap"
CERT_FILE_NAMES = ("fullchain.pem", "cert.pem", "tls.crt", "server.crt", "cert.crt")
KEY_FILE_NAMES = ("privkey.pem", "key.pem", "tls.key", "server.key", "cert.key")


class QuickStartError(ValueError):
    """The quick-start flags do not make a config."""


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _find(directory: Path, names: tuple[str, ...]) -> Path | None:
    return next((directory / n for n in names if (directory / n).is_file()), None)


def tls_files(cert: str, key: str | None) -> tuple[str, str]:
    """(certificate file, key file): ``cert`` is a PEM file or a directory holding one;
    the key defaults to a well-known name next to the certificate."""
    cert_path = Path(os.path.expanduser(cert)).resolve()
    if cert_path.is_dir():
        found = _find(cert_path, CERT_FILE_NAMES)
        if found is None:
            raise QuickStartError(f"no certificate found in {cert_path}, expected one of: "
                                  f"{', '.join(CERT_FILE_NAMES)}")
        cert_file, directory = found, cert_path
    elif cert_path.is_file():
        cert_file, directory = cert_path, cert_path.parent
    else:
        raise QuickStartError(f"certificate {cert_path} does not exist")
    if key:
        key_file = Path(os.path.expanduser(key)).resolve()
        if not key_file.is_file():
            raise QuickStartError(f"private key {key_file} does not exist")
    else:
        found = _find(directory, KEY_FILE_NAMES)
        if found is None:
            raise QuickStartError(f"no private key found in {directory}, expected one of: "
                                  f"{', '.join(KEY_FILE_NAMES)}, use --key to set it")
        key_file = found
    return str(cert_file), str(key_file)


def build_config(upstream: str, *, addr: str | None = None, domain: str | None = None,
                 cert: str | None = None, key: str | None = None) -> str:
    """The quick-start config as TOML text; raises ``QuickStartError``."""
    import tomlkit  # only the quick start writes TOML; a master on a config file never does

    addrs = _split(upstream)
    if not addrs:
        raise QuickStartError("--upstream should not be empty")
    domains = ",".join(_split(domain))
    doc = tomlkit.document()
    doc["basic"] = {"name": NAME, "log_level": "INFO"}
    certificate: dict[str, object] = {}
    if cert:
        tls_cert, tls_key = tls_files(cert, key)
        certificate = {"tls_cert": tls_cert, "tls_key": tls_key, "is_default": True}
        if domains:
            certificate["domains"] = domains
    elif key:
        raise QuickStartError("--key should be used with --cert")
    elif domains:
        certificate = {"domains": domains, "acme": "lets_encrypt", "is_default": True}
    tls = bool(certificate)
    doc["upstreams"] = {NAME: {"addrs": addrs}}
    location: dict[str, object] = {"path": "/", "upstream": NAME}
    if domains:
        location["host"] = domains
    doc["locations"] = {NAME: location}
    server: dict[str, object] = {"addr": addr or ("0.0.0.0:443" if tls else "0.0.0.0:80"),
                                 "access_log": "combined", "locations": [NAME]}
    if tls:
        server.update(global_certificates=True, enabled_h2=True)
    doc["servers"] = {NAME: server}
    if certificate:
        doc["certificates"] = {NAME: certificate}
    return tomlkit.dumps(doc)
