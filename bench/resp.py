"""A minimal RESP2 codec for the benchmark's separate processes, on the standard library only.

The load generator (bench/loadgen.py), the PySyncObj node (bench/pysyncobj_node.py) and the
harness's own small client (bench/processes.py) use it, so none of them imports the engine:
the same code drives the engine under test, an older revision of it (bench/ab.py) and PySyncObj.
"""

from __future__ import annotations

CRLF = b"\r\n"


class ProtocolError(ValueError):
    """The bytes are not RESP2."""


class Error(str):
    """An error reply (``-ERR ...``), without the leading ``-``."""


class Simple(str):
    """A simple-string reply (``+OK``), without the leading ``+``."""


def encode_command(args: list[bytes]) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def encode_reply(value: object) -> bytes:
    """A reply: Simple, Error, int, bytes, None (nil bulk) or a list of those."""
    if isinstance(value, Error):
        return b"-" + value.encode() + CRLF
    if isinstance(value, Simple):
        return b"+" + value.encode() + CRLF
    if isinstance(value, bool | int):
        return b":%d\r\n" % int(value)
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, str):
        data = value.encode()
        return b"$%d\r\n%s\r\n" % (len(data), data)
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, list | tuple):
        return b"*%d\r\n" % len(value) + b"".join(encode_reply(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__} as RESP")


def _int(line: bytes, what: str) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"bad {what}: {line[:32]!r}") from None


def parse(buf: bytes, pos: int = 0) -> tuple[object, int] | None:
    """One RESP2 value starting at ``buf[pos]``: ``(value, end)``, or None when incomplete.

    Raises:
        ProtocolError: the bytes are not RESP2.
    """
    end = buf.find(CRLF, pos)
    if end < 0:
        return None
    kind, line = buf[pos:pos + 1], buf[pos + 1:end]
    after = end + 2
    if kind == b"+":
        return Simple(line.decode(errors="replace")), after
    if kind == b"-":
        return Error(line.decode(errors="replace")), after
    if kind == b":":
        return _int(line, "integer"), after
    if kind == b"$":
        length = _int(line, "bulk length")
        if length < 0:
            return None, after
        if len(buf) < after + length + 2:
            return None
        if buf[after + length:after + length + 2] != CRLF:
            raise ProtocolError("bulk string not followed by CRLF")
        return bytes(buf[after:after + length]), after + length + 2
    if kind == b"*":
        count = _int(line, "array length")
        if count < 0:
            return None, after
        items: list[object] = []
        for _ in range(count):
            parsed = parse(buf, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    raise ProtocolError(f"unknown RESP type {kind!r}")


def parse_command(buf: bytes, pos: int = 0) -> tuple[list[bytes], int] | None:
    """One client command at ``buf[pos]`` (an array of bulk strings, or an inline command as
    redis-cli may send): ``(args, end)``, or None when incomplete.

    Raises:
        ProtocolError: neither form.
    """
    if buf[pos:pos + 1] == b"*":
        parsed = parse(buf, pos)
        if parsed is None:
            return None
        value, end = parsed
        if not isinstance(value, list) or not all(isinstance(a, bytes) for a in value):
            raise ProtocolError("a command must be an array of bulk strings")
        return value, end   # type: ignore[return-value]
    end = buf.find(b"\n", pos)
    if end < 0:
        return None
    return buf[pos:end].strip().split(), end + 1
