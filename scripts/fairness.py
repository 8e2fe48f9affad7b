#!/usr/bin/env python3
"""Fairness under hostile clients: a normal client's latency while connections flood.

Starts ``pingap -c CONFIG`` (default: the shipped ``etc/pingap.toml``) with the code of
the checkout this script is in (its workers run from there), then for ``--seconds``
runs ``--flooders`` hostile connections, each in its own process (``--kind pipeline``:
pipelined ``GET /ping`` written 2000 at a time without waiting, the answers discarded as
they come; ``--kind ping``: an h2c connection writing PING frames as fast as it can,
reconnecting when ended - needs ``enabled_h2`` on the server) beside one ordinary
keep-alive client sending ``GET /`` every 10 ms. Prints that client's answers, failures
and p50/p99/max latency, and the workers the master replaced (``missed heartbeats`` in
its log). Loopback only; stops by itself.

    python3 scripts/fairness.py --seconds 20 [--flooders 2] [--threads 1]

With one worker (the default here) every client shares it, so the figure does not depend
on which worker the kernel hands each connection to.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import tomlkit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.flood import LatencyProbe, flood_process  # noqa: E402
from tests.support.proc import PingapProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "etc" / "pingap.toml")
    parser.add_argument("--server", default="web", help="the [servers.NAME] to flood")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--flooders", type=int, default=2)
    parser.add_argument("--kind", choices=["pipeline", "ping"], default="pipeline")
    parser.add_argument("--path", default="/", help="what the normal client asks for")
    parser.add_argument("--threads", type=int, default=1,
                        help="workers (basic.threads): with 1, every client shares it")

    args = parser.parse_args()
    config = tomlkit.parse(args.config.read_text())
    port = int(str(config["servers"][args.server]["addr"]).rsplit(":", 1)[1])
    config["basic"]["threads"] = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / args.config.name
        copy.write_text(tomlkit.dumps(config))
        proxy = PingapProcess(copy, port, Path(tmp))
        try:
            time.sleep(1.0)  # let every worker boot before the clock starts
            floods = [flood_process(args.kind, port, args.seconds)
                      for _ in range(args.flooders)]
            probe = LatencyProbe(port, args.path).start()
            time.sleep(args.seconds)
            probe.stop()
            counts = [flood.communicate(timeout=30)[0].strip() for flood in floods]
            killed = [line for line in proxy.log().splitlines() if "missed heartbeats" in line]
        finally:
            proxy.stop()
    print(f"{args.flooders} x {args.kind} flood for {args.seconds:.0f} s; normal client: "
          f"{probe.summary()}")
    print(f"flooders: {', '.join(counts)}")
    print(f"workers replaced: {len(killed)}")
    for line in killed:
        print("  " + line)
    for reason in sorted(set(probe.failures))[:10]:
        print(f"  failure: {reason} (x{probe.failures.count(reason)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
