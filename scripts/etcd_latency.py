#!/usr/bin/env python3
"""How long an etcd edit takes to be served: one pingap following an etcd prefix.

Starts a throwaway etcd (Debian ``etcd-server``) and a backend nginx that echoes the
``X-Gen`` request header, seeds the prefix with ``pingap --sync``, runs ``pingap -c
etcd://... -a`` and then, ``--edits`` times, writes a location with a new ``X-Gen`` value
through the storage API and times until a request is answered with it. Loopback only;
stops everything it started. Run from the repository root::

    python3 scripts/etcd_latency.py --threads 2 --edits 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from master.storage import open_storage  # noqa: E402
from tests.support.etcd import EtcdServer  # noqa: E402
from tests.support.proc import free_port, port_open, wait_for  # noqa: E402

NGINX = """worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.log;
events {{ worker_connections 256; }}
http {{ access_log off; server {{ listen 127.0.0.1:{port};
    location / {{ return 200 "$http_x_gen"; }} }} }}
"""

CONFIG = """[basic]
threads = {threads}
pid_file = "{tmp}/pingap.pid"
[upstreams.u]
addrs = ["127.0.0.1:{backend}"]
[locations.all]
upstream = "u"
proxy_set_headers = ["X-Gen:0"]
[servers.s]
addr = "127.0.0.1:{port}"
locations = ["all"]
"""


def answer(port: int) -> bytes:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read()
    except OSError:
        return b""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="pingap workers")
    parser.add_argument("--edits", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        backend, port = free_port(), free_port()
        (tmp / "nginx.conf").write_text(NGINX.format(tmp=tmp, port=backend))
        nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf")])
        etcd = EtcdServer(tmp)
        proxy = None
        try:
            wait_for(lambda: port_open(backend), what="nginx")
            seed = tmp / "seed.toml"
            seed.write_text(CONFIG.format(threads=args.threads, tmp=tmp, backend=backend,
                                          port=port))
            subprocess.run(["pingap", "-c", str(seed), "--sync", etcd.url()], check=True,
                           capture_output=True)
            proxy = subprocess.Popen(["pingap", "-c", etcd.url(), "-a"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda: answer(port) == b"0", timeout=30, what="pingap serving")
            storage = open_storage(etcd.url())
            took = []
            for gen in range(1, args.edits + 1):
                time.sleep(2)  # the previous generation has drained
                start = time.monotonic()
                storage.save_entry("locations", "all", {
                    "upstream": "u", "proxy_set_headers": [f"X-Gen:{gen}"]})
                wait_for(lambda gen=gen: answer(port) == str(gen).encode(), timeout=30,
                         interval=0.01, what=f"edit {gen} served")
                took.append(time.monotonic() - start)
                print(f"edit {gen}: served after {took[-1]:.3f} s", flush=True)
            print(f"median {statistics.median(took):.3f} s, max {max(took):.3f} s "
                  f"({args.threads} workers)")
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait(15)
            etcd.stop()
            nginx.terminate()
            nginx.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
