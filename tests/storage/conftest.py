"""Fixtures of the storage tests: one factory per store implementation.

``log_impl`` / ``stable_impl`` are parametrized over ``memory``, ``native`` and ``file``
(pure Python).  Each yields an ``open()`` callable; calling it again after ``close()`` reopens
the same directory (the memory store returns the same object, as a restarted node would find it).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import codec
from engine.storage.filestore import FileLogStore, FileStableStore
from engine.storage.memory import MemoryLogStore, MemoryStableStore
from engine.types import Entry

try:
    from engine.storage import native as native_mod
except ImportError as exc:  # pragma: no cover - only without a compiled module
    native_mod = None
    NATIVE_SKIP_REASON = f"native module not built ({exc}); run `pip install -e .`"
else:
    NATIVE_SKIP_REASON = ""

needs_native = pytest.mark.skipif(native_mod is None, reason=NATIVE_SKIP_REASON or "n/a")

# Small segments so that every test crosses segment boundaries.
SMALL_SEGMENT = 512

DISK_IMPLS = [
    pytest.param("native", marks=needs_native),
    pytest.param("file"),
]
ALL_IMPLS = [pytest.param("memory"), *DISK_IMPLS, pytest.param("file-pure")]
"""``file-pure`` is the file store with the pure-Python codec and CRC (the no-compiler fallback)."""


def open_log(impl: str, directory: Path | str, **kwargs: Any) -> Any:
    """Open a disk log store of kind ``impl`` in ``directory``."""
    kwargs.setdefault("fsync", False)
    kwargs.setdefault("segment_size", SMALL_SEGMENT)
    if impl == "native":
        assert native_mod is not None
        return native_mod.NativeLogStore(str(directory), **kwargs)
    if impl in ("file", "file-pure"):
        return FileLogStore(str(directory), **kwargs)
    raise ValueError(impl)


def use_pure_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make engine.codec (and so the file store) use its pure-Python functions."""
    monkeypatch.setattr(codec, "crc32c", codec.crc32c_py)
    monkeypatch.setattr(codec, "encode_entries", codec.encode_entries_py)
    monkeypatch.setattr(codec, "decode_entries", codec.decode_entries_py)


def open_stable(impl: str, directory: Path | str, **kwargs: Any) -> Any:
    """Open a disk stable store of kind ``impl`` in ``directory``."""
    kwargs.setdefault("fsync", False)
    if impl == "native":
        assert native_mod is not None
        return native_mod.NativeStableStore(str(directory), **kwargs)
    if impl in ("file", "file-pure"):
        return FileStableStore(str(directory), **kwargs)
    raise ValueError(impl)


def payload(index: int, term: int = 1) -> bytes:
    """Deterministic payload of entry ``index``: its length varies, 0 to 40 bytes."""
    return bytes((index * 7 + term + k) & 0xFF for k in range((index * 13) % 41))


def make_entries(lo: int, hi: int, term: int = 1, kind: int = 0) -> list[Entry]:
    """Entries ``[lo, hi)`` with deterministic payloads."""
    return [Entry(i, term, kind, payload(i, term)) for i in range(lo, hi)]


def _factories(impl: str, monkeypatch: pytest.MonkeyPatch, memory: Any,
               open_disk: Callable[[], Any]) -> tuple[Callable[[], Any], list[Any]]:
    """``open()`` for one implementation (the same memory object, or the same disk place,
    every time) and the list of everything it opened, for closing at teardown."""
    if impl == "file-pure":
        use_pure_codec(monkeypatch)
    opened: list[Any] = []

    def factory() -> Any:
        store = memory if impl == "memory" else open_disk()
        opened.append(store)
        return store

    factory.impl = impl  # type: ignore[attr-defined]
    return factory, opened


@pytest.fixture(params=ALL_IMPLS)
def log_factory(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], Any]]:
    """``open()`` for a log store of each implementation, reopening the same place."""
    factory, opened = _factories(request.param, monkeypatch, MemoryLogStore(),
                                 lambda: open_log(request.param, tmp_path / "log"))
    yield factory
    for store in opened:
        store.close()


@pytest.fixture(params=ALL_IMPLS)
def stable_factory(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], Any]]:
    """``open()`` for a stable store of each implementation, reopening the same place."""
    factory, opened = _factories(request.param, monkeypatch, MemoryStableStore(),
                                 lambda: open_stable(request.param, tmp_path / "log"))
    yield factory
    for store in opened:
        store.close()


def copy_dir(src: Path, dst: Path) -> None:
    """Replace ``dst`` with a copy of ``src``."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 512 KiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot run mount ({exc}); RLIMIT_FSIZE and fault tests cover full disks")
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs ({result.stderr.strip()}); RLIMIT_FSIZE and fault-injection "
            "tests cover full disks"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
