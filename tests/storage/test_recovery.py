"""Recovery and corruption of the disk log stores (native and pure Python).

Every damage either recovers to the last good record (a torn tail, reported and logged) or
raises CorruptLogError naming the file and offset; never does a store return wrong entries.
Also: each implementation reads the other's files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from engine.errors import CorruptLogError
from engine.storage.filestore import SEGMENT_HEADER_SIZE, segment_name
from engine.types import HardState

from .conftest import DISK_IMPLS, make_entries, native_mod, open_log, open_stable

N = 14  # entries in the damaged logs


def build(impl: str, directory: Path, n: int = N, segment_size: int = 512) -> list[str]:
    """A synced log of entries 1..n; returns its segment file names, oldest first."""
    store = open_log(impl, directory, segment_size=segment_size, fsync=True)
    for i in range(1, n + 1):
        store.append(make_entries(i, i + 1, term=1 + i // 5))
    store.sync()
    store.close()
    return sorted(p for p in os.listdir(directory) if p.endswith(".seg"))


def expected(lo: int, hi: int) -> list:
    out = []
    for i in range(lo, hi):
        out.extend(make_entries(i, i + 1, term=1 + i // 5))
    return out


def assert_correct_prefix(store) -> None:
    """What the store returns is exactly the original entries in its range."""
    first, last = store.first_index(), store.last_index()
    assert store.entries(first, last + 1) == expected(first, last + 1)


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_cut_last_record_at_every_offset(impl, tmp_path, caplog):
    src = tmp_path / "src"
    names = build(impl, src)
    last_file = src / names[-1]
    data = last_file.read_bytes()
    store = open_log(impl, src)
    start = store.entries_encoded(N, N + 1)
    store.close()
    record_at = len(data) - len(start)
    for cut in range(record_at, len(data)):
        work = tmp_path / f"cut{cut}"
        work.mkdir()
        for name in names:
            (work / name).write_bytes((src / name).read_bytes())
        (work / names[-1]).write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            store = open_log(impl, work)
        assert store.last_index() == N - 1
        assert_correct_prefix(store)
        if cut > record_at:
            (action,) = store.recovery_report
            assert action.file == names[-1]
            assert action.offset == record_at
            assert action.bytes_dropped == cut - record_at
            assert not action.removed
            assert names[-1] in caplog.text and "torn tail" in caplog.text
        else:
            assert store.recovery_report == ()
        store.append(make_entries(N, N + 2, term=9))
        assert store.term_at(N + 1) == 9
        store.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_flip_every_byte(impl, tmp_path):
    """Flip each byte of every segment in turn: clear error or correct entries, never wrong."""
    src = tmp_path / "src"
    names = build(impl, src, n=10, segment_size=256)
    assert len(names) >= 2
    originals = {name: (src / name).read_bytes() for name in names}
    outcomes = {"corrupt": 0, "recovered": 0}
    for name in names:
        original = originals[name]
        for offset in range(len(original)):
            damaged = bytearray(original)
            damaged[offset] ^= 0x5A
            (src / name).write_bytes(bytes(damaged))
            try:
                store = open_log(impl, src)
            except CorruptLogError as exc:
                assert name in str(exc) and "offset" in str(exc)
                outcomes["corrupt"] += 1
            else:
                # Only the final record of the last segment may be lost.
                assert name == names[-1]
                assert store.last_index() >= 9
                assert_correct_prefix(store)
                store.close()
                outcomes["recovered"] += 1
            # Recovery may have truncated the file: restore every segment.
            for other in names:
                (src / other).write_bytes(originals[other])
    assert outcomes["corrupt"] > 0 and outcomes["recovered"] > 0


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_removed_segments(impl, tmp_path):
    src = tmp_path / "src"
    names = build(impl, src, n=30, segment_size=200)
    assert len(names) >= 4
    originals = {name: (src / name).read_bytes() for name in names}

    def restore() -> None:
        for name in os.listdir(src):
            os.unlink(src / name)
        for name, data in originals.items():
            (src / name).write_bytes(data)

    # A segment in the middle: the gap is corruption.
    os.unlink(src / names[1])
    with pytest.raises(CorruptLogError, match="missing") as info:
        open_log(impl, src)
    assert names[2] in str(info.value)
    restore()
    # The last one: indistinguishable from a truncated suffix; what remains is correct.
    os.unlink(src / names[-1])
    store = open_log(impl, src)
    assert store.last_index() == int(names[-1][:20]) - 1
    assert_correct_prefix(store)
    store.close()
    restore()
    # The first one: indistinguishable from compaction; what remains is correct.
    os.unlink(src / names[0])
    store = open_log(impl, src)
    assert store.first_index() == int(names[1][:20])
    assert store.last_index() == 30
    assert_correct_prefix(store)
    store.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_zeroed_headers(impl, tmp_path):
    src = tmp_path / "src"
    names = build(impl, src, n=20, segment_size=256)
    for name in names:
        original = (src / name).read_bytes()
        (src / name).write_bytes(bytes(SEGMENT_HEADER_SIZE) + original[SEGMENT_HEADER_SIZE:])
        with pytest.raises(CorruptLogError, match="offset 0") as info:
            open_log(impl, src)
        assert name in str(info.value)
        (src / name).write_bytes(original)


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_torn_segment_creation_is_removed(impl, tmp_path):
    src = tmp_path / "src"
    names = build(impl, src, n=20, segment_size=256)
    # A new segment whose header never fully reached the disk.
    torn = segment_name(21)
    (src / torn).write_bytes(b"RAFTSE")
    store = open_log(impl, src)
    assert store.last_index() == 20
    (action,) = store.recovery_report
    assert action.removed and action.file == torn
    assert not (src / torn).exists()
    store.append(expected(21, 23))
    store.close()
    # An all-zero file (header and all) after the last segment: also a torn creation.
    zeros = segment_name(23)
    (src / zeros).write_bytes(bytes(64))
    store = open_log(impl, src)
    assert store.last_index() == 22
    (action,) = store.recovery_report
    assert action.removed and action.file == zeros and action.bytes_dropped == 64
    assert_correct_prefix(store)
    store.close()
    assert names


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_bad_record_followed_by_valid_one_in_last_segment(impl, tmp_path):
    src = tmp_path / "src"
    build(impl, src, n=12, segment_size=1 << 20)
    (name,) = [p for p in os.listdir(src) if p.endswith(".seg")]
    data = bytearray((src / name).read_bytes())
    data[SEGMENT_HEADER_SIZE + 30] ^= 0x01  # inside record 1 or 2
    (src / name).write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="followed by a valid record"):
        open_log(impl, src)


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_corrupt_hard_state(impl, tmp_path):
    stable = open_stable(impl, tmp_path)
    stable.save(HardState(term=3, vote="n2", commit=5))
    stable.close()
    path = tmp_path / "hardstate"
    data = bytearray(path.read_bytes())
    data[20] ^= 0x01
    path.write_bytes(bytes(data))
    stable = open_stable(impl, tmp_path)
    with pytest.raises(CorruptLogError, match="hardstate"):
        stable.load()
    stable.close()


@pytest.mark.skipif(native_mod is None, reason="native module not built")
@pytest.mark.parametrize(("writer", "reader"), [("native", "file"), ("file", "native")])
def test_cross_read(writer, reader, tmp_path):
    """Each implementation reads (and repairs) what the other wrote."""
    store = open_log(writer, tmp_path, segment_size=300, fsync=True)
    store.append(make_entries(1, 80, term=1))
    store.append(make_entries(60, 90, term=2))  # conflict: truncation across segments
    store.compact_prefix(30)
    store.sync()
    first = store.first_index()
    names = sorted(p for p in os.listdir(tmp_path) if p.endswith(".seg"))
    encoded = store.entries_encoded(first, 90)
    want = store.entries(first, 90)
    store.close()
    stable = open_stable(writer, tmp_path, fsync=True)
    stable.save(HardState(term=2, vote="w", commit=70, recovering=88))
    stable.close()

    other = open_log(reader, tmp_path, segment_size=300)
    assert (other.first_index(), other.last_index()) == (first, 89)
    assert other.entries(first, 90) == want
    assert other.entries_encoded(first, 90) == encoded
    assert other.synced_index_at_open == 89  # the writer's sync mark
    back_state = open_stable(reader, tmp_path)
    assert back_state.load() == HardState(term=2, vote="w", commit=70, recovering=88)
    back_state.save(HardState(term=3, vote=None, commit=71, recovering=0))
    back_state.close()
    assert open_stable(writer, tmp_path).load() == HardState(term=3, vote=None, commit=71)
    other.append(make_entries(90, 95, term=3))
    other.sync()
    other.truncate_suffix(94)
    other.close()

    # A torn tail written by one is repaired identically by the other.
    last = tmp_path / sorted(p for p in os.listdir(tmp_path) if p.endswith(".seg"))[-1]
    last.write_bytes(last.read_bytes()[:-3])
    back = open_log(writer, tmp_path, segment_size=300)
    assert back.last_index() == 92
    assert back.synced_index_at_open == 93  # the reader's mark, lowered by its truncation
    assert back.recovery_report[0].bytes_dropped > 0
    assert back.recovery_report[0].first_lost == 93
    assert back.entries(first, 90) == want
    back.close()
    assert names
