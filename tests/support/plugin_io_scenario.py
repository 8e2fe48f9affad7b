"""Drive workers.plugin_io.PluginHttpClient for real, under gevent, and print one JSON
line of what happened: ``python -m tests.support.plugin_io_scenario BASE_URL``.

The test process is not monkey-patched, so the client runs here in its own interpreter
against the auth server the test started."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from workers.plugin_io import PluginHttpClient  # noqa: E402


def main() -> None:
    base = sys.argv[1]
    client = PluginHttpClient()
    out: dict[str, object] = {}
    shared = [gevent.spawn(client.get_shared, f"{base}/jwks", 5.0) for _ in range(5)]
    gevent.joinall(shared, raise_error=True)
    out["shared_statuses"] = [g.value.status for g in shared]
    start = time.monotonic()
    try:
        client.request("GET", f"{base}/slow", [], 0.3)
        out["slow"] = "answered"
    except OSError as exc:
        out["slow"] = type(exc).__name__
    out["slow_elapsed"] = time.monotonic() - start
    reply = client.request("GET", f"{base}/verify", [(b"Cookie", b"session=expired")], 5.0)
    out["redirect"] = [reply.status, dict((n.decode(), v.decode()) for n, v in reply.headers)
                       .get("Location")]
    try:
        client.request("GET", "http://127.0.0.1:9/", [], 2.0)
        out["refused"] = "answered"
    except OSError as exc:
        out["refused"] = type(exc).__name__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
