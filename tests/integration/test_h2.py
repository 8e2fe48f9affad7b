"""HTTP/2 to clients, end to end with real clients: curl (ALPN h2 on TLS, h2c prior
knowledge) and h2load (many multiplexed streams across reloads)."""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_tls import make_cert, served_names, toml_str
from tests.support.backend import pattern
from tests.support.configs import proxy_config
from tests.support.proc import free_port, wait_for


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True,
                          timeout=30)


def curl_reply(*args: str) -> tuple[str, bytes]:
    """(negotiated HTTP version, body) of one curl request."""
    result = curl("-w", "\n%{http_version}", *args)
    assert result.returncode == 0, result.stderr
    body, _, version = result.stdout.rpartition(b"\n")
    return version.decode(), body


def test_one_port_three_certificates_http2_and_http1_agree(tmp_path: Path, backends,
                                                           pingap) -> None:
    backend = backends()
    certs = {name: make_cert(name) for name in ("a.test", "b.test", "c.test", "default.test")}
    port = free_port()
    sections = "".join(f"""
[certificates.{name.split('.')[0]}]
tls_cert = {toml_str(cert)}
tls_key = {toml_str(key)}
{'is_default = true' if name == 'default.test' else ''}
""" for name, (cert, key) in certs.items())
    pingap(sections + proxy_config(port, backend.addr, server="""
global_certificates = true
enabled_h2 = true
"""), port=port)
    path = "/big?n=300000&cl=1"
    for name in ("a.test", "b.test", "c.test"):
        assert served_names(port, name) == [name]
        url = f"https://{name}:{port}{path}"
        resolve = f"{name}:{port}:127.0.0.1"
        version2, body2 = curl_reply("-k", "--http2", "--resolve", resolve, url)
        version1, body1 = curl_reply("-k", "--http1.1", "--resolve", resolve, url)
        assert (version2, version1) == ("2", "1.1")
        assert body2 == body1 == pattern(300000)
    assert served_names(port, "unknown.test") == ["default.test"]
    version, _ = curl_reply("-k", "--http2", "--resolve", f"unknown.test:{port}:127.0.0.1",
                            f"https://unknown.test:{port}/x")
    assert version == "2"
    # both protocols reached the backend as HTTP/1.1 requests for the same target
    seen = [r["target"] for r in backend.requests() if r["target"] == path]
    assert len(seen) == 6


def test_h2c_prior_knowledge_and_http1_share_a_plaintext_port(tmp_path: Path, backends,
                                                              pingap) -> None:
    backend = backends()
    port = free_port()
    pingap(proxy_config(port, backend.addr, server="enabled_h2 = true"), port=port)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(pattern(2_000_000))
    version, body = curl_reply("--http2-prior-knowledge", "--data-binary", f"@{payload}",
                               f"http://127.0.0.1:{port}/upload")
    assert version == "2"
    assert f'"sha256": "{hashlib.sha256(pattern(2_000_000)).hexdigest()}"' in body.decode()
    version, body = curl_reply(f"http://127.0.0.1:{port}/upload", "--data-binary", "plain")
    assert version == "1.1" and b'"length": 5' in body
    # response trailers arrive as a trailing HEADERS frame
    result = curl("-v", "--http2-prior-knowledge", f"http://127.0.0.1:{port}/trailers")
    assert b"< x-checksum: abc123" in result.stderr.lower()
    # without enabled_h2 the preface is not HTTP/1.1: rejected, nothing forwarded
    before = len(backend.requests())
    other = free_port()
    pingap(proxy_config(other, backend.addr), port=other, name="plain.toml")
    result = curl("--http2-prior-knowledge", f"http://127.0.0.1:{other}/")
    assert result.returncode != 0
    assert len(backend.requests()) == before


def h2load_counts(output: str) -> dict[str, int]:
    found = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", output)
    assert found, output
    keys = ("total", "done", "succeeded", "failed", "errored", "timeout")
    counts = dict(zip(keys, map(int, found.groups()), strict=True))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    assert codes, output
    counts["non_2xx"] = sum(map(int, codes.groups()[1:]))
    return counts


@pytest.mark.timeout(240)
def test_h2load_streams_survive_ten_reloads(tmp_path: Path, backends, pingap) -> None:
    """h2load -c 20 -m 10 across 10 reloads: no stream the proxy accepted fails.

    Two facts about h2load (nghttp2 1.52) shape this test. It stops issuing streams on a
    connection once it gets GOAWAY and does not reconnect, so one 30 s run would only
    exercise the first reload: instead each reload happens in the middle of its own 4 s
    run (40 s of load in all). And nghttp2 drops a request it had queued but not yet
    written when any GOAWAY arrives (``session_predicate_request_headers_send`` refuses
    new streams after GOAWAY_RECV), counting it as failed although it never reached the
    server, so any server that drains with GOAWAY (nginx included) can see one such
    stream per connection (more when several responses arrive in the read that brings the
    GOAWAY). What the proxy controls is asserted exactly: no stream it received was
    refused, reset or cut off (its log says so for each), every response was 2xx, nothing
    timed out, and h2load's failures are only those client-held streams: the backend saw
    exactly as many requests as succeeded.
    """
    backend = backends()
    port = free_port()
    conf_text = proxy_config(port, backend.addr, server="enabled_h2 = true", basic=f"""
threads = 2
pid_file = "{tmp_path}/pingap.pid"
""", location='proxy_set_headers = ["X-Gen:0"]').replace('grace_period = "1s"',
                                                              'grace_period = "20s"')
    proc = pingap(conf_text, port=port)
    conf = proc.config
    wait_for(lambda: curl(f"http://127.0.0.1:{port}/ready").returncode == 0, timeout=30,
             what="workers serving")
    total = client_held = 0
    for i in range(1, 11):
        seen = len(backend.requests())
        load = subprocess.Popen(["h2load", "-c", "20", "-m", "10", "-D", "4",
                                 f"http://127.0.0.1:{port}/gen-{i}"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda seen=seen: len(backend.requests()) > seen + 50, timeout=30,
                     what=f"load {i} running")
            workers = set(proc.worker_pids())
            conf.write_text(conf_text.replace("X-Gen:0", f"X-Gen:{i}"))
            proc.proc.send_signal(signal.SIGHUP)
            wait_for(lambda workers=workers: workers.isdisjoint(proc.worker_pids()), timeout=20,
                     what=f"reload {i} rolled the workers")
            output, _ = load.communicate(timeout=30)
        finally:
            if load.poll() is None:
                load.kill()
        counts = h2load_counts(output)
        assert counts["succeeded"] > 0, output
        assert (counts["timeout"], counts["non_2xx"]) == (0, 0), output
        assert counts["failed"] == counts["errored"], output
        assert counts["succeeded"] + counts["failed"] == counts["done"], output
        # h2load's failures are all requests it held back itself: the backend saw exactly
        # the streams that succeeded
        reached = sum(1 for r in backend.requests()[seen:] if r["target"] == f"/gen-{i}")
        assert reached == counts["succeeded"], (reached, output)
        client_held += counts["failed"]
        total += counts["succeeded"]
        # the previous reload is what this run's new connections were served with
        gen = next(r for r in backend.requests()[seen:] if r["target"] == f"/gen-{i}")
        assert ["X-Gen", str(i - 1)] in gen["headers"]
    assert total > 1000
    # the server side of every one of those streams: none refused, reset or cut off
    log = proc.log()
    for sign in ("refused", "ended with", "ended before its response"):
        assert sign not in log, [line for line in log.splitlines() if sign in line]
    print(f"{total} streams answered, {client_held} held back by h2load after a GOAWAY")
