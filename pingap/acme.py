"""Let's Encrypt (ACME) rules without I/O: which names to order, when a certificate is due,
how long to wait after a failure, where things live in the storage directory, and the
answer to an HTTP-01 challenge request.

Renewal rule: a certificate is (re)issued when none is stored, when its SAN set differs
from the configured ``domains``, or once it reaches its renewal point — the *earlier* of
``not_after - buffer_days`` (pingap's rule, 0 → 2 days) and the moment less than a third of
its total lifetime remains. The second rule is ours: with Let's Encrypt's 90-day
certificates it renews 30 days before expiry (Let's Encrypt's own advice) instead of two,
and it lets short-lived certificates (a 2-minute test certificate) renew in time. A buffer
longer than half the lifetime is ignored, or such a certificate would be ordered again
right after every issuance.

Storage layout (``basic.acme_storage``)::

    <ca>/directory                the CA's directory URL (``basic.acme_directory_url``)
    <ca>/account.key              the ACME account key (PEM), made once and reused
    <ca>/certificates/<name>.pem  private key + issued chain of [certificates.<name>],
                                  replaced atomically (key and chain never disagree)
    <ca>/certificates/<name>.account  the CA account URL it was issued under
    http-01/<token>               the key authorization of a pending HTTP-01 challenge
    .lock                         held while one process talks to a CA

``<ca>`` is named after the directory URL (``ca_directory_name``): certificates and the
account belong to the CA that issued them, so switching ``acme_directory_url`` (Let's
Encrypt staging to production, another CA, a test CA on a new port) orders anew instead of
serving the previous CA's certificate until its renewal, and switching back finds the
earlier ones. Certificates stored by earlier versions directly under ``certificates/`` (no
CA recorded) are not used: the first check orders anew from the configured CA.

Workers read the certificate files (hot swap) and the token files (challenge answers);
only the host's one renewal job writes them.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from pingap.actions import Respond
from pingap.plugins import plugin_response

__all__ = [
    "CHALLENGE_PREFIX",
    "LETS_ENCRYPT",
    "LETS_ENCRYPT_DIRECTORY",
    "Backoff",
    "IssuedCertificate",
    "DnsService",
    "ca_directory_name",
    "dns_record_name",
    "parse_dns_service",
    "zone_candidates",
    "certificate_file",
    "challenge_answer",
    "challenge_token",
    "describe_certificate",
    "is_valid_token",
    "next_check_in",
    "parse_domains",
    "renewal_reason",
    "renewal_time",
    "split_bundle",
    "token_file",
]

#: the only ``acme`` value pingap knows
LETS_ENCRYPT = "lets_encrypt"
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING_DIRECTORY = "https://acme-staging-v02.api.letsencrypt.org/directory"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
DEFAULT_BUFFER_DAYS = 2
#: check every certificate at least this often, and never busy-loop
MAX_CHECK_INTERVAL = 600.0
MIN_CHECK_INTERVAL = 1.0

ACCOUNT_KEY_FILE = "account.key"
DIRECTORY_FILE = "directory"
CERTIFICATES_DIR = "certificates"
TOKENS_DIR = "http-01"
LOCK_FILE = ".lock"

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


#: ``dns_provider`` spellings pingap accepts, normalised as pingap does
DNS_PROVIDERS = {"": "manual", "manual": "manual", "cf": "cf", "cloudflare": "cf"}
#: pingap's providers that are not built here (a config naming one is refused)
UNBUILT_DNS_PROVIDERS = ("ali", "aliyun", "tencent", "huawei")
CLOUDFLARE_API = "https://api.cloudflare.com"


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsService:
    """Where DNS-01 TXT records are put (``dns_provider``, ``dns_service_url``)."""

    provider: str                         # "manual" or "cf"
    endpoint: str = ""                    # the API origin (cf)
    token: str = ""                       # the API token (cf); never logged
    resolver: tuple[str, int] | None = None  # the DNS server to confirm the record with

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"DnsService(provider={self.provider!r}, endpoint={self.endpoint!r})"


def _env_value(value: str, env: Mapping[str, str]) -> str:
    """pingap's ``$ENV:NAME``: the variable's value (the text itself when unset)."""
    if value.startswith("$ENV:"):
        return env.get(value[len("$ENV:"):], value)
    return value


def parse_dns_service(provider: str | None, service_url: str | None,
                      env: Mapping[str, str]) -> DnsService:
    """The DNS-01 service of a certificate; ValueError naming what is wrong.

    ``dns_service_url`` may be ``$ENV:NAME`` (pingap); Cloudflare's is the API origin with
    ``?token=`` (pingap; default origin ``https://api.cloudflare.com``). Ours on top, for
    any provider: ``?resolver=host[:port]`` names the DNS server that must serve the TXT
    record before the CA is asked to look (default: the system's resolver)."""
    name = (provider or "").strip().lower()
    if name in UNBUILT_DNS_PROVIDERS:
        raise ValueError(f"dns_provider {provider!r} is not supported here (only manual "
                         f"and cf/cloudflare)")
    if name not in DNS_PROVIDERS:
        raise ValueError(f"unknown dns_provider {provider!r}; expected manual or "
                         f"cf/cloudflare")
    kind = DNS_PROVIDERS[name]
    url = _env_value((service_url or "").strip(), env)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    resolver = None
    if "resolver" in query:
        host, _, port = query["resolver"].rpartition(":") if ":" in query["resolver"] \
            else (query["resolver"], "", "53")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"dns_service_url resolver={query['resolver']!r} is not "
                             f"host[:port]")
        resolver = (host.strip("[]"), int(port))
    if kind == "manual":
        return DnsService(provider=kind, resolver=resolver)
    token = query.get("token", "")
    if not token:
        raise ValueError("dns_service_url needs ?token=<Cloudflare API token> for "
                         "dns_provider cf")
    endpoint = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc \
        else CLOUDFLARE_API
    return DnsService(provider=kind, endpoint=endpoint, token=token, resolver=resolver)


def dns_record_name(identifier: str) -> str:
    """The TXT record of a DNS-01 challenge: ``_acme-challenge.<name>`` (a wildcard's
    ``*.`` dropped, RFC 8555 §8.4)."""
    name = identifier[2:] if identifier.startswith("*.") else identifier
    return f"_acme-challenge.{name}"


def zone_candidates(name: str) -> tuple[str, ...]:
    """The names that may be the DNS zone holding ``name``'s records, longest first
    (down to two labels): Cloudflare zones are looked up in this order."""
    labels = name.rstrip(".").split(".")
    return tuple(".".join(labels[i:]) for i in range(len(labels) - 1))


def parse_domains(text: str | None) -> tuple[str, ...]:
    """The names of a comma-separated ``domains`` value: lower-cased, unique, sorted
    (pingap orders sorted identifiers)."""
    names = {part.strip().lower().rstrip(".") for part in (text or "").split(",")}
    return tuple(sorted(name for name in names if name))


# --- HTTP-01 challenge answers --------------------------------------------------------


def is_valid_token(token: str) -> bool:
    """pingap's token rule: ``[A-Za-z0-9_-]+`` (base64url, so never a path)."""
    return _TOKEN.fullmatch(token) is not None


def challenge_token(path: str) -> str | None:
    """The token part of a ``/.well-known/acme-challenge/<token>`` path (possibly invalid:
    check with ``is_valid_token``), or None for any other path."""
    if not path.startswith(CHALLENGE_PREFIX):
        return None
    return path[len(CHALLENGE_PREFIX):]


def challenge_answer(key_authorization: bytes | None) -> Respond:
    """200 with the key authorization as text/plain, or 404 for an unknown token."""
    if key_authorization is None:
        return plugin_response(404, b"Not Found\n")
    return plugin_response(200, key_authorization, b"text/plain")


# --- storage paths --------------------------------------------------------------------


def ca_directory_name(directory_url: str) -> str:
    """The storage sub-directory of the CA at ``directory_url``: its host, port and path
    made a file name (for people), plus a hash of the exact URL (so two URLs never share
    it)."""
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", directory_url.split("://", 1)[-1]).strip("_.")
    digest = hashlib.sha256(directory_url.encode()).hexdigest()[:12]
    return f"{readable[:80]}-{digest}"


def certificate_file(storage: str, name: str) -> str:
    """Where ``[certificates.<name>]``'s issued key and chain are stored. A name that is
    not a plain file name is sanitised and given a hash suffix, so two names never share
    a file."""
    safe = name
    if not _SAFE_NAME.fullmatch(name) or name.startswith("."):
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", name) + "-" + digest
    return os.path.join(storage, CERTIFICATES_DIR, safe + ".pem")


def token_file(storage: str, token: str) -> str:
    """Where the key authorization of ``token`` is kept; ValueError for a bad token."""
    if not is_valid_token(token):
        raise ValueError(f"invalid ACME token {token!r}")
    return os.path.join(storage, TOKENS_DIR, token)


def split_bundle(pem: bytes) -> tuple[bytes, bytes]:
    """``(chain PEM, private key PEM)`` of a stored bundle; ValueError if either is
    missing. Blocks keep their order, so the leaf stays first in the chain."""
    chain: list[bytes] = []
    keys: list[bytes] = []
    for match in _PEM_BLOCK.finditer(pem):
        kind = match.group(1)
        if kind == b"CERTIFICATE":
            chain.append(match.group(0))
        elif kind.endswith(b"PRIVATE KEY"):
            keys.append(match.group(0))
    if not chain:
        raise ValueError("no certificate in the stored bundle")
    if len(keys) != 1:
        raise ValueError("expected exactly one private key in the stored bundle")
    return b"\n".join(chain) + b"\n", keys[0] + b"\n"


# --- renewal --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCertificate:
    """What the renewal decision needs to know about a leaf certificate."""

    names: frozenset[str]
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int


def describe_certificate(chain_pem: bytes) -> IssuedCertificate:
    """The leaf (first certificate) of ``chain_pem``; ValueError if there is none."""
    from cryptography import x509  # loaded only where certificates are used
    from cryptography.x509.oid import ExtensionOID

    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    try:
        san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        assert isinstance(san.value, x509.SubjectAlternativeName)
        names = frozenset(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = frozenset()
    return IssuedCertificate(names=names, not_before=leaf.not_valid_before_utc,
                             not_after=leaf.not_valid_after_utc, serial=leaf.serial_number)


def renewal_time(cert: IssuedCertificate, buffer_days: int | None) -> datetime.datetime:
    """The earlier of ``not_after - buffer_days`` and "a third of the lifetime left"; a
    buffer longer than half the lifetime is not used (it would order again right after
    every issuance: a 2-minute certificate is always within 2 days of expiry)."""
    lifetime = cert.not_after - cert.not_before
    window = lifetime / 3
    buffer = datetime.timedelta(days=buffer_days or DEFAULT_BUFFER_DAYS)
    if buffer <= lifetime / 2:
        window = max(window, buffer)
    return cert.not_after - window


def renewal_reason(cert: IssuedCertificate | None, domains: tuple[str, ...],
                   now: datetime.datetime, buffer_days: int | None) -> str | None:
    """Why a new certificate must be ordered now, or None while ``cert`` is good."""
    if cert is None:
        return "no certificate is stored"
    if cert.names != frozenset(domains):
        return (f"the stored certificate names {', '.join(sorted(cert.names)) or 'nothing'}, "
                f"not {', '.join(domains)}")
    if now >= renewal_time(cert, buffer_days):
        return f"the certificate expires at {cert.not_after.isoformat()}"
    return None


def next_check_in(cert: IssuedCertificate, now: datetime.datetime,
                  buffer_days: int | None) -> float:
    """Seconds until the certificate should be looked at again: its renewal point, but at
    least every ``MAX_CHECK_INTERVAL`` and never sooner than ``MIN_CHECK_INTERVAL``."""
    due = (renewal_time(cert, buffer_days) - now).total_seconds()
    return max(MIN_CHECK_INTERVAL, min(MAX_CHECK_INTERVAL, due))


class Backoff:
    """Exponential delays after consecutive failures: ``first``, doubled each time, at
    most ``cap``; a success resets it."""

    def __init__(self, first: float = 5.0, cap: float = 3600.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def failed(self) -> float:
        """Record a failure; the delay before the next attempt."""
        self.failures += 1
        return min(self.cap, self.first * 2 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0
