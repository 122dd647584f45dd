"""RESP2 codec: the incremental parser (limits, malformed input, fuzzing) and the encoder."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kv.resp import (
    OK,
    Error,
    ProtocolError,
    RespParser,
    SimpleString,
    encode,
    encode_many,
    parse_reply,
)

commands = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), max_size=8)


def parse_all(parser: RespParser, data: bytes = b"") -> list[list[bytes]]:
    if data:
        parser.feed(data)
    out = []
    while (command := parser.get_command()) is not None:
        out.append(command)
    return out


def request(*args: bytes) -> bytes:
    return encode(list(args))


# -- parser: valid input ---------------------------------------------------------------------


def test_array_and_inline_commands() -> None:
    data = request(b"SET", b"k", b"v\r\n") + b"PING\r\n" + b"  GET   k \r\n" + b"ECHO x\n"
    assert parse_all(RespParser(), data) == [[b"SET", b"k", b"v\r\n"], [b"PING"],
                                             [b"GET", b"k"], [b"ECHO", b"x"]]


def test_blank_lines_and_empty_arrays_are_skipped() -> None:
    assert parse_all(RespParser(), b"\r\n\n*0\r\n*-1\r\nPING\r\n") == [[b"PING"]]


def test_empty_bulk_string() -> None:
    assert parse_all(RespParser(), b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n") == [[b"GET", b""]]


def test_byte_at_a_time() -> None:
    data = request(b"MSET", b"a", b"1", b"b", b"22") + b"PING\r\n"
    parser = RespParser()
    got = []
    for i in range(len(data)):
        got += parse_all(parser, data[i:i + 1])
    assert got == [[b"MSET", b"a", b"1", b"b", b"22"], [b"PING"]]
    assert parser.buffered == 0


@given(commands, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_any_split_gives_the_same_commands(cmds: list[list[bytes]], cuts: list[int]) -> None:
    data = b"".join(encode(c) for c in cmds)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    parser = RespParser()
    got = []
    for start, end in itertools.pairwise(points):
        got += parse_all(parser, data[start:end])
    assert got == cmds


# -- parser: malformed input and limits ------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"*1\r\n:5\r\n",                   # element is not a bulk string
    b"*1\r\n$abc\r\n",                 # bulk length not a number
    b"*1\r\n$+3\r\nfoo\r\n",           # sign not allowed
    b"*1\r\n$1_0\r\n",                 # Python's int() would take it
    b"*1\r\n$ 3\r\nfoo\r\n",
    b"*1\r\n$-1\r\n",                  # null bulk in a request
    b"*1\r\n$3\r\nfooXY",              # bulk not followed by CRLF
    b"*x\r\n",                         # array length not a number
    b"*" + b"9" * 40 + b"\r\n",        # header far too long
    b"*1\r\n$" + b"1" * 40,            # unterminated header longer than any valid one
    b"PING\0\r\n",                     # NUL in an inline command
])
def test_malformed_input_raises_protocol_error(data: bytes) -> None:
    parser = RespParser()
    parser.feed(data)
    with pytest.raises(ProtocolError):
        parse_all(parser)


def test_limits() -> None:
    parser = RespParser(max_bulk=4, max_array=3, max_inline=10)
    assert parse_all(parser, request(b"a", b"bcde")) == [[b"a", b"bcde"]]
    with pytest.raises(ProtocolError, match="max_bulk=4"):
        parse_all(parser, b"*1\r\n$5\r\n")
    parser = RespParser(max_array=3)
    with pytest.raises(ProtocolError, match="max_array=3"):
        parse_all(parser, b"*4\r\n")
    parser = RespParser(max_inline=10)
    assert parse_all(parser, b"0123456789\n") == [[b"0123456789"]]
    with pytest.raises(ProtocolError, match="max_inline=10"):
        parse_all(parser, b"0123456789ab")  # no newline yet, already too long


def test_huge_declared_bulk_is_refused_before_buffering() -> None:
    parser = RespParser()
    with pytest.raises(ProtocolError, match="max_bulk"):
        parse_all(parser, b"*1\r\n$999999999999\r\n")


def test_parser_stays_failed() -> None:
    parser = RespParser()
    parser.feed(b"*1\r\n$x\r\n")
    with pytest.raises(ProtocolError) as first:
        parser.get_command()
    parser.feed(b"PING\r\n")
    with pytest.raises(ProtocolError) as second:
        parser.get_command()
    assert second.value is first.value


def test_bad_limits_rejected() -> None:
    with pytest.raises(ValueError, match="max_bulk"):
        RespParser(max_bulk=0)


def drain(parser: RespParser, data: bytes, chunk: int) -> None:
    """Feed ``data`` in chunks; parse until each chunk is used up.  Only ProtocolError may
    escape, and every loop must end (each get_command either consumes input or returns None)."""
    for start in range(0, max(len(data), 1), chunk):
        parser.feed(data[start:start + chunk])
        for _ in range(len(data) + 2):  # more commands than bytes is impossible
            if parser.get_command() is None:
                break
        else:
            raise AssertionError("the parser kept returning commands without consuming input")


@settings(max_examples=500)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    parser = RespParser(max_bulk=64, max_array=8, max_inline=64)
    with contextlib.suppress(ProtocolError):
        drain(parser, data, chunk)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(b"".join(encode(c) for c in draw(commands)) + b"PING\r\n")
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.sampled_from(b"*$:+-\r\n0123456789-x \x00\xff"))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"*", b"$", b"-1", b"99999999999"]))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(min_value=1, max_value=4))]
        else:
            del data[pos:]
    return bytes(data)


@settings(max_examples=500)
@given(mutated_requests(), st.integers(min_value=1, max_value=32))
def test_fuzz_mutated_valid_input(data: bytes, chunk: int) -> None:
    parser = RespParser(max_bulk=1000, max_array=100, max_inline=1000)
    with contextlib.suppress(ProtocolError):
        drain(parser, data, chunk)


# -- encoder and reply parser ----------------------------------------------------------------


def test_encode_each_type() -> None:
    assert encode(OK) == b"+OK\r\n"
    assert encode(Error("ERR bad")) == b"-ERR bad\r\n"
    assert encode(-7) == b":-7\r\n"
    assert encode(b"a\r\nb") == b"$4\r\na\r\nb\r\n"
    assert encode("é") == b"$2\r\n\xc3\xa9\r\n"
    assert encode(None) == b"$-1\r\n"
    assert encode([b"x", None, [1]]) == b"*3\r\n$1\r\nx\r\n$-1\r\n*1\r\n:1\r\n"
    assert encode([]) == b"*0\r\n"
    assert encode_many([OK, 1]) == b"+OK\r\n:1\r\n"


def test_encode_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        encode(Error("ERR two\r\nlines"))
    with pytest.raises(TypeError, match="complex"):
        encode(1j)


_line_text = st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                            blacklist_categories=["Cs"]), max_size=20)
replies = st.recursive(
    st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.binary(),
              _line_text.map(SimpleString), _line_text.map(Error)),
    lambda children: st.lists(children, max_size=4), max_leaves=12)


@given(replies)
def test_reply_round_trip(value: object) -> None:
    data = encode(value)
    assert parse_reply(data) == (value, len(data))
    assert parse_reply(data[:-1]) is None
