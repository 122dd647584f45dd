"""The LogStore / StableStore contract (engine/storage/base.py), for every implementation.

Parametrized over the in-memory, native (C) and pure-Python file stores; the file-backed ones
use 512-byte segments so that every case crosses segment boundaries.
"""

from __future__ import annotations

import pytest

from engine.codec import CodecError, encode_entries
from engine.storage.base import LogStore, StableStore
from engine.types import Entry, EntryKind, HardState

from .conftest import make_entries


def check_log(store, expected: list[Entry]) -> None:
    """The store holds exactly ``expected`` (contiguous)."""
    first = expected[0].index if expected else store.first_index()
    assert store.first_index() == first
    assert store.last_index() == first + len(expected) - 1
    assert store.entries(first, store.last_index() + 1) == expected
    for entry in expected:
        assert store.term_at(entry.index) == entry.term


def test_protocols(log_factory, stable_factory):
    assert isinstance(log_factory(), LogStore)
    assert isinstance(stable_factory(), StableStore)


def test_fresh_store_is_empty(log_factory):
    store = log_factory()
    assert store.first_index() == 1
    assert store.last_index() == 0
    assert store.entries(1, 1) == []
    with pytest.raises(IndexError):
        store.term_at(1)
    with pytest.raises(IndexError):
        store.term_at(0)
    with pytest.raises(IndexError):
        store.entries(1, 2)
    with pytest.raises(IndexError):
        store.entries(0, 1)


def test_append_and_read_back(log_factory):
    store = log_factory()
    entries = make_entries(1, 60, term=2)
    store.append(entries[:1])
    store.append(entries[1:25])
    store.append(entries[25:])
    check_log(store, entries)
    assert store.entries(10, 11) == [entries[9]]
    assert store.entries(30, 30) == []
    assert store.entries(5, 40) == entries[4:39]


def test_append_empty_is_a_noop(log_factory):
    store = log_factory()
    store.append([])
    store.append(make_entries(1, 3))
    store.append([])
    check_log(store, make_entries(1, 3))


def test_kinds_and_payload_sizes_survive(log_factory):
    store = log_factory()
    entries = [
        Entry(1, 1, EntryKind.NOOP, b""),
        Entry(2, 1, EntryKind.NORMAL, b"\x00" * 5),
        Entry(3, 2, EntryKind.CONFIG, b"cfg"),
        Entry(4, 2, 0, bytes(range(256)) * 4096),  # 1 MiB, bigger than a segment
        Entry(5, 3, 255, b"x"),
    ]
    store.append(entries)
    check_log(store, entries)


def test_append_replaces_conflicting_suffix(log_factory):
    store = log_factory()
    store.append(make_entries(1, 40, term=1))
    store.append(make_entries(20, 25, term=2))
    check_log(store, make_entries(1, 20, term=1) + make_entries(20, 25, term=2))
    # Replacing from the very first entry.
    store.append(make_entries(1, 3, term=3))
    check_log(store, make_entries(1, 3, term=3))


def test_append_rejects_gaps_and_non_contiguous(log_factory):
    store = log_factory()
    store.append(make_entries(1, 10))
    with pytest.raises(ValueError):
        store.append(make_entries(12, 14))
    with pytest.raises(ValueError):
        store.append([Entry(10, 1, 0, b""), Entry(12, 1, 0, b"")])
    check_log(store, make_entries(1, 10))


def test_append_before_first_index_is_rejected(log_factory):
    store = log_factory()
    store.append(make_entries(1, 200))
    store.compact_prefix(150)
    first = store.first_index()
    assert first <= 151
    if first > 1:  # stores that keep whole segments may not have dropped anything
        with pytest.raises(ValueError):
            store.append(make_entries(first - 1, first + 1))
    check_log(store, make_entries(first, 200))


def test_entries_range_errors(log_factory):
    store = log_factory()
    store.append(make_entries(1, 10))
    for lo, hi in [(0, 5), (5, 11), (6, 5), (11, 11)]:
        with pytest.raises(IndexError):
            store.entries(lo, hi)
    assert store.entries(10, 10) == []
    with pytest.raises(IndexError):
        store.term_at(10)


def test_truncate_suffix(log_factory):
    store = log_factory()
    store.append(make_entries(1, 80))
    store.truncate_suffix(100)  # past the end: no-op
    store.truncate_suffix(80)
    check_log(store, make_entries(1, 80))
    store.truncate_suffix(50)
    check_log(store, make_entries(1, 50))
    store.truncate_suffix(1)
    assert store.first_index() == 1 and store.last_index() == 0
    store.append(make_entries(1, 5, term=4))
    check_log(store, make_entries(1, 5, term=4))


def test_truncate_below_first_keeps_first_index(log_factory):
    store = log_factory()
    store.append(make_entries(1, 200))
    store.compact_prefix(120)
    first = store.first_index()
    store.truncate_suffix(0)
    assert store.first_index() == first
    assert store.last_index() == first - 1
    assert store.entries(first, first) == []
    store.append(make_entries(first, first + 3, term=5))
    check_log(store, make_entries(first, first + 3, term=5))


def test_compact_prefix(log_factory):
    store = log_factory()
    store.append(make_entries(1, 300))
    store.compact_prefix(0)
    assert store.first_index() == 1
    store.compact_prefix(100)
    first = store.first_index()
    assert 1 <= first <= 101
    check_log(store, make_entries(first, 300))
    store.compact_prefix(10_000)  # past the end: the last entry always stays
    assert store.last_index() == 299
    assert store.first_index() <= 299
    if log_factory.impl == "memory":
        assert store.first_index() == 299
    check_log(store, make_entries(store.first_index(), 300))
    store.append(make_entries(300, 305))
    check_log(store, make_entries(store.first_index(), 305))


def test_compact_prefix_keeps_the_last_entry(log_factory):
    store = log_factory()
    store.compact_prefix(5)  # empty: nothing to do
    assert (store.first_index(), store.last_index()) == (1, 0)
    store.append(make_entries(1, 2))
    store.compact_prefix(1)
    check_log(store, make_entries(1, 2))
    store.append(make_entries(2, 120))
    for index in (119, 200, 2**63):
        store.compact_prefix(index)
        assert store.last_index() == 119 and store.first_index() <= 119
    store.truncate_suffix(store.first_index())  # only truncation (or reset) empties it
    first = store.first_index()
    assert store.last_index() == first - 1
    store.compact_prefix(10_000)
    assert (store.first_index(), store.last_index()) == (first, first - 1)


@pytest.mark.parametrize("where", ["ahead", "inside", "at-first", "behind", "one"])
def test_reset(log_factory, where):
    store = log_factory()
    store.append(make_entries(1, 200, term=2))
    store.compact_prefix(60)
    first = store.first_index()
    next_index = {"ahead": 1000, "inside": 150, "at-first": first, "behind": first // 2 + 1,
                  "one": 1}[where]
    store.reset(next_index)
    assert store.first_index() == next_index
    assert store.last_index() == next_index - 1
    assert store.entries(next_index, next_index) == []
    for index in (next_index - 1, next_index, 150):
        with pytest.raises(IndexError):
            store.term_at(index)
    with pytest.raises(IndexError):
        store.entries(next_index - 1, next_index)
    with pytest.raises(ValueError):
        store.append(make_entries(next_index + 1, next_index + 3))  # a gap
    if next_index > 1:
        with pytest.raises(ValueError):
            store.append(make_entries(next_index - 1, next_index + 1))  # before the first index
    # An empty log ignores truncation and compaction.
    store.truncate_suffix(0)
    store.compact_prefix(next_index + 100)
    assert (store.first_index(), store.last_index()) == (next_index, next_index - 1)
    entries = make_entries(next_index, next_index + 80, term=5)
    for k in range(0, 80, 8):  # small appends: the disk stores roll segments
        store.append(entries[k:k + 8])
    check_log(store, entries)
    store.sync()
    store.close()
    again = log_factory()
    check_log(again, entries)


def test_reset_survives_reopen_and_repeats(log_factory):
    store = log_factory()
    store.append(make_entries(1, 50))
    store.reset(77)
    store.reset(77)  # again: nothing to do
    store.sync()
    store.close()
    again = log_factory()
    assert (again.first_index(), again.last_index()) == (77, 76)
    if log_factory.impl != "memory":
        assert again.recovery_report == ()
    again.append(make_entries(77, 80, term=3))
    again.reset(78)
    again.append(make_entries(78, 79, term=4))
    check_log(again, make_entries(78, 79, term=4))


def test_reset_rejects_bad_indexes(log_factory):
    store = log_factory()
    store.append(make_entries(1, 10))
    for bad in (0, -1, 2**64, 1.5, "3"):
        with pytest.raises(ValueError):
            store.reset(bad)
    check_log(store, make_entries(1, 10))
    store.reset(2**63)  # large but fine
    assert store.first_index() == 2**63
    store.append([Entry(2**63, 1, 0, b"x")])
    assert store.term_at(2**63) == 1


def test_sync_and_close_are_safe(log_factory):
    store = log_factory()
    store.sync()
    store.append(make_entries(1, 5))
    store.sync()
    store.close()
    store.close()


def test_log_survives_reopen(log_factory):
    store = log_factory()
    store.append(make_entries(1, 100, term=1))
    store.append(make_entries(90, 120, term=2))
    store.compact_prefix(40)
    store.sync()
    first = store.first_index()
    store.close()
    again = log_factory()
    assert again.first_index() == first
    check_log(again, (make_entries(1, 90, term=1) + make_entries(90, 120, term=2))[first - 1:])


def test_stable_store_round_trip(stable_factory):
    store = stable_factory()
    assert store.load() == HardState()
    store.save(HardState(term=3, vote="node-b", commit=7))
    assert store.load() == HardState(term=3, vote="node-b", commit=7)
    store.save(HardState(term=4, vote=None, commit=9))
    store.save(HardState(term=4, vote=None, commit=9))  # same again
    assert store.load() == HardState(term=4, vote=None, commit=9)
    store.save(HardState(term=5, vote="", commit=9))
    assert store.load().vote == ""
    store.save(HardState(term=2**63, vote="ünïcode-ノード", commit=2**40))
    store.close()
    store.close()
    again = stable_factory()
    assert again.load() == HardState(term=2**63, vote="ünïcode-ノード", commit=2**40)


@pytest.mark.parametrize("impl", ["native", "file"])
def test_stable_store_rejects_bad_values(impl, tmp_path):
    from .conftest import native_mod, open_stable

    if impl == "native" and native_mod is None:
        pytest.skip("native module not built (no C compiler at install); "
                    "the pure-Python store covers the format")
    store = open_stable(impl, tmp_path)
    store.save(HardState(term=1, vote="a", commit=0))
    with pytest.raises(ValueError):
        store.save(HardState(term=-1, vote="a", commit=0))
    with pytest.raises(ValueError):
        store.save(HardState(term=1, vote="x" * 5000, commit=0))
    assert store.load() == HardState(term=1, vote="a", commit=0)
    store.close()


def test_encoded_append_matches_entry_append(log_factory):
    if log_factory.impl == "memory":
        pytest.skip("append_encoded is an extension of the disk stores")
    store = log_factory()
    entries = make_entries(1, 50, term=3)
    store.append_encoded(encode_entries(entries[:30]))
    store.append_encoded(memoryview(encode_entries(entries[30:])))
    check_log(store, entries)
    assert store.entries_encoded(1, 50) == encode_entries(entries)
    assert store.entries_encoded(7, 7) == b""
    # Conflicting suffix replaced, exactly as append() does.
    store.append_encoded(encode_entries(make_entries(40, 45, term=4)))
    check_log(store, entries[:39] + make_entries(40, 45, term=4))
    bad = bytearray(encode_entries(make_entries(45, 48, term=4)))
    bad[-1] ^= 0xFF
    with pytest.raises(CodecError):
        store.append_encoded(bytes(bad))
    with pytest.raises(CodecError):
        store.append_encoded(bytes(bad[:30]))
    with pytest.raises(ValueError):
        store.append_encoded(encode_entries(make_entries(47, 48)))  # gap
    check_log(store, entries[:39] + make_entries(40, 45, term=4))


def test_disk_stores_reject_unencodable_fields(log_factory):
    if log_factory.impl == "memory":
        pytest.skip("the memory store keeps any object")
    store = log_factory()
    store.append(make_entries(1, 3))
    for bad in (Entry(3, -1, 0, b""), Entry(3, 1, 256, b""), Entry(3, 1, 0, "text"),
                Entry(3, 2**64, 0, b"")):
        for batch in ([bad], [bad] * 1 + make_entries(4, 40)):
            with pytest.raises(ValueError):
                store.append(batch)
    check_log(store, make_entries(1, 3))
