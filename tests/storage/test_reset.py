"""LogStore.reset on the disk stores: the files it leaves, each implementation reading the other's,
the states a crash can leave (and how recovery treats them), the order of its steps, and
injected failures at each step.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from engine.errors import StorageError
from engine.storage import filestore
from engine.storage.filestore import (
    SEGMENT_HEADER_SIZE,
    SYNCMARK_SIZE,
    encode_segment_header,
    segment_name,
)

from .conftest import DISK_IMPLS, make_entries, native_mod, open_log

needs_native = pytest.mark.skipif(native_mod is None, reason="native module not built")
OTHER = {"native": "file", "file": "native"}


def segments(directory: Path) -> list[str]:
    return sorted(p for p in os.listdir(directory) if p.endswith(".seg"))


def build(impl: str, directory: Path, n: int = 60, **kwargs) -> None:
    """A synced multi-segment log of entries 1..n-1, written one entry per append."""
    store = open_log(impl, directory, **kwargs)
    for i in range(1, n):
        store.append(make_entries(i, i + 1, term=2))
    store.sync()
    assert store.segment_count > 3
    store.close()


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_reset_leaves_one_header_only_segment(impl, fsync, tmp_path):
    build(impl, tmp_path)
    store = open_log(impl, tmp_path, fsync=fsync)
    store.compact_prefix(20)
    store.reset(500)
    assert segments(tmp_path) == [segment_name(500)]
    assert (tmp_path / segment_name(500)).read_bytes() == encode_segment_header(500)
    assert store.segment_count == 1
    store.append(make_entries(500, 503, term=3))
    store.sync()
    store.close()
    again = open_log(impl, tmp_path)
    assert again.recovery_report == ()
    assert (again.first_index(), again.last_index()) == (500, 502)
    assert again.entries(500, 503) == make_entries(500, 503, term=3)
    again.close()


@needs_native
@pytest.mark.parametrize("writer", ["native", "file"])
def test_each_reads_the_other_after_reset(writer, tmp_path):
    reader = OTHER[writer]
    build(writer, tmp_path)
    store = open_log(writer, tmp_path)
    store.reset(1000)
    for i in range(1000, 1030):
        store.append(make_entries(i, i + 1, term=4))
    store.close()
    other = open_log(reader, tmp_path)
    assert other.recovery_report == ()
    assert (other.first_index(), other.last_index()) == (1000, 1029)
    assert other.entries(1000, 1030) == make_entries(1000, 1030, term=4)
    other.reset(1010)  # into the range, by the other implementation
    other.close()
    back = open_log(writer, tmp_path)
    assert (back.first_index(), back.last_index()) == (1010, 1009)
    assert segments(tmp_path) == [segment_name(1010)]
    back.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_only_segment_empty_at_n_is_an_empty_log_at_n(impl, tmp_path):
    (tmp_path / segment_name(123)).write_bytes(encode_segment_header(123))
    store = open_log(impl, tmp_path)
    assert store.recovery_report == ()
    assert (store.first_index(), store.last_index()) == (123, 122)
    store.append(make_entries(123, 125))
    assert store.entries(123, 125) == make_entries(123, 125)
    store.close()


@pytest.mark.parametrize("name_index", [1, 77])
@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_crash_after_the_cut_recovers_an_empty_log(impl, name_index, tmp_path, caplog):
    """A crash after step 2 (zero-length, old name) or step 3 (zero-length, new name): recovery
    recreates the segment empty at the index its name says, and reports it."""
    (tmp_path / segment_name(name_index)).write_bytes(b"")
    store = open_log(impl, tmp_path)
    (action,) = store.recovery_report
    assert action.removed and action.file == segment_name(name_index)
    assert (store.first_index(), store.last_index()) == (name_index, name_index - 1)
    assert segments(tmp_path) == [segment_name(name_index)]
    store.close()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_crash_during_removals_leaves_a_prefix(impl, tmp_path):
    """Step 1 removes the newest segments first: any crash point is a shorter, valid log."""
    build(impl, tmp_path)
    names = segments(tmp_path)
    for name in reversed(names[1:]):
        os.unlink(tmp_path / name)
        store = open_log(impl, tmp_path)
        assert store.recovery_report == ()
        assert store.first_index() == 1
        assert store.entries(1, store.last_index() + 1) == [
            e for i in range(1, store.last_index() + 1) for e in make_entries(i, i + 1, term=2)]
        store.close()


def test_file_reset_steps_are_ordered(tmp_path, monkeypatch):
    """The pure-Python store's system calls, in order (the C store follows the same steps)."""
    build("file", tmp_path)
    store = open_log("file", tmp_path, fsync=True)
    calls: list[str] = []
    dirfd = store._dirfd

    def spy(name, fn, describe):
        def wrapper(*args, **kwargs):
            calls.append(describe(*args))
            return fn(*args, **kwargs)
        monkeypatch.setattr(filestore.os, name, wrapper)

    spy("unlink", os.unlink, lambda path: f"unlink {os.path.basename(path)}")
    spy("fsync", os.fsync, lambda fd: "fsync dir" if fd == dirfd else "fsync file")
    spy("fdatasync", os.fdatasync, lambda fd: "fdatasync")
    spy("ftruncate", os.ftruncate, lambda fd, n: f"ftruncate {n}")
    spy("rename", os.rename, lambda a, b: f"rename {os.path.basename(a)} {os.path.basename(b)}")
    spy("pwrite", os.pwrite, lambda fd, data, off: f"pwrite {len(data)}@{off}")
    names = segments(tmp_path)
    store.reset(900)
    monkeypatch.undo()
    assert calls == [
        *(f"unlink {n}" for n in reversed(names[1:])),
        "fsync dir",
        "ftruncate 0",
        "fdatasync",
        f"rename {names[0]} {segment_name(900)}",
        "fsync dir",
        f"pwrite {SEGMENT_HEADER_SIZE}@0",
        "fdatasync",
        f"pwrite {SYNCMARK_SIZE}@0",  # the sync mark raised to 899, after the reset is durable
    ]
    store.close()


# --- injected failures ---------------------------------------------------------------------


def _fail(err: int):
    def raise_(*args, **kwargs):
        raise OSError(err, os.strerror(err))
    return raise_


def _inject(impl, monkeypatch, step: str, err: int) -> None:
    """Make the next ``step`` ('truncate', 'rename', 'header') of a reset fail with ``err``."""
    if impl == "native":
        lib = native_mod.lib
        op = {"truncate": lib.RL_FAULT_TRUNCATE, "rename": lib.RL_FAULT_RENAME,
              "header": lib.RL_FAULT_WRITE}[step]
        lib.rl_fault_set(op, 0, err, 1)
    else:
        name = {"truncate": "ftruncate", "rename": "rename", "header": "pwrite"}[step]
        monkeypatch.setattr(filestore.os, name, _fail(err))


def _clear(impl, monkeypatch) -> None:
    if impl == "native":
        native_mod.lib.rl_fault_clear()
    monkeypatch.undo()


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_reset_fails_before_the_cut(impl, tmp_path, monkeypatch):
    """The oldest segment cannot be cut: a shorter prefix remains, and the store works."""
    build(impl, tmp_path)
    store = open_log(impl, tmp_path, fsync=True)
    try:
        _inject(impl, monkeypatch, "truncate", errno.EIO)
        with pytest.raises(StorageError) as info:
            store.reset(500)
    finally:
        _clear(impl, monkeypatch)
    assert info.value.errno == errno.EIO
    assert store.first_index() == 1 and 1 <= store.last_index() < 59
    assert len(segments(tmp_path)) == 1
    last = store.last_index()
    assert store.entries(1, last + 1) == [
        e for i in range(1, last + 1) for e in make_entries(i, i + 1, term=2)]
    store.append(make_entries(last + 1, last + 2, term=3))  # still usable
    store.reset(500)  # and a retry works
    assert (store.first_index(), store.last_index()) == (500, 499)
    store.close()


@pytest.mark.parametrize(("step", "err", "after_reopen"),
                         [("rename", errno.EIO, 1), ("header", errno.ENOSPC, 500)])
@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_reset_fails_after_the_cut(impl, step, err, after_reopen, tmp_path, monkeypatch):
    """Past the cut the store is poisoned; reopening undoes (rename failed: empty at the old
    first index) or completes (header failed: empty at next_index) the reset."""
    build(impl, tmp_path)
    store = open_log(impl, tmp_path, fsync=True)
    try:
        _inject(impl, monkeypatch, step, err)
        with pytest.raises(StorageError) as info:
            store.reset(500)
    finally:
        _clear(impl, monkeypatch)
    assert info.value.errno == err
    assert "reopen" in str(info.value)
    assert store.last_index() == store.first_index() - 1  # empty, readable
    assert store.entries(store.first_index(), store.first_index()) == []
    with pytest.raises(StorageError, match="reopen"):
        store.append(make_entries(store.first_index(), store.first_index() + 1))
    with pytest.raises(StorageError, match="reopen"):
        store.reset(500)
    store.close()
    again = open_log(impl, tmp_path)
    (action,) = again.recovery_report
    assert action.removed
    assert (again.first_index(), again.last_index()) == (after_reopen, after_reopen - 1)
    again.append(make_entries(after_reopen, after_reopen + 2))
    again.close()
