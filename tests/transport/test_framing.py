"""Framing: round trips, streaming, and malformed input that must raise FrameError only."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.messages import Message, MessageKind
from engine.errors import FrameError
from engine.transport.framing import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    FrameDecoder,
    decode_message,
    encode_message,
)
from engine.types import Entry

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
SMALL = st.integers(min_value=0, max_value=1 << 40)
IDS = st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 1024)
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def entries(draw: st.DrawFn) -> tuple[Entry, ...]:
    start = draw(SMALL)
    count = draw(st.integers(min_value=0, max_value=5))
    return tuple(Entry(start + i, draw(SMALL), draw(st.integers(0, 255)),
                       draw(st.binary(max_size=64))) for i in range(count))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(list(MessageKind)))
    return Message(
        kind=kind, src=draw(IDS), dst=draw(IDS), term=draw(U64), log_term=draw(U64),
        index=draw(U64), entries=draw(entries()) if kind == MessageKind.APPEND else (),
        commit=draw(U64), reject=draw(st.booleans()), reject_hint=draw(U64),
        conflict_term=draw(U64), context=draw(U64), leader_last=draw(U64),
        recovering=draw(st.booleans()))


def _normal(msg: Message) -> Message:
    """Messages compare equal up to the container type of entries (tuple vs list)."""
    return dataclasses.replace(msg, entries=tuple(msg.entries))


def _raw_frame(*, kind: int = 3, magic: int = MAGIC, version: int = VERSION, flags: int = 0,
               src: bytes = b"a", dst: bytes = b"b", entry_count: int = 0,
               payload: bytes = b"", length_delta: int = 0) -> bytes:
    """Build a frame by hand, with a correct header CRC, to reach the checks behind the CRC."""
    length = HEADER_SIZE - 4 + len(src) + len(dst) + len(payload) + length_delta
    header = HEADER.pack(length, 0, magic, version, kind, 1, 0, 0, 0, 0, 0, 0, 0, flags,
                         len(src), len(dst), entry_count, len(payload))
    crc = zlib.crc32(header[8:] + src + dst)
    return header[:4] + struct.pack("<I", crc) + header[8:] + src + dst + payload


# ---------------------------------------------------------------- round trips

@FUZZ
@given(messages())
def test_round_trip(msg: Message) -> None:
    frame = encode_message(msg)
    assert _normal(decode_message(frame)) == _normal(msg)
    assert _normal(decode_message(bytearray(frame))) == _normal(msg)


@FUZZ
@given(st.lists(messages(), min_size=1, max_size=6), st.data())
def test_stream_split_anywhere(batch: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode_message(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    out: list[Message] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[previous:cut]))
        previous = cut
    assert [_normal(m) for m in out] == [_normal(m) for m in batch]
    assert decoder.buffered == 0


def test_decoder_can_be_resumed_after_stopping_iteration_early() -> None:
    batch = [Message(kind=MessageKind.HEARTBEAT, src="a", dst="b", term=t) for t in range(5)]
    decoder = FrameDecoder()
    iterator = decoder.feed(b"".join(encode_message(m) for m in batch))
    assert next(iterator).term == 0
    assert [m.term for m in decoder.feed(b"")] == [1, 2, 3, 4]


def test_large_append_round_trip_through_small_chunks() -> None:
    big = tuple(Entry(i, 7, 0, bytes([i % 251]) * 1000) for i in range(1, 301))
    msg = Message(kind=MessageKind.APPEND, src="n1", dst="n2", term=7, index=0, entries=big)
    frame = encode_message(msg)
    decoder = FrameDecoder()
    out: list[Message] = []
    for i in range(0, len(frame), 4096):
        out.extend(decoder.feed(memoryview(frame)[i:i + 4096]))
    assert len(out) == 1 and out[0].entries == big


# ---------------------------------------------------------------- fuzzing

@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_message(data)
    decoder = FrameDecoder(max_frame_size=1 << 16)
    with contextlib.suppress(FrameError):
        list(decoder.feed(data))


@FUZZ
@given(messages(), st.data())
def test_mutated_frames_raise_only_frame_error(msg: Message, data: st.DataObject) -> None:
    frame = bytearray(encode_message(msg))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if mutation == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(frame) - 1))
            frame[pos] ^= data.draw(st.integers(1, 255))
    elif mutation == "truncate":
        del frame[data.draw(st.integers(0, len(frame) - 1)):]
    elif mutation == "extend":
        frame += data.draw(st.binary(min_size=1, max_size=32))
    else:
        pos = data.draw(st.integers(0, len(frame)))
        frame[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        decoded = decode_message(bytes(frame))
    except FrameError:
        return
    assert isinstance(decoded, Message)  # a mutation may land on an unchecked bit; fine


# ---------------------------------------------------------------- precise errors

@pytest.mark.parametrize(
    ("frame", "pattern"),
    [
        (b"", r"truncated frame: 0 bytes"),
        (_raw_frame()[:-1], r"truncated frame: length field says 91 bytes, got 90"),
        (_raw_frame() + b"x", r"1 trailing bytes"),
        (_raw_frame(kind=99), r"unknown message kind 99"),
        (_raw_frame(kind=0), r"unknown message kind 0"),
        (_raw_frame(magic=0x1234), r"bad magic 0x1234"),
        (_raw_frame(version=9), r"unsupported frame version 9"),
        (_raw_frame(flags=0x80), r"unknown flag bits 0x80"),
        (_raw_frame(src=b""), r"src_len=0"),
        (_raw_frame(src=b"\xff\xfe"), r"not valid utf-8"),
        (_raw_frame(entry_count=2), r"header says 2 entries, payload holds 0"),
        (_raw_frame(kind=1, entry_count=1, payload=b"\x00" * 30),
         r"APPEND frame from 'a': bad entries: .*CRC mismatch"),
        # The codec words this one itself; we check the frame-level prefix.
        (_raw_frame(kind=1, entry_count=1, payload=b"\x00" * 3),
         r"APPEND frame from 'a': bad entries: "),
        (_raw_frame(length_delta=1) + b"z", r"disagrees with its header"),
    ],
)
def test_malformed_frames(frame: bytes, pattern: str) -> None:
    with pytest.raises(FrameError, match=pattern):
        decode_message(frame)


def test_corrupted_header_fails_crc() -> None:
    frame = bytearray(encode_message(Message(kind=MessageKind.VOTE, src="a", dst="b", term=5)))
    frame[13] ^= 1  # a bit of the term
    with pytest.raises(FrameError, match="header CRC mismatch"):
        decode_message(bytes(frame))


def test_oversized_frame_refused_from_its_length_prefix_alone() -> None:
    decoder = FrameDecoder(max_frame_size=4096)
    with pytest.raises(FrameError, match="exceeds max_frame_size=4096"):
        list(decoder.feed(struct.pack("<I", 1 << 30)))
    with pytest.raises(FrameError, match="already failed"):
        list(decoder.feed(_raw_frame()))
    with pytest.raises(FrameError, match="exceeds max_frame_size=100"):
        decode_message(_raw_frame(payload=b"x" * 100), max_frame_size=100)


def test_good_frames_before_a_bad_one_are_delivered() -> None:
    good = encode_message(Message(kind=MessageKind.HEARTBEAT, src="a", dst="b", term=1))
    decoder = FrameDecoder()
    out = []
    with pytest.raises(FrameError, match="unknown message kind"):
        for message in decoder.feed(good + good + _raw_frame(kind=42)):
            out.append(message)
    assert len(out) == 2


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"term": -1}, r"fields \['term'\] must be ints"),
        ({"context": 1 << 64}, r"fields \['context'\] must be ints"),
        ({"src": ""}, r"src/dst must be 1..1024 utf-8 bytes"),
        ({"dst": "x" * 2000}, r"src/dst must be 1..1024 utf-8 bytes"),
        ({"entries": (Entry(-1, 1, 0, b""),)}, r"cannot encode APPEND: .*record format"),
        ({"entries": (Entry(1, 1, 256, b""),)}, r"cannot encode APPEND: .*record format"),
    ],
)
def test_unencodable_messages(fields: dict[str, object], pattern: str) -> None:
    base: dict[str, object] = {"kind": MessageKind.APPEND, "src": "a", "dst": "b", "term": 1}
    base.update(fields)
    with pytest.raises(FrameError, match=pattern):
        encode_message(Message(**base))  # type: ignore[arg-type]


def test_encode_refuses_frames_over_the_limit() -> None:
    big = Message(kind=MessageKind.APPEND, src="a", dst="b", term=1,
                  entries=(Entry(1, 1, 0, b"x" * 5000),))
    with pytest.raises(FrameError, match="exceeds max_frame_size=4096"):
        encode_message(big, max_frame_size=4096)
