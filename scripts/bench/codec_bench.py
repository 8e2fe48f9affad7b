"""The HTTP/1 server codecs' own cost: a typical ~300-byte GET, no sockets, no proxy.

Each loop turn feeds one request to the codec, takes RequestReceived and MessageEnded,
optionally writes a small response through it, and starts the next cycle on the same
codec (a kept-alive connection). CPU time (``time.process_time``), best of several runs,
so other load on the machine matters less; pin it to a core for steadier numbers:

    taskset -c 1 python3 scripts/bench/codec_bench.py [--runs 9]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from pingap.http1 import ServerCodec
from pingap.http1_fast import FastServerCodec
from pingap.http1_h11 import H11ServerCodec

REQUEST = (b"GET /api/v1/items?id=12345&sort=asc HTTP/1.1\r\nHost: www.example.com\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0\r\n"
           b"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n"
           b"Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n"
           b"Cookie: session=abcdef0123456789\r\n\r\n")
RESPONSE = [(b"Content-Length", b"4"), (b"Content-Type", b"text/plain")]


def parse(codec: ServerCodec, turns: int) -> float:
    """Seconds per request: receive_data, RequestReceived, MessageEnded, next cycle."""
    started = time.process_time()
    for _ in range(turns):
        codec.receive_data(REQUEST)
        codec.next_event()
        codec.next_event()
        codec.end()  # marks the (empty) response done so the cycle may restart
        codec.start_next_cycle()
    return (time.process_time() - started) / turns


def exchange(codec: ServerCodec, turns: int) -> float:
    """Seconds per request: parse, plus a 4-byte response written through the codec."""
    started = time.process_time()
    for _ in range(turns):
        codec.receive_data(REQUEST)
        codec.next_event()
        codec.next_event()
        codec.response_head(200, RESPONSE)
        codec.body(b"pong")
        codec.end()
        codec.start_next_cycle()
    return (time.process_time() - started) / turns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="best of this many runs")
    args = parser.parse_args()
    gc.disable()  # what is measured is the codec, not the collector's timing
    print(f"{len(REQUEST)}-byte GET, best of {args.runs} runs")
    codecs: list[tuple[str, Callable[[], ServerCodec], int]] = [
        ("h11", H11ServerCodec, 2_000), ("fast", FastServerCodec, 20_000)]
    for measure in (parse, exchange):
        for name, make, turns in codecs:
            best = min(measure(make(), turns) for _ in range(args.runs))
            print(f"{measure.__name__:9s} {name:5s} {1 / best:10,.0f} req/s  {best * 1e6:7.2f} µs")


if __name__ == "__main__":
    main()
