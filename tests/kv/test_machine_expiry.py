"""KVMachine's time rule (expiry decided only by times carried in commands and reads), its
snapshot formats (KVS1 kept byte for byte, KVS2 with expiries), SCAN and glob patterns."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.kv.machine import (
    PURGE,
    KVMachine,
    Op,
    decode_timed,
    encode_command,
    encode_set,
    glob_regex,
)
from engine.kv.resp import OK

T0 = 1_700_000_000_000


def apply(machine: KVMachine, op: Op, *args: bytes, now: int | None = None) -> object:
    return machine.apply(1, encode_command(op, list(args), now))


def test_timed_command_round_trip() -> None:
    data = encode_command(Op.SET, [b"k", b"v", b"PX", b"5"], T0)
    assert decode_timed(data) == (Op.SET, [b"k", b"v", b"PX", b"5"], T0)
    assert decode_timed(encode_command(Op.GET, [b"k"])) == (Op.GET, [b"k"], None)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            decode_timed(data[:cut])


def test_expiry_follows_the_time_in_commands_not_a_clock() -> None:
    kv = KVMachine()
    assert apply(kv, Op.SET, b"k", b"v", b"PX", b"100", now=T0) == OK
    assert kv.expires == {b"k": T0 + 100} and kv.clock == T0
    assert kv.execute(Op.GET, [b"k"], T0 + 99) == b"v"
    assert kv.execute(Op.PTTL, [b"k"], T0 + 99) == 1
    assert kv.execute(Op.GET, [b"k"], T0 + 100) is None  # expired for a read at that time
    assert kv.data == {b"k": b"v"}  # reads change nothing
    assert kv.execute(Op.GET, [b"k"]) == b"v"  # at the machine's own time it is not expired
    assert apply(kv, Op.EXISTS, b"k", now=T0 + 100) == 0
    assert apply(kv, Op.APPEND, b"k", b"w", now=T0 + 100) == 1  # the expired value is gone
    assert kv.data == {b"k": b"w"} and kv.expires == {} and kv.clock == T0 + 100


def test_the_machine_clock_never_goes_back() -> None:
    kv = KVMachine()
    apply(kv, Op.SET, b"k", b"v", b"PX", b"10", now=T0)
    apply(kv, Op.INCR, b"n", now=T0 + 50)
    assert kv.clock == T0 + 50
    apply(kv, Op.INCR, b"n", now=T0)  # an earlier time (a leader whose clock is behind)
    assert kv.clock == T0 + 50
    assert kv.execute(Op.GET, [b"k"], T0) is None  # reads too run at max(clock, t)
    assert apply(kv, Op.SET, b"k", b"x", b"NX", now=T0) == OK


def test_purge_removes_exactly_the_expired_keys() -> None:
    kv = KVMachine()
    apply(kv, Op.SET, b"a", b"1", b"PX", b"10", now=T0)
    apply(kv, Op.SET, b"b", b"2", b"EX", b"10", now=T0)
    apply(kv, Op.SET, b"c", b"3")
    assert kv.apply(2, encode_command(PURGE, [], T0 + 10)) == 1
    assert kv.data == {b"b": b"2", b"c": b"3"} and kv.expires == {b"b": T0 + 10_000}


def test_set_options() -> None:
    kv = KVMachine()
    assert apply(kv, Op.SET, b"k", b"1", b"NX", now=T0) == OK
    assert apply(kv, Op.SET, b"k", b"2", b"NX", b"GET", now=T0) == b"1"
    assert apply(kv, Op.SET, b"k", b"3", b"XX", b"GET", b"EX", b"1", now=T0) == b"1"
    assert kv.expires[b"k"] == T0 + 1000
    assert apply(kv, Op.SET, b"k", b"4", b"KEEPTTL", now=T0) == OK
    assert kv.expires[b"k"] == T0 + 1000
    assert apply(kv, Op.SET, b"k", b"5", b"PXAT", str(T0 + 7).encode(), now=T0) == OK
    assert kv.expires[b"k"] == T0 + 7
    assert apply(kv, Op.SET, b"k", b"6") == OK  # a plain SET clears the TTL
    assert kv.expires == {}
    assert apply(kv, Op.SET, b"k", b"7", b"EXAT", b"1", now=T0) == OK  # long past: gone
    assert kv.data == {}
    assert str(apply(kv, Op.SET, b"k", b"v", b"EX", b"0", now=T0)).startswith(
        "ERR invalid expire time")
    assert str(apply(kv, Op.SET, b"k", b"v", b"EX", b"x", now=T0)).startswith(
        "ERR value is not an integer")


def test_ttl_and_expire_commands() -> None:
    kv = KVMachine()
    apply(kv, Op.SET, b"k", b"v", now=T0)
    assert kv.execute(Op.TTL, [b"k"], T0) == -1
    assert kv.execute(Op.TTL, [b"nope"], T0) == -2
    assert apply(kv, Op.EXPIRE, b"k", b"10", now=T0) == 1
    assert kv.execute(Op.TTL, [b"k"], T0 + 400) == 10  # rounded, as Redis
    assert kv.execute(Op.TTL, [b"k"], T0 + 600) == 9
    assert apply(kv, Op.PERSIST, b"k", now=T0) == 1
    assert apply(kv, Op.PERSIST, b"k", now=T0) == 0
    assert apply(kv, Op.PEXPIRE, b"nope", b"10", now=T0) == 0
    assert apply(kv, Op.PEXPIRE, b"k", b"-1", now=T0) == 1  # in the past: deleted
    assert kv.data == {}


timed_writes = st.lists(st.tuples(
    st.one_of(
        st.tuples(st.just(Op.SET), st.tuples(st.sampled_from([b"a", b"b", b"c"]),
                                             st.just(b"v"), st.just(b"PX"),
                                             st.sampled_from([b"1", b"5", b"20"]))),
        st.tuples(st.just(Op.SET), st.tuples(st.sampled_from([b"a", b"b"]), st.just(b"w"))),
        st.tuples(st.just(Op.INCR), st.tuples(st.sampled_from([b"n", b"a"]))),
        st.tuples(st.just(Op.DEL), st.tuples(st.sampled_from([b"a", b"b", b"c"]))),
        st.tuples(st.just(Op.PEXPIRE), st.tuples(st.sampled_from([b"a", b"n"]),
                                                 st.sampled_from([b"3", b"-1"]))),
        st.tuples(st.just(PURGE), st.just(()))),
    st.integers(0, 30)), max_size=40)


@given(timed_writes)
def test_replicas_agree_on_what_expired(commands: list[tuple[tuple[Op, tuple[bytes, ...]],
                                                             int]]) -> None:
    """Replicas fed the same timed log (with times that jump back and forth) give the same
    replies, states and snapshots, also one restored from a snapshot half-way; and reads at a
    given time agree too."""
    log = [encode_command(op, list(args), T0 + dt) for (op, args), dt in commands]
    one, two = KVMachine(), KVMachine()
    half = len(log) // 2
    replies_one = [one.apply(i, entry) for i, entry in enumerate(log)]
    for i, entry in enumerate(log[:half]):
        two.apply(i, entry)
    three = KVMachine()
    three.restore(two.snapshot())
    replies_two = [two.apply(i, entry) for i, entry in enumerate(log[half:], half)]
    for i, entry in enumerate(log[half:], half):
        three.apply(i, entry)
    assert replies_one[half:] == replies_two
    assert one.snapshot() == two.snapshot() == three.snapshot()
    for t in (T0, T0 + 15, T0 + 60):
        for machine in (two, three):
            assert sorted(machine.live_keys(t)) == sorted(one.live_keys(t))
            assert [machine.execute(Op.PTTL, [k], t) for k in (b"a", b"b", b"c", b"n")] == \
                [one.execute(Op.PTTL, [k], t) for k in (b"a", b"b", b"c", b"n")]


# -- snapshots ---------------------------------------------------------------------------------


def test_a_state_without_time_keeps_the_kvs1_snapshot() -> None:
    kv = KVMachine()
    kv.apply(1, encode_command(Op.SET, [b"k", b"v"]))
    kv.apply(2, encode_command(Op.MSET, [b"a", b"1"]))
    old_format = (b"KVS1" + (2).to_bytes(8, "little")
                  + (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + b"a1"
                  + (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + b"kv")
    assert kv.snapshot() == old_format
    restored = KVMachine()
    restored.restore(old_format)
    assert restored.data == {b"a": b"1", b"k": b"v"} and restored.clock == 0


def test_kvs2_snapshot_keeps_expiries_and_the_clock() -> None:
    kv = KVMachine()
    apply(kv, Op.SET, b"k", b"v", b"PX", b"100", now=T0)
    apply(kv, Op.SET, b"p", b"q", now=T0 + 5)
    data = kv.snapshot()
    assert data.startswith(b"KVS2")
    restored = KVMachine()
    restored.restore(data)
    assert (restored.data, restored.expires, restored.clock) == (kv.data, kv.expires, kv.clock)
    for bad in (data[:-1], data + b"x", b"KVS2", data[:10]):
        with pytest.raises(ValueError):
            restored.restore(bad)
    assert restored.expires == {b"k": T0 + 100}


# -- SCAN and patterns -------------------------------------------------------------------------


def scan_all(kv: KVMachine, count: int, between: object = None) -> list[bytes]:
    seen: list[bytes] = []
    cursor = b"0"
    while True:
        reply = kv.execute(Op.SCAN, [cursor, b"COUNT", b"%d" % count])
        cursor, batch = reply  # type: ignore[misc]
        seen += batch
        if cursor == b"0":
            return seen
        if callable(between):
            between()


@pytest.mark.parametrize("seed", range(5))
def test_scan_returns_each_key_present_throughout_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    kv = KVMachine()
    stable = {b"s%d" % k for k in range(200)}
    for key in stable:
        kv.data[key] = b"v"
    churn = [b"c%d" % k for k in range(100)]

    def mutate() -> None:  # other keys come and go between the calls
        for _ in range(5):
            key = rng.choice(churn)
            if kv.data.pop(key, None) is None:
                kv.data[key] = b"x"

    seen = scan_all(kv, rng.choice([1, 3, 10, 50]), mutate)
    assert len(seen) == len(set(seen))  # no key twice
    assert stable <= set(seen)


def test_scan_skips_expired_keys_and_filters_after_counting() -> None:
    kv = KVMachine()
    apply(kv, Op.MSET, *[b for k in range(20) for b in (b"k%d" % k, b"v")])
    apply(kv, Op.PEXPIRE, b"k3", b"1", now=T0)
    kv.clock = T0 + 1  # as if a later command had carried T0 + 1
    assert sorted(scan_all(kv, 4)) == sorted(b"k%d" % k for k in range(20) if k != 3)
    assert kv.execute(Op.DBSIZE, []) == 19
    assert kv.execute(Op.KEYS, [b"k1*"]) == [b"k1"] + [b"k1%d" % d for d in range(10)]


@pytest.mark.parametrize("pattern, matches, misses", [
    (b"*", [b"", b"abc"], []),
    (b"h?llo", [b"hello", b"hallo"], [b"hllo", b"heello"]),
    (b"h*llo", [b"hllo", b"heeeello"], [b"hell"]),
    (b"h[ae]llo", [b"hello", b"hallo"], [b"hillo"]),
    (b"h[^e]llo", [b"hallo", b"hbllo"], [b"hello"]),
    (b"h[a-b]llo", [b"hallo", b"hbllo"], [b"hcllo"]),
    (b"h\\*llo", [b"h*llo"], [b"hello"]),
    (b"a.b", [b"a.b"], [b"axb"]),
])
def test_glob_patterns(pattern: bytes, matches: list[bytes], misses: list[bytes]) -> None:
    regex = glob_regex(pattern)
    assert all(regex.fullmatch(m) for m in matches)
    assert not any(regex.fullmatch(m) for m in misses)


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_encode_set_is_the_plain_set_command(key: bytes, value: bytes) -> None:
    assert encode_set(key, value) == encode_command(Op.SET, [key, value])
