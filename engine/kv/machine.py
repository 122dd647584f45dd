"""The replicated key-value state machine: Redis string commands on a dict of bytes, with expiry.

Commands (Redis semantics and error replies; only the string type exists): writes SET (with
``EX``/``PX``/``EXAT``/``PXAT``/``KEEPTTL``, ``NX``/``XX`` and ``GET``), DEL, INCR, INCRBY,
DECR, DECRBY, APPEND, MSET, EXPIRE, PEXPIRE, PERSIST; reads GET, MGET, EXISTS, TTL, PTTL, TYPE,
DBSIZE, KEYS, SCAN.

How commands travel: the server turns a write (``SET k v``) into a compact binary command with
:func:`encode_command` and proposes it; every replica's :meth:`KVMachine.apply` decodes it and
runs it.  Reads never enter the log: the server runs them with
``node.read(lambda m: m.execute(op, args, now))`` at a linearizable point (ReadIndex, on the
leader).

Time and expiry (the rule that keeps replicas identical)
-------------------------------------------------------
A replica never looks at its own clock.  Time enters the state machine only as a number of
milliseconds carried by a command:

* The leader's server stamps its wall-clock time ``t`` into every write it proposes, except a
  plain ``SET k v`` and ``MSET`` (which overwrite whatever is there and clear its TTL, so time
  cannot change what they do; they keep the compact format below).
* The machine keeps ``clock``: the largest ``t`` of any command applied so far (it is part of
  the snapshot).  A timed write runs at ``now = clock = max(clock, t)``; an untimed write runs
  at ``now = clock``.  So time as the machine sees it never goes back, even when a new leader's
  clock is behind the old one's, and it is a function of the log alone.
* A key whose absolute expiry time ``at`` satisfies ``at <= now`` is absent for the command
  running at ``now``.  Relative expiries (``EX``, ``PX``, ``EXPIRE``) become absolute at the
  command's ``now``; every replica computes the same ``at``.
* A write that meets an expired key deletes it first (lazy expiry, at the same log position on
  every replica); the internal command :data:`PURGE` (timed, no arguments; the server proposes
  it now and then while keys have an expiry) deletes every key expired at its ``now``.
* A read runs at ``now = max(clock, t_read)``, where ``t_read`` is the time the leader's server
  stamped on the read when it issued it; reads change nothing (an expired key just looks
  absent), so the leader's state never differs from a follower's that applied the same log.
  Because a read is served after the leader applied everything committed before it started,
  a key the leader saw expire is never seen again by a later read or write.

Command format (little-endian; no pickle, nothing but lengths and bytes)::

    u8 opcode | u32 argument count | (u32 length | bytes) per argument               untimed
    u8 opcode | 0x80 | u32 argument count | i64 t (ms) | (u32 length | bytes) ...   timed

Snapshot formats (``restore`` reads both; ``snapshot`` writes KVS1 while the machine has never
seen a time, so an old state's snapshot is byte for byte what it was)::

    b"KVS1" | u64 key count | (u32 key length | u32 value length | key | value) per key
    b"KVS2" | i64 clock | u64 key count |
              (u32 key length | u32 value length | i64 expiry ms or -1 | key | value) per key

with keys in sorted order (so equal states give equal snapshots).

Replies are the RESP values of :mod:`engine.kv.resp` (``OK``, ``Error``, int, bytes, None, list);
a command that fails (INCR of a non-integer) returns an :class:`~engine.kv.resp.Error` rather
than raising, the same on every replica.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import logging
import re
import struct
from collections.abc import Sequence
from typing import NamedTuple

from engine.errors import InvariantError
from engine.kv.resp import OK, Error, SimpleString

logger = logging.getLogger(__name__)

_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)
_MAX_EXPIRY_MS = 1 << 62  # absolute expiry times stay far from i64 overflow
_REDIS_INT = re.compile(rb"-?[1-9][0-9]{0,19}|0")
_HEAD = struct.Struct("<BI")
_TIME = struct.Struct("<q")
_LEN = struct.Struct("<I")
_TIMED = 0x80
_SNAP_MAGIC = b"KVS1"
_SNAP2_MAGIC = b"KVS2"
_SNAP_COUNT = struct.Struct("<Q")
_SNAP_ITEM = struct.Struct("<II")
_SNAP2_ITEM = struct.Struct("<IIq")

NOT_AN_INTEGER = Error("ERR value is not an integer or out of range")
OVERFLOW = Error("ERR increment or decrement would overflow")
SYNTAX_ERROR = Error("ERR syntax error")
INVALID_CURSOR = Error("ERR invalid cursor")
STRING = SimpleString("string")
NONE_TYPE = SimpleString("none")


class Op(enum.IntEnum):
    """Opcodes of the data commands (the first byte of an encoded command, below 0x80)."""

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
    TTL = 12
    PTTL = 13
    DBSIZE = 14
    SCAN = 15
    KEYS = 16
    EXPIRE = 17
    PEXPIRE = 18
    PERSIST = 19
    TYPE = 20
    PURGE = 21
    """Internal: delete every key expired at the command's time (not a client command)."""


PURGE = Op.PURGE
INTERNAL_OPS = frozenset({Op.PURGE})
"""Ops the server proposes itself; no client command name maps to them."""


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
    b"expire": CommandSpec(Op.EXPIRE, 3, True),
    b"pexpire": CommandSpec(Op.PEXPIRE, 3, True),
    b"persist": CommandSpec(Op.PERSIST, 2, True),
    b"get": CommandSpec(Op.GET, 2, False),
    b"mget": CommandSpec(Op.MGET, -2, False),
    b"exists": CommandSpec(Op.EXISTS, -2, False),
    b"ttl": CommandSpec(Op.TTL, 2, False),
    b"pttl": CommandSpec(Op.PTTL, 2, False),
    b"type": CommandSpec(Op.TYPE, 2, False),
    b"dbsize": CommandSpec(Op.DBSIZE, 1, False),
    b"keys": CommandSpec(Op.KEYS, 2, False),
    b"scan": CommandSpec(Op.SCAN, -2, False),
}
"""Data commands by lower-case name."""

_NAMES = {spec.op: name.decode() for name, spec in COMMANDS.items()} | {Op.PURGE: "purge"}
_ARITY = {spec.op: spec.arity for spec in COMMANDS.values()} | {Op.PURGE: 1}
_OPS: dict[int, Op] = {int(op): op for op in Op}  # decoding without Op(code): ~0.4 us saved
_SET = Op.SET
_GET = Op.GET
_SET_HEAD = _HEAD.pack(Op.SET, 2)
_SET_MIN = _HEAD.size + 2 * _LEN.size  # a SET of an empty key to an empty value


def arity_ok(arity: int, argc: int) -> bool:
    """Whether ``argc`` words (command name included) satisfy a Redis ``arity``."""
    return argc == arity if arity > 0 else argc >= -arity


def wrong_arity(name: str) -> Error:
    """Redis's reply to a command with the wrong number of arguments."""
    return Error(f"ERR wrong number of arguments for '{name}' command")


class SetOptions(NamedTuple):
    """The options of one SET: condition (b"nx", b"xx" or None), GET, and the expiry."""

    condition: bytes | None
    get: bool
    unit: bytes | None
    """b"ex", b"px", b"exat", b"pxat", b"keepttl" or None (no expiry: clear the TTL)."""
    amount: int


def parse_set_options(options: Sequence[bytes]) -> SetOptions | Error:
    """SET's options after key and value, as Redis parses them, or the error reply."""
    condition: bytes | None = None
    get = False
    unit: bytes | None = None
    amount = 0
    i = 0
    while i < len(options):
        word = options[i].lower()
        if word in (b"nx", b"xx") and condition in (None, word):
            condition = word
        elif word == b"get":
            get = True
        elif word == b"keepttl" and unit in (None, word):
            unit = word
        elif word in (b"ex", b"px", b"exat", b"pxat") and unit is None and i + 1 < len(options):
            number = parse_int64(options[i + 1])
            if number is None:
                return NOT_AN_INTEGER
            if number <= 0 or number > (_MAX_EXPIRY_MS // 1000 if word in (b"ex", b"exat")
                                        else _MAX_EXPIRY_MS):
                return Error("ERR invalid expire time in 'set' command")
            unit, amount = word, number
            i += 1
        else:
            return SYNTAX_ERROR
        i += 1
    return SetOptions(condition, get, unit, amount)


class ScanArgs(NamedTuple):
    cursor: int
    pattern: re.Pattern[bytes] | None
    count: int
    type_ok: bool  # False: a TYPE other than string (nothing matches)


def parse_scan(args: Sequence[bytes]) -> ScanArgs | Error:
    """SCAN's ``cursor [MATCH pattern] [COUNT n] [TYPE t]``, or the error reply."""
    if not args[0].isdigit() or len(args[0]) > 20 or int(args[0]) > _INT64_MAX:
        return INVALID_CURSOR
    pattern = None
    count = 10
    type_ok = True
    i = 1
    while i < len(args):
        word = args[i].lower()
        if i + 1 >= len(args):
            return SYNTAX_ERROR
        if word == b"match":
            pattern = glob_regex(args[i + 1])
        elif word == b"count":
            number = parse_int64(args[i + 1])
            if number is None:
                return NOT_AN_INTEGER
            if number < 1:
                return SYNTAX_ERROR
            count = number
        elif word == b"type":
            type_ok = args[i + 1].lower() == b"string"
        else:
            return SYNTAX_ERROR
        i += 2
    return ScanArgs(int(args[0]), pattern, count, type_ok)


def glob_regex(pattern: bytes) -> re.Pattern[bytes]:
    """Redis's glob (``*``, ``?``, ``[abc]``, ``[^a]``, ``[a-z]``, ``\\x``) as a regex."""
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i:i + 1]
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i:i + 1]))
        elif c == b"[":
            j = i + 1
            negate = pattern[j:j + 1] == b"^"
            if negate:
                j += 1
            items: list[bytes] = []
            while j < n and pattern[j:j + 1] != b"]":
                if pattern[j:j + 1] == b"\\" and j + 1 < n:
                    j += 1
                    items.append(re.escape(pattern[j:j + 1]))
                elif pattern[j + 1:j + 2] == b"-" and j + 2 < n and pattern[j + 2:j + 3] != b"]":
                    low, high = sorted((pattern[j:j + 1], pattern[j + 2:j + 3]))
                    items.append(re.escape(low) + b"-" + re.escape(high))
                    j += 2
                else:
                    items.append(re.escape(pattern[j:j + 1]))
                j += 1
            i = j  # at the closing ']' (or the end: Redis treats the set as closed there)
            body = b"".join(items)
            out.append((b"[^" + body + b"]") if negate else
                       (b"[" + body + b"]") if body else b"(?!)")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile(b"".join(out), re.DOTALL)


def scan_hash(key: bytes) -> int:
    """Where ``key`` sits in SCAN's order: a fixed 63-bit hash of its bytes, the same in every
    process, so a cursor stays valid on another node and across restarts."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def check_args(op: Op, args: Sequence[bytes]) -> Error | None:
    """The error reply for arguments ``op`` cannot take (``args`` without the name), or None."""
    if not arity_ok(_ARITY[op], len(args) + 1):
        return wrong_arity(_NAMES[op])
    if op is Op.SET and len(args) != 2:
        options = parse_set_options(args[2:])
        return options if isinstance(options, Error) else None
    if op is Op.MSET and len(args) % 2:
        return wrong_arity(_NAMES[op])
    if op is Op.SCAN:
        scan = parse_scan(args)
        return scan if isinstance(scan, Error) else None
    if (op is Op.EXPIRE or op is Op.PEXPIRE) and parse_int64(args[1]) is None:
        return NOT_AN_INTEGER
    return None


def timed(op: Op, args: Sequence[bytes]) -> bool:
    """Whether the server stamps its time into this write (all but plain SET and MSET, which
    do the same at any time; see the module docstring)."""
    return not ((op is _SET and len(args) == 2) or op is Op.MSET)


def encode_command(op: Op, args: Sequence[bytes], now: int | None = None) -> bytes:
    """The log bytes of one data command; ``now`` (ms) makes it a timed command."""
    if now is None:
        parts = [_HEAD.pack(op, len(args))]
    else:
        parts = [_HEAD.pack(op | _TIMED, len(args)), _TIME.pack(now)]
    for arg in args:
        parts.append(_LEN.pack(len(arg)))
        parts.append(arg)
    return b"".join(parts)


def encode_set(key: bytes, value: bytes) -> bytes:
    """``encode_command(Op.SET, [key, value])``, faster (the hot path of the server)."""
    return b"".join((_SET_HEAD, _LEN.pack(len(key)), key, _LEN.pack(len(value)), value))


def decode_timed(data: bytes) -> tuple[Op, list[bytes], int | None]:
    """Inverse of :func:`encode_command`: ``(op, args, now or None)``.

    Raises:
        ValueError: the bytes are not an encoded command.
    """
    if len(data) < _HEAD.size:
        raise ValueError(f"command of {len(data)} bytes is shorter than its header")
    code, count = _HEAD.unpack_from(data, 0)
    op = _OPS.get(code & ~_TIMED)
    if op is None:
        raise ValueError(f"{code} is not a command code")
    pos = _HEAD.size
    now = None
    if code & _TIMED:
        if pos + _TIME.size > len(data):
            raise ValueError("command truncated in its time")
        (now,) = _TIME.unpack_from(data, pos)
        pos += _TIME.size
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
    return op, args, now


def decode_command(data: bytes) -> tuple[Op, list[bytes]]:
    """:func:`decode_timed` without the time.

    Raises:
        ValueError: the bytes are not an encoded command.
    """
    op, args, _ = decode_timed(data)
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

    ``data`` maps keys to values, ``expires`` keys to absolute expiry times (ms, only keys with
    a TTL), ``clock`` is the machine's time (the largest command time applied).  A key in
    ``data`` may have expired already; :meth:`live_keys` and the commands skip those.

    Threading: the node calls ``apply``, ``snapshot``, ``restore`` and read functions from one
    thread only (its loop thread, or its apply thread), so there is no lock.  Do not touch
    ``data`` from other threads while the node runs.
    """

    def __init__(self) -> None:
        # Owned by the thread that applies:
        self.data: dict[bytes, bytes] = {}
        self.expires: dict[bytes, int] = {}
        self.clock = 0

    def __len__(self) -> int:
        return len(self.data)

    def live_keys(self, now: int | None = None) -> list[bytes]:
        """The keys not expired at ``now`` (default: the machine's clock)."""
        t = self.clock if now is None else max(self.clock, now)
        expires = self.expires
        if not expires:
            return list(self.data)
        return [k for k in self.data if not (k in expires and expires[k] <= t)]

    # -- StateMachine ------------------------------------------------------------------------

    def apply(self, index: int, command: bytes) -> object:
        """Decode and run one committed command; returns its RESP reply value."""
        if command.startswith(_SET_HEAD) and len(command) >= _SET_MIN:  # the common case
            key_len = _LEN.unpack_from(command, _HEAD.size)[0]
            key_end = _HEAD.size + _LEN.size + key_len
            if key_end + _LEN.size <= len(command):
                value_len = _LEN.unpack_from(command, key_end)[0]
                if key_end + _LEN.size + value_len == len(command):
                    key = command[_HEAD.size + _LEN.size:key_end]
                    self.data[key] = command[key_end + _LEN.size:]
                    if self.expires:
                        self.expires.pop(key, None)
                    return OK
        try:
            op, args, now = decode_timed(command)
        except ValueError as exc:
            logger.error("entry %d is not a KV command (%s); ignored", index, exc)
            return Error("ERR malformed command in the log")
        if now is not None and now > self.clock:
            self.clock = now
        return self._run(op, args, self.clock, write=True)

    def snapshot(self) -> bytes:
        """The whole state in a snapshot format of the module docstring (KVS1 while the
        machine has seen no time, else KVS2)."""
        data, expires = self.data, self.expires
        if not self.clock and not expires:
            parts = [_SNAP_MAGIC, _SNAP_COUNT.pack(len(data))]
            for key in sorted(data):
                value = data[key]
                parts += (_SNAP_ITEM.pack(len(key), len(value)), key, value)
            return b"".join(parts)
        parts = [_SNAP2_MAGIC, _TIME.pack(self.clock), _SNAP_COUNT.pack(len(data))]
        for key in sorted(data):
            value = data[key]
            parts += (_SNAP2_ITEM.pack(len(key), len(value), expires.get(key, -1)), key, value)
        return b"".join(parts)

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot` (either format).

        Raises:
            ValueError: ``data`` is not a snapshot (the state is left unchanged).
        """
        view = memoryview(data)
        magic = bytes(view[:4])
        clock = 0
        if magic == _SNAP_MAGIC:
            item, pos = _SNAP_ITEM, 4
        elif magic == _SNAP2_MAGIC and len(view) >= 4 + _TIME.size:
            item, pos = _SNAP2_ITEM, 4 + _TIME.size
            (clock,) = _TIME.unpack_from(view, 4)
        else:
            raise ValueError("not a KV snapshot (bad magic)")
        if len(view) < pos + _SNAP_COUNT.size:
            raise ValueError("KV snapshot truncated")
        (count,) = _SNAP_COUNT.unpack_from(view, pos)
        pos += _SNAP_COUNT.size
        restored: dict[bytes, bytes] = {}
        expires: dict[bytes, int] = {}
        for _ in range(count):
            if pos + item.size > len(view):
                raise ValueError("KV snapshot truncated")
            fields = item.unpack_from(view, pos)
            key_len, value_len = fields[0], fields[1]
            pos += item.size
            end = pos + key_len + value_len
            if end > len(view):
                raise ValueError("KV snapshot truncated")
            key = bytes(view[pos:pos + key_len])
            restored[key] = bytes(view[pos + key_len:end])
            if len(fields) == 3 and fields[2] >= 0:
                expires[key] = fields[2]
            pos = end
        if pos != len(view):
            raise ValueError(f"{len(view) - pos} stray bytes after the KV snapshot")
        self.data, self.expires, self.clock = restored, expires, clock

    # -- commands ----------------------------------------------------------------------------

    def execute(self, op: Op, args: Sequence[bytes], now: int | None = None) -> object:
        """Run one data command (``args`` without the command name) at time ``now`` (ms;
        the machine's clock when None or earlier); returns its reply.

        A read changes nothing.  A write run this way (tests, hand-made commands) does not
        advance the clock: only :meth:`apply` does.  Checks the arguments itself
        (:func:`check_args`), so a hand-made command cannot corrupt the state.
        """
        t = self.clock if now is None or now < self.clock else now
        if op is _GET and len(args) == 1:  # the common read, without the general dispatch
            key = args[0]
            expires = self.expires
            if expires and key in expires and expires[key] <= t:
                return None
            return self.data.get(key)
        return self._run(op, args, t, write=_WRITES.get(op, False))

    def _run(self, op: Op, args: Sequence[bytes], t: int, *, write: bool) -> object:
        error = check_args(op, args)
        if error is not None:
            return error
        data = self.data
        expires = self.expires
        if op is Op.GET:
            key = args[0]
            if expires and key in expires and expires[key] <= t:
                return None
            return data.get(key)
        if write and expires:
            if op is Op.MSET:
                self._expire_keys(args[0::2], t)
            elif op is Op.PURGE:
                return self._expire_keys([k for k, at in expires.items() if at <= t], t)
            elif op is not Op.SET or len(args) != 2:
                self._expire_keys(args if op is Op.DEL else args[:1], t)
        if op is Op.SET:
            if len(args) == 2:
                data[args[0]] = args[1]
                if expires:
                    expires.pop(args[0], None)
                return OK
            return self._set(args, t)
        if op is Op.MGET:
            if not expires:
                return [data.get(key) for key in args]
            return [None if key in expires and expires[key] <= t else data.get(key)
                    for key in args]
        if op is Op.MSET:
            for i in range(0, len(args), 2):
                data[args[i]] = args[i + 1]
                if expires:
                    expires.pop(args[i], None)
            return OK
        if op is Op.DEL:
            removed = 0
            for key in args:
                if data.pop(key, None) is not None:
                    removed += 1
                    expires.pop(key, None)
            return removed
        if op is Op.EXISTS:
            return sum(1 for key in args if self._alive(key, t))
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
        if op is Op.TTL or op is Op.PTTL:
            if not self._alive(args[0], t):
                return -2
            at = expires.get(args[0])
            if at is None:
                return -1
            return at - t if op is Op.PTTL else (at - t + 500) // 1000
        if op is Op.EXPIRE or op is Op.PEXPIRE:
            if args[0] not in data:
                return 0
            amount = parse_int64(args[1])
            assert amount is not None  # check_args
            ms = amount * 1000 if op is Op.EXPIRE else amount
            at = t + ms
            if not -_MAX_EXPIRY_MS < at < _MAX_EXPIRY_MS:
                return Error(f"ERR invalid expire time in '{_NAMES[op]}' command")
            if at <= t:
                del data[args[0]]
                expires.pop(args[0], None)
            else:
                expires[args[0]] = at
            return 1
        if op is Op.PERSIST:
            return 1 if expires.pop(args[0], None) is not None else 0
        if op is Op.TYPE:
            return STRING if self._alive(args[0], t) else NONE_TYPE
        if op is Op.DBSIZE:
            if not expires:
                return len(data)
            return len(data) - sum(1 for at in expires.values() if at <= t)
        if op is Op.KEYS:
            pattern = glob_regex(args[0])
            return sorted(k for k in self.live_keys(t) if pattern.fullmatch(k))
        if op is Op.SCAN:
            return self._scan(args, t)
        if op is Op.PURGE:
            return 0  # no key has an expiry
        raise InvariantError(f"unhandled op {op!r}")  # every Op is handled above

    def _alive(self, key: bytes, t: int) -> bool:
        if key not in self.data:
            return False
        at = self.expires.get(key)
        return at is None or at > t

    def _expire_keys(self, keys: Sequence[bytes], t: int) -> int:
        """Delete those of ``keys`` expired at ``t`` (writes only); how many were."""
        expires, removed = self.expires, 0
        for key in keys:
            at = expires.get(key)
            if at is not None and at <= t:
                del expires[key]
                self.data.pop(key, None)
                removed += 1
        return removed

    def _set(self, args: Sequence[bytes], t: int) -> object:
        """SET with options (already checked by check_args)."""
        options = parse_set_options(args[2:])
        assert not isinstance(options, Error)
        key, value = args[0], args[1]
        old = self.data.get(key)  # expired keys are gone: _run expired them
        if (options.condition == b"nx" and old is not None) or \
                (options.condition == b"xx" and old is None):
            return old if options.get else None
        unit, amount = options.unit, options.amount
        self.data[key] = value
        if unit == b"keepttl":
            pass
        elif unit is None:
            self.expires.pop(key, None)
        else:
            at = (t + amount * 1000 if unit == b"ex" else t + amount if unit == b"px"
                  else amount * 1000 if unit == b"exat" else amount)
            if at <= t:  # an absolute time already past: set, and gone at once (as Redis)
                del self.data[key]
                self.expires.pop(key, None)
            else:
                self.expires[key] = at
        return old if options.get else OK

    def _scan(self, args: Sequence[bytes], t: int) -> object:
        """SCAN: keys in the order of :func:`scan_hash`; the cursor is the hash to go on from
        (0: start; returned 0: done).  A key present from the first call to the last is
        returned exactly once, whatever else is added or removed meanwhile; keys of one hash
        value are never split between two replies."""
        scan = parse_scan(args)
        assert not isinstance(scan, Error)
        if not scan.type_ok:
            return [b"0", []]
        candidates = [(h, k) for k in self.live_keys(t) if (h := scan_hash(k)) >= scan.cursor]
        chosen = heapq.nsmallest(scan.count, candidates)
        if len(chosen) < len(candidates):
            last = chosen[-1][0]
            chosen += sorted(c for c in candidates if c[0] == last and c not in chosen)
            cursor = last + 1
        else:
            cursor = 0
        keys = [k for _, k in chosen]
        if scan.pattern is not None:
            keys = [k for k in keys if scan.pattern.fullmatch(k)]
        return [b"%d" % cursor, keys]

    def _add(self, key: bytes, delta: int) -> object:
        """INCR and friends: the new value, or an error when the value is not an integer or the
        result leaves the signed 64-bit range (the key keeps its TTL, as in Redis)."""
        old = self.data.get(key)
        number = 0 if old is None else parse_int64(old)
        if number is None:
            return NOT_AN_INTEGER
        number += delta
        if not _INT64_MIN <= number <= _INT64_MAX:
            return OVERFLOW
        self.data[key] = b"%d" % number
        return number


_WRITES = {spec.op: spec.write for spec in COMMANDS.values()} | {Op.PURGE: True}
