"""Let's Encrypt (ACME) certificates: issue and renew them, and serve what is stored.

Three parts, all on the storage directory laid out in ``pingap.acme``:

* ``CertificateRenewer`` — the once-per-host job (worker 0, like the health probers): for
  each ``acme`` certificate it loads the stored one, and orders a new one when
  ``pingap.acme.renewal_reason`` says so, through ``AcmeIssuer`` (HTTP-01, or DNS-01 with
  ``dns_challenge``: a ``manual`` TXT record the operator sets — logged — or one made
  through Cloudflare's API; either way the order waits until a DNS server serves the
  record, then asks the CA to look; the record is removed afterwards (Cloudflare)). It wakes at
  the renewal point (at least every 10 minutes). A failure is logged and retried with an
  exponential back-off (5 s doubling to 1 h); the stored certificate keeps being served.
  One account key is made once and reused. Talking to the CA happens under a file lock, so
  the worker 0 of a new generation and one still draining never order twice.
* ``CertificateWatcher`` — in every worker: stats each stored certificate once a second
  and, when the file was replaced, parses it and hands it to the worker, which swaps its
  SSL context in for the next handshakes (in-flight connections keep theirs). Files are
  only ever replaced by rename, so a reader sees the old bundle or the new one, whole.
* ``AcmeStorage`` — the files: atomic writes (temp file + rename, mode 0600), challenge
  tokens that any worker reads to answer ``GET /.well-known/acme-challenge/<token>``.

Differences from pingap: the certificate is not written back into the config (it lives in
the storage directory, so a restart serves it without a new order); tokens are files in
the storage directory instead of ``[storages]`` entries; the CA is
``basic.acme_directory_url`` (Let's Encrypt production by default).
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gevent
import josepy as jose
import requests
from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pingap import __version__
from pingap.acme import (
    ACCOUNT_KEY_FILE,
    CERTIFICATES_DIR,
    DIRECTORY_FILE,
    LETS_ENCRYPT_DIRECTORY,
    LOCK_FILE,
    TOKENS_DIR,
    Backoff,
    DnsService,
    IssuedCertificate,
    ca_directory_name,
    certificate_file,
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
from pingap.system.files import write_atomic
from pingap.tls import CertificateEntry, load_pem, parse_entry

log = logging.getLogger("pingap.acme")

#: tried in order when ``basic.acme_storage`` is unset: the first one we may write to
DEFAULT_STORAGE_DIRS = ("/var/lib/pingap/acme", "~/.pingap/acme")
WATCH_INTERVAL = 1.0
#: another process holds the CA lock: look again this soon (not counted as a failure)
LOCK_RETRY = 5.0
ORDER_TIMEOUT = 90.0
NETWORK_TIMEOUT = 30
TOKEN_MAX_AGE = 24 * 3600.0
TOKEN_SWEEP_INTERVAL = 3600.0
#: how long an order waits for its DNS-01 TXT records to be served, and how often it looks
DNS_WAIT = {"manual": 600.0, "cf": 180.0}
DNS_POLL = 2.0


def acme_certificates(config: Any) -> dict[str, Any]:
    """``{name: CertificateConfig}`` of the certificates with ``acme`` set."""
    certificates = getattr(config, "certificates", None) or {}
    return {name: cfg for name, cfg in certificates.items() if cfg.acme}


def default_storage() -> str:
    """``/var/lib/pingap/acme`` when it is (or can be made) writable, else
    ``~/.pingap/acme``."""
    for candidate in DEFAULT_STORAGE_DIRS:
        path = os.path.expanduser(candidate)
        probe = path
        while not os.path.exists(probe):  # the nearest existing ancestor decides
            probe = os.path.dirname(probe)
        if os.access(probe, os.W_OK | os.X_OK):
            return path
    return os.path.expanduser(DEFAULT_STORAGE_DIRS[-1])


def _write_atomic(path: str, data: bytes) -> None:
    write_atomic(path, data, durable=True)


class AcmeStorage:
    """The ACME files of this host for one CA (see ``pingap.acme`` for the layout):
    certificates and the account under the CA's own directory, challenge tokens and the
    lock shared by every CA."""

    def __init__(self, root: str, directory_url: str = LETS_ENCRYPT_DIRECTORY) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.directory_url = directory_url
        self.ca_root = os.path.join(self.root, ca_directory_name(directory_url))

    @classmethod
    def for_config(cls, basic: Any) -> AcmeStorage:
        return cls(basic.acme_storage or default_storage(), basic.acme_directory_url)

    def ensure(self) -> None:
        """Create the directories (private: they hold keys) and name the CA."""
        for path in (self.root, os.path.join(self.root, TOKENS_DIR), self.ca_root,
                     os.path.join(self.ca_root, CERTIFICATES_DIR)):
            os.makedirs(path, mode=0o700, exist_ok=True)
        named = os.path.join(self.ca_root, DIRECTORY_FILE)
        if not os.path.exists(named):
            _write_atomic(named, self.directory_url.encode() + b"\n")

    def certificate_path(self, name: str) -> str:
        return certificate_file(self.ca_root, name)

    def read_certificate(self, name: str) -> bytes | None:
        try:
            with open(self.certificate_path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def write_certificate(self, name: str, bundle: bytes, account: str | None = None) -> None:
        """Store ``name``'s bundle and the CA account URL it was issued under."""
        self.ensure()
        _write_atomic(self.certificate_path(name), bundle)
        if account:
            _write_atomic(self._account_record(name), account.encode() + b"\n")

    def _account_record(self, name: str) -> str:
        return self.certificate_path(name).removesuffix(".pem") + ".account"

    def issued_under(self, name: str) -> str | None:
        """The account URL ``name``'s stored certificate was issued under, if recorded."""
        try:
            with open(self._account_record(name), encoding="utf-8") as f:
                return f.read().strip() or None
        except OSError:
            return None

    def account_key(self) -> bytes:
        """The account key PEM, made on first use (ECDSA P-256: instant to generate, where
        an RSA key can stall the worker's event loop for seconds on a busy host)."""
        path = os.path.join(self.ca_root, ACCOUNT_KEY_FILE)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        self.ensure()
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        _write_atomic(path, pem)
        log.info("created ACME account key %s", path)
        return pem

    def read_token(self, token: str) -> bytes | None:
        """The key authorization of a pending challenge; None if unknown or invalid."""
        if not is_valid_token(token):
            return None
        try:
            with open(token_file(self.root, token), "rb") as f:
                return f.read()
        except OSError:
            return None

    def write_token(self, token: str, key_authorization: bytes) -> None:
        path = token_file(self.root, token)  # ValueError for a token that is not a name
        self.ensure()
        _write_atomic(path, key_authorization)

    def remove_token(self, token: str) -> None:
        try:
            os.unlink(token_file(self.root, token))
        except (OSError, ValueError):
            pass

    def sweep_tokens(self, max_age: float = TOKEN_MAX_AGE) -> None:
        """Remove tokens an interrupted order left behind."""
        directory = os.path.join(self.root, TOKENS_DIR)
        try:
            names = os.listdir(directory)
        except OSError:
            return
        cutoff = time.time() - max_age
        for name in names:
            path = os.path.join(directory, name)
            try:
                if os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
            except OSError:
                pass

    @contextmanager
    def lock(self) -> Iterator[bool]:
        """Hold the CA lock if it is free; yields False when another process has it.
        Non-blocking: a blocking ``flock`` would stall every greenlet of the worker."""
        self.ensure()
        fd = os.open(os.path.join(self.root, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock


class ManualDns:
    """``dns_provider = "manual"``: the operator creates the record; we say which."""

    def __init__(self, certificate: str) -> None:
        self.certificate = certificate

    def add(self, name: str, value: str) -> None:
        log.warning("certificate %s: set the DNS record %s IN TXT %s (waiting for it)",
                    self.certificate, name, value)

    def remove_all(self) -> None:
        pass  # the operator's record: it may go once the certificate is issued


class CloudflareDns:
    """``dns_provider = "cf"``: TXT records through Cloudflare's v4 API (bearer token);
    the zone is the longest parent name Cloudflare knows (pingap: the registrable
    domain)."""

    def __init__(self, service: DnsService) -> None:
        self.endpoint = service.endpoint.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {service.token}"
        self.added: list[tuple[str, str]] = []  # (zone id, record id)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = self.session.request(method, f"{self.endpoint}/client/v4{path}",
                                     timeout=NETWORK_TIMEOUT, **kwargs)
        try:
            body = reply.json()
        except ValueError:
            body = {}
        if not reply.ok or not body.get("success", False):
            raise acme_errors.Error(f"Cloudflare API {method} {path}: HTTP "
                                    f"{reply.status_code} {body.get('errors') or ''}".strip())
        return body.get("result")

    def _zone(self, name: str) -> str:
        for candidate in zone_candidates(name.removeprefix("_acme-challenge.")):
            for zone in self._call("GET", "/zones", params={"name": candidate}) or ():
                if zone.get("name") == candidate:
                    return str(zone["id"])
        raise acme_errors.Error(f"Cloudflare has no zone for {name}")

    def add(self, name: str, value: str) -> None:
        zone = self._zone(name)
        record = self._call("POST", f"/zones/{zone}/dns_records",
                            json={"type": "TXT", "name": name, "content": value, "ttl": 120})
        self.added.append((zone, str(record["id"])))
        log.info("added the DNS record %s IN TXT %s through Cloudflare", name, value)

    def remove_all(self) -> None:
        for zone, record in self.added:
            try:
                self._call("DELETE", f"/zones/{zone}/dns_records/{record}")
            except (OSError, acme_errors.Error) as exc:
                log.warning("could not remove a DNS-01 record through Cloudflare: %s", exc)
        self.added.clear()


def txt_values(name: str, resolver: tuple[str, int] | None) -> set[str]:
    """The TXT strings ``name`` resolves to now (no cache), at ``resolver`` if given."""
    import dns.exception
    import dns.resolver

    lookup = dns.resolver.Resolver(configure=resolver is None)
    if resolver is not None:
        lookup.nameservers = [resolver[0]]
        lookup.port = resolver[1]
    lookup.lifetime = 5.0
    try:
        answer = lookup.resolve(name, "TXT", raise_on_no_answer=False)
    except dns.exception.DNSException:
        return set()
    return {b"".join(r.strings).decode("ascii", "replace") for r in answer}


def wait_for_txt(name: str, value: str, resolver: tuple[str, int] | None,
                 timeout: float) -> None:
    """Until ``name`` serves ``value``; a timeout is logged and the CA gets to look
    anyway (it resolves from elsewhere; pingap does the same)."""
    deadline = time.monotonic() + timeout
    while True:
        if value in txt_values(name, resolver):
            log.info("the DNS record %s IN TXT %s is served", name, value)
            return
        if time.monotonic() >= deadline:
            log.warning("the DNS record %s IN TXT %s is not visible after %.0fs; asking "
                        "the CA to validate anyway", name, value, timeout)
            return
        gevent.sleep(DNS_POLL)


class AcmeIssuer:
    """Orders certificates from one ACME CA with the HTTP-01 or DNS-01 challenge."""

    def __init__(self, storage: AcmeStorage, directory_url: str,
                 ca_bundle: str | None = None) -> None:
        self.storage = storage
        self.directory_url = directory_url
        self.ca_bundle = ca_bundle
        #: the account URL the CA gave for our key at the last contact
        self.account: str | None = None

    def account_uri(self) -> str | None:
        """Ask the CA for our account (``newAccount`` with our key): its URL."""
        self._client()
        return self.account

    def _client(self) -> tuple[client.ClientV2, jose.JWK]:
        """A client logged in with the stored account key. ``newAccount`` with a known
        key returns the existing account (RFC 8555 §7.3.1), so this also re-registers
        with a CA that forgot us."""
        private = serialization.load_pem_private_key(self.storage.account_key(), None)
        account_key: jose.JWK
        if isinstance(private, ec.EllipticCurvePrivateKey):
            account_key, alg = jose.JWKEC(key=private), jose.ES256
        elif isinstance(private, rsa.RSAPrivateKey):  # a key put there by hand
            account_key, alg = jose.JWKRSA(key=private), jose.RS256
        else:
            raise ValueError("the ACME account key must be an EC P-256 or RSA key")
        # requests' ``verify`` takes a CA bundle path as well as a bool
        verify: Any = self.ca_bundle or True
        net = client.ClientNetwork(account_key, alg=alg, user_agent=f"pingap-py/{__version__}",
                                   verify_ssl=verify, timeout=NETWORK_TIMEOUT)
        directory = client.ClientV2.get_directory(self.directory_url, net)
        acme = client.ClientV2(directory, net)
        try:
            acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
        except acme_errors.ConflictError as exc:  # the account exists: use its URL
            net.account = messages.RegistrationResource(uri=exc.location,
                                                        body=messages.Registration())
        self.account = net.account.uri if net.account is not None else None
        return acme, account_key

    def issue(self, domains: tuple[str, ...], dns: DnsService | None = None,
              certificate: str = "") -> bytes:
        """A stored-format bundle (new private key + issued chain) for ``domains``; over
        DNS-01 through ``dns`` when given, else HTTP-01."""
        acme, account_key = self._client()
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        order = acme.new_order(crypto_util.make_csr(key_pem, list(domains)))
        tokens: list[str] = []
        records = (None if dns is None else CloudflareDns(dns) if dns.provider == "cf"
                   else ManualDns(certificate))
        kind = challenges.HTTP01 if dns is None else challenges.DNS01
        try:
            ready = []
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA still trusts an earlier validation
                challenge = next((c for c in authz.body.challenges
                                  if isinstance(c.chall, kind)), None)
                if challenge is None:
                    raise acme_errors.Error(f"the CA offers no {kind.typ} challenge for "
                                            f"{authz.body.identifier.value}")
                response, validation = challenge.response_and_validation(account_key)
                if records is not None and dns is not None:
                    name = dns_record_name(authz.body.identifier.value)
                    records.add(name, validation)
                    ready.append((name, validation, challenge, response))
                    continue
                token = challenge.chall.encode("token")
                self.storage.write_token(token, validation.encode())
                tokens.append(token)
                acme.answer_challenge(challenge, response)
            for name, value, _challenge, _response in ready:  # every record first
                assert dns is not None
                wait_for_txt(name, value, dns.resolver, DNS_WAIT[dns.provider])
            for _name, _value, challenge, response in ready:
                acme.answer_challenge(challenge, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for token in tokens:
                self.storage.remove_token(token)
            if records is not None:
                records.remove_all()
        return key_pem + order.fullchain_pem.encode()


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, acme_errors.ValidationError):
        problems = [f"{authz.body.identifier.value}: {challenge.error}"
                    for authz in exc.failed_authzrs for challenge in authz.body.challenges
                    if challenge.error is not None]
        return "validation failed: " + "; ".join(problems)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Job:
    """A background greenlet running ``_run`` until stopped."""

    _greenlet: gevent.Greenlet | None = None

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None


class CertificateRenewer(_Job):
    """The host's one renewal job over every ``acme`` certificate."""

    def __init__(self, certificates: Mapping[str, Any], storage: AcmeStorage,
                 issuer: AcmeIssuer,
                 clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(
                     datetime.UTC),
                 on_issued: Callable[[str, tuple[str, ...]], None] | None = None) -> None:
        self.certificates = dict(certificates)
        #: called with (name, domains) once a new certificate is stored (this worker
        #: installs it at once and tells the master, for the lets_encrypt webhook)
        self.on_issued = on_issued
        self.storage = storage
        self.issuer = issuer
        self.clock = clock
        self.backoff = {name: Backoff() for name in self.certificates}
        #: our account URL as the CA gave it this run: a certificate recorded under another
        #: one comes from a CA instance that has since lost its state (a reset test CA at
        #: the same URL) and is ordered anew whatever its dates
        self.ca_account: str | None = None
        self.ca_verified = False

    def verify_ca(self) -> None:
        """Once per run: does the CA still know the account our certificates were issued
        under? ``newAccount`` with a known key returns the same account URL; another URL
        means the CA lost its state, so what it issued before is not its chain now."""
        recorded = {name: self.storage.issued_under(name) for name in self.certificates}
        if not any(recorded.values()):
            self.ca_verified = True
            return
        try:
            account = self.issuer.account_uri()
        except Exception as exc:  # unreachable: keep serving, ask again at the next check
            log.info("cannot ask the CA about our account (%s); checking again later",
                     _describe_error(exc))
            return
        self.ca_verified = True
        self.ca_account = account
        for name, issued_under in recorded.items():
            if issued_under and account and issued_under != account:
                log.warning("certificate %s: issued under account %s, which the CA at %s no "
                            "longer knows (now %s): ordering anew", name, issued_under,
                            self.issuer.directory_url, account)

    def current(self, name: str) -> IssuedCertificate | None:
        """The certificate served now: the stored one, else the config's ``tls_cert``
        (pingap writes issued certificates back into the config)."""
        cfg = self.certificates[name]
        try:
            stored = self.storage.read_certificate(name)
            if stored is not None:
                return describe_certificate(split_bundle(stored)[0])
            if cfg.tls_cert and cfg.tls_key:
                return describe_certificate(load_pem(cfg.tls_cert))
        except ValueError as exc:
            log.warning("certificate %s: the current certificate is unreadable (%s); "
                        "ordering a new one", name, exc)
        return None

    def check(self, name: str) -> float:
        """Renew ``name`` if it is due; seconds until it should be checked again."""
        cfg = self.certificates[name]
        domains = parse_domains(cfg.domains)
        if not self.ca_verified:
            self.verify_ca()
        current = self.current(name)
        reason = self._reason(name, current, domains)
        if reason is None:
            assert current is not None
            self.backoff[name].reset()
            return self._keep(name, current)
        with self.storage.lock() as locked:
            if not locked:
                log.info("certificate %s: another process is ordering; checking again in "
                         "%.0fs", name, LOCK_RETRY)
                return LOCK_RETRY
            current = self.current(name)  # it may have just ordered this one
            reason = self._reason(name, current, domains)
            if reason is None:
                assert current is not None
                return self._keep(name, current)
            log.info("certificate %s: ordering %s from %s (%s)", name, ", ".join(domains),
                     self.issuer.directory_url, reason)
            started = time.monotonic()
            try:
                dns = (parse_dns_service(cfg.dns_provider, cfg.dns_service_url, os.environ)
                       if cfg.dns_challenge else None)
                bundle = self.issuer.issue(domains, dns, name)
                issued = describe_certificate(split_bundle(bundle)[0])
                self.storage.write_certificate(name, bundle, self.issuer.account)
            except Exception as exc:  # the CA, the network, the disk: keep what we serve
                delay = self.backoff[name].failed()
                log.warning("certificate %s: ACME order failed (%s); keeping the current "
                            "certificate; retry in %.0fs (failure %d)", name,
                            _describe_error(exc), delay, self.backoff[name].failures)
                return delay
        self.backoff[name].reset()
        log.info("certificate %s: issued for %s in %.1fs (serial %x, valid until %s)", name,
                 ", ".join(domains), time.monotonic() - started, issued.serial,
                 issued.not_after.isoformat())
        if self.on_issued is not None:
            self.on_issued(name, domains)
        return next_check_in(issued, self.clock(), cfg.buffer_days)

    def _reason(self, name: str, current: IssuedCertificate | None,
                domains: tuple[str, ...]) -> str | None:
        issued_under = self.storage.issued_under(name)
        if current is not None and self.ca_account and issued_under \
                and issued_under != self.ca_account:
            return "the CA no longer knows the account it was issued under"
        cfg = self.certificates[name]
        return renewal_reason(current, domains, self.clock(), cfg.buffer_days)

    def _keep(self, name: str, current: IssuedCertificate) -> float:
        buffer_days = self.certificates[name].buffer_days
        log.info("certificate %s: serial %x is valid until %s; renewal due at %s", name,
                 current.serial, current.not_after.isoformat(),
                 renewal_time(current, buffer_days).isoformat())
        return next_check_in(current, self.clock(), buffer_days)

    def _run(self) -> None:
        due = {name: 0.0 for name in self.certificates}
        swept = 0.0
        while True:
            if time.monotonic() - swept >= TOKEN_SWEEP_INTERVAL:
                self.storage.sweep_tokens()
                swept = time.monotonic()
            for name in sorted(due, key=due.__getitem__):
                if due[name] <= time.monotonic():
                    try:
                        wait = self.check(name)
                    except Exception:  # a bug must not end the job for every certificate
                        log.exception("certificate %s: renewal check failed", name)
                        wait = self.backoff[name].failed()
                    due[name] = time.monotonic() + wait
            gevent.sleep(max(0.05, min(due.values()) - time.monotonic()))


class CertificateWatcher(_Job):
    """Installs stored ACME certificates into this worker when their files change."""

    def __init__(self, storage: AcmeStorage, certificates: Mapping[str, Any],
                 install: Callable[[CertificateEntry], None]) -> None:
        self.storage = storage
        self.certificates = dict(certificates)
        self.install = install
        self._seen: dict[str, tuple[int, int, int]] = {}

    def scan(self) -> None:
        """Install every stored certificate whose file changed since the last scan."""
        for name, cfg in self.certificates.items():
            path = self.storage.certificate_path(name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # nothing issued yet
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._seen.get(name) == stamp:
                continue
            self._seen[name] = stamp
            try:
                with open(path, "rb") as f:
                    chain, key = split_bundle(f.read())
                entry = parse_entry(name, dataclasses.replace(
                    cfg, tls_cert=chain.decode(), tls_key=key.decode()))
            except (OSError, ValueError) as exc:
                log.error("certificate %s: stored file %s is unusable (%s); still serving "
                          "the previous one", name, path, exc)
                continue
            self.install(entry)
            log.info("certificate %s: serving the stored certificate for %s (valid until "
                     "%s)", name, ", ".join(entry.names), entry.not_after.isoformat())

    def _run(self) -> None:
        while True:
            gevent.sleep(WATCH_INTERVAL)
            try:
                self.scan()
            except Exception:  # keep watching whatever one scan hit
                log.exception("scanning stored ACME certificates failed")
