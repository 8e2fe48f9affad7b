"""Tests for pingap.control: length-prefixed, versioned msgpack frames and the Decoder."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from pingap.control import MAX_FRAME, VERSION, Decoder, Message, MessageType, ProtocolError, encode

PAYLOADS: list[Any] = [
    None,
    {},
    {"pid": 1234, "generation": 7},
    {"error": "bind failed: address in use ☹"},
    {"addrs": ["0.0.0.0:80", "[::]:443"], "pid": 99},
    {"requests": 2**40, "load": 0.75, "ok": True, "nothing": None, "raw": b"\x00\xff"},
    {"nested": {"a": [1, [2, [3, {"b": -4}]]]}},
    [1, "two", 3.0],
    "text",
    b"bytes",
    -1,
]


def frame(length: int, version: int, message_type: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBB", length, version, message_type) + payload


@pytest.mark.parametrize("message_type", list(MessageType))
@pytest.mark.parametrize("payload", PAYLOADS)
def test_round_trip_every_type(message_type: MessageType, payload: Any) -> None:
    data = encode(message_type, payload)
    assert Decoder().feed(data) == [Message(message_type, payload)]


def test_decoded_type_compares_equal_to_the_enum() -> None:
    (message,) = Decoder().feed(encode(MessageType.DRAIN))
    assert message.type == MessageType.DRAIN
    assert message.payload is None
    assert MessageType(message.type) is MessageType.DRAIN


def test_frame_layout() -> None:
    data = encode(MessageType.READY, None)
    assert data == b"\x00\x00\x00\x03" + bytes([VERSION, MessageType.READY]) + b"\xc0"
    data = encode(MessageType.HEARTBEAT, {"a": 1})
    length, version, message_type = struct.unpack(">IBB", data[:6])
    assert (length, version, message_type) == (len(data) - 4, VERSION, MessageType.HEARTBEAT)


def test_tuples_come_back_as_lists() -> None:
    (message,) = Decoder().feed(encode(MessageType.HANDOFF, {"addrs": ("a", "b")}))
    assert message.payload == {"addrs": ["a", "b"]}


def test_frames_split_byte_by_byte() -> None:
    messages = [(t, {"n": i, "s": "x" * i}) for i, t in enumerate(MessageType)]
    data = b"".join(encode(t, p) for t, p in messages)
    decoder = Decoder()
    got: list[Message] = []
    ends = set()
    pos = 0
    for t, p in messages:
        pos += len(encode(t, p))
        ends.add(pos)
    for i in range(len(data)):
        out = decoder.feed(data[i:i + 1])
        if i + 1 in ends:
            assert len(out) == 1, i
        else:
            assert out == [], i
        got += out
    assert got == [Message(t, p) for t, p in messages]


@pytest.mark.parametrize("split", [1, 3, 4, 5, 6, 7, 10])
def test_frame_split_at_every_boundary(split: int) -> None:
    data = encode(MessageType.STATS, {"k": "v" * 5})
    decoder = Decoder()
    assert decoder.feed(data[:split]) == []
    assert decoder.feed(data[split:]) == [Message(MessageType.STATS, {"k": "vvvvv"})]


def test_several_frames_in_one_feed() -> None:
    data = (encode(MessageType.READY, {"pid": 1}) + encode(MessageType.HEARTBEAT, {"c": 2})
            + encode(MessageType.DRAIN))
    assert Decoder().feed(data) == [Message(MessageType.READY, {"pid": 1}),
                                    Message(MessageType.HEARTBEAT, {"c": 2}),
                                    Message(MessageType.DRAIN, None)]


def test_complete_frames_and_a_partial_one() -> None:
    first = encode(MessageType.READY, {"pid": 1})
    second = encode(MessageType.BOOT_ERROR, {"error": "boom"})
    decoder = Decoder()
    assert decoder.feed(first + second[:5]) == [Message(MessageType.READY, {"pid": 1})]
    assert decoder.feed(b"") == []
    assert decoder.feed(second[5:]) == [Message(MessageType.BOOT_ERROR, {"error": "boom"})]
    assert decoder.feed(b"") == []


def test_empty_feed_gives_nothing() -> None:
    assert Decoder().feed(b"") == []


@pytest.mark.parametrize("message_type", [0, 99, 255])
def test_unknown_type_is_passed_up(message_type: int) -> None:
    (message,) = Decoder().feed(frame(3, VERSION, message_type, b"\x01"))
    assert message == Message(message_type, 1)


@pytest.mark.parametrize("version", [0, VERSION + 1, 255])
def test_wrong_version_is_a_protocol_error(version: int) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(frame(3, version, MessageType.READY, b"\xc0"))


def test_wrong_version_is_detected_from_the_header_alone() -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(frame(100, VERSION + 1, MessageType.READY))


def test_wrong_version_after_a_good_frame() -> None:
    decoder = Decoder()
    assert decoder.feed(encode(MessageType.READY, 1)) == [Message(MessageType.READY, 1)]
    with pytest.raises(ProtocolError):
        decoder.feed(frame(3, VERSION + 1, MessageType.READY, b"\xc0"))


@pytest.mark.parametrize("length", [0, 1, MAX_FRAME + 1, 2**32 - 1])
def test_bad_length_is_a_protocol_error(length: int) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(frame(length, VERSION, MessageType.READY))


def test_largest_frame_round_trips() -> None:
    # bin 32 header: 5 bytes; + version/type: 2 -> length == MAX_FRAME exactly
    payload = b"x" * (MAX_FRAME - 7)
    data = encode(MessageType.STATS, payload)
    assert struct.unpack(">I", data[:4])[0] == MAX_FRAME
    decoder = Decoder()
    assert decoder.feed(data[:1000]) == []
    assert decoder.feed(data[1000:]) == [Message(MessageType.STATS, payload)]


def test_oversize_frame_is_refused_by_encode() -> None:
    with pytest.raises(ProtocolError):
        encode(MessageType.STATS, b"x" * (MAX_FRAME - 6))


@pytest.mark.parametrize("payload", [b"", b"\xc1", b"\x01\x02", b"\x92\x01"])
def test_bad_payload_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(frame(len(payload) + 2, VERSION, MessageType.HEARTBEAT, payload))
