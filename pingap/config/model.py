"""The typed configuration model: one frozen dataclass per pingap config section.

Field names are exactly pingap's TOML keys. Each TOML field is declared with
``setting(kind, doc, default)``: ``kind`` tells the loader how to check and convert
the TOML value, ``doc`` is the one-line reference text (read back with
``field_docs``, which generates the reference page). Durations are seconds
(``float``), byte sizes are bytes (``int``), string arrays are tuples.

``NOT_YET_SUPPORTED`` lists the pingap fields we accept but do not act on yet; the
loader warns once per (field, entry) where one is set to a non-default value.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from pingap.config.addresses import parse_host_port, split_listen_addrs
from pingap.errors import Problem

__all__ = [
    "NOT_YET_SUPPORTED",
    "OBSOLETE_KEYS",
    "OBSOLETE_TLS_KEYS",
    "BasicConfig",
    "CertificateConfig",
    "Kind",
    "LocationConfig",
    "PingapConfig",
    "PluginConfig",
    "ServerConfig",
    "StorageConfig",
    "UpstreamConfig",
    "field_docs",
    "setting",
]

# Dotted "<section>.<key>" names of pingap fields that load but do nothing yet.
# Shrink this set as features land; nothing else needs to change.
NOT_YET_SUPPORTED: frozenset[str] = frozenset(
    {
        # basic
        "basic.sentry",
        "basic.pyroscope",
        "basic.log_compress_algorithm",
        "basic.log_compress_level",
        "basic.log_compress_days_ago",
        "basic.log_compress_time_point_hour",
        "basic.log_buffered_size",
        "basic.log_format_json",
        "basic.work_stealing",
        "basic.listener_tasks_per_fd",
        "basic.auto_restart_check_interval",
        # servers
        "servers.threads",
        "servers.tcp_idle",
        "servers.tcp_interval",
        "servers.tcp_probe_count",
        "servers.tcp_user_timeout",
        "servers.enable_server_timing",
        "servers.otlp_exporter",
        "servers.tcp_fastopen",
        "servers.tls_ciphersuites",
        # locations
        # upstreams
        "upstreams.discovery",
        "upstreams.dns_server",
        "upstreams.dns_domain",
        "upstreams.dns_search",
        "upstreams.ipv4_only",
        "upstreams.enable_tracer",
        "upstreams.enable_backend_stats",
        "upstreams.backend_stats_interval",
        "upstreams.backend_failure_status_code",
        "upstreams.circuit_break_max_consecutive_failures",
        "upstreams.circuit_break_max_failure_percent",
        "upstreams.circuit_break_min_requests_threshold",
        "upstreams.circuit_break_half_open_consecutive_success_threshold",
        "upstreams.circuit_break_open_duration",
        "upstreams.tcp_fast_open",
        "upstreams.tcp_idle",
        "upstreams.tcp_interval",
        "upstreams.tcp_probe_count",
        "upstreams.tcp_user_timeout",
        # certificates (TLS comes with the TLS/HTTP-2 work)
        "certificates.is_ca",
        "upstreams.tcp_recv_buf",
    }
)

# Keys older pingap releases had and pingap 0.13 no longer reads (seen in real configs, in
# pingap's web UI types and its conf/ comments), with what replaced them. Setting one is a
# warning naming it obsolete; the value is ignored, as pingap ignores it.
OBSOLETE_KEYS: Mapping[str, str] = {
    "basic.cache_directory": "the file cache is configured on the cache plugin "
    "(its 'directory' option) since pingap 0.12",
    "basic.cache_max_size": "the cache size is configured on the cache plugin since pingap 0.12",
    "certificates.certificate_file": "use tls_cert and tls_key (a PEM, a file path or base64)",
}

# Obsolete keys whose silent removal would change what a listener is: pingap ignores them
# and serves plain HTTP, so these stay errors here, with the way to the current form.
OBSOLETE_TLS_KEYS: Mapping[str, str] = {
    "servers.tls_cert": "move it to a [certificates.<name>] entry and set "
    "global_certificates = true on the server",
    "servers.tls_key": "move it to a [certificates.<name>] entry and set "
    "global_certificates = true on the server",
    "servers.certificate_file": "move it to a [certificates.<name>] entry (tls_cert, "
    "tls_key) and set global_certificates = true on the server",
    "servers.lets_encrypt": "use a [certificates.<name>] entry with acme = \"lets_encrypt\" "
    "and domains, and set global_certificates = true on the server",
}

# Values of not-yet-supported fields that mean "feature off" besides the default
# (compared lower-cased): no warning for them.
INERT_VALUES: Mapping[str, frozenset[str]] = {
    "upstreams.discovery": frozenset({"static", "", "transparent", "dns"}),
}


class Kind(enum.Enum):
    """How a TOML value is checked and converted."""

    STR = "a string"
    BOOL = "a boolean"
    INT = "an integer"
    DURATION = 'a duration like "10s"'
    BYTESIZE = 'a byte size like "1mb"'
    STR_LIST = "an array of strings"


U8 = (0, 255)
U16 = (0, 65_535)
U32 = (0, 2**32 - 1)
USIZE = (0, 2**64 - 1)


def setting(
    kind: Kind,
    doc: str,
    default: Any = None,
    *,
    bounds: tuple[int, int] = USIZE,
    required: bool = False,
) -> Any:
    """Declare a TOML field: its kind, its reference doc line and its default.

    ``bounds`` is the inclusive range of an ``INT`` (pingap's unsigned Rust types);
    a ``required`` field has no default and its key must be present in the TOML.
    """
    metadata = {"kind": kind, "doc": doc, "bounds": bounds}
    if required:
        return field(metadata=metadata)
    if isinstance(default, tuple | list):
        return field(default=tuple(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def field_docs(cls: type) -> dict[str, str]:
    """``{toml key: doc line}`` of a section class, in declaration order."""
    return {f.name: f.metadata["doc"] for f in fields(cls) if "kind" in f.metadata}


@dataclass(frozen=True, slots=True, kw_only=True)
class BasicConfig:
    """``[basic]``: process-wide settings."""

    name: str | None = setting(Kind.STR, "Instance name (unused at runtime, as in pingap).")
    error_template: str | None = setting(
        Kind.STR,
        "Error page template; {{version}}, {{content}}, {{error_type}}; JSON if it starts with '{'.",
    )
    pid_file: str | None = setting(
        Kind.STR, "PID file (default /run/pingap.pid, else a writable fallback)."
    )
    error_log: str | None = setting(
        Kind.STR, "File the daemon's stderr goes to (only with --daemon)."
    )
    upgrade_sock: str = setting(
        Kind.STR,
        "Unix socket handing listeners to the new process on upgrade.",
        "/tmp/pingap_upgrade.sock",
    )
    user: str | None = setting(Kind.STR, "User to switch to after daemonizing.")
    group: str | None = setting(Kind.STR, "Group to switch to after daemonizing.")
    threads: int = setting(
        Kind.INT, "Worker processes (pingap: threads per server); 0 = CPU count.", 1
    )
    work_stealing: bool = setting(Kind.BOOL, "Work stealing between a service's threads.", True)
    listener_tasks_per_fd: int = setting(Kind.INT, "Parallel accept tasks per listening fd.", 1)
    grace_period: float = setting(
        Kind.DURATION, "Drain time between a stop signal and the final shutdown.", 300.0
    )
    graceful_shutdown_timeout: float = setting(
        Kind.DURATION, "Timeout of the final shutdown step.", 5.0
    )
    upstream_keepalive_pool_size: int = setting(
        Kind.INT, "Idle upstream connections kept per worker.", 128
    )
    trusted_proxies: tuple[str, ...] = setting(
        Kind.STR_LIST, "IPs/CIDRs whose X-Forwarded-For / X-Real-IP are trusted.", ()
    )
    webhook: str | None = setting(Kind.STR, "Notification webhook URL.")
    webhook_type: str | None = setting(
        Kind.STR, "Webhook flavour: wecom, dingtalk, or generic JSON."
    )
    webhook_notifications: tuple[str, ...] = setting(
        Kind.STR_LIST, "Event categories sent to the webhook.", ()
    )
    log_level: str | None = setting(
        Kind.STR, "Application log filter, e.g. 'info' or 'pingap=debug'."
    )
    log_buffered_size: int | None = setting(
        Kind.BYTESIZE, "Buffer for file application logs (< 4096 B: none)."
    )
    log_format_json: bool = setting(Kind.BOOL, "Application log lines as JSON.", False)
    sentry: str | None = setting(Kind.STR, "Sentry DSN.")
    pyroscope: str | None = setting(Kind.STR, "Pyroscope URL with query options.")
    auto_restart_check_interval: float = setting(
        Kind.DURATION, "Config change detection period.", 90.0
    )
    log_compress_algorithm: str | None = setting(Kind.STR, "Compress old log files: gzip or zstd.")
    log_compress_level: int = setting(Kind.INT, "Log compression level.", 9, bounds=U8)
    log_compress_days_ago: int = setting(
        Kind.INT, "Compress log files not accessed for N days.", 7, bounds=U16
    )
    log_compress_time_point_hour: int = setting(
        Kind.INT, "Local hour at which log compression runs.", 0, bounds=(0, 23)
    )
    redis_url: str | None = setting(
        Kind.STR,
        "Not in pingap: redis:// (or rediss://, unix://) URL for rate-limit counters shared "
        "by several hosts; unset = host-wide shared memory.",
    )
    redis_failure_mode: str = setting(
        Kind.STR,
        "Not in pingap: when Redis is unreachable, 'open' admits requests, 'closed' "
        "answers 429.",
        "open",
    )
    acme_directory_url: str = setting(
        Kind.STR,
        "Not in pingap: ACME directory of the CA that issues acme certificates (default "
        "Let's Encrypt production; staging: "
        "https://acme-staging-v02.api.letsencrypt.org/directory).",
        "https://acme-v02.api.letsencrypt.org/directory",
    )
    acme_ca_bundle: str | None = setting(
        Kind.STR,
        "Not in pingap: PEM file of CA certificates trusted for the ACME directory's HTTPS "
        "(default: the system's trust store).",
    )
    acme_storage: str | None = setting(
        Kind.STR,
        "Not in pingap: directory for the ACME account key, issued certificates and "
        "HTTP-01 tokens (default /var/lib/pingap/acme if writable, else ~/.pingap/acme).",
    )
    remark: str | None = setting(Kind.STR, "Free-text note.")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """``[servers.<name>]``: one listener and the locations it routes to."""

    name: str
    addr: str = setting(
        Kind.STR, "Listen address(es), comma separated: '0.0.0.0:80,[::]:80'.", required=True
    )
    access_log: str | None = setting(
        Kind.STR, "Access log: '[path[?opts] ]format' (combined/common/short/tiny/{...})."
    )
    locations: tuple[str, ...] = setting(
        Kind.STR_LIST, "Location names; matched in weight order.", ()
    )
    threads: int | None = setting(Kind.INT, "Worker threads of this listener (0 = CPU count).")
    tls_cipher_list: str | None = setting(Kind.STR, "OpenSSL cipher list for TLS <= 1.2.")
    tls_ciphersuites: str | None = setting(Kind.STR, "TLS 1.3 cipher suites.")
    tls_min_version: str | None = setting(
        Kind.STR, "Minimum TLS version: tlsv1.1, tlsv1.2, tlsv1.3."
    )
    tls_max_version: str | None = setting(
        Kind.STR, "Maximum TLS version: tlsv1.1, tlsv1.2, tlsv1.3."
    )
    global_certificates: bool = setting(
        Kind.BOOL, "TLS listener using the global SNI certificate store.", False
    )
    enabled_h2: bool = setting(Kind.BOOL, "Offer HTTP/2 (ALPN h2 on TLS, h2c on plain TCP).", False)
    tcp_idle: float | None = setting(Kind.DURATION, "TCP keepalive idle time.")
    tcp_interval: float | None = setting(Kind.DURATION, "TCP keepalive probe interval.")
    tcp_probe_count: int | None = setting(Kind.INT, "TCP keepalive probe count.")
    tcp_user_timeout: float | None = setting(Kind.DURATION, "TCP_USER_TIMEOUT (Linux).")
    tcp_fastopen: int | None = setting(Kind.INT, "TCP Fast Open backlog.")
    reuse_port: bool | None = setting(Kind.BOOL, "SO_REUSEPORT on the listener.")
    downstream_read_timeout: float | None = setting(
        Kind.DURATION, "Per-request client read timeout."
    )
    downstream_write_timeout: float | None = setting(
        Kind.DURATION, "Per-request client write timeout."
    )
    prometheus_metrics: str | None = setting(
        Kind.STR, "Metrics pull path ('/metrics') or push URL."
    )
    otlp_exporter: str | None = setting(Kind.STR, "OTLP gRPC endpoint with query options.")
    includes: tuple[str, ...] = setting(
        Kind.STR_LIST, "Storage fragments merged into this entry.", ()
    )
    modules: tuple[str, ...] = setting(Kind.STR_LIST, "Server modules; only 'grpc-web' exists.", ())
    enable_server_timing: bool = setting(Kind.BOOL, "Add a server-timing response header.", False)
    http1_codec: str = setting(
        Kind.STR,
        "Not in pingap: the HTTP/1 request parser, 'fast' (httptools/llhttp) or 'h11' (the "
        "pure-Python reference); both make the same decisions, 'fast' at a fraction of the cost.",
        "fast",
    )
    remark: str | None = setting(Kind.STR, "Free-text note.")

    @property
    def listen_addrs(self) -> tuple[tuple[str, int], ...]:
        """``(host, port)`` of each listen address; IPv6 hosts without brackets.

        Raises ``ValueError`` on a malformed address (a loaded config never has one).
        """
        return tuple(parse_host_port(item) for item in split_listen_addrs(self.addr))


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationConfig:
    """``[locations.<name>]``: a route (host/path match) to an upstream, with plugins."""

    name: str
    upstream: str | None = setting(
        Kind.STR, "Upstream name, or '$var' to take it from a captured variable."
    )
    path: str | None = setting(Kind.STR, "'=/exact', '~regex' or a plain prefix; unset = any path.")
    host: str | None = setting(
        Kind.STR, "Comma list of 'host', '*.suffix', '~regex'; unset = any host."
    )
    match_headers: tuple[str, ...] = setting(
        Kind.STR_LIST, "Extra conditions: 'name:value' or 'name'.", ()
    )
    match_query: tuple[str, ...] = setting(
        Kind.STR_LIST, "Extra conditions on query parameters.", ()
    )
    match_cookies: tuple[str, ...] = setting(Kind.STR_LIST, "Extra conditions on cookies.", ())
    proxy_set_headers: tuple[str, ...] = setting(
        Kind.STR_LIST, "'Name:value' set on the upstream request.", ()
    )
    proxy_add_headers: tuple[str, ...] = setting(
        Kind.STR_LIST, "'Name:value' appended to the upstream request.", ()
    )
    enable_reverse_proxy_headers: bool = setting(
        Kind.BOOL, "Also set x-real-ip / x-forwarded-* headers.", False
    )
    rewrite: str | None = setting(Kind.STR, "Path rewrite: '<regex> <replacement>'.")
    weight: int | None = setting(
        Kind.INT, "Manual match priority; overrides the computed weight.", bounds=U16
    )
    plugins: tuple[str, ...] = setting(Kind.STR_LIST, "Plugin names, run in list order.", ())
    client_max_body_size: int | None = setting(
        Kind.BYTESIZE, "Request body limit (413 above); unset = none."
    )
    client_body_buffer_size: int | None = setting(
        Kind.BYTESIZE,
        "Not in pingap: read the whole request body before connecting upstream (nginx's "
        "proxy_request_buffering), this much in memory, the rest in a temp file; unset = "
        "stream it as it arrives (pingap's behaviour).",
    )
    max_processing: int = setting(
        Kind.INT, "Max in-flight requests (429 above); 0 = unlimited.", 0, bounds=(0, 2**31 - 1)
    )
    grpc_web: bool = setting(Kind.BOOL, "Translate gRPC-Web to gRPC.", False)
    max_retries: int | None = setting(Kind.INT, "Retries on upstream connect failure.", bounds=U8)
    max_retry_window: float | None = setting(
        Kind.DURATION, "No retry once the request is older than this."
    )
    includes: tuple[str, ...] = setting(
        Kind.STR_LIST, "Storage fragments merged into this entry.", ()
    )
    remark: str | None = setting(Kind.STR, "Free-text note.")


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    """``[upstreams.<name>]``: a pool of backends with balancing and health checks."""

    name: str
    addrs: tuple[str, ...] = setting(Kind.STR_LIST, "Backends: 'host[:port] [weight]'.", ())
    discovery: str | None = setting(
        Kind.STR, "static, dns, docker or transparent; guessed when unset."
    )
    update_frequency: float | None = setting(Kind.DURATION, "Re-discovery period (dns/docker).")
    dns_server: str | None = setting(Kind.STR, "Comma-separated resolver IPs.")
    dns_domain: str | None = setting(Kind.STR, "Resolver domain.")
    dns_search: str | None = setting(Kind.STR, "Comma-separated resolver search list.")
    ipv4_only: bool = setting(Kind.BOOL, "Drop IPv6 discovery results.", False)
    algo: str = setting(
        Kind.STR, "round_robin or hash:<url|ip|path|header:N|cookie:N|query:N>.", "round_robin"
    )
    sni: str | None = setting(
        Kind.STR, "Enables TLS to the backends; the SNI ('$host' = request host)."
    )
    verify_cert: bool = setting(Kind.BOOL, "Verify the backend certificate.", True)
    alpn: str = setting(Kind.STR, "H1, H2 or H2H1.", "H1")
    max_h2_streams: int = setting(Kind.INT, "Concurrent streams per upstream h2 connection.", 1)
    health_check: str | None = setting(
        Kind.STR, "tcp://, http(s):// or grpc:// check URL; unset = TCP connect."
    )
    connection_timeout: float | None = setting(Kind.DURATION, "TCP connect timeout.")
    total_connection_timeout: float | None = setting(
        Kind.DURATION, "Connect + TLS handshake timeout."
    )
    read_timeout: float | None = setting(Kind.DURATION, "Per-read timeout.")
    write_timeout: float | None = setting(Kind.DURATION, "Per-write timeout.")
    idle_timeout: float = setting(Kind.DURATION, "Keep-alive idle time in the pool.", 60.0)
    tcp_idle: float | None = setting(Kind.DURATION, "TCP keepalive idle time.")
    tcp_interval: float | None = setting(Kind.DURATION, "TCP keepalive probe interval.")
    tcp_probe_count: int | None = setting(Kind.INT, "TCP keepalive probe count (<= 16).")
    tcp_user_timeout: float | None = setting(Kind.DURATION, "TCP_USER_TIMEOUT (Linux).")
    tcp_recv_buf: int | None = setting(Kind.BYTESIZE, "SO_RCVBUF.")
    tcp_fast_open: bool | None = setting(Kind.BOOL, "TCP Fast Open to the backends.")
    enable_tracer: bool = setting(Kind.BOOL, "Track live upstream connections.", False)
    enable_backend_stats: bool = setting(
        Kind.BOOL, "Per-backend sliding-window stats (circuit breaker).", False
    )
    backend_stats_interval: float = setting(Kind.DURATION, "Backend stats window.", 60.0)
    backend_failure_status_code: str | None = setting(
        Kind.STR, "Statuses counted as failures, e.g. '502,503'."
    )
    circuit_break_max_consecutive_failures: int = setting(
        Kind.INT, "Trip after N consecutive failures; 0 = off.", 0, bounds=U32
    )
    circuit_break_max_failure_percent: int = setting(
        Kind.INT, "Trip at this window failure percentage; 0 = off.", 0, bounds=(0, 100)
    )
    circuit_break_min_requests_threshold: int = setting(
        Kind.INT, "Window requests needed before the percentage rule applies.", 10
    )
    circuit_break_half_open_consecutive_success_threshold: int = setting(
        Kind.INT, "Half-open probes / successes needed to close.", 5, bounds=U32
    )
    circuit_break_open_duration: float = setting(
        Kind.DURATION, "Time a tripped backend stays open.", 10.0
    )
    includes: tuple[str, ...] = setting(
        Kind.STR_LIST, "Storage fragments merged into this entry.", ()
    )
    remark: str | None = setting(Kind.STR, "Free-text note.")


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginConfig:
    """``[plugins.<name>]``: a plugin instance; options are checked per category.

    ``options`` holds every key but ``category``, ``step`` and ``remark``, as TOML
    values (durations and byte sizes stay strings, as pingap's plugins read them).
    """

    name: str
    category: str
    step: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    remark: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateConfig:
    """``[certificates.<name>]``: a TLS certificate for the SNI store, or an ACME order."""

    name: str
    domains: str | None = setting(Kind.STR, "Comma-separated names served (and ordered via ACME).")
    tls_cert: str | None = setting(Kind.STR, "Certificate chain: PEM, file path, or base64 PEM.")
    tls_key: str | None = setting(Kind.STR, "Private key: PEM, file path, or base64 PEM.")
    is_default: bool = setting(Kind.BOOL, "Fallback certificate when SNI matches nothing.", False)
    is_ca: bool = setting(Kind.BOOL, "A CA minting per-SNI leaf certificates.", False)
    acme: str | None = setting(Kind.STR, "'lets_encrypt' enables automatic issuance.")
    dns_challenge: bool = setting(Kind.BOOL, "ACME DNS-01 instead of HTTP-01.", False)
    dns_provider: str | None = setting(
        Kind.STR, "DNS-01 provider: manual (default) or cf/cloudflare (ali, tencent and "
        "huawei are pingap's, not built here)."
    )
    dns_service_url: str | None = setting(
        Kind.STR, "DNS provider endpoint and credentials, e.g. "
        "https://api.cloudflare.com?token=$ENV:CF_TOKEN; ?resolver=host:port (ours) names "
        "the DNS server that confirms the TXT record.")
    buffer_days: int | None = setting(Kind.INT, "Days before expiry to renew / warn.", bounds=U16)
    remark: str | None = setting(Kind.STR, "Free-text note.")


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """``[storages.<name>]``: a reusable TOML fragment (``config``) or a secret."""

    name: str
    category: str = setting(
        Kind.STR, "'config' (TOML fragment for includes) or 'secret'.", required=True
    )
    value: str = setting(Kind.STR, "The content (for secrets: base64 ciphertext).", required=True)
    secret: str | None = setting(Kind.STR, "Encryption key of a secret storage.")
    created_at: int | None = setting(Kind.INT, "Unix time the entry was created (ACME tokens).")
    remark: str | None = setting(Kind.STR, "Free-text note.")


@dataclass(frozen=True, slots=True, kw_only=True)
class PingapConfig:
    """A whole loaded and validated configuration.

    Section dicts keep the order in which entries appear in the files. ``sources``
    maps ``"<section>.<name>"`` (and ``"basic"``) to the file that defined it;
    ``digest`` is the sha256 of the source bytes in load order; ``warnings`` are
    problems that do not stop loading (fields accepted but not acted on).
    """

    basic: BasicConfig = field(default_factory=BasicConfig)
    servers: dict[str, ServerConfig] = field(default_factory=dict)
    locations: dict[str, LocationConfig] = field(default_factory=dict)
    upstreams: dict[str, UpstreamConfig] = field(default_factory=dict)
    plugins: dict[str, PluginConfig] = field(default_factory=dict)
    certificates: dict[str, CertificateConfig] = field(default_factory=dict)
    storages: dict[str, StorageConfig] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    digest: str = ""
    warnings: tuple[Problem, ...] = ()
    #: ``"<entry>.<key>"`` -> (file, note) for keys that came from another file than their
    #: entry (a storage merged by ``includes``, a ``[basic]`` key in a second file)
    origins: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def problem(self, entry: str, key: str, message: str) -> Problem:
        """A Problem about ``key`` (``"algo"``, ``"plugins[1]"``, ``""`` for the entry
        itself) of ``entry`` (``"basic"`` or ``"<section>.<name>"``), located in the file
        that key came from."""
        top = re.split(r"[.\[]", key, maxsplit=1)[0]
        file, note = self.origins.get(f"{entry}.{top}", (self.sources.get(entry, ""), ""))
        return Problem(file, f"{entry}.{key}" if key else entry, message + note)
