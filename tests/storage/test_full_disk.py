"""Full disk and I/O errors: StorageError (with errno), no change to the log, and the store
is usable again once space is back.

Three ways to fill a disk, from most to least real:
- a 512 KiB tmpfs mounted for the test (needs root and mount rights; skipped with the reason
  otherwise);
- RLIMIT_FSIZE in a child process (writes past the limit fail with EFBIG after a short write);
  always runs;
- the C layer's fault-injection hook (ENOSPC / EIO on write, fsync, segment creation, rename), and
  monkeypatched ``os`` calls for the pure-Python store; always run.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import StorageError
from engine.types import Entry, HardState

from .conftest import DISK_IMPLS, make_entries, native_mod, open_log, open_stable

ROOT = Path(__file__).resolve().parents[2]
needs_native = pytest.mark.skipif(native_mod is None, reason="native module not built")


def big_entries(lo: int, n: int, size: int = 1024) -> list[Entry]:
    return [Entry(i, 1, 0, bytes([i & 0xFF]) * size) for i in range(lo, lo + n)]


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_tmpfs_full(impl, small_fs):
    directory = small_fs / "log"
    store = open_log(impl, directory, segment_size=64 << 10, fsync=True)
    stable = open_stable(impl, directory, fsync=True)
    stable.save(HardState(term=1, vote="a", commit=0))
    filler = small_fs / "filler"
    filler.write_bytes(bytes(128 << 10))
    last = 0
    with pytest.raises(StorageError) as info:
        for _ in range(10_000):
            store.append(big_entries(last + 1, 7))
            last += 7
    assert info.value.errno == errno.ENOSPC
    assert str(small_fs) in str(info.value)
    assert store.last_index() == last
    store.sync()
    # Fill what is left: a hard state save then fails and the previous state stays.
    fd = os.open(small_fs / "more", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError):
            for _ in range(1000):
                os.write(fd, bytes(4096))
    finally:
        os.close(fd)
    with pytest.raises(StorageError) as info:
        stable.save(HardState(term=2, vote="b", commit=0))
    assert info.value.errno == errno.ENOSPC
    assert stable.load() == HardState(term=1, vote="a", commit=0)
    # Space comes back: the same store goes on.
    for path in small_fs.iterdir():
        if path.name.startswith(("filler", "more")):
            path.unlink()
    store.append(big_entries(last + 1, 7))
    store.sync()
    stable.save(HardState(term=500, vote="c", commit=3))
    store.close()
    stable.close()
    again = open_log(impl, directory, segment_size=64 << 10)
    assert again.recovery_report == ()
    assert again.last_index() == last + 7
    assert again.entries(1, last + 8) == big_entries(1, last + 7)
    again.close()
    assert open_stable(impl, directory).load() == HardState(term=500, vote="c", commit=3)


RLIMIT_CHILD = r"""
import json, resource, signal, sys
from engine.errors import StorageError
from engine.types import Entry
impl, directory = sys.argv[1], sys.argv[2]
if impl == "native":
    from engine.storage.native import NativeLogStore as Store
else:
    from engine.storage.filestore import FileLogStore as Store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
store = Store(directory, fsync=True, segment_size=1 << 20)
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

def batch(lo):
    return [Entry(i, 1, 0, bytes([i & 0xFF]) * 1000) for i in range(lo, lo + 3)]

last, err = 0, None
try:
    while True:
        store.append(batch(last + 1))
        last += 3
except StorageError as exc:
    err = exc
ok = store.last_index() == last and store.entries(1, last + 1) == [
    e for k in range(1, last + 1, 3) for e in batch(k)]
store.truncate_suffix(last - 5)   # free room under the limit
store.append(batch(last - 5))
store.sync()
store.close()
print(json.dumps({"errno": err.errno, "msg": str(err), "last": last, "ok": ok}))
"""


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_rlimit_fsize(impl, tmp_path):
    directory = tmp_path / "log"
    result = subprocess.run(
        [sys.executable, "-c", RLIMIT_CHILD, impl, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errno"] == errno.EFBIG
    assert "00000000000000000001.seg" in report["msg"]
    assert report["ok"]
    store = open_log(impl, directory, segment_size=1 << 20)
    assert store.recovery_report == ()
    assert store.last_index() == report["last"] - 3
    store.close()


@needs_native
def test_native_injected_faults(tmp_path):
    lib = native_mod.lib
    store = native_mod.NativeLogStore(str(tmp_path), fsync=True, segment_size=4096)
    stable = native_mod.NativeStableStore(str(tmp_path))
    try:
        store.append(make_entries(1, 10))
        for op, err in [(lib.RL_FAULT_WRITE, errno.EIO), (lib.RL_FAULT_SHORT_WRITE, errno.ENOSPC),
                        (lib.RL_FAULT_OPEN, errno.ENOSPC)]:
            lib.rl_fault_set(op, 0, err, 1)
            with pytest.raises(StorageError) as info:
                store.append(big_entries(10, 6))  # 6 KiB: rolls to a new segment
            lib.rl_fault_clear()
            assert info.value.errno == err
            assert store.last_index() == 9
        store.append(big_entries(10, 6))
        # A failed fsync poisons the store until it is reopened.
        lib.rl_fault_set(lib.RL_FAULT_FSYNC, 0, errno.EIO, 1)
        with pytest.raises(StorageError, match="fdatasync"):
            store.sync()
        lib.rl_fault_clear()
        with pytest.raises(StorageError, match="reopen"):
            store.append(big_entries(16, 1))
        assert store.entries(10, 16) == big_entries(10, 6)
        # The hard state: a failed rename keeps the previous state.
        stable.save(HardState(term=2, vote="x", commit=1))
        lib.rl_fault_set(lib.RL_FAULT_RENAME, 0, errno.EIO, 1)
        with pytest.raises(StorageError, match="rename"):
            stable.save(HardState(term=3, vote="y", commit=1))
        lib.rl_fault_clear()
        assert stable.load() == HardState(term=2, vote="x", commit=1)
    finally:
        lib.rl_fault_clear()
        store.close()
        stable.close()
    again = native_mod.NativeLogStore(str(tmp_path), segment_size=4096)
    assert again.last_index() == 15
    again.append(big_entries(16, 1))
    again.close()


def test_file_store_injected_faults(tmp_path, monkeypatch):
    from engine.storage import filestore

    store = filestore.FileLogStore(str(tmp_path), fsync=True, segment_size=1 << 20)
    store.append(make_entries(1, 10))
    real_pwrite = os.pwrite
    size_before = os.path.getsize(tmp_path / "00000000000000000001.seg")

    def half_then_enospc(fd, data, offset):
        real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(filestore.os, "pwrite", half_then_enospc)
    with pytest.raises(StorageError) as info:
        store.append(big_entries(10, 4))
    monkeypatch.setattr(filestore.os, "pwrite", real_pwrite)
    assert info.value.errno == errno.ENOSPC
    assert os.path.getsize(tmp_path / "00000000000000000001.seg") == size_before
    assert store.last_index() == 9
    store.append(big_entries(10, 4))

    def eio(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(filestore.os, "fdatasync", eio)
    with pytest.raises(StorageError, match="fdatasync"):
        store.sync()
    monkeypatch.undo()
    with pytest.raises(StorageError, match="reopen"):
        store.append(big_entries(14, 1))
    store.close()
    again = filestore.FileLogStore(str(tmp_path), segment_size=1 << 20)
    assert again.last_index() == 13
    again.close()
