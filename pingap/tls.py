"""Certificates for TLS termination: PEM loading, SAN names, SNI selection.

A certificate or key value is inline PEM text, a path to a PEM file, or base64 of PEM
(pingap's three forms; files are read at config load, like the config itself). The
``CertificateStore`` answers which certificate serves an SNI name, per handshake: the
exact name, else ``*.<parent>``, else the ``is_default`` certificate (also used without
SNI); with none of those the handshake fails. An ``acme`` certificate with nothing issued
yet is skipped here; the workers add it once it is stored (``workers/acme.py``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pingap.acme import (
    DNS_PROVIDERS,
    LETS_ENCRYPT,
    UNBUILT_DNS_PROVIDERS,
    describe_certificate,
    parse_dns_service,
    parse_domains,
)
from pingap.errors import Problem

if TYPE_CHECKING:
    from cryptography import x509


def load_pem(value: str) -> bytes:
    """PEM bytes from inline PEM, a file path, or base64 of PEM; ValueError otherwise."""
    text = value.strip()
    if "-----BEGIN" in text:
        return text.encode()
    path = os.path.expanduser(text)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if b"-----BEGIN" in decoded:
        return decoded
    raise ValueError("expected PEM text, a path to a PEM file, or base64 of PEM")


@dataclass(frozen=True, slots=True)
class CertificateEntry:
    name: str
    cert_pem: bytes
    key_pem: bytes
    names: tuple[str, ...]
    is_default: bool
    not_after: datetime.datetime


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What parsing a certificate told, for the PEM bytes with ``digest``: the names it
    serves and when it expires. The master parses every certificate when it checks a
    config and writes these down for the generation's workers (``dump_facts``), so that a
    worker that reads the same bytes need not load ``cryptography`` (~10 MB per process)."""

    digest: str
    names: tuple[str, ...]
    not_after: datetime.datetime


def pem_digest(cert_pem: bytes, key_pem: bytes) -> str:
    return hashlib.sha256(b"%d:%s%s" % (len(cert_pem), cert_pem, key_pem)).hexdigest()


def dump_facts(store: CertificateStore) -> str:
    """The facts of every entry of ``store``, as JSON for ``load_facts``."""
    return json.dumps({entry.name: {"digest": pem_digest(entry.cert_pem, entry.key_pem),
                                    "names": list(entry.names),
                                    "not_after": entry.not_after.isoformat()}
                       for entry in store.entries})


def load_facts(text: str) -> dict[str, CertificateFacts]:
    """``dump_facts``'s output read back; ValueError if it is not that."""
    try:
        return {name: CertificateFacts(str(item["digest"]),
                                       tuple(str(n) for n in item["names"]),
                                       datetime.datetime.fromisoformat(item["not_after"]))
                for name, item in json.loads(text).items()}
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"not certificate facts: {exc!r}") from exc


def _san_names(cert: x509.Certificate) -> list[str]:
    from cryptography import x509
    from cryptography.x509.oid import ExtensionOID, NameOID

    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        if isinstance(ext.value, x509.SubjectAlternativeName):
            return [n.lower() for n in ext.value.get_values_for_type(x509.DNSName)]
        return []
    except x509.ExtensionNotFound:
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return [str(common[0].value).lower()] if common else []


@dataclass(slots=True)
class CertificateStore:
    """Certificates by served name; empty when none are configured."""

    by_name: dict[str, CertificateEntry] = field(default_factory=dict)
    default: CertificateEntry | None = None
    entries: list[CertificateEntry] = field(default_factory=list)

    def add(self, entry: CertificateEntry) -> None:
        self.entries.append(entry)
        for name in entry.names:
            self.by_name.setdefault(name, entry)
        if entry.is_default and self.default is None:
            self.default = entry

    def put(self, entry: CertificateEntry) -> None:
        """Install ``entry`` in place of the entry of the same name (or add it): a renewed
        ACME certificate. The indexes are rebuilt aside and swapped in whole, so a lookup
        never sees a half-updated store."""
        entries = [entry if old.name == entry.name else old for old in self.entries]
        if not any(old.name == entry.name for old in self.entries):
            entries.append(entry)
        rebuilt = CertificateStore()
        for item in entries:
            rebuilt.add(item)
        self.entries, self.by_name, self.default = (rebuilt.entries, rebuilt.by_name,
                                                    rebuilt.default)

    def select(self, server_name: str | None) -> CertificateEntry | None:
        """Exact name, else ``*.<parent>``, else the default (also without SNI)."""
        if server_name:
            name = server_name.lower().rstrip(".")
            found = self.by_name.get(name)
            if found is None and "." in name:
                found = self.by_name.get("*." + name.split(".", 1)[1])
            if found is not None:
                return found
        return self.default


def parse_entry(name: str, cfg: object) -> CertificateEntry:
    """One ``[certificates.<name>]`` with both cert and key; ValueError naming the field."""
    # cryptography is loaded only where certificates are configured
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert_pem = load_pem(cfg.tls_cert)  # type: ignore[attr-defined]
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ValueError(f"tls_cert: {exc}") from exc
    try:
        key_pem = load_pem(cfg.tls_key)  # type: ignore[attr-defined]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"tls_key: {exc}") from exc
    leaf = certs[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != \
            leaf.public_key().public_bytes(encoding, public):
        raise ValueError("tls_key: the key does not belong to the certificate")
    domains = getattr(cfg, "domains", None)
    names = [d.strip().lower() for d in domains.split(",") if d.strip()] if domains \
        else _san_names(leaf)
    return CertificateEntry(name, cert_pem, key_pem, tuple(names),
                            bool(getattr(cfg, "is_default", False)),
                            leaf.not_valid_after_utc)


def check_acme(cfg: object) -> list[tuple[str, str]]:
    """``(key, message)`` problems of an ``acme`` certificate."""
    acme = getattr(cfg, "acme", None)
    if not acme:
        return []
    problems = []
    if acme != LETS_ENCRYPT:
        problems.append(("acme", f"unknown ACME provider {acme!r}; expected {LETS_ENCRYPT!r}"))
    domains = parse_domains(getattr(cfg, "domains", None))
    if not domains:
        problems.append(("domains", "required with acme: the names to order"))
    dns_challenge = bool(getattr(cfg, "dns_challenge", False))
    for domain in domains:
        if "*" in domain and not dns_challenge:
            problems.append(("domains", f"{domain!r}: wildcard names need the DNS-01 "
                             "challenge (dns_challenge = true)"))
    provider = (getattr(cfg, "dns_provider", None) or "").strip().lower()
    # an unknown provider name is the config check's (pingap.config.checks) to report
    if dns_challenge and (provider in DNS_PROVIDERS or provider in UNBUILT_DNS_PROVIDERS):
        try:
            parse_dns_service(getattr(cfg, "dns_provider", None),
                              getattr(cfg, "dns_service_url", None), os.environ)
        except ValueError as exc:
            problems.append(("dns_provider", str(exc)))
    return problems


def _entry_from_facts(name: str, cfg: object,
                      facts: CertificateFacts) -> CertificateEntry | None:
    """The entry of ``[certificates.<name>]`` from the facts the master wrote, if its
    files still hold the bytes the master parsed; None means parse them here."""
    try:
        cert_pem = load_pem(cfg.tls_cert)  # type: ignore[attr-defined]
        key_pem = load_pem(cfg.tls_key)  # type: ignore[attr-defined]
    except ValueError:
        return None  # parse_entry reports it
    if pem_digest(cert_pem, key_pem) != facts.digest:
        return None
    return CertificateEntry(name, cert_pem, key_pem, facts.names,
                            bool(getattr(cfg, "is_default", False)), facts.not_after)


def build_store(config: object, facts: Mapping[str, CertificateFacts] | None = None,
                ) -> tuple[CertificateStore, list[Problem]]:
    """The certificates of ``config``. Those with ``facts`` for the very bytes configured
    skip parsing (and ``cryptography``); the others are parsed and checked here."""
    store = CertificateStore()
    problems: list[Problem] = []
    sources = getattr(config, "sources", {}) or {}
    for name, cfg in config.certificates.items():  # type: ignore[attr-defined]
        for key, message in check_acme(cfg):
            problems.append(Problem(sources.get(f"certificates.{name}", ""),
                                    f"certificates.{name}.{key}", message))
        if not (cfg.tls_cert and cfg.tls_key):
            continue  # e.g. an ACME certificate not issued yet: pingap skips it too
        known = facts.get(name) if facts else None
        entry = _entry_from_facts(name, cfg, known) if known else None
        if entry is not None:
            store.add(entry)
            continue
        try:
            store.add(parse_entry(name, cfg))
        except ValueError as exc:
            key, _, message = str(exc).partition(": ")
            problems.append(Problem(sources.get(f"certificates.{name}", ""),
                                    f"certificates.{name}.{key}", message))
    return store, problems


VALIDITY_WARNING_DAYS = 7
"""pingap's tls_validity threshold when a certificate sets no ``buffer_days``."""


def invalid_soon(config: object, now: datetime.datetime) -> list[str]:
    """Names of the configured (not ACME) certificates that expire within their
    ``buffer_days`` (7 by default) or are not valid yet: pingap's tls_validity check.
    ACME certificates are left out (their renewal covers them); an unreadable one is a
    config error reported elsewhere."""
    names = []
    for name, cfg in config.certificates.items():  # type: ignore[attr-defined]
        if cfg.acme or not cfg.tls_cert:
            continue
        try:
            leaf = describe_certificate(load_pem(cfg.tls_cert))
        except ValueError:
            continue
        buffer = datetime.timedelta(days=cfg.buffer_days or VALIDITY_WARNING_DAYS)
        if now > leaf.not_after - buffer or now < leaf.not_before:
            names.append(name)
    return names
