#!/usr/bin/env python3
"""HTTP/2 throughput of pingap (this checkout) against nginx's HTTP/2, in one run, with h2load.

The HTTP/1 bench (``scripts/bench.sh``) drives ``shared/bench/proxybench.py`` with wrk, which
speaks only HTTP/1.1. This is its HTTP/2 sibling and uses the same method by importing
proxybench rather than copying it: proxybench's backend nginx config (``/`` -> "pong",
``/100k.bin``), its reference nginx reverse proxy config (1 worker, HTTP/1.1 keep-alive pool to
the backend) with only the ``listen`` line changed to speak HTTP/2, its ``Service`` class
(a command in its own session, stopped by process group, CPU/RSS of the whole tree), its RSS
sampler, CPU accounting and ``taskset`` pinning (proxies on cpu 0, load generator and backend
on cpu 1), and its markdown table layout. What proxybench cannot offer is written here:

- an HTTP/2 readiness probe (nginx's ``listen ... http2`` without TLS only speaks h2c with prior
  knowledge, so proxybench's HTTP/1.1 probe cannot reach it): ``h2load -n 1`` must get a 2xx
  over HTTP/2;
- the h2load runner and parser. h2load's own warm-up (``--warm-up-time``) precedes each
  measured run, and the proxy/backend/h2load CPU is sampled at the moments h2load prints
  "Main benchmark duration is started/over", so CPU% covers the same window as req/s.
  h2load reports min/max/mean/sd of the request time but no percentiles, so each run also
  writes h2load's per-request log (``--log-file``, main phase only) and p50/p99 come from it;
  ``--no-percentiles`` skips that (writing the log costs the load core some CPU) and the table
  then has only the mean and max that h2load reports;
- the pingap config: ``scripts/bench/pingap-bench.toml.tpl`` (the HTTP/1 bench's: one worker,
  access log on) with ``enabled_h2 = true`` added to its server, plus
  ``global_certificates = true`` and a self-signed certificate for ``--tls``.

Both systems are measured round-robin, ``--runs`` times, so drift hits both alike; a run that
served nothing, or not over HTTP/2, is a failed run (excluded from medians, counted). After the
table the proxies' logs are scanned for warnings and errors, so a failing HTTP/2 path shows up
with its log lines rather than only as a low number.

    scripts/bench/h2bench.py --runs 3                        # h2c, path /
    scripts/bench/h2bench.py --tls --path /100k.bin --json out.json

``scripts/bench-h2.sh`` installs the tools and keeps results and work dirs under tmp/bench.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "scripts" / "bench" / "pingap-bench.toml.tpl"
DEFAULT_PROXYBENCH = ROOT.parent / "shared" / "bench" / "proxybench.py"

# proxybench's reference proxy listens with exactly this line; we swap it for an HTTP/2 one.
NGINX_LISTEN = "listen 127.0.0.1:{port} backlog=4096;"
NGINX_H2C_LISTEN = "listen 127.0.0.1:{port} http2 backlog=4096;"
NGINX_TLS_LISTEN = ("listen 127.0.0.1:{port} ssl http2 backlog=4096;\n"
                    # nginx 1.22's default stops at TLSv1.2; pingap (Python ssl) does 1.3
                    "        ssl_protocols TLSv1.2 TLSv1.3;\n"
                    "        ssl_certificate @CERT@;\n"
                    "        ssl_certificate_key @KEY@;")

# the pingap template's server section; enabled_h2 (and TLS) go right under it
PINGAP_SERVER = "[servers.bench]\n"

MAIN_STARTED = "Main benchmark duration is started"
MAIN_OVER = "Main benchmark duration is over"
# h2load names the protocol "h2" over TLS (ALPN) and "h2c" over plain TCP
HTTP2_PROTOCOLS = {"h2", "h2c"}
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
# what counts as a problem in a proxy's log: pingap's levels, nginx's error-log levels
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|\[(warn|error|crit|alert|emerg)\]")


def load_proxybench(path: Path) -> ModuleType:
    """Import shared/bench/proxybench.py as a module (it is a script, not a package)."""
    if not path.is_file():
        sys.exit(f"h2bench: {path} not found (pass --proxybench or set PROXYBENCH)")
    spec = importlib.util.spec_from_file_location("proxybench", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log(msg: str) -> None:
    sys.stderr.write(f"[h2bench] {msg}\n")
    sys.stderr.flush()


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


# ------------------------------------------------------------------ configs
def nginx_h2_conf(pb: ModuleType, workdir: str, port: int, upstream: str,
                  tls: tuple[str, str] | None) -> str:
    """proxybench's reference nginx proxy, listening for HTTP/2 (h2c, or TLS + ALPN h2)."""
    if NGINX_LISTEN not in pb.NGINX_PROXY_CONF:
        sys.exit(f"h2bench: proxybench's NGINX_PROXY_CONF has no {NGINX_LISTEN!r}; update h2bench")
    listen = NGINX_H2C_LISTEN
    if tls:
        listen = NGINX_TLS_LISTEN.replace("@CERT@", tls[0]).replace("@KEY@", tls[1])
    conf = pb.NGINX_PROXY_CONF.replace(NGINX_LISTEN, listen)
    conf = conf.replace("nginx-proxy.pid", "nginx-h2.pid").replace(
        "proxybench reference proxy", "h2bench reference proxy (HTTP/2 to clients)")
    return str(conf.format(workdir=workdir, port=port, upstream=upstream,
                           temp_paths=pb.temp_paths(os.path.join(workdir, "tmp"))))


def pingap_toml(port: int, upstream: str, workdir: str, tls: tuple[str, str] | None) -> str:
    """The HTTP/1 bench's pingap config with HTTP/2 (and TLS) turned on."""
    text = TEMPLATE.read_text()
    if PINGAP_SERVER not in text:
        sys.exit(f"h2bench: {TEMPLATE} has no {PINGAP_SERVER.strip()!r} section; update h2bench")
    # @CODEC@ is the HTTP/1 codec bench.sh compares; HTTP/2 does not use it: pingap's default
    text = (text.replace("@PORT@", str(port)).replace("@UPSTREAM@", upstream)
            .replace("@WORKDIR@", workdir).replace("@CODEC@", "fast"))
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        sys.exit(f"h2bench: {TEMPLATE} has placeholders h2bench does not fill: {left}; update h2bench")
    extra = "enabled_h2 = true\n" + ("global_certificates = true\n" if tls else "")
    text = text.replace(PINGAP_SERVER, PINGAP_SERVER + extra, 1)
    text = f"# written by scripts/bench/h2bench.py from {TEMPLATE.name}: HTTP/2 turned on\n" + text
    if tls:
        text += (f'\n[certificates.bench]\ntls_cert = "{tls[0]}"\ntls_key = "{tls[1]}"\n'
                 "is_default = true\n")
    return text


def make_cert(workdir: str) -> tuple[str, str]:
    """A throwaway self-signed ECDSA P-256 certificate for 127.0.0.1, used by both proxies."""
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def pingap_program() -> str:
    """Shell words that run pingap: the ``pingap`` entry point, else this interpreter."""
    found = shutil.which("pingap")
    if found:
        return shlex.quote(found)
    code = "import sys; from master.cli import main; sys.exit(main())"
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


# ------------------------------------------------------------------ h2load
def parse_h2load(text: str) -> dict[str, Any]:
    """The numbers of one h2load report (None or 0 where h2load printed nothing)."""
    # h2load's "failed" streams are kept as failed_streams: "failed" marks a failed run
    r: dict[str, Any] = {"rps": None, "total": 0, "done": 0, "succeeded": 0, "failed_streams": 0,
                         "errored": 0, "timeout": 0, "status_2xx": 0, "non2xx": 0,
                         "req_min_ms": None, "req_max_ms": None, "req_mean_ms": None,
                         "req_sd_ms": None, "protocol": None, "tls_protocol": None, "cipher": None}
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        keys = ("total", "done", "succeeded", "failed_streams", "errored", "timeout")
        r.update(zip(keys, map(int, m.groups()), strict=True))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["status_2xx"] = int(m.group(1))
        r["non2xx"] = sum(int(x) for x in m.groups()[1:])
    m = re.search(r"time for request:" + r"\s+([\d.]+)(us|ms|s)" * 4, text)
    if m:
        g = m.groups()
        for i, key in enumerate(("req_min_ms", "req_max_ms", "req_mean_ms", "req_sd_ms")):
            r[key] = float(g[2 * i]) * _UNIT_MS[g[2 * i + 1]]
    for key, label in (("protocol", "Application protocol"), ("tls_protocol", "TLS Protocol"),
                       ("cipher", "Cipher")):
        m = re.search(rf"^{label}:\s*(\S+)", text, re.M)
        if m:
            r[key] = m.group(1)
    return r


def percentiles(log_path: str) -> dict[str, float | None]:
    """p50/p99/p99.9 in ms of the request times in an h2load ``--log-file`` (3rd column, us)."""
    times: list[int] = []
    try:
        with open(log_path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3:
                    times.append(int(parts[2]))
    except OSError:
        pass
    if not times:
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None}
    times.sort()

    def at(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] / 1000.0
    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "p999_ms": at(0.999)}


def h2_ready(svc: Any, url: str, timeout: float = 60.0) -> bool:
    """Wait until one h2load request to ``url`` gets a 2xx over HTTP/2 (or give up)."""
    deadline = time.time() + timeout
    last = ""
    while time.time() < deadline and svc.alive():
        out = subprocess.run(["h2load", "-n", "1", "-c", "1", url], capture_output=True,
                             text=True, timeout=30)
        r = parse_h2load(out.stdout)
        if r["status_2xx"] == 1 and r["protocol"] in HTTP2_PROTOCOLS:
            return True
        last = f"protocol {r['protocol']}, {r['status_2xx']} 2xx, {r['non2xx']} other"
        time.sleep(0.2)
    svc.logf.flush()
    with open(svc.logpath, "rb") as f:
        tail = f.read()[-2000:].decode("utf-8", "replace")
    log(f"{svc.name} did not answer HTTP/2 on {url} ({last}); log tail:\n{tail}")
    return False


def cpu_by_pid() -> dict[int, float]:
    """CPU seconds (user + system) used so far by every live process, by pid."""
    clk = os.sysconf("SC_CLK_TCK")
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(name)] = (int(fields[11]) + int(fields[12])) / clk  # utime, stime
    return out


def wait_quiet(pb: ModuleType, max_wait: float, threshold: float = 10.0) -> float:
    """Wait up to ``max_wait`` s until every core has been under ``threshold``% busy for two
    seconds running (our services are idle between runs, so what is left is other jobs').
    Returns the seconds waited."""
    start = time.time()
    quiet = 0
    while quiet < 2 and time.time() - start < max_wait:
        before = pb.cpu_times()
        time.sleep(1.0)
        after = pb.cpu_times()
        busiest = max(pb.busy_pct(before, after, [c]) for c in before)
        quiet = quiet + 1 if busiest < threshold else 0
    return time.time() - start


class H2loadRunner:
    """Runs h2load against one system and measures the proxy, the backend and h2load over
    the main (measured) phase only."""

    def __init__(self, pb: ModuleType, a: argparse.Namespace, backend: Any, pin: bool,
                 load_cpus: list[int], workdir: str):
        self.pb, self.a, self.backend, self.pin = pb, a, backend, pin
        self.load_cpus, self.workdir = load_cpus, workdir
        self.scheme = "https" if a.tls else "http"

    def argv(self, svc: Any, log_file: str | None) -> list[str]:
        a = self.a
        argv = ["h2load", f"-t{a.threads}", f"-c{a.connections}", f"-m{a.streams}",
                "-D", str(a.duration), "--warm-up-time", str(a.warmup)]
        if log_file:
            argv.append(f"--log-file={log_file}")
        argv.append(f"{self.scheme}://127.0.0.1:{svc.port}{a.path}")
        if self.pin:
            argv = ["taskset", "-c", ",".join(map(str, self.load_cpus)), *argv]
        return argv

    def run(self, svc: Any, label: str) -> dict[str, Any]:
        pb, a = self.pb, self.a
        safe_name = re.sub(r"[^\w.-]", "_", svc.name)
        stem = os.path.join(self.workdir, f"h2load-{safe_name}-{label}")
        log_file = None if a.no_percentiles else stem + ".reqlog"
        if log_file and os.path.exists(log_file):
            os.unlink(log_file)  # h2load appends to it
        sampler = pb.RssSampler(svc)
        sampler.start()
        svc_pids, be_pids = set(svc.pids()), set(self.backend.pids())
        marks: dict[str, tuple[float, dict[int, float], Any]] = {}

        def mark(name: str) -> None:
            marks[name] = (time.time(), cpu_by_pid(), pb.cpu_times())

        # taskset execs h2load, so proc.pid is h2load's pid
        proc = subprocess.Popen(self.argv(svc, log_file), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        watchdog = threading.Timer(a.warmup + a.duration + 60, proc.kill)
        watchdog.start()
        mark("start")
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:  # h2load flushes these progress lines as they happen
            lines.append(line)
            if line.startswith(MAIN_STARTED) and "main" not in marks:
                mark("main")
            elif line.startswith(MAIN_OVER) and "over" not in marks:
                mark("over")
        mark("end")  # h2load closed its output: it is exiting, but not reaped yet
        proc.wait()
        watchdog.cancel()
        sampler.stop_ev.set()
        sampler.join()
        text = "".join(lines)
        with open(stem + ".txt", "w") as out:
            out.write(text)
        r = parse_h2load(text)
        # the measured window; if h2load never reached its main phase, the whole run
        t0, cpu0, cores0 = marks.get("main", marks["start"])
        t1, cpu1, cores1 = marks.get("over", marks["end"])
        wall = max(t1 - t0, 1e-6)

        def pct(pids: set[int]) -> float:
            # a process born in the window counts from 0; one that died in it is lost
            return 100.0 * sum(cpu1.get(p, 0.0) - cpu0.get(p, 0.0) for p in pids if p in cpu1) / wall

        ours = svc_pids | be_pids | {proc.pid, os.getpid()}
        r["window_s"] = wall
        r["proxy_cpu_pct"] = pct(svc_pids)
        r["backend_cpu_pct"] = pct(be_pids)
        r["h2load_cpu_pct"] = pct({proc.pid})
        r["other_jobs_cpu_pct"] = pct(set(cpu1) - ours)
        proxy_only = [c for c in svc.cpus if c not in self.load_cpus]
        r["proxy_core_busy_pct"] = pb.busy_pct(cores0, cores1, proxy_only) if self.pin else None
        r["load_core_busy_pct"] = pb.busy_pct(cores0, cores1, self.load_cpus) if self.pin else None
        r.update(percentiles(log_file) if log_file else {"p50_ms": None, "p99_ms": None, "p999_ms": None})
        if log_file and not a.keep_reqlogs and os.path.exists(log_file):
            os.unlink(log_file)
        # a run that served nothing, or not over HTTP/2, is a failure, not a data point
        r["failed"] = not r["rps"] or r["rps"] < 1.0 or r["protocol"] not in HTTP2_PROTOCOLS
        if r["failed"]:
            log(f"FAILED run for {svc.name} (req/s {r['rps']}, protocol {r['protocol']}); "
                f"h2load said:\n{text[-3000:]}")
        return r


# ------------------------------------------------------------------ report
def log_problems(path: str, limit: int = 12) -> tuple[int, list[str]]:
    """(count, first lines) of the warnings and errors in a log file."""
    count, first = 0, list[str]()
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if LOG_PROBLEM.search(line):
                    count += 1
                    if len(first) < limit:
                        first.append(line.rstrip())
    except OSError:
        pass
    return count, first


def git_commit() -> str:
    """Short commit of this checkout, '+dirty' if tracked files differ (a read-only look)."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # git status must not touch the index
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], env=env,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               env=env, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True)
    except OSError:
        return "missing"
    text = (out.stdout + out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def report(pb: ModuleType, a: argparse.Namespace, pin: bool, targets: list[tuple[str, Any]],
           results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Print the markdown table (proxybench's layout, h2load's numbers); return the summary."""

    def med(name: str, key: str) -> float | None:
        """Median over the runs that did not fail (failed runs are counted separately)."""
        vals = [r[key] for r in results[name] if r.get(key) is not None and not r.get("failed")]
        return statistics.median(vals) if vals else None

    def ratio(name: str, ref: str) -> float | None:
        """Median over rounds of req/s(name)/req/s(ref) in the same round: robust to drift."""
        vals = [x["rps"] / y["rps"] for x, y in zip(results[name], results[ref], strict=True)
                if not x.get("failed") and not y.get("failed") and x["rps"] and y["rps"]]
        return statistics.median(vals) if vals else None

    mode = "TLS (ALPN h2)" if a.tls else "h2c (prior knowledge)"
    where = (f"proxies on cpu {a.proxy_cpus}, h2load+backend on cpu {a.load_cpus}" if pin else "none")
    print()
    print(f"h2bench: h2load -t{a.threads} -c{a.connections} -m{a.streams} -D {a.duration} "
          f"--warm-up-time {a.warmup}, {mode}, path {a.path}, {a.runs} runs (median), pinning: {where}")
    hdr = ("| system | req/s (median) | runs | p50 ms | p99 ms | mean ms | max ms | vs nginx "
           "| proxy CPU% | backend CPU% | h2load CPU% | load core busy% | other jobs CPU% "
           "| rps per proxy core "
           "| RSS idle | RSS peak under load | failed / errored / timeout streams | non-2xx | failed runs |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    summary: dict[str, Any] = {}
    for name, s in targets:
        runs = results[name]
        ok = [r for r in runs if not r.get("failed")]
        rps = med(name, "rps")
        row: dict[str, Any] = {
            "rps": rps, "runs": [r["rps"] for r in runs],
            "p50_ms": med(name, "p50_ms"), "p99_ms": med(name, "p99_ms"), "p999_ms": med(name, "p999_ms"),
            "req_mean_ms": med(name, "req_mean_ms"),
            "req_max_ms": max((r["req_max_ms"] for r in ok if r["req_max_ms"] is not None), default=None),
            "vs_nginx": ratio(name, "nginx"),
            "proxy_cpu_pct": med(name, "proxy_cpu_pct"), "backend_cpu_pct": med(name, "backend_cpu_pct"),
            "h2load_cpu_pct": med(name, "h2load_cpu_pct"),
            "proxy_core_busy_pct": med(name, "proxy_core_busy_pct"),
            "load_core_busy_pct": med(name, "load_core_busy_pct"),
            "other_jobs_cpu_pct": med(name, "other_jobs_cpu_pct"),
            "failed_streams": sum(r["failed_streams"] for r in runs),
            "errored": sum(r["errored"] for r in runs), "timeout": sum(r["timeout"] for r in runs),
            "non2xx": sum(r["non2xx"] for r in runs),
            "failed_runs": sum(1 for r in runs if r.get("failed")),
            "protocols": sorted({str(r["protocol"]) for r in runs}),
            "rss_idle_kb": {str(p): v for p, v in (s.rss_idle or {}).items()},
            "rss_peak_kb": {str(p): v for p, v in s.rss_peak.items()},
            "cpus": s.cpus if pin else None,
        }
        per_core = rps * 100.0 / row["proxy_cpu_pct"] if rps and row["proxy_cpu_pct"] else None
        row["rps_per_proxy_core"] = per_core
        summary[name] = row
        cells = [
            name, fmt(rps, ".0f"), " / ".join(f"{x or 0:.0f}" for x in row["runs"]),
            fmt(row["p50_ms"], ".2f"), fmt(row["p99_ms"], ".2f"),
            fmt(row["req_mean_ms"], ".2f"), fmt(row["req_max_ms"], ".2f"), fmt(row["vs_nginx"], ".2f"),
            fmt(row["proxy_cpu_pct"], ".0f"), fmt(row["backend_cpu_pct"], ".0f"),
            fmt(row["h2load_cpu_pct"], ".0f"), fmt(row["load_core_busy_pct"], ".0f"),
            fmt(row["other_jobs_cpu_pct"], ".0f"), fmt(per_core, ".0f"),
            pb.fmt_rss(s.rss_idle), pb.fmt_rss(s.rss_peak),
            f"{row['failed_streams']} / {row['errored']} / {row['timeout']}", str(row["non2xx"]),
            str(row["failed_runs"]),
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print("req/s = h2load's figure for its main phase (after its own warm-up); vs nginx = median over")
    print("rounds of the req/s ratio within the same round. p50/p99 come from h2load's per-request log")
    print("(main phase only; '-' with --no-percentiles); mean = median over runs of h2load's mean")
    print("request time, max = the largest over all runs. Streams and non-2xx are summed over runs;")
    print("medians exclude failed runs (nothing served, or not HTTP/2). CPU% = CPU time of that")
    print("party's processes during the main phase / its wall time (100 = one full core); 'rps per")
    print("proxy core' = req/s / (proxy CPU% / 100). h2load's outputs: h2load-NAME-runN.txt in the work dir.")
    if pin:
        print("load core busy% near 100 means that row is limited by h2load+backend, not by the proxy.")
    print("other jobs CPU% = CPU of every process not ours during the main phase (a shared machine's")
    print("other work): a run where it is large measured the neighbours too (see --quiet-wait).")
    return summary


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tls", action="store_true",
                    help="HTTP/2 over TLS (ALPN h2, self-signed cert) instead of h2c prior knowledge")
    ap.add_argument("--path", default="/", help="request path: / (4-byte body) or /100k.bin")
    ap.add_argument("--runs", type=int, default=3, help="measured runs per system (median reported)")
    ap.add_argument("--duration", type=int, default=10, help="seconds of each measured run (h2load -D)")
    ap.add_argument("--warmup", type=int, default=2, help="h2load --warm-up-time before each run, seconds")
    ap.add_argument("-c", "--connections", type=int, default=20, help="h2load -c (connections)")
    ap.add_argument("-m", "--streams", type=int, default=10, help="h2load -m (concurrent streams each)")
    ap.add_argument("--threads", type=int, default=1, help="h2load -t")
    ap.add_argument("--proxy-cpus", default="0", help="CPUs for nginx and pingap")
    ap.add_argument("--load-cpus", default="1", help="CPUs for h2load and the backend")
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset at all")
    ap.add_argument("--backend-port", type=int, default=19001)
    ap.add_argument("--base-port", type=int, default=19200, help="nginx gets this port, pingap the next")
    ap.add_argument("--no-percentiles", action="store_true",
                    help="no h2load per-request log: no p50/p99, only h2load's mean and max")
    ap.add_argument("--quiet-wait", type=float, default=0, metavar="SECONDS",
                    help="before each run wait up to this long for both cores to be idle "
                         "(other jobs on a shared machine); 0 = do not wait")
    ap.add_argument("--keep-reqlogs", action="store_true", help="keep h2load's per-request logs")
    ap.add_argument("--pingap", metavar="CMD",
                    help="shell words that run pingap (get -c CONFIG; default: `pingap` on PATH, "
                         "else this Python with master.cli)")
    ap.add_argument("--proxybench", type=Path,
                    default=Path(os.environ.get("PROXYBENCH", DEFAULT_PROXYBENCH)),
                    help="path of shared/bench/proxybench.py (default: %(default)s)")
    ap.add_argument("--workdir", help="scratch dir (default: a new temp dir, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (logs, configs)")
    ap.add_argument("--json", metavar="FILE", help="also write all raw results as JSON")
    return ap.parse_args(argv)


def settle(pb: ModuleType, svc: Any, timeout: float = 20.0) -> None:
    """Wait (with a deadline) until a just-started service stops burning CPU: pingap boots its
    spare worker after the first one serves, and that boot must not overlap a measured run."""
    deadline = time.time() + timeout
    time.sleep(1.0)
    while time.time() < deadline:
        pids = list(svc.pids())
        t0, c0 = time.time(), pb.proc_cpu_s(pids)
        time.sleep(0.5)
        if 100.0 * (pb.proc_cpu_s(pids) - c0) / (time.time() - t0) < 5.0:
            return
    log(f"{svc.name} still busy after {timeout:.0f} s; measuring anyway")


def check_tools(pin: bool, tls: bool) -> None:
    need = {"nginx": "nginx-light", "h2load": "nghttp2-client"}
    if pin:
        need["taskset"] = "util-linux"
    if tls:
        need["openssl"] = "openssl"
    missing = sorted({pkg for tool, pkg in need.items() if shutil.which(tool) is None})
    if missing:
        sys.exit(f"h2bench: missing tools; install with: apt-get install {' '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    pb = load_proxybench(a.proxybench)
    ncpu = os.cpu_count() or 1
    pin = not a.no_pin and ncpu >= 2
    if not a.no_pin and ncpu < 2:
        log("only 1 CPU: not pinning")
    check_tools(pin, a.tls)
    proxy_cpus, load_cpus = pb.parse_cpus(a.proxy_cpus), pb.parse_cpus(a.load_cpus)
    if pin and max(proxy_cpus + load_cpus) >= ncpu:
        sys.exit(f"h2bench: CPU list out of range (machine has {ncpu} CPUs)")
    busy = [p for p in (a.backend_port, a.base_port, a.base_port + 1) if not pb.port_free(p)]
    if busy:
        sys.exit(f"h2bench: ports already in use: {busy} (choose --backend-port/--base-port)")

    workdir = os.path.abspath(a.workdir or tempfile.mkdtemp(prefix="h2bench-"))
    for sub in ("www", "tmp"):
        os.makedirs(os.path.join(workdir, sub), exist_ok=True)
    with open(os.path.join(workdir, "www", "100k.bin"), "wb") as blob:
        blob.write(os.urandom(102400))
    upstream = f"127.0.0.1:{a.backend_port}"
    tls = make_cert(workdir) if a.tls else None
    scheme = "https" if a.tls else "http"

    services: list[Any] = []
    stopping = {"flag": False}

    def cleanup() -> None:
        if stopping["flag"]:
            return
        stopping["flag"] = True
        for s in reversed(services):
            s.stop()
        if not a.keep and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    def on_signal(signum: int, _frame: Any) -> None:
        cleanup()
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def write(name: str, text: str) -> str:
        path = os.path.join(workdir, name)
        with open(path, "w") as out:
            out.write(text)
        return path

    commit = git_commit()  # now: other people may commit while we measure
    try:
        # backend: proxybench's own config and readiness probe (it speaks HTTP/1.1)
        conf = write("backend.conf", pb.BACKEND_CONF.format(
            workdir=workdir, port=a.backend_port, temp_paths=pb.temp_paths(os.path.join(workdir, "tmp"))))
        backend = pb.Service("backend", ["nginx", "-c", conf, "-p", workdir + "/",
                                         "-e", workdir + "/backend-error.log"],
                             a.backend_port, load_cpus, pin, workdir)
        services.append(backend)
        if not backend.wait_ready(a.path):
            sys.exit("h2bench: backend failed")

        conf = write("nginx-h2.conf", nginx_h2_conf(pb, workdir, a.base_port, upstream, tls))
        nginx = pb.Service("nginx", ["nginx", "-c", conf, "-p", workdir + "/",
                                     "-e", workdir + "/nginx-h2-error.log"],
                           a.base_port, proxy_cpus, pin, workdir)
        services.append(nginx)
        if not h2_ready(nginx, f"{scheme}://127.0.0.1:{a.base_port}{a.path}"):
            sys.exit("h2bench: nginx reference proxy failed")

        port = a.base_port + 1
        toml = write("pingap.toml", pingap_toml(port, upstream, workdir, tls))
        # cd: workers run `python -m workers`, which puts the cwd first on sys.path; PYTHONPATH
        # makes master and workers import this checkout even if another one is installed
        cmd = f"cd {shlex.quote(workdir)} && exec {a.pingap or pingap_program()} -c {shlex.quote(toml)}"
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        pingap = pb.Service("pingap", cmd, port, proxy_cpus, pin, workdir, {"PYTHONPATH": pythonpath})
        services.append(pingap)
        log(f"started pingap on :{port} (cpus {proxy_cpus if pin else 'any'}): {cmd}")
        if not h2_ready(pingap, f"{scheme}://127.0.0.1:{port}{a.path}"):
            sys.exit(f"h2bench: pingap failed to serve HTTP/2 (log: {pingap.logpath})")
        targets = [("nginx", nginx), ("pingap", pingap)]

        settle(pb, pingap)
        for _, s in targets:
            s.rss_idle = s.rss()

        runner = H2loadRunner(pb, a, backend, pin, load_cpus, workdir)
        log(f"{' '.join(runner.argv(pingap, None))} x {a.runs} runs, {'tls' if a.tls else 'h2c'}, "
            f"path={a.path} pin={pin} proxy-cpus={proxy_cpus} load-cpus={load_cpus}")
        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in targets}
        for rnd in range(a.runs):  # round-robin so slow drift hits both alike
            for name, s in targets:
                if not s.alive():
                    log(f"{name} died (log: {s.logpath})")
                    results[name].append(dict(parse_h2load(""), failed=True))
                    continue
                waited = wait_quiet(pb, a.quiet_wait) if a.quiet_wait else 0.0
                r = runner.run(s, f"run{rnd + 1}")
                r["quiet_wait_s"] = waited
                results[name].append(r)
                log(f"run {rnd + 1}/{a.runs} {name:<7} {r['rps'] or 0:9.0f} req/s  "
                    f"p50 {fmt(r['p50_ms'], '.2f')} ms  p99 {fmt(r['p99_ms'], '.2f')} ms  "
                    f"mean {fmt(r['req_mean_ms'], '.2f')} ms  max {fmt(r['req_max_ms'], '.2f')} ms  "
                    f"failed {r['failed_streams']} errored {r['errored']} timeout {r['timeout']} "
                    f"non-2xx {r['non2xx']}  proxy cpu {r['proxy_cpu_pct']:.0f}%  "
                    f"load core {fmt(r['load_core_busy_pct'], '.0f')}%  "
                    f"other jobs {r['other_jobs_cpu_pct']:.0f}%")

        summary = report(pb, a, pin, targets, results)
        versions = f"{tool_version(['h2load', '--version'])}; {tool_version(['nginx', '-v'])}"
        tls_used = "; ".join(
            f"{name} " + ", ".join(sorted({f"{r['tls_protocol']} {r['cipher']}" for r in rs}))
            for name, rs in results.items()) if a.tls else "none (h2c)"
        print(f"pingap commit {commit} (at start); {versions}; TLS: {tls_used}")
        access_log = os.path.join(workdir, "pingap-access.log")
        if os.path.exists(access_log):
            with open(access_log, "rb") as f:
                count = sum(1 for _ in f)
            print(f"pingap access log: {count} lines (warm-up and readiness probes included)")
        problems = {}
        for name, path in (("nginx", os.path.join(workdir, "nginx-h2-error.log")),
                           ("pingap", pingap.logpath)):
            count, first = log_problems(path)
            problems[name] = {"count": count, "first": first}
            print(f"{name} log ({os.path.basename(path)}): {count} warning/error lines{':' if first else ''}")
            for line in first:
                print("    " + line)
        if a.json:
            settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
            with open(a.json, "w") as out:
                json.dump({"settings": settings, "pinned": pin, "commit": commit,
                           "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "versions": versions,
                           "summary": summary, "raw": results, "log_problems": problems}, out, indent=2)
        if a.keep or a.workdir:
            print(f"logs and configs kept in {workdir}")
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
