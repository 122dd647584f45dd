"""RESP2 and RESP3, the Redis wire protocol: an incremental request parser and a reply encoder.

Sans-IO, in the manner of h11: :class:`RespParser` is fed whatever bytes arrived and hands out
complete commands; :func:`encode` turns reply values into bytes.  Neither touches a socket.

Requests come in the two forms Redis accepts::

    *2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n     array of bulk strings (redis-cli, redis-py, ...)
    GET k\\r\\n                            inline command (telnet, nc)

Reply values map to RESP types like this:

==================  ==============================  ==================================
value               RESP2                           RESP3 (a connection after HELLO 3)
==================  ==============================  ==================================
``SimpleString``    ``+OK``                         the same
``Error``           ``-ERR message``                the same
``int``             ``:42``                         the same
``bytes`` / ``str`` bulk string ``$3\\r\\nabc``     the same
``None``            null bulk string ``$-1``        null ``_``
``list``/``tuple``  array of any of these           the same (``*``)
``dict``            flat array key, value, ...      map ``%``
``bool``            ``:1`` / ``:0``                 boolean ``#t`` / ``#f``
``float``           bulk string ``$4\\r\\n1.5``     double ``,1.5``
``Verbatim``        bulk string                     verbatim string ``=``, ``txt:``
==================  ==============================  ==================================

RESP2 is the default (:func:`encode`, :func:`encode_many` with ``proto=2``), byte for byte what
it was before RESP3 existed here.

Limits (``max_bulk``, ``max_array``, ``max_inline``) bound what one client can make the server
buffer; exceeding one, or any malformed input, raises :class:`ProtocolError`, after which the
connection is unusable (the server answers with the error and closes it), as in Redis.

:func:`parse_reply` is the other direction (a reply parser) for the small clients in this package
(the CLI's ``status`` command).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import RaftError

DEFAULT_MAX_BULK = 64 * 1024 * 1024
"""Largest bulk string accepted in a request, in bytes (Redis: 512 MiB)."""

DEFAULT_MAX_ARRAY = 1024 * 1024
"""Most elements accepted in one request array (Redis: 1M or more)."""

DEFAULT_MAX_INLINE = 64 * 1024
"""Longest inline command line, in bytes (Redis: 64 KiB)."""

_MAX_HEADER = 32  # "*<count>\r\n" and "$<length>\r\n" never need more bytes than this
_CRLF = b"\r\n"


class ProtocolError(RaftError, ValueError):
    """A client sent bytes that are not valid RESP, or exceeded a limit.

    The client's fault.  The parser that raised it is unusable afterwards (every later call
    raises the same error); the server closes that connection and keeps serving the others.
    """


class SimpleString(str):
    """A reply sent as a RESP simple string (``+OK``); must not contain CR or LF."""

    __slots__ = ()


class Error(str):
    """A reply sent as a RESP error (``-ERR message``); the first word is the error code."""

    __slots__ = ()


class Verbatim(str):
    """Text sent as a RESP3 verbatim string (``=<len>\\r\\ntxt:...``), as a bulk string in
    RESP2: what Redis answers INFO and CLIENT INFO with."""

    __slots__ = ()


OK = SimpleString("OK")
PONG = SimpleString("PONG")
QUEUED = SimpleString("QUEUED")


# -- request parsing ---------------------------------------------------------------------------


def _parse_int(line: bytes | bytearray, what: str) -> int:
    """Strict decimal integer (no sign other than a leading '-', no spaces, no '_')."""
    digits = line[1:] if line[:1] == b"-" else line
    if not digits or not digits.isdigit() or len(digits) > 19:
        raise ProtocolError(f"invalid {what} {bytes(line)[:_MAX_HEADER]!r}")
    return int(line)


class RespParser:
    """Incremental parser of client requests (arrays of bulk strings, or inline commands).

    Usage::

        parser.feed(data)
        while (command := parser.get_command()) is not None:
            handle(command)           # command: list[bytes], at least one element

    Work per call is proportional to the bytes consumed, however the input is split: the
    partially read array and the length of a pending bulk string are kept between calls.

    Not thread-safe: one parser per connection, used by one thread.
    """

    def __init__(self, *, max_bulk: int = DEFAULT_MAX_BULK, max_array: int = DEFAULT_MAX_ARRAY,
                 max_inline: int = DEFAULT_MAX_INLINE) -> None:
        """Args: the limits described in the module docstring (all must be >= 1).

        Raises:
            ValueError: a limit is not a positive integer.
        """
        for name, value in (("max_bulk", max_bulk), ("max_array", max_array),
                            ("max_inline", max_inline)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        self._max_bulk = max_bulk
        self._max_array = max_array
        self._max_inline = max_inline
        self._buf = bytearray()
        self._pos = 0  # bytes of _buf already consumed
        self._args: list[bytes] | None = None  # the array being filled, if any
        self._remaining = 0  # elements still missing from _args
        self._bulk_len = -1  # length of the bulk string whose header was read, else -1
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed by a complete command (for diagnostics)."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes; call :meth:`get_command` until it returns None."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def get_command(self) -> list[bytes] | None:
        """The next complete command, or None when more bytes are needed.

        Raises:
            ProtocolError: malformed input or a limit exceeded (and from then on, always).
        """
        if self._error is not None:
            raise self._error
        try:
            command = self._next()
        except ProtocolError as exc:
            self._error = exc
            raise
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[:self._pos]  # compact now and then; amortized O(1) per byte
            self._pos = 0
        return command

    def _line(self, limit: int, what: str) -> bytearray | None:
        """The next CRLF-terminated line (without CRLF), or None when incomplete."""
        buf = self._buf
        end = buf.find(_CRLF, self._pos, self._pos + limit + 2)
        if end < 0:
            if len(buf) - self._pos >= limit + 2:
                raise ProtocolError(f"{what} longer than {limit} bytes")
            return None
        line = buf[self._pos:end]
        self._pos = end + 2
        return line

    def _fast(self) -> list[bytes] | None:
        """The array of bulk strings that starts at ``_pos`` when it is wholly buffered and
        plainly well-formed (positive counts and lengths within the limits, CRLFs where they
        belong); None otherwise, consuming nothing, so that :meth:`_next` takes the incremental
        path (which also reports every error).  The common case of pipelined requests: one
        loop with local variables instead of a call per element."""
        buf = self._buf
        pos = self._pos
        find = buf.find
        end = find(_CRLF, pos, pos + _MAX_HEADER)
        if end < 0:
            return None
        digits = buf[pos + 1:end]
        if not digits.isdigit() or len(digits) > 19:
            return None
        count = int(digits)
        if count <= 0 or count > self._max_array:
            return None
        pos = end + 2
        size = len(buf)
        max_bulk = self._max_bulk
        args = []
        for _ in range(count):
            if pos >= size or buf[pos] != 0x24:  # '$'
                return None
            end = find(_CRLF, pos, pos + _MAX_HEADER)
            if end < 0:
                return None
            digits = buf[pos + 1:end]
            if not digits.isdigit() or len(digits) > 19:
                return None
            length = int(digits)
            start = end + 2
            stop = start + length
            if length > max_bulk or stop + 2 > size or buf[stop:stop + 2] != _CRLF:
                return None
            args.append(bytes(buf[start:stop]))
            pos = stop + 2
        self._pos = pos
        return args

    def _next(self) -> list[bytes] | None:
        buf = self._buf
        if self._args is None and self._pos < len(buf) and buf[self._pos] == 0x2A:
            command = self._fast()
            if command is not None:
                return command
        while True:
            if self._args is None:
                if self._pos >= len(buf):
                    return None
                if buf[self._pos] != 0x2A:  # not '*': an inline command
                    command = self._inline()
                    if command is None or command:
                        return command
                    continue  # blank line: ignored, like Redis
                line = self._line(_MAX_HEADER, "array header")
                if line is None:
                    return None
                count = _parse_int(line[1:], "array length")
                if count > self._max_array:
                    raise ProtocolError(f"array of {count} elements exceeds max_array="
                                        f"{self._max_array}")
                if count <= 0:
                    continue  # "*0" and "*-1": nothing to run, like Redis
                self._args = []
                self._remaining = count
            if self._bulk_len < 0:
                if self._pos >= len(buf):
                    return None
                if buf[self._pos] != 0x24:  # '$'
                    raise ProtocolError(
                        f"expected '$' at the start of an array element, got "
                        f"{bytes(buf[self._pos:self._pos + 1])!r}")
                line = self._line(_MAX_HEADER, "bulk header")
                if line is None:
                    return None
                length = _parse_int(line[1:], "bulk length")
                if length < 0:
                    raise ProtocolError(f"invalid bulk length {length} in a request")
                if length > self._max_bulk:
                    raise ProtocolError(f"bulk string of {length} bytes exceeds max_bulk="
                                        f"{self._max_bulk}")
                self._bulk_len = length
            end = self._pos + self._bulk_len
            if len(buf) < end + 2:
                return None
            if buf[end:end + 2] != _CRLF:
                raise ProtocolError("bulk string not followed by CRLF")
            self._args.append(bytes(buf[self._pos:end]))
            self._pos = end + 2
            self._bulk_len = -1
            self._remaining -= 1
            if self._remaining == 0:
                command, self._args = self._args, None
                return command

    def _inline(self) -> list[bytes] | None:
        buf = self._buf
        end = buf.find(b"\n", self._pos, self._pos + self._max_inline + 1)
        if end < 0:
            if len(buf) - self._pos > self._max_inline:
                raise ProtocolError(f"inline command longer than max_inline={self._max_inline}")
            return None
        line = bytes(buf[self._pos:end]).rstrip(b"\r")
        self._pos = end + 1
        if b"\0" in line:
            raise ProtocolError("NUL byte in an inline command")
        return line.split()


# -- reply encoding ----------------------------------------------------------------------------


def encode(value: object, proto: int = 2) -> bytes:
    """The RESP bytes of one reply value (see the module docstring for the mapping); ``proto``
    is 2 or 3.

    Raises:
        TypeError: a value of an unsupported type (a bug in the caller).
        ValueError: a simple string or error containing CR or LF.
    """
    out: list[bytes] = []
    (_encode3_into if proto == 3 else _encode_into)(out, value)
    return b"".join(out)


def encode_many(values: Sequence[object], proto: int = 2) -> bytes:
    """The concatenated RESP bytes of several replies (one write for a pipeline)."""
    out: list[bytes] = []
    into = _encode3_into if proto == 3 else _encode_into
    for value in values:
        into(out, value)
    return b"".join(out)


def _encode_into(out: list[bytes], value: object) -> None:
    kind = type(value)
    if kind is bytes:
        out.append(b"$%d\r\n%b\r\n" % (len(value), value))  # type: ignore[arg-type]
    elif value is None:
        out.append(b"$-1\r\n")
    elif kind is SimpleString or kind is Error:
        text = value.encode(errors="replace")  # type: ignore[attr-defined]
        if b"\r" in text or b"\n" in text:
            raise ValueError(f"RESP simple string or error {value!r} contains CR or LF")
        out.append((b"+" if kind is SimpleString else b"-") + text + _CRLF)
    elif kind is int:
        out.append(b":%d\r\n" % value)  # type: ignore[str-format]
    elif kind is str or kind is Verbatim:
        data = value.encode(errors="replace")  # type: ignore[attr-defined]
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif kind is list or kind is tuple:
        out.append(b"*%d\r\n" % len(value))  # type: ignore[arg-type]
        for item in value:  # type: ignore[attr-defined]
            _encode_into(out, item)
    elif kind is dict:
        out.append(b"*%d\r\n" % (2 * len(value)))  # type: ignore[arg-type]
        for key, item in value.items():  # type: ignore[attr-defined]
            _encode_into(out, key)
            _encode_into(out, item)
    elif kind is bool:
        out.append(b":1\r\n" if value else b":0\r\n")
    elif kind is float:
        _encode_into(out, _double(value))  # type: ignore[arg-type]
    elif isinstance(value, bytearray | memoryview):
        _encode_into(out, bytes(value))
    else:
        raise TypeError(f"cannot encode {kind.__name__} as RESP")


def _encode3_into(out: list[bytes], value: object) -> None:
    kind = type(value)
    if kind is bytes:
        out.append(b"$%d\r\n%b\r\n" % (len(value), value))  # type: ignore[arg-type]
    elif value is None:
        out.append(b"_\r\n")
    elif kind is list or kind is tuple:
        out.append(b"*%d\r\n" % len(value))  # type: ignore[arg-type]
        for item in value:  # type: ignore[attr-defined]
            _encode3_into(out, item)
    elif kind is dict:
        out.append(b"%%%d\r\n" % len(value))  # type: ignore[arg-type]
        for key, item in value.items():  # type: ignore[attr-defined]
            _encode3_into(out, key)
            _encode3_into(out, item)
    elif kind is bool:
        out.append(b"#t\r\n" if value else b"#f\r\n")
    elif kind is float:
        out.append(b",%b\r\n" % _double(value))  # type: ignore[arg-type]
    elif kind is Verbatim:
        data = b"txt:" + value.encode(errors="replace")  # type: ignore[attr-defined]
        out.append(b"=%d\r\n%b\r\n" % (len(data), data))
    else:
        _encode_into(out, value)  # the types RESP2 and RESP3 share


def _double(value: float) -> bytes:
    """A double as Redis writes it (``inf``, ``-inf``, ``nan``, else the shortest repr)."""
    if value != value:
        return b"nan"
    if value in (float("inf"), float("-inf")):
        return b"inf" if value > 0 else b"-inf"
    return repr(value).encode()


# -- reply parsing (for small clients) ---------------------------------------------------------


def parse_reply(buf: bytes, pos: int = 0) -> tuple[object, int] | None:
    """Parse one reply starting at ``buf[pos]``: ``(value, end)`` or None when incomplete.

    Values come back as :func:`encode` takes them (SimpleString, Error, int, bytes, None, list;
    from RESP3 also dict, bool, float and Verbatim; sets and pushes as lists).

    Raises:
        ProtocolError: the bytes are not a RESP2 or RESP3 reply.
    """
    end = buf.find(_CRLF, pos)
    if end < 0:
        return None
    kind, line = buf[pos:pos + 1], buf[pos + 1:end]
    after = end + 2
    if kind == b"+":
        return SimpleString(line.decode(errors="replace")), after
    if kind == b"-":
        return Error(line.decode(errors="replace")), after
    if kind == b":":
        return _parse_int(line, "integer"), after
    if kind == b"$":
        length = _parse_int(line, "bulk length")
        if length < 0:
            return None, after
        if len(buf) < after + length + 2:
            return None
        if buf[after + length:after + length + 2] != _CRLF:
            raise ProtocolError("bulk string not followed by CRLF")
        return bytes(buf[after:after + length]), after + length + 2
    if kind == b"*" or kind == b"%" or kind == b"~" or kind == b">":
        count = _parse_int(line, "array length")
        if count < 0:
            return None, after
        items: list[object] = []
        for _ in range(2 * count if kind == b"%" else count):
            parsed = parse_reply(buf, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        if kind == b"%":
            return {_hashable(items[i]): items[i + 1] for i in range(0, len(items), 2)}, after
        return items, after
    if kind == b"_":
        return None, after
    if kind == b"#":
        return line == b"t", after
    if kind == b",":
        return float(line), after
    if kind == b"(":
        return _parse_int(line, "big number"), after
    if kind == b"=" or kind == b"!":
        length = _parse_int(line, "verbatim length")
        if len(buf) < after + length + 2:
            return None
        text = bytes(buf[after:after + length])
        if kind == b"!":
            return Error(text.decode(errors="replace")), after + length + 2
        return Verbatim(text[4:].decode(errors="replace")), after + length + 2
    raise ProtocolError(f"unknown reply type {kind!r}")


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value
