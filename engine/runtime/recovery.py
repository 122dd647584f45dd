"""Start-up: open a node's stores and rebuild its state from the newest snapshot and the log.

Runs in the thread that calls ``RaftNode.start()``, before the loop thread exists; what it
returns is then handed to the loop thread, which owns it from then on.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from engine.config import Config
from engine.core.lost_entries import recovering_mark
from engine.errors import CorruptLogError
from engine.statemachine import StateMachine
from engine.storage.base import LogStore, StableStore
from engine.storage.memory import MemoryLogStore, MemoryStableStore
from engine.storage.snapshot import MemorySnapshotStore, SnapshotStore, encode_snapshot
from engine.types import Entry, HardState, SnapshotMeta

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Stores:
    """A node's three stores; ``owned`` when the node opened them (it closes them at stop)."""

    log: LogStore
    stable: StableStore
    snapshots: SnapshotStore
    owned: bool


@dataclass(slots=True)
class Recovered:
    """What start-up found: the durable hard state, the snapshot the state machine was restored
    from (None: none), its encoded form (what a leader sends), and the entries to replay."""

    hard_state: HardState
    snapshot: SnapshotMeta | None
    encoded_snapshot: bytes | None
    entries: list[Entry]


def open_stores(config: Config, data_dir: str | None, log_store: LogStore | None,
                stable_store: StableStore | None,
                snapshot_store: SnapshotStore | None) -> Stores:
    """The explicit stores when any is given (the others in memory), else the on-disk stores in
    ``data_dir``, else in-memory stores.

    Raises:
        StorageError / CorruptLogError: the on-disk stores cannot be opened.
    """
    if log_store is not None or stable_store is not None or snapshot_store is not None:
        return Stores(log_store or MemoryLogStore(), stable_store or MemoryStableStore(),
                      snapshot_store or MemorySnapshotStore(), owned=False)
    if data_dir is not None:
        from engine.storage.open import open_snapshot_store
        from engine.storage.open import open_stores as open_disk_stores
        log, stable = open_disk_stores(data_dir, fsync=config.fsync)
        try:
            snapshots = open_snapshot_store(data_dir, fsync=config.fsync)
        except BaseException:
            log.close()
            stable.close()
            raise
        return Stores(log, stable, snapshots, owned=True)
    return Stores(MemoryLogStore(), MemoryStableStore(), MemorySnapshotStore(), owned=False)


def close_stores(stores: Stores) -> None:
    """Close the stores if the node opened them."""
    if stores.owned:
        for store in (stores.log, stores.stable, stores.snapshots):
            store.close()


def recover(node_id: str, stores: Stores, state_machine: StateMachine) -> Recovered:
    """Restore ``state_machine`` from the newest valid snapshot and return it with the log
    entries that follow it (the ones the core replays as it applies them again).

    A log that disagrees with the snapshot (its entry at the snapshot's index has another term)
    or ends before it is discarded from the snapshot on.

    When the node holds less than it may have acknowledged (see
    :func:`engine.core.lost_entries.recovering_mark`), the returned hard state is marked
    *recovering*, and saved so before anything else happens: a crash during the recovery must
    not forget it.

    Raises:
        CorruptLogError: the log has a gap after the snapshot (or starts after index 1 with no
            snapshot to cover the entries before it).
    """
    store = stores.log
    hard_state = stores.stable.load()
    latest = stores.snapshots.latest()
    first, last = store.first_index(), store.last_index()
    if latest is None:
        if first != 1 and last >= first:
            raise CorruptLogError(f"{node_id}: the log starts at {first} but there is no "
                                  "snapshot covering the entries before it")
        entries = store.entries(first, last + 1) if last >= first else []
        return Recovered(_check_lost(node_id, stores, hard_state, 0), None, None, entries)
    meta, data = latest
    state_machine.restore(data)
    if first <= meta.index <= last and store.term_at(meta.index) != meta.term:
        logger.warning("%s: log disagrees with snapshot %d/%d; discarding the log",
                       node_id, meta.term, meta.index)
        store.reset(meta.index + 1)
        store.sync()
    elif first > meta.index + 1:
        raise CorruptLogError(f"{node_id}: the log starts at {first}, after the newest "
                              f"valid snapshot at {meta.index}: entries are missing")
    elif last < meta.index:
        store.reset(meta.index + 1)
        store.sync()
    lo, hi = max(store.first_index(), meta.index + 1), store.last_index() + 1
    logger.info("%s: restored snapshot %d/%d, replaying %d entries", node_id, meta.term,
                meta.index, max(0, hi - lo))
    return Recovered(_check_lost(node_id, stores, hard_state, meta.index), meta,
                     encode_snapshot(meta, data), store.entries(lo, hi) if hi > lo else [])


def _check_lost(node_id: str, stores: Stores, hard_state: HardState,
                snapshot_index: int) -> HardState:
    """``hard_state``, marked recovering (and saved so) when the node lost entries it may have
    acknowledged."""
    log = stores.log
    synced = getattr(log, "synced_index_at_open", 0)  # TODO(sync mark protocol)
    held = max(log.last_index(), snapshot_index)
    mark = recovering_mark(hard_state, synced, held)
    if mark == hard_state.recovering:
        if mark:
            logger.warning("%s is still recovering lost entries up to %d; it will not vote "
                           "until a leader has given them back", node_id, mark)
        return hard_state
    logger.warning(
        "%s lost entries it may have acknowledged: it holds up to index %d, but its hard state "
        "says commit=%d and its log had made index %d durable.  It starts recovering: no "
        "votes, no campaigns and no quorum counting until a leader has given them back",
        node_id, held, hard_state.commit, synced)
    hard_state = dataclasses.replace(hard_state, recovering=mark)
    stores.stable.save(hard_state)
    return hard_state
