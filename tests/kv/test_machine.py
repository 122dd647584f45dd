"""KVMachine: Redis semantics of each command, the binary command format, snapshots and
determinism."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import StateMachine
from engine.kv.machine import (
    COMMANDS,
    INTERNAL_OPS,
    NOT_AN_INTEGER,
    OVERFLOW,
    SYNTAX_ERROR,
    KVMachine,
    Op,
    decode_command,
    encode_command,
    parse_int64,
)
from engine.kv.resp import OK, Error


def run(machine: KVMachine, op: Op, *args: bytes) -> object:
    """Apply through the log format, as a replica does."""
    return machine.apply(1, encode_command(op, list(args)))


@pytest.fixture
def kv() -> KVMachine:
    return KVMachine()


def test_is_a_state_machine(kv: KVMachine) -> None:
    assert isinstance(kv, StateMachine)


def test_set_get(kv: KVMachine) -> None:
    assert run(kv, Op.SET, b"k", b"v") is OK
    assert kv.execute(Op.GET, [b"k"]) == b"v"
    assert kv.execute(Op.GET, [b"missing"]) is None
    assert run(kv, Op.SET, b"k", b"") is OK
    assert kv.execute(Op.GET, [b"k"]) == b""


def test_unknown_set_options_are_a_syntax_error(kv: KVMachine) -> None:
    assert run(kv, Op.SET, b"k", b"v", b"NOPE") == SYNTAX_ERROR
    assert run(kv, Op.SET, b"k", b"v", b"NX", b"XX") == SYNTAX_ERROR
    assert run(kv, Op.SET, b"k", b"v", b"EX") == SYNTAX_ERROR
    assert run(kv, Op.SET, b"k", b"v", b"EX", b"1", b"PX", b"5") == SYNTAX_ERROR
    assert kv.data == {}


def test_del_and_exists_count(kv: KVMachine) -> None:
    run(kv, Op.MSET, b"a", b"1", b"b", b"2")
    assert kv.execute(Op.EXISTS, [b"a", b"a", b"b", b"zz"]) == 3  # duplicates count, as Redis
    assert run(kv, Op.DEL, b"a", b"zz", b"a") == 1
    assert kv.execute(Op.EXISTS, [b"a"]) == 0


def test_mset_mget(kv: KVMachine) -> None:
    assert run(kv, Op.MSET, b"a", b"1", b"b", b"2", b"a", b"3") is OK  # last one wins
    assert kv.execute(Op.MGET, [b"a", b"nope", b"b"]) == [b"3", None, b"2"]
    assert run(kv, Op.MSET, b"a", b"1", b"b") == Error(
        "ERR wrong number of arguments for 'mset' command")


def test_incr(kv: KVMachine) -> None:
    assert run(kv, Op.INCR, b"n") == 1
    assert run(kv, Op.INCR, b"n") == 2
    assert kv.data[b"n"] == b"2"
    run(kv, Op.SET, b"m", b"-1")
    assert run(kv, Op.INCR, b"m") == 0
    assert kv.data[b"m"] == b"0"


@pytest.mark.parametrize("value", [b"abc", b"", b" 1", b"1 ", b"+1", b"01", b"-0", b"1.5",
                                   b"9223372036854775808", b"-9223372036854775809", b"\xff"])
def test_incr_of_a_non_integer_is_an_error_and_changes_nothing(kv: KVMachine,
                                                               value: bytes) -> None:
    run(kv, Op.SET, b"k", value)
    assert run(kv, Op.INCR, b"k") == NOT_AN_INTEGER
    assert kv.data[b"k"] == value


def test_incr_overflow(kv: KVMachine) -> None:
    run(kv, Op.SET, b"k", b"9223372036854775807")
    assert run(kv, Op.INCR, b"k") == OVERFLOW
    run(kv, Op.SET, b"k", b"-9223372036854775808")
    assert run(kv, Op.INCR, b"k") == -9223372036854775807


def test_incrby_decr_decrby(kv: KVMachine) -> None:
    assert run(kv, Op.INCRBY, b"n", b"10") == 10
    assert run(kv, Op.DECRBY, b"n", b"-5") == 15
    assert run(kv, Op.DECR, b"n") == 14
    assert run(kv, Op.INCRBY, b"n", b"x") == NOT_AN_INTEGER
    assert run(kv, Op.INCRBY, b"n", b"9223372036854775807") == OVERFLOW
    assert run(kv, Op.DECRBY, b"m", b"-9223372036854775808") == OVERFLOW
    assert kv.data == {b"n": b"14"}


def test_parse_int64() -> None:
    assert parse_int64(b"0") == 0
    assert parse_int64(b"-12") == -12
    assert parse_int64(b"9223372036854775807") == 2**63 - 1
    assert parse_int64(b"00") is None


def test_append(kv: KVMachine) -> None:
    assert run(kv, Op.APPEND, b"k", b"ab") == 2
    assert run(kv, Op.APPEND, b"k", b"cde") == 5
    assert kv.data[b"k"] == b"abcde"


@pytest.mark.parametrize("op, args", [(Op.GET, []), (Op.GET, [b"a", b"b"]), (Op.INCR, []),
                                      (Op.APPEND, [b"a"]), (Op.DEL, []), (Op.MSET, [b"a"]),
                                      (Op.INCRBY, [b"a"]), (Op.DECR, []),
                                      (Op.SET, [b"a"]), (Op.EXISTS, []), (Op.MGET, [])])
def test_wrong_arity_is_an_error_value(kv: KVMachine, op: Op, args: list[bytes]) -> None:
    reply = kv.execute(op, args)
    assert isinstance(reply, Error)
    assert reply.startswith("ERR wrong number of arguments for")
    assert kv.data == {}


def test_malformed_log_entry_is_an_error_value(kv: KVMachine) -> None:
    assert isinstance(kv.apply(1, b"\xff\x00"), Error)
    assert isinstance(kv.apply(2, encode_command(Op.SET, [b"k", b"v"]) + b"x"), Error)
    assert kv.data == {}


def test_command_table_covers_every_op() -> None:
    assert {spec.op for spec in COMMANDS.values()} == set(Op) - INTERNAL_OPS


# -- formats -----------------------------------------------------------------------------------


@given(st.sampled_from(list(Op)), st.lists(st.binary(max_size=50), max_size=10))
def test_command_round_trip(op: Op, args: list[bytes]) -> None:
    data = encode_command(op, args)
    assert decode_command(data) == (op, args)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            decode_command(data[:cut])


def test_command_is_compact() -> None:
    assert len(encode_command(Op.SET, [b"key", b"0123456789abcdef"])) == 5 + 4 + 3 + 4 + 16


state = st.dictionaries(st.binary(max_size=20), st.binary(max_size=40), max_size=30)


@given(state)
def test_snapshot_round_trip(data: dict[bytes, bytes]) -> None:
    kv = KVMachine()
    kv.data = dict(data)
    restored = KVMachine()
    restored.restore(kv.snapshot())
    assert restored.data == data
    assert KVMachine().snapshot() != kv.snapshot() or not data


@given(state)
def test_snapshot_does_not_depend_on_insertion_order(data: dict[bytes, bytes]) -> None:
    forward, backward = KVMachine(), KVMachine()
    forward.data = dict(data.items())
    backward.data = dict(reversed(list(data.items())))
    assert forward.snapshot() == backward.snapshot()


def test_restore_rejects_garbage_and_keeps_the_state() -> None:
    kv = KVMachine()
    kv.data = {b"a": b"1"}
    good = kv.snapshot()
    for bad in (b"", b"nope", good[:-1], good + b"x", b"KVS1" + b"\xff" * 8):
        with pytest.raises(ValueError):
            kv.restore(bad)
        assert kv.data == {b"a": b"1"}


writes = st.lists(st.one_of(
    st.tuples(st.just(Op.SET), st.lists(st.sampled_from([b"a", b"b", b"1", b"-5", b"x"]),
                                        min_size=2, max_size=2)),
    st.tuples(st.just(Op.INCR), st.lists(st.sampled_from([b"a", b"b", b"c"]),
                                         min_size=1, max_size=1)),
    st.tuples(st.just(Op.APPEND), st.lists(st.sampled_from([b"a", b"b", b"7"]),
                                           min_size=2, max_size=2)),
    st.tuples(st.just(Op.DEL), st.lists(st.sampled_from([b"a", b"b", b"c"]), min_size=1,
                                        max_size=3)),
    st.tuples(st.just(Op.MSET), st.lists(st.sampled_from([b"a", b"b", b"3"]), min_size=2,
                                         max_size=6))), max_size=40)


@given(writes)
def test_replicas_agree(commands: list[tuple[Op, list[bytes]]]) -> None:
    """Two replicas fed the same log give the same replies and the same snapshot, and a replica
    restored from a snapshot half-way ends up identical too."""
    one, two = KVMachine(), KVMachine()
    half = len(commands) // 2
    replies_one = [one.apply(i, encode_command(op, args)) for i, (op, args) in
                   enumerate(commands)]
    for i, (op, args) in enumerate(commands[:half]):
        two.apply(i, encode_command(op, args))
    three = KVMachine()
    three.restore(two.snapshot())
    replies_two = [two.apply(i, encode_command(op, args)) for i, (op, args) in
                   enumerate(commands[half:], half)]
    for i, (op, args) in enumerate(commands[half:], half):
        three.apply(i, encode_command(op, args))
    assert replies_one[half:] == replies_two
    assert one.snapshot() == two.snapshot() == three.snapshot()


def test_set_fast_path_agrees_with_the_general_decoder() -> None:
    """apply() decodes SET in place; for every well-formed SET it gives what decode + execute
    gives, and every cut-short or overlong SET is refused as malformed, changing nothing."""
    from engine.kv.machine import Op, decode_command, encode_command
    fast, general = KVMachine(), KVMachine()
    for key, value in [(b"", b""), (b"k", b"v"), (b"key" * 100, b"\x00\r\n" * 50)]:
        command = encode_command(Op.SET, [key, value])
        assert fast.apply(1, command) == general.execute(*decode_command(command))
        for bad in (command[:-1], command + b"x", command[:7]):
            assert str(fast.apply(2, bad)).startswith("ERR malformed")
    assert fast.data == general.data
