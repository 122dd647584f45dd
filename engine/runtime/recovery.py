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
from engine.storage.base import LogStore, StableStore, SyncMarkStore
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
        log, stable = open_disk_stores(data_dir, fsync=config.fsync,
                                       discard_corrupt_suffix=config.recover_corrupt_log)
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


def recover(node_id: str, stores: Stores, state_machine: StateMachine, *,
            discard_gaps: bool = False) -> Recovered:
    """Restore ``state_machine`` from the newest valid snapshot and return it with the log
    entries that follow it (the ones the core replays as it applies them again).

    A log that disagrees with the snapshot (its entry at the snapshot's index has another term)
    or ends before it is discarded from the snapshot on.

    When the node holds less than it may have acknowledged (see
    :func:`engine.core.lost_entries.recovering_mark`), the returned hard state is marked
    *recovering*, and saved so before anything else happens: a crash during the recovery must
    not forget it.

    ``discard_gaps`` (``Config.recover_corrupt_log``): a log with a gap after the newest valid
    snapshot (the newest snapshot rotted and an older one does not reach the log) is discarded
    instead, and the node recovers the entries from its peers (it is then recovering).

    Raises:
        CorruptLogError: the log has a gap after the snapshot (or starts after index 1 with no
            snapshot to cover the entries before it), unless ``discard_gaps``.
    """
    store = stores.log
    hard_state = stores.stable.load()
    latest = stores.snapshots.latest()
    first, last = store.first_index(), store.last_index()
    meta = latest[0] if latest is not None else None
    base = meta.index if meta is not None else 0
    reset_to: int | None = None  # where the log must restart, if it must
    if meta is None:
        if first != 1 and last >= first:
            _refuse_gap(f"{node_id}: the log starts at {first} but there is no snapshot "
                        "covering the entries before it", discard_gaps)
            reset_to = 1
    elif first <= meta.index <= last and store.term_at(meta.index) != meta.term:
        logger.warning("%s: log disagrees with snapshot %d/%d; discarding the log",
                       node_id, meta.term, meta.index)
        reset_to = meta.index + 1
    elif first > meta.index + 1:
        _refuse_gap(f"{node_id}: the log starts at {first}, after the newest valid snapshot "
                    f"at {meta.index}: entries are missing", discard_gaps)
        reset_to = meta.index + 1
    elif last < meta.index:
        reset_to = meta.index + 1
    # Decide (and save) the recovering mark before the log changes: a reset lowers the log's
    # sync mark, so a crash right after it would otherwise hide the loss at the next start.
    held = base if reset_to is not None else max(last, base)
    hard_state = _check_lost(node_id, stores, hard_state, held)
    if reset_to is not None:
        store.reset(reset_to)
        store.sync()
    lo, hi = max(store.first_index(), base + 1), store.last_index() + 1
    entries = store.entries(lo, hi) if hi > lo else []
    if latest is None:
        return Recovered(hard_state, None, None, entries)
    meta, data = latest
    state_machine.restore(data)
    logger.info("%s: restored snapshot %d/%d, replaying %d entries", node_id, meta.term,
                meta.index, len(entries))
    return Recovered(hard_state, meta, encode_snapshot(meta, data), entries)


def _refuse_gap(problem: str, discard: bool) -> None:
    """Raise CorruptLogError for ``problem`` unless ``discard`` (then the caller empties the
    log so the node fetches it back from its peers)."""
    if not discard:
        raise CorruptLogError(f"{problem} (start with recover_corrupt_log to discard the log "
                              "and fetch it back from the peers)")
    logger.warning("%s; discarding the log (recover_corrupt_log)", problem)


def _check_lost(node_id: str, stores: Stores, hard_state: HardState, held: int) -> HardState:
    """``hard_state``, marked recovering (and saved so) when the node, holding entries up to
    ``held`` (log or snapshot), lost entries it may have acknowledged."""
    log = stores.log
    synced = log.synced_index_at_open if isinstance(log, SyncMarkStore) else 0
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
