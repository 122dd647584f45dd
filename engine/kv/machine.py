"""The replicated key-value state machine: Redis string commands on a dict of bytes.

Commands: SET, GET, DEL, INCR, INCRBY, DECR, DECRBY, APPEND, EXISTS, MSET, MGET, with Redis's
semantics and error replies (only the string type exists; SET takes no options).

How commands travel: the server turns a write (``SET k v``) into a compact binary command with
:func:`encode_command` and proposes it; every replica's :meth:`KVMachine.apply` decodes it and
runs it.  Reads (``GET``, ``MGET``, ``EXISTS``) never enter the log: the server runs them with
``node.read(lambda m: m.execute(op, args))`` at a linearizable point.

Command format (little-endian; no pickle, nothing but lengths and bytes)::

    u8 opcode | u32 argument count | (u32 length | bytes) per argument

Snapshot format::

    b"KVS1" | u64 key count | (u32 key length | u32 value length | key | value) per key,
    keys in sorted order (so equal states give equal snapshots)

Replies are the RESP values of :mod:`engine.kv.resp` (``OK``, ``Error``, int, bytes, None, list);
a command that fails (INCR of a non-integer) returns an :class:`~engine.kv.resp.Error` rather
than raising, the same on every replica.
"""

from __future__ import annotations

import enum
import logging
import re
import struct
from collections.abc import Sequence
from typing import NamedTuple

from engine.errors import InvariantError
from engine.kv.resp import OK, Error

logger = logging.getLogger(__name__)

_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)
_REDIS_INT = re.compile(rb"-?[1-9][0-9]{0,19}|0")
_HEAD = struct.Struct("<BI")
_LEN = struct.Struct("<I")
_SNAP_MAGIC = b"KVS1"
_SNAP_COUNT = struct.Struct("<Q")
_SNAP_ITEM = struct.Struct("<II")

NOT_AN_INTEGER = Error("ERR value is not an integer or out of range")
OVERFLOW = Error("ERR increment or decrement would overflow")
SYNTAX_ERROR = Error("ERR syntax error")


class Op(enum.IntEnum):
    """Opcodes of the data commands (the first byte of an encoded command)."""

    SET = 1
    DEL = 2
    INCR = 3
    APPEND = 4
    MSET = 5
    GET = 6
    MGET = 7
    EXISTS = 8
    INCRBY = 9
    DECR = 10
    DECRBY = 11


class CommandSpec(NamedTuple):
    """One data command: its opcode, Redis arity and whether it changes state."""

    op: Op
    arity: int
    """Redis convention, counting the command name: n = exactly n, -n = at least n."""
    write: bool


COMMANDS: dict[bytes, CommandSpec] = {
    b"set": CommandSpec(Op.SET, -3, True),
    b"del": CommandSpec(Op.DEL, -2, True),
    b"incr": CommandSpec(Op.INCR, 2, True),
    b"incrby": CommandSpec(Op.INCRBY, 3, True),  # redis-py's incr() sends INCRBY key 1
    b"decr": CommandSpec(Op.DECR, 2, True),
    b"decrby": CommandSpec(Op.DECRBY, 3, True),
    b"append": CommandSpec(Op.APPEND, 3, True),
    b"mset": CommandSpec(Op.MSET, -3, True),
    b"get": CommandSpec(Op.GET, 2, False),
    b"mget": CommandSpec(Op.MGET, -2, False),
    b"exists": CommandSpec(Op.EXISTS, -2, False),
}
"""Data commands by lower-case name."""

_NAMES = {spec.op: name.decode() for name, spec in COMMANDS.items()}
_ARITY = {spec.op: spec.arity for spec in COMMANDS.values()}
_OPS: dict[int, Op] = {int(op): op for op in Op}  # decoding without Op(code): ~0.4 us saved
_SET = Op.SET
_SET_HEAD = _HEAD.pack(Op.SET, 2)
_SET_MIN = _HEAD.size + 2 * _LEN.size  # a SET of an empty key to an empty value


def arity_ok(arity: int, argc: int) -> bool:
    """Whether ``argc`` words (command name included) satisfy a Redis ``arity``."""
    return argc == arity if arity > 0 else argc >= -arity


def wrong_arity(name: str) -> Error:
    """Redis's reply to a command with the wrong number of arguments."""
    return Error(f"ERR wrong number of arguments for '{name}' command")


def check_args(op: Op, args: Sequence[bytes]) -> Error | None:
    """The error reply for arguments ``op`` cannot take (``args`` without the name), or None."""
    if not arity_ok(_ARITY[op], len(args) + 1):
        return wrong_arity(_NAMES[op])
    if op is Op.SET and len(args) != 2:
        return SYNTAX_ERROR  # SET options (EX, NX, ...) are not supported
    if op is Op.MSET and len(args) % 2:
        return wrong_arity(_NAMES[op])
    return None


def encode_command(op: Op, args: Sequence[bytes]) -> bytes:
    """The log bytes of one data command."""
    parts = [_HEAD.pack(op, len(args))]
    for arg in args:
        parts.append(_LEN.pack(len(arg)))
        parts.append(arg)
    return b"".join(parts)


def decode_command(data: bytes) -> tuple[Op, list[bytes]]:
    """Inverse of :func:`encode_command`.

    Raises:
        ValueError: the bytes are not an encoded command.
    """
    if len(data) < _HEAD.size:
        raise ValueError(f"command of {len(data)} bytes is shorter than its header")
    code, count = _HEAD.unpack_from(data, 0)
    op = _OPS.get(code)
    if op is None:
        raise ValueError(f"{code} is not a command code")
    pos = _HEAD.size
    args: list[bytes] = []
    for _ in range(count):
        if pos + _LEN.size > len(data):
            raise ValueError("command truncated in an argument length")
        (length,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        if pos + length > len(data):
            raise ValueError("command truncated in an argument")
        args.append(data[pos:pos + length])
        pos += length
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} stray bytes after the command")
    return op, args


def parse_int64(value: bytes) -> int | None:
    """The integer a Redis string holds, or None (Redis's string2ll: no '+', spaces or leading
    zeros, within a signed 64-bit range)."""
    if not _REDIS_INT.fullmatch(value):
        return None
    number = int(value)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


class KVMachine:
    """A dict of byte strings replicated by Raft (see the module docstring).

    Threading: the node calls ``apply``, ``snapshot``, ``restore`` and read functions from one
    thread only (its loop thread, or its apply thread), so there is no lock.  Do not touch
    ``data`` from other threads while the node runs.
    """

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}  # owned by the thread that applies

    def __len__(self) -> int:
        return len(self.data)

    # -- StateMachine ------------------------------------------------------------------------

    def apply(self, index: int, command: bytes) -> object:
        """Decode and run one committed command; returns its RESP reply value."""
        if command.startswith(_SET_HEAD) and len(command) >= _SET_MIN:  # the common case
            key_len = _LEN.unpack_from(command, _HEAD.size)[0]
            key_end = _HEAD.size + _LEN.size + key_len
            if key_end + _LEN.size <= len(command):
                value_len = _LEN.unpack_from(command, key_end)[0]
                if key_end + _LEN.size + value_len == len(command):
                    self.data[command[_HEAD.size + _LEN.size:key_end]] = \
                        command[key_end + _LEN.size:]
                    return OK
        try:
            op, args = decode_command(command)
        except ValueError as exc:
            logger.error("entry %d is not a KV command (%s); ignored", index, exc)
            return Error("ERR malformed command in the log")
        return self.execute(op, args)

    def snapshot(self) -> bytes:
        """The whole state in the snapshot format of the module docstring."""
        parts = [_SNAP_MAGIC, _SNAP_COUNT.pack(len(self.data))]
        for key in sorted(self.data):
            value = self.data[key]
            parts += (_SNAP_ITEM.pack(len(key), len(value)), key, value)
        return b"".join(parts)

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot`.

        Raises:
            ValueError: ``data`` is not a snapshot (the state is left unchanged).
        """
        view = memoryview(data)
        header = len(_SNAP_MAGIC) + _SNAP_COUNT.size
        if len(view) < header or bytes(view[:4]) != _SNAP_MAGIC:
            raise ValueError("not a KV snapshot (bad magic)")
        (count,) = _SNAP_COUNT.unpack_from(view, 4)
        pos = header
        restored: dict[bytes, bytes] = {}
        for _ in range(count):
            if pos + _SNAP_ITEM.size > len(view):
                raise ValueError("KV snapshot truncated")
            key_len, value_len = _SNAP_ITEM.unpack_from(view, pos)
            pos += _SNAP_ITEM.size
            end = pos + key_len + value_len
            if end > len(view):
                raise ValueError("KV snapshot truncated")
            restored[bytes(view[pos:pos + key_len])] = bytes(view[pos + key_len:end])
            pos = end
        if pos != len(view):
            raise ValueError(f"{len(view) - pos} stray bytes after the KV snapshot")
        self.data = restored

    # -- commands ----------------------------------------------------------------------------

    def execute(self, op: Op, args: Sequence[bytes]) -> object:
        """Run one data command (``args`` without the command name); returns its reply.

        Checks the arguments itself (:func:`check_args`), so a hand-made command cannot corrupt
        the state.
        """
        error = check_args(op, args)
        if error is not None:
            return error
        data = self.data
        if op is Op.GET:
            return data.get(args[0])
        if op is Op.SET:
            data[args[0]] = args[1]
            return OK
        if op is Op.MGET:
            return [data.get(key) for key in args]
        if op is Op.MSET:
            for i in range(0, len(args), 2):
                data[args[i]] = args[i + 1]
            return OK
        if op is Op.DEL:
            removed = 0
            for key in args:
                if data.pop(key, None) is not None:
                    removed += 1
            return removed
        if op is Op.EXISTS:
            return sum(1 for key in args if key in data)
        if op is Op.INCR:
            return self._add(args[0], 1)
        if op is Op.INCRBY or op is Op.DECRBY:
            delta = parse_int64(args[1])
            if delta is None:
                return NOT_AN_INTEGER
            return self._add(args[0], delta if op is Op.INCRBY else -delta)
        if op is Op.DECR:
            return self._add(args[0], -1)
        if op is Op.APPEND:
            value = data.get(args[0], b"") + args[1]
            data[args[0]] = value
            return len(value)
        raise InvariantError(f"unhandled op {op!r}")  # every Op is handled above

    def _add(self, key: bytes, delta: int) -> object:
        """INCR and friends: the new value, or an error when the value is not an integer or the
        result leaves the signed 64-bit range."""
        old = self.data.get(key)
        number = 0 if old is None else parse_int64(old)
        if number is None:
            return NOT_AN_INTEGER
        number += delta
        if not _INT64_MIN <= number <= _INT64_MAX:
            return OVERFLOW
        self.data[key] = b"%d" % number
        return number
