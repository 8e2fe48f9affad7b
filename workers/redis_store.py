"""Rate and in-flight counters in Redis, for limits shared by several hosts.

Both checks run as Lua scripts, so each decision is one atomic round trip; the rate
script uses Redis's clock (``TIME``), so hosts need not agree on time. When Redis cannot
be reached (250 ms timeouts), the configured failure mode decides — ``open`` admits,
``closed`` refuses — and Redis is retried after ``RETRY_AFTER``, so limits hold again
within a second of its return. In-flight keys expire (``INFLIGHT_TTL``), so counts held
by a worker that died cannot pin a key forever.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from pingap.state import RATE_BUCKETS

log = logging.getLogger("pingap.redis")

RETRY_AFTER = 0.5
TIMEOUT = 0.25
INFLIGHT_TTL = 300

# The same sliding window as the shared-memory store (pingap.state.rate_acquire):
# RATE_BUCKETS sub-windows per interval, the oldest weighted by its share still inside.
_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local buckets = tonumber(ARGV[2])
local width = interval / buckets
local bucket = math.floor(now / width)
local fraction = (now - bucket * width) / width
local estimate = 0
for i = 0, buckets - 1 do
  estimate = estimate + tonumber(redis.call('GET', KEYS[1] .. ':' .. (bucket - i)) or '0')
end
local oldest = tonumber(redis.call('GET', KEYS[1] .. ':' .. (bucket - buckets)) or '0')
estimate = estimate + oldest * (1 - fraction)
"""

_RATE = _WINDOW + """
if estimate < tonumber(ARGV[3]) then
  local current = KEYS[1] .. ':' .. bucket
  redis.call('INCR', current)
  redis.call('PEXPIRE', current, math.ceil(interval * 2000) + 1000)
  return 1
end
return 0
"""

# a Lua number would come back truncated to an integer: the estimate travels as text
_COUNT = _WINDOW + """
return tostring(estimate)
"""

_INFLIGHT_ACQUIRE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_INFLIGHT_RELEASE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0
"""


class RedisCounters:
    """``pingap.plugins.CounterStore`` backed by Redis."""

    def __init__(self, url: str, *, fail_open: bool = True) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=TIMEOUT,
                                           socket_connect_timeout=TIMEOUT)
        self.fail_open = fail_open
        self.url = url
        self._down_until = 0.0
        self._failing = False
        self._rate = self.client.register_script(_RATE)
        self._count = self.client.register_script(_COUNT)
        self._acquire = self.client.register_script(_INFLIGHT_ACQUIRE)
        self._release = self.client.register_script(_INFLIGHT_RELEASE)

    def _run(self, script: Any, key: str, *args: object) -> Any:
        now = time.monotonic()
        if now < self._down_until:
            return None
        try:
            result = script(keys=["pingap:{" + key + "}"], args=list(args))
        except redis.RedisError as exc:
            if not self._failing:
                log.error("redis %s unreachable (%s); limits fail %s", self.url, exc,
                          "open" if self.fail_open else "closed")
            self._failing = True
            self._down_until = now + RETRY_AFTER
            return None
        if self._failing:
            log.warning("redis %s is back; limits enforced again", self.url)
            self._failing = False
        return result

    def rate_acquire(self, name: str, interval: float, limit: float) -> bool:
        result = self._run(self._rate, name, interval, RATE_BUCKETS, limit)
        return self.fail_open if result is None else int(result) == 1

    def rate_count(self, name: str, interval: float) -> float:
        result = self._run(self._count, name, interval, RATE_BUCKETS)
        if result is None:
            return 0.0 if self.fail_open else float("inf")
        return float(result)

    def inflight_acquire(self, name: str, limit: int) -> bool:
        result = self._run(self._acquire, name, limit, INFLIGHT_TTL)
        return self.fail_open if result is None else int(result) == 1

    def inflight_release(self, name: str) -> None:
        self._run(self._release, name)
