"""The master <-> worker control channel: length-prefixed, versioned msgpack frames.

One ``socketpair`` per worker carries these frames both ways::

    0        4         5        6
    +--------+---------+--------+-----------------------------+
    | length | version |  type  | payload: one msgpack value  |
    | u32 BE |   u8    |   u8   | (length - 2 bytes)          |
    +--------+---------+--------+-----------------------------+

``length`` counts the bytes after itself (version + type + payload). A frame with an
unknown version is a protocol error; an unknown type is passed up so that an older
master can ignore newer messages. This module only encodes and decodes bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

VERSION = 1
_HEAD = struct.Struct(">IBB")
MAX_FRAME = 1 << 20


class MessageType(enum.IntEnum):
    READY = 1       # worker -> master: serving; payload {"pid", "generation"}
    HEARTBEAT = 2   # worker -> master: alive; payload: worker stats
    STATS = 4       # master -> worker: ask for stats; worker answers with STATS
    DRAIN = 5       # master -> worker: stop accepting, finish in-flight, exit
    BOOT_ERROR = 6  # worker -> master: failed before serving; payload {"error": str}
    HANDOFF = 7     # old master -> new master: listening fds attached; {"addrs", "pid"}
    ACTIVATE = 8    # master -> standby worker: start serving as {"worker_id": n}
    ADMIN_REQUEST = 9   # worker -> master: an admin write/history/reload;
                        # {"id", "op", "category", "name", "values", "expected"}
    ADMIN_RESULT = 10   # master -> worker: its answer {"id", "status", "body"}
    NOTIFY = 11     # worker -> master: an event for the webhook;
                    # {"category", "level", "title", "message", "key"}


class ProtocolError(Exception):
    """Bytes that are not a valid control frame."""


@dataclass(frozen=True, slots=True)
class Message:
    type: int
    payload: Any = None


def encode(message_type: int, payload: Any = None) -> bytes:
    body = msgpack.packb(payload, use_bin_type=True)
    if len(body) + 2 > MAX_FRAME:
        raise ProtocolError(f"frame too large ({len(body)} bytes)")
    return _HEAD.pack(len(body) + 2, VERSION, int(message_type)) + body


class Decoder:
    """Feed bytes in, take complete messages out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        buf = self._buf
        while len(buf) >= _HEAD.size:
            length, version, message_type = _HEAD.unpack_from(buf)
            if version != VERSION:
                raise ProtocolError(f"unsupported control frame version {version}")
            if length < 2 or length > MAX_FRAME:
                raise ProtocolError(f"bad control frame length {length}")
            if len(buf) < 4 + length:
                break
            try:
                payload = msgpack.unpackb(bytes(buf[_HEAD.size:4 + length]), raw=False)
            except (ValueError, msgpack.UnpackException) as exc:
                raise ProtocolError(f"bad control frame payload: {exc}") from exc
            del buf[:4 + length]
            out.append(Message(message_type, payload))
        return out
