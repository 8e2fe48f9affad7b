"""TLS termination: many certificates on one port, picked by SNI, in pingap's three
certificate forms (inline PEM, file path, base64)."""

from __future__ import annotations

import base64
import datetime
import os
import signal
import socket
import ssl
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.proc import free_port, wait_for


def make_cert(*names: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert_pem, key_pem


def served_names(port: int, sni: str | None) -> list[str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


def https_get(port: int, sni: str, path: str) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n"
                        .encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return data


def toml_str(text: str) -> str:
    return '"""' + text + '"""'


def https_server(port: int, backend: str) -> str:
    """The upstream, location and TLS server (``global_certificates``) a test puts
    behind its certificates."""
    return f"""
[upstreams.u]
addrs = ["{backend}"]
[locations.all]
upstream = "u"
[servers.https]
addr = "127.0.0.1:{port}"
locations = ["all"]
global_certificates = true
"""


def test_sni_picks_each_certificate_and_the_default(tmp_path: Path, backends, pingap) -> None:
    backend = backends()
    a_cert, a_key = make_cert("a.test")
    b_cert, b_key = make_cert("b.test")
    c_cert, c_key = make_cert("*.c.test")
    d_cert, d_key = make_cert("default.test")
    (tmp_path / "b.crt").write_text(b_cert)
    (tmp_path / "b.key").write_text(b_key)
    port = free_port()
    pingap(f"""
[certificates.a]
tls_cert = {toml_str(a_cert)}
tls_key = {toml_str(a_key)}
[certificates.b]
tls_cert = "{tmp_path / 'b.crt'}"
tls_key = "{tmp_path / 'b.key'}"
[certificates.c]
tls_cert = "{base64.b64encode(c_cert.encode()).decode()}"
tls_key = "{base64.b64encode(c_key.encode()).decode()}"
[certificates.fallback]
tls_cert = {toml_str(d_cert)}
tls_key = {toml_str(d_key)}
is_default = true
[upstreams.u]
addrs = ["{backend.addr}"]
[locations.all]
upstream = "u"
enable_reverse_proxy_headers = true
[servers.https]
addr = "127.0.0.1:{port}"
locations = ["all"]
global_certificates = true
tls_min_version = "tlsv1.2"
""", port=port)
    assert served_names(port, "a.test") == ["a.test"]
    assert served_names(port, "b.test") == ["b.test"]
    assert served_names(port, "www.c.test") == ["*.c.test"]
    assert served_names(port, "unknown.test") == ["default.test"]
    assert served_names(port, None) == ["default.test"]
    reply = https_get(port, "a.test", "/secure")
    assert reply.startswith(b"HTTP/1.1 200")
    assert ["X-Forwarded-Proto", "https"] in backend.requests()[-1]["headers"]


def test_workers_serve_the_masters_certificate_facts_for_the_same_bytes_only(
        tmp_path: Path, backends, pingap) -> None:
    """The master parses the certificates; its workers take the names and expiry it found
    for the bytes it parsed, and do not load ``cryptography`` (~10 MB each) for that. A
    worker that starts after a certificate file changed (without a reload) parses what it
    reads and serves it under its own names."""
    backend = backends()
    cert, key = tmp_path / "site.crt", tmp_path / "site.key"
    for path, text in zip((cert, key), make_cert("site.test"), strict=True):
        path.write_text(text)
    d_cert, d_key = make_cert("default.test")
    port = free_port()
    proc = pingap(f"""
[certificates.site]
tls_cert = "{cert}"
tls_key = "{key}"
[certificates.fallback]
tls_cert = {toml_str(d_cert)}
tls_key = {toml_str(d_key)}
is_default = true
{https_server(port, backend.addr)}""", port=port, args=["--no-spare"])
    assert served_names(port, "site.test") == ["site.test"]
    [worker] = wait_for(proc.worker_pids, what="the worker")
    assert "cryptography" not in Path(f"/proc/{worker}/maps").read_text()

    for path, text in zip((cert, key), make_cert("renamed.test"), strict=True):
        path.write_text(text)
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: [p for p in proc.worker_pids() if p != worker], what="a new worker")
    assert served_names(port, "renamed.test") == ["renamed.test"]
    assert served_names(port, "site.test") == ["default.test"]


def test_bad_certificate_config_is_reported(tmp_path: Path) -> None:
    a_cert, _ = make_cert("a.test")
    _, other_key = make_cert("b.test")
    conf = tmp_path / "pingap.toml"
    conf.write_text(f"""
[certificates.a]
tls_cert = {toml_str(a_cert)}
tls_key = {toml_str(other_key)}
[certificates.broken]
tls_cert = "not a certificate"
tls_key = "{tmp_path / 'missing.key'}"
[upstreams.u]
addrs = ["127.0.0.1:9"]
[locations.all]
upstream = "u"
[servers.s]
addr = "127.0.0.1:{free_port()}"
locations = ["all"]
global_certificates = true
tls_max_version = "tls9"
""")
    result = subprocess.run(["pingap", "-t", "-c", str(conf)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "certificates.a.tls_key: the key does not belong to the certificate" in result.stderr
    assert "certificates.broken.tls_cert" in result.stderr
    assert "servers.s.tls_max_version" in result.stderr


def test_certificate_loading_leaves_nothing_in_tmpdir(tmp_path: Path, backends, pingap) -> None:
    """``ssl`` loads keys from files only: a worker hands it each certificate and key as
    an in-memory file, at start and at a reload, so nothing of them is written to
    ``$TMPDIR`` (which holds only the master's config copy). A stopped pingap leaves
    ``$TMPDIR`` as it found it."""
    backend = backends()
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    cert, key = make_cert("site.test")
    port = free_port()
    config = f"""
[certificates.site]
tls_cert = {toml_str(cert)}
tls_key = {toml_str(key)}
is_default = true
{https_server(port, backend.addr)}"""
    proc = pingap(config, port=port, env={"TMPDIR": str(tmpdir)})
    assert https_get(port, "site.test", "/a").startswith(b"HTTP/1.1 200")
    workers = wait_for(proc.worker_pids, what="the workers")
    os.kill(proc.pid, signal.SIGHUP)
    wait_for(lambda: not set(proc.worker_pids()) & set(workers), timeout=20,
             what="the reloaded generation's workers")
    assert https_get(port, "site.test", "/b").startswith(b"HTTP/1.1 200")
    assert [p.name for p in tmpdir.iterdir() if not p.name.startswith("pingap-config-")] == []
    assert proc.stop() == 0
    assert list(tmpdir.iterdir()) == []
