"""Protocol-aware recovery support in the stores (issue 12): the hard state's ``recovering``
field (format version 2, version 1 still read), the sync mark (``synced_index_at_open``), the
first index each repair lost, and the opt-in discard of a corrupt suffix.

Every test runs on both disk stores (native C and pure Python), which share the format.
"""

from __future__ import annotations

import logging
import os
import select
import struct
from pathlib import Path

import pytest

from engine import codec
from engine.errors import CorruptLogError
from engine.storage.base import SyncMarkStore
from engine.storage.filestore import (
    HARDSTATE_FILE,
    SEGMENT_HEADER_SIZE,
    SYNCMARK_FILE,
    SYNCMARK_SIZE,
    decode_syncmark,
    encode_syncmark,
    segment_name,
)
from engine.storage.memory import MemoryLogStore
from engine.storage.open import open_stores
from engine.types import HardState

from .conftest import DISK_IMPLS, make_entries, native_mod, needs_native, open_log, open_stable

N = 30


def segs(directory: Path) -> list[str]:
    return sorted(p for p in os.listdir(directory) if p.endswith(".seg"))


def mark(directory: Path) -> int | None:
    """The index in ``syncmark`` (None when missing or empty), checking the format."""
    path = directory / SYNCMARK_FILE
    if not path.exists() or path.stat().st_size == 0:
        return None
    index, why = decode_syncmark(path.read_bytes())
    assert why is None, why
    return index


def open_stores_as(impl: str, directory: Path, monkeypatch: pytest.MonkeyPatch, **kwargs):
    """open_stores, made to pick the store of kind ``impl``."""
    if impl == "native":
        monkeypatch.delenv("RAFT_ENGINE_NO_NATIVE", raising=False)
    else:
        monkeypatch.setenv("RAFT_ENGINE_NO_NATIVE", "1")
    log, stable = open_stores(str(directory), fsync=False, **kwargs)
    assert type(log).__name__ == {"native": "NativeLogStore", "file": "FileLogStore"}[impl]
    return log, stable


def build(impl: str, directory: Path, n: int = N, segment_size: int = 200) -> list[str]:
    """A synced log of entries 1..n, closed; returns its segment names, oldest first."""
    store = open_log(impl, directory, segment_size=segment_size, fsync=True)
    for i in range(1, n + 1):
        store.append(make_entries(i, i + 1))
    store.sync()
    store.close()
    return segs(directory)


# --- hard state ----------------------------------------------------------------------------


def v1_hard_state(term: int, vote: str | None, commit: int) -> bytes:
    """A ``hardstate`` file as format version 1 wrote it (no recovering field)."""
    raw = b"" if vote is None else vote.encode()
    body = struct.pack("<8sIIQQ", b"RAFTHST\0", 1, 0xFFFFFFFF if vote is None else len(raw),
                       term, commit) + raw
    return body + struct.pack("<I", codec.crc32c(body))


@pytest.mark.parametrize("impl", DISK_IMPLS)
@pytest.mark.parametrize("vote", [None, "n2"])
def test_version_1_hard_state_loads(impl, vote, tmp_path):
    (tmp_path / HARDSTATE_FILE).write_bytes(v1_hard_state(7, vote, 12))
    stable = open_stable(impl, tmp_path)
    assert stable.load() == HardState(term=7, vote=vote, commit=12, recovering=0)
    # A save writes version 2.
    stable.save(HardState(term=8, vote=vote, commit=12, recovering=5))
    stable.close()
    data = (tmp_path / HARDSTATE_FILE).read_bytes()
    assert struct.unpack_from("<I", data, 8) == (2,)
    assert struct.unpack_from("<QQQ", data, 16) == (8, 12, 5)


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_version_1_bad_crc_is_still_caught(impl, tmp_path):
    data = bytearray(v1_hard_state(7, "n2", 12))
    data[30] ^= 0x01
    (tmp_path / HARDSTATE_FILE).write_bytes(bytes(data))
    stable = open_stable(impl, tmp_path)
    with pytest.raises(CorruptLogError, match="hardstate"):
        stable.load()
    stable.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_recovering_round_trip_and_crc(impl, tmp_path):
    state = HardState(term=3, vote="n1", commit=9, recovering=(1 << 64) - 1)
    stable = open_stable(impl, tmp_path)
    stable.save(state)
    stable.close()
    assert open_stable(impl, tmp_path).load() == state
    # The field is under the CRC.
    path = tmp_path / HARDSTATE_FILE
    data = bytearray(path.read_bytes())
    data[32] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="CRC"):
        open_stable(impl, tmp_path).load()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_recovering_out_of_range_is_refused(impl, tmp_path):
    stable = open_stable(impl, tmp_path)
    with pytest.raises(ValueError):
        stable.save(HardState(term=1, vote=None, commit=0, recovering=-1))
    stable.close()


# --- the sync mark -------------------------------------------------------------------------


def test_every_store_is_a_sync_mark_store(tmp_path):
    for impl in ("file", *(["native"] if native_mod is not None else [])):
        store = open_log(impl, tmp_path / impl)
        assert isinstance(store, SyncMarkStore)
        assert store.synced_index_at_open == 0
        store.close()
    memory = MemoryLogStore()
    assert isinstance(memory, SyncMarkStore)
    memory.append(make_entries(1, 4))
    assert memory.synced_index_at_open == 3  # every write is durable at once


def test_mark_format():
    data = encode_syncmark(1234)
    assert len(data) == SYNCMARK_SIZE and data.startswith(b"RAFTSYN\0")
    assert decode_syncmark(data) == (1234, None)
    assert decode_syncmark(b"") == (0, None)
    assert decode_syncmark(data[:-1])[1] == "wrong size"
    flipped = bytearray(data)
    flipped[17] ^= 1
    assert decode_syncmark(bytes(flipped))[1] == "CRC mismatch"


@pytest.mark.parametrize("impl", DISK_IMPLS)
@pytest.mark.parametrize("fsync", [True, False])
def test_mark_after_inline_sync(impl, fsync, tmp_path):
    store = open_log(impl, tmp_path, fsync=fsync)
    assert store.synced_index_at_open == 0 and mark(tmp_path) is None
    store.append(make_entries(1, 11))
    assert mark(tmp_path) is None  # an append alone claims nothing
    store.sync()
    assert mark(tmp_path) == 10
    store.append(make_entries(11, 21))
    store.close()
    again = open_log(impl, tmp_path, fsync=fsync)
    assert (again.last_index(), again.synced_index_at_open) == (20, 10)
    again.sync()
    assert mark(tmp_path) == 20 and again.synced_index_at_open == 10
    again.close()


@needs_native
def test_mark_after_background_sync(tmp_path):
    from engine.storage.native import NativeLogStore

    store = NativeLogStore(str(tmp_path), fsync=True, segment_size=256)
    try:
        assert store.background_sync
        for k in range(5):
            store.append(make_entries(4 * k + 1, 4 * k + 5))
            store.begin_sync()
            assert store.end_sync(wait=True)
            assert mark(tmp_path) == 4 * k + 4
        # As the runtime does it: wait for the descriptor, then collect without blocking.
        store.append(make_entries(21, 25))
        store.begin_sync()
        readable, _, _ = select.select([store.sync_fileno()], [], [], 60)
        assert readable and store.end_sync()
        assert mark(tmp_path) == 24
    finally:
        store.close()
    assert NativeLogStore(str(tmp_path)).synced_index_at_open == 24


@pytest.mark.parametrize("impl", DISK_IMPLS)
@pytest.mark.parametrize("fsync", [True, False])
def test_truncate_lowers_reset_sets_compaction_leaves(impl, fsync, tmp_path):
    store = open_log(impl, tmp_path, fsync=fsync, segment_size=200)
    for i in range(1, 41):
        store.append(make_entries(i, i + 1))
    store.sync()
    assert mark(tmp_path) == 40
    store.compact_prefix(20)
    assert store.first_index() > 1 and mark(tmp_path) == 40
    store.truncate_suffix(35)  # at once, before any sync
    assert mark(tmp_path) == 34
    store.append(make_entries(30, 33, term=2))  # a conflicting suffix replaced
    assert mark(tmp_path) == 29
    store.sync()
    assert mark(tmp_path) == 32
    store.truncate_suffix(100)  # past the end and above the mark: nothing to lower
    assert mark(tmp_path) == 32
    store.reset(500)
    assert mark(tmp_path) == 499
    store.append(make_entries(500, 505))
    store.reset(200)
    assert mark(tmp_path) == 199
    store.close()
    again = open_log(impl, tmp_path, fsync=fsync)
    assert again.synced_index_at_open == 199 and again.recovery_report == ()
    again.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_truncate_lowers_the_mark_even_past_the_end(impl, tmp_path):
    """After an open that found the log ending below the mark, a sync keeps the mark (a crash
    still tells the loss); a truncation lowers it."""
    names = build(impl, tmp_path)
    os.unlink(tmp_path / names[-1])
    store = open_log(impl, tmp_path, segment_size=200)
    last = store.last_index()
    assert last < N and store.synced_index_at_open == N
    store.sync()
    assert mark(tmp_path) == N
    store.truncate_suffix(last + 1)  # removes no entry
    assert mark(tmp_path) == last
    store.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_missing_mark_is_no_record(impl, tmp_path):
    build(impl, tmp_path)
    os.unlink(tmp_path / SYNCMARK_FILE)  # as a directory of an older version
    store = open_log(impl, tmp_path, segment_size=200)
    assert store.synced_index_at_open == 0 and store.recovery_report == ()
    store.sync()
    assert mark(tmp_path) == N
    store.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
@pytest.mark.parametrize("damage", ["flip", "short", "long"])
def test_corrupt_mark_is_no_record_and_reported(impl, damage, tmp_path, caplog):
    build(impl, tmp_path)
    path = tmp_path / SYNCMARK_FILE
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[16] ^= 0x04
    elif damage == "short":
        del data[20:]
    else:
        data += b"\0"
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        store = open_log(impl, tmp_path, segment_size=200)
    assert store.synced_index_at_open == 0 and store.last_index() == N
    (action,) = store.recovery_report
    assert action.file == SYNCMARK_FILE and action.first_lost == 0 and not action.removed
    assert "sync mark" in action.reason and SYNCMARK_FILE in caplog.text
    store.sync()  # written whole again
    assert mark(tmp_path) == N
    store.close()
    assert open_log(impl, tmp_path).recovery_report == ()


# --- entries lost behind the mark ------------------------------------------------------------


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_rotten_newest_record_ends_below_the_mark(impl, tmp_path):
    names = build(impl, tmp_path)
    last = tmp_path / names[-1]
    data = bytearray(last.read_bytes())
    data[-1] ^= 0x01
    last.write_bytes(bytes(data))
    store = open_log(impl, tmp_path, segment_size=200)
    assert store.last_index() == N - 1 and store.synced_index_at_open == N
    (action,) = store.recovery_report
    assert action.first_lost == N and "torn tail" in action.reason
    assert f"entries from index {N} on" in str(action)
    store.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_deleted_newest_segment_ends_below_the_mark(impl, tmp_path, caplog, monkeypatch):
    names = build(impl, tmp_path)
    os.unlink(tmp_path / names[-1])
    with caplog.at_level(logging.WARNING, logger="engine.storage.open"):
        log, stable = open_stores_as(impl, tmp_path, monkeypatch)
    try:
        assert log.last_index() == int(names[-1][:20]) - 1
        assert log.synced_index_at_open == N
        assert log.recovery_report == ()  # nothing to repair: it looks like a shorter log
        assert f"had made index {N} durable" in caplog.text
    finally:
        log.close()
        stable.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_torn_segment_creation_reports_its_first_index(impl, tmp_path):
    build(impl, tmp_path)
    (tmp_path / segment_name(N + 1)).write_bytes(b"RAFT")
    store = open_log(impl, tmp_path)
    (action,) = store.recovery_report
    assert action.removed and action.first_lost == N + 1
    store.close()


# --- discard_corrupt_suffix ------------------------------------------------------------------


def first_of(name: str) -> int:
    return int(name[:20])


def poke(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


def record_offset(path: Path, k: int) -> int:
    """File offset of the k-th record (0-based) of a segment."""
    data = path.read_bytes()
    at = SEGMENT_HEADER_SIZE
    for _ in range(k):
        (length,) = struct.unpack_from("<I", data, at + 4)
        at += 25 + length
    return at


def assert_prefix(store, last: int) -> None:
    assert store.last_index() == last
    first = store.first_index()
    assert store.entries(first, last + 1) == make_entries(first, last + 1)


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_discard_mid_log_bad_record(impl, tmp_path):
    build(impl, tmp_path, n=12, segment_size=1 << 20)
    (name,) = segs(tmp_path)
    path = tmp_path / name
    at = record_offset(path, 4)  # index 5, with 7 valid records after it
    poke(path, at + 27)
    size = path.stat().st_size
    with pytest.raises(CorruptLogError, match="followed by a valid record"):
        open_log(impl, tmp_path)
    assert path.stat().st_size == size  # the default changes nothing
    store = open_log(impl, tmp_path, discard_corrupt_suffix=True)
    assert_prefix(store, 4)
    assert store.synced_index_at_open == 12
    (action,) = store.recovery_report
    assert (action.file, action.offset, action.bytes_dropped) == (name, at, size - at)
    assert action.first_lost == 5 and not action.removed and "discarded" in action.reason
    store.append(make_entries(5, 8, term=3))
    store.close()
    again = open_log(impl, tmp_path)  # durable and clean: the default opens it
    assert again.recovery_report == () and again.last_index() == 7
    again.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_discard_bad_record_in_an_earlier_segment(impl, tmp_path):
    names = build(impl, tmp_path)
    assert len(names) >= 5
    damaged = tmp_path / names[1]
    poke(damaged, record_offset(damaged, 1) + 26)  # the segment's second record
    with pytest.raises(CorruptLogError, match="not the last segment"):
        open_log(impl, tmp_path)
    store = open_log(impl, tmp_path, segment_size=200, discard_corrupt_suffix=True)
    lost = first_of(names[1]) + 1
    assert_prefix(store, lost - 1)
    assert store.synced_index_at_open == N
    report = store.recovery_report
    assert len(report) == len(names) - 1
    assert min(a.first_lost for a in report) == lost
    removed = sorted(a.file for a in report if a.removed)
    assert removed == names[2:]
    assert all(a.first_lost == first_of(a.file) for a in report if a.removed)
    assert segs(tmp_path) == names[:2]
    store.close()
    again = open_log(impl, tmp_path)
    assert again.recovery_report == () and again.last_index() == lost - 1
    again.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_discard_missing_middle_segment(impl, tmp_path, monkeypatch):
    names = build(impl, tmp_path)
    assert len(names) >= 5
    os.unlink(tmp_path / names[2])
    with pytest.raises(CorruptLogError, match="missing"):
        open_stores_as(impl, tmp_path, monkeypatch)
    log, stable = open_stores_as(impl, tmp_path, monkeypatch, discard_corrupt_suffix=True)
    try:
        lost = first_of(names[2])
        assert_prefix(log, lost - 1)
        assert log.synced_index_at_open == N
        report = log.recovery_report
        assert len(report) == len(names) - 3 and all(a.removed for a in report)
        assert min(a.first_lost for a in report) == lost
        (gap,) = [a for a in report if a.file == names[3]]
        assert gap.first_lost == lost and "discarded" in gap.reason
        assert segs(tmp_path) == names[:2]
    finally:
        log.close()
        stable.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_discard_bad_header_of_the_first_segment(impl, tmp_path):
    names = build(impl, tmp_path)
    poke(tmp_path / names[0], 2)
    with pytest.raises(CorruptLogError, match="offset 0"):
        open_log(impl, tmp_path)
    store = open_log(impl, tmp_path, discard_corrupt_suffix=True)
    assert (store.first_index(), store.last_index()) == (1, 0)
    assert len(store.recovery_report) == len(names)
    assert min(a.first_lost for a in store.recovery_report) == 1
    assert segs(tmp_path) == [segment_name(1)]
    store.append(make_entries(1, 3))
    store.close()


@needs_native
@pytest.mark.parametrize(("cutter", "reader"), [("native", "file"), ("file", "native")])
def test_discard_is_the_same_in_both_stores(cutter, reader, tmp_path):
    """Both stores cut the same damaged directory to the same bytes and the same report."""
    names = build("native", tmp_path / "src")
    damaged = tmp_path / "src" / names[1]
    poke(damaged, record_offset(damaged, 2) + 30)
    results = []
    for impl in (cutter, reader):
        work = tmp_path / impl
        work.mkdir()
        for name in os.listdir(tmp_path / "src"):
            (work / name).write_bytes((tmp_path / "src" / name).read_bytes())
        store = open_log(impl, work, discard_corrupt_suffix=True)
        results.append((
            store.last_index(),
            store.synced_index_at_open,
            sorted((a.file, a.offset, a.bytes_dropped, a.removed, a.first_lost)
                   for a in store.recovery_report),
            {name: (work / name).read_bytes() for name in segs(work)},
        ))
        store.close()
    assert results[0] == results[1]
    assert results[0][0] == first_of(names[1]) + 1
