"""The offline damage tools (engine.storage.damage) hit exactly the record, segment or file they
name, and the stores' recovery then does what its rules say for that damage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.codec import HEADER_SIZE
from engine.errors import CorruptLogError
from engine.storage import damage
from engine.storage.filestore import SEGMENT_HEADER_SIZE
from engine.storage.snapshot import FileSnapshotStore
from engine.types import HardState, SnapshotMeta

from .conftest import DISK_IMPLS, make_entries, open_log, open_stable

N = 30  # entries; with 512-byte segments they span several segments


def build(impl: str, directory: Path) -> None:
    """A synced log of entries 1..N in small segments, and a hard state."""
    log = open_log(impl, directory, fsync=True)
    for i in range(1, N + 1):
        log.append(make_entries(i, i + 1))
    log.sync()
    log.close()
    stable = open_stable(impl, directory)
    stable.save(HardState(term=1, vote="a", commit=N))
    stable.close()


def contents(impl: str, directory: Path) -> tuple[list, tuple]:
    """(entries, recovery report) of the log reopened."""
    log = open_log(impl, directory)
    try:
        return log.entries(log.first_index(), log.last_index() + 1), log.recovery_report
    finally:
        log.close()


def test_log_records_match_the_store(tmp_path: Path) -> None:
    build("file", tmp_path)
    records = damage.log_records(tmp_path)
    assert [r.index for r in records] == list(range(1, N + 1))
    assert len({r.file for r in records}) > 2
    for rec, entry in zip(records, make_entries(1, N + 1), strict=True):
        assert rec.size == HEADER_SIZE + len(entry.data)
        assert rec.offset >= SEGMENT_HEADER_SIZE


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_flip_in_the_newest_record_is_a_torn_tail(impl: str, tmp_path: Path) -> None:
    build(impl, tmp_path)
    rec = damage.log_records(tmp_path)[-1]
    did = damage.flip_byte(tmp_path, N)
    assert (did.file, did.offset, did.index) == (rec.file, rec.offset + rec.size - 1, N)
    entries, report = contents(impl, tmp_path)
    assert entries == make_entries(1, N)
    assert [(a.file, a.offset) for a in report] == [(os.path.basename(rec.file), rec.offset)]


@pytest.mark.parametrize("impl", DISK_IMPLS)
@pytest.mark.parametrize("where", ["same segment", "older segment"])
def test_flip_in_a_middle_record_is_corruption(impl: str, where: str, tmp_path: Path) -> None:
    build(impl, tmp_path)
    records = damage.log_records(tmp_path)
    newest = records[-1].file
    if where == "same segment":
        victim = next(r for r in records if r.file == newest)
        assert victim.index < N  # a valid record follows it
    else:
        victim = [r for r in records if r.file != newest][-1]
    did = damage.flip_byte(tmp_path, victim.index, offset_in_record=HEADER_SIZE - 1)  # kind
    assert did.offset == victim.offset + HEADER_SIZE - 1
    with pytest.raises(CorruptLogError, match=os.path.basename(victim.file)):
        contents(impl, tmp_path)


def test_flip_byte_checks_its_arguments(tmp_path: Path) -> None:
    build("file", tmp_path)
    with pytest.raises(LookupError):
        damage.flip_byte(tmp_path, N + 1)
    with pytest.raises(ValueError, match="outside"):
        damage.flip_byte(tmp_path, 1, offset_in_record=10_000)
    with pytest.raises(ValueError, match="mask"):
        damage.flip_byte(tmp_path, 1, mask=0)


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_delete_newest_segment_ends_the_log_earlier(impl: str, tmp_path: Path) -> None:
    build(impl, tmp_path)
    records = damage.log_records(tmp_path)
    newest = records[-1].file
    first_lost = min(r.index for r in records if r.file == newest)
    did = damage.delete_newest_segment(tmp_path)
    assert did.file == newest and did.index == first_lost and not os.path.exists(newest)
    entries, _ = contents(impl, tmp_path)
    assert entries == make_entries(1, first_lost)


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_delete_a_middle_segment_is_corruption(impl: str, tmp_path: Path) -> None:
    build(impl, tmp_path)
    records = damage.log_records(tmp_path)
    files = sorted({r.file for r in records})
    middle = files[1]
    index = [r.index for r in records if r.file == middle][-1]
    assert damage.delete_segment(tmp_path, index).file == middle
    with pytest.raises(CorruptLogError, match="missing"):
        contents(impl, tmp_path)
    with pytest.raises(LookupError):
        damage.delete_segment(tmp_path, N + 5)


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_truncate_tail_cuts_the_newest_record(impl: str, tmp_path: Path) -> None:
    build(impl, tmp_path)
    rec = damage.log_records(tmp_path)[-1]
    did = damage.truncate_tail(tmp_path, 3)
    assert (did.file, did.offset, did.length, did.index) == (
        rec.file, rec.offset + rec.size - 3, 3, N)
    entries, report = contents(impl, tmp_path)
    assert entries == make_entries(1, N)
    assert [a.offset for a in report] == [rec.offset]


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_corrupt_hard_state(impl: str, tmp_path: Path) -> None:
    build(impl, tmp_path)
    did = damage.corrupt_hard_state(tmp_path)
    assert did.file == str(tmp_path / "hardstate")
    stable = open_stable(impl, tmp_path)
    try:
        with pytest.raises(CorruptLogError):
            stable.load()
    finally:
        stable.close()


def test_corrupt_snapshot_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    store = FileSnapshotStore(str(tmp_path / "snapshots"), fsync=False)
    store.save(SnapshotMeta(5, 1, ("a",)), b"five")
    store.save(SnapshotMeta(9, 2, ("a",)), b"nine")
    store.close()
    did = damage.corrupt_snapshot(tmp_path)
    assert did.index == 9 and did.file.endswith(".snap")
    store = FileSnapshotStore(str(tmp_path / "snapshots"), fsync=False)
    try:
        latest = store.latest()
        assert latest is not None and latest[0].index == 5 and latest[1] == b"five"
    finally:
        store.close()
    with pytest.raises(LookupError):
        damage.corrupt_snapshot(tmp_path / "nowhere")
