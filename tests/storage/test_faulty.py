"""The fault-injecting stores (engine.storage.faulty): each fault raises, stalls or loses exactly
what it says, and nothing else.  Waits are bounded waits on conditions, never sleeps."""

from __future__ import annotations

import errno
import random
import threading
from collections.abc import Callable

import pytest

from engine.errors import CorruptLogError, StorageError
from engine.storage.base import BackgroundSync, LogStore, StableStore
from engine.storage.faulty import DiskFaults, FaultyLogStore, FaultyStableStore, crash_stores
from engine.storage.memory import MemoryLogStore, MemoryStableStore
from engine.types import HardState

from .conftest import make_entries

LIVENESS = 10.0


def fresh(name: str = "disk") -> tuple[DiskFaults, FaultyLogStore, FaultyStableStore]:
    disk = DiskFaults(name)
    return disk, FaultyLogStore(MemoryLogStore(), disk), FaultyStableStore(MemoryStableStore(),
                                                                           disk)


def everything(store: FaultyLogStore) -> list:
    first, last = store.first_index(), store.last_index()
    return store.entries(first, last + 1)


def test_protocols_and_pass_through() -> None:
    _, log, stable = fresh()
    assert isinstance(log, LogStore) and isinstance(stable, StableStore)
    assert not isinstance(log, BackgroundSync)  # syncs run on the caller's thread
    log.append(make_entries(1, 6))
    log.append(make_entries(4, 8, term=2))  # replaces a suffix
    assert everything(log) == make_entries(1, 4) + make_entries(4, 8, term=2)
    assert log.term_at(5) == 2
    stable.save(HardState(term=3, vote="a", commit=2))
    assert stable.load() == HardState(term=3, vote="a", commit=2)


def test_wrapped_contents_count_as_durable() -> None:
    inner = MemoryLogStore()
    inner.append(make_entries(1, 4))
    log = FaultyLogStore(inner)
    assert log.synced_index_at_open == 3 and log.synced_index == 3
    assert everything(log.crash()) == make_entries(1, 4)


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_failed_append_raises_with_errno_and_writes_nothing(err: int) -> None:
    disk, log, _ = fresh()
    log.append(make_entries(1, 3))
    disk.fail_next("append", err)
    with pytest.raises(StorageError, match=f"cannot append 2 entries at index 3.*"
                       f"{errno.errorcode[err]}") as info:
        log.append(make_entries(3, 5))
    assert info.value.errno == err
    assert log.last_index() == 2 and log.unsynced_writes == 1
    log.append(make_entries(3, 5))  # one-shot: the next append works, the store is usable
    assert log.last_index() == 4
    assert disk.calls["append"] == 3 and disk.injected["append"] == 1


def test_failed_sync_poisons_and_loses_the_unsynced_writes() -> None:
    disk, log, _ = fresh()
    log.append(make_entries(1, 3))
    log.sync()
    log.append(make_entries(3, 6))
    disk.fail_next("sync", errno.EIO)
    with pytest.raises(StorageError, match=r"fdatasync of log failed.*EIO") as info:
        log.sync()
    assert info.value.errno == errno.EIO
    assert log.poisoned
    for write in (lambda: log.append(make_entries(6, 7)), log.sync,
                  lambda: log.truncate_suffix(2), lambda: log.compact_prefix(1),
                  lambda: log.reset(10)):
        with pytest.raises(StorageError, match="unusable after a failed fsync"):
            write()
    assert log.last_index() == 5  # reads still see the page cache
    reopened = log.crash()
    assert not reopened.poisoned
    assert everything(reopened) == make_entries(1, 3)  # what the failed sync covered is lost
    reopened.append(make_entries(3, 4))
    reopened.sync()


def test_persistent_failure_until_cleared() -> None:
    disk, _, stable = fresh()
    disk.fail_always("save", errno.ENOSPC)
    for _ in range(3):
        with pytest.raises(StorageError, match="No space left on device"):
            stable.save(HardState(term=1))
    assert stable.load() == HardState() and stable.durable == HardState()
    disk.clear("save")
    stable.save(HardState(term=1))
    assert stable.load() == HardState(term=1)
    assert disk.injected["save"] == 3
    with pytest.raises(ValueError, match="op="):
        disk.fail_next("write")
    with pytest.raises(ValueError, match="errno="):
        disk.fail_next("sync", -5)


def test_crash_keeps_only_synced_entries_and_completed_saves() -> None:
    _, log, stable = fresh()
    log.append(make_entries(1, 5))
    stable.save(HardState(term=1, vote="a"))
    log.sync()
    log.append(make_entries(5, 9))
    stable.save(HardState(term=2, vote="b"))
    log2, stable2 = crash_stores(log, stable)
    assert everything(log2) == make_entries(1, 5)
    assert log2.synced_index_at_open == 4
    assert stable2.load() == HardState(term=2, vote="b")  # a save is durable on return
    with pytest.raises(StorageError, match="crashed"):
        log.last_index()
    with pytest.raises(StorageError, match="crashed"):
        stable.load()
    with pytest.raises(StorageError, match="already crashed"):
        log.crash()


def synced_log(n: int = 10) -> FaultyLogStore:
    """A faulty log of entries 1..n, all synced."""
    log = FaultyLogStore()
    log.append(make_entries(1, n + 1))
    log.sync()
    return log


def rewrite(log: FaultyLogStore) -> None:
    """A follower's structural writes: cut a conflicting suffix, append, compact."""
    log.truncate_suffix(6)
    log.append(make_entries(6, 8, term=2))
    log.compact_prefix(3)
    assert log.first_index() == 4


@pytest.mark.parametrize("sync", [False, True], ids=["unsynced", "synced"])
def test_crash_and_structural_changes(sync: bool) -> None:
    log = synced_log()
    rewrite(log)
    if sync:
        log.sync()
    crashed = log.crash()
    if not sync:  # unsynced: undone
        assert everything(crashed) == make_entries(1, 11)
        return
    assert crashed.first_index() == 4
    assert everything(crashed) == make_entries(4, 6) + make_entries(6, 8, term=2)


@pytest.mark.parametrize("sync", [False, True], ids=["unsynced", "synced"])
def test_crash_and_reset(sync: bool) -> None:
    log = synced_log()
    log.reset(30)
    if sync:
        log.sync()
    crashed = log.crash()
    if sync:
        assert (crashed.first_index(), crashed.last_index()) == (30, 29)
    else:
        assert everything(crashed) == make_entries(1, 11)


def test_torn_crash_drops_the_newest_record() -> None:
    _, log, _ = fresh()
    log.append(make_entries(1, 5))
    log.sync()
    log.append(make_entries(5, 7))
    crashed = log.crash(torn=True)  # nothing unsynced survived: a synced record is torn
    assert everything(crashed) == make_entries(1, 4)
    assert crashed.synced_index_at_open == 4  # the sync mark reveals the loss


def test_crash_with_rng_keeps_a_prefix_of_the_unsynced_writes() -> None:
    def crashed_image(seed: int) -> tuple[list, FaultyLogStore]:
        log = synced_log(2)
        log.append(make_entries(3, 6))
        log.append(make_entries(6, 9))
        crashed = log.crash(rng=random.Random(seed))
        return everything(crashed), crashed

    seen = set()
    for seed in range(40):
        got, crashed = crashed_image(seed)
        assert got == make_entries(1, len(got) + 1), got  # always a prefix of what was written
        assert 2 <= len(got) <= 8
        assert crashed.synced_index_at_open == 2
        assert crashed_image(seed)[0] == got  # the same seed, the same image
        seen.add(len(got))
    assert len(seen) > 3


def test_lose_tail() -> None:
    crashed = synced_log().crash()
    assert crashed.lose_tail(3) == (8, 11)
    assert everything(crashed) == make_entries(1, 8)
    assert crashed.synced_index_at_open == 10
    assert everything(crashed.crash()) == make_entries(1, 8)  # it is durable damage
    never_crashed = FaultyLogStore()
    assert never_crashed.synced_index_at_open == 0
    never_crashed.append(make_entries(1, 6))
    never_crashed.sync()
    never_crashed.lose_tail(1)
    assert never_crashed.synced_index_at_open == 5  # the sync mark remembers what was lost
    fresh_log = FaultyLogStore()
    fresh_log.append(make_entries(1, 3))
    with pytest.raises(ValueError, match="unsynced writes"):
        fresh_log.lose_tail(1)


def test_drop_range_in_the_middle_makes_reads_fail() -> None:
    log = synced_log()
    assert log.drop_range(4, 6) == (4, 6)
    assert log.damaged == [(4, 6)]
    assert log.last_index() == 10
    assert log.entries(1, 4) == make_entries(1, 4)
    assert log.entries(6, 11) == make_entries(6, 11)
    with pytest.raises(CorruptLogError, match=r"\[4, 6\)"):
        log.entries(1, 11)
    with pytest.raises(CorruptLogError):
        log.term_at(5)
    crashed = log.crash()
    assert crashed.damaged == [(4, 6)]  # rot survives a restart
    crashed.truncate_suffix(5)
    crashed.append(make_entries(5, 7, term=2))
    assert crashed.damaged == [(4, 5)]
    crashed.sync()
    assert crashed.crash().damaged == [(4, 5)]


def test_drop_range_at_the_end_is_a_lost_tail() -> None:
    log = FaultyLogStore()
    log.append(make_entries(1, 6))
    log.sync()
    log.drop_range(4, 6)
    assert log.last_index() == 3 and log.damaged == []
    with pytest.raises(ValueError, match="not a non-empty part"):
        log.drop_range(3, 3)


class Flusher:
    """Runs ``flush()`` on a thread of its own (a stalled flush blocks it); ``errors`` holds
    what it raised."""

    def __init__(self, flush: Callable[[], object]) -> None:
        self.errors: list[BaseException] = []
        self._flush = flush
        self.thread = threading.Thread(target=self._run, name="test-flush")
        self.thread.start()

    def _run(self) -> None:
        try:
            self._flush()
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> bool:
        """True once the flush has returned (bounded wait)."""
        self.thread.join(LIVENESS)
        return not self.thread.is_alive()


def test_stalled_sync_waits_until_released() -> None:
    disk, log, _ = fresh()
    log.append(make_entries(1, 3))
    disk.stall_sync()
    flusher = Flusher(log.sync)
    try:
        assert disk.wait_for_stalled(1, LIVENESS)
        assert disk.flushes_waiting == 1 and flusher.thread.is_alive()
        assert log.last_index() == 2  # reads go on meanwhile (the lock is not held)
        assert log.synced_index == 0
    finally:
        disk.release_sync()
    assert flusher.join() and not flusher.errors
    assert log.synced_index == 2 and disk.flushes_waiting == 0 and disk.stalled_total == 1


def test_crash_during_a_stalled_sync() -> None:
    disk, log, _ = fresh()
    log.append(make_entries(1, 3))
    disk.stall_sync()
    flusher = Flusher(log.sync)
    assert disk.wait_for_stalled(1, LIVENESS)
    crashed = log.crash()  # wakes the stalled sync, which fails: nothing became durable
    assert flusher.join()
    assert [type(e) for e in flusher.errors] == [StorageError]
    assert "crashed" in str(flusher.errors[0])
    assert crashed.last_index() == 0
    disk.release_sync()


def test_stalled_save() -> None:
    disk, _, stable = fresh()
    disk.stall_sync()
    flusher = Flusher(lambda: stable.save(HardState(term=5)))
    try:
        assert disk.wait_for_stalled(1, LIVENESS)
        assert stable.durable == HardState()
    finally:
        disk.release_sync()
    assert flusher.join() and not flusher.errors
    assert stable.durable == HardState(term=5)
