"""Bounded memory in the core (issue 12): the leader's inflight window is bounded in bytes as
well as messages (``max_inflight_bytes``, after etcd-io/raft's ``MaxInflightBytes``), and the
in-memory log is an entry cache bounded by ``entry_cache_bytes`` whose dropped entries are read
back through a :class:`~engine.core.log.LogReader`."""

from __future__ import annotations

import random

import pytest

from engine.core import MessageKind, RawNode
from engine.core.log import ENTRY_OVERHEAD, RaftLog
from engine.core.tracker import Inflights, Progress
from engine.errors import InvariantError
from engine.sim.disk import DurableState
from engine.types import Entry, EntryKind, Index, NodeId, SnapshotMeta
from tests.core.harness import CoreNetwork

APPEND = MessageKind.APPEND
APPEND_RESPONSE = MessageKind.APPEND_RESPONSE

# -- Inflights and Progress: the byte budget ---------------------------------------------------


def test_inflights_full_once_bytes_reach_the_budget() -> None:
    """The window is full once its payload bytes reach max_bytes, whatever the count."""
    inf = Inflights(64, max_bytes=1000)
    inf.add(1, 400)
    inf.add(2, 400)
    assert not inf.full() and inf.bytes == 800
    inf.add(3, 400)  # 800 < 1000 before it: still sent, though it goes past the budget
    assert inf.full() and inf.bytes == 1200 and len(inf) == 3
    with pytest.raises(InvariantError):
        inf.add(4, 1)
    inf.free_le(2)
    assert inf.bytes == 400 and not inf.full()
    inf.free_first_one()
    assert inf.bytes == 0 and len(inf) == 0


def test_inflights_an_oversized_message_goes_out_alone() -> None:
    """One message larger than the budget is sent when nothing is in flight (otherwise a big
    entry could never be replicated), and then fills the window."""
    inf = Inflights(64, max_bytes=100)
    inf.add(5, 10_000)
    assert inf.full()
    inf.reset()
    assert inf.bytes == 0 and not inf.full()


def test_inflights_zero_budget_counts_messages_only() -> None:
    inf = Inflights(2, max_bytes=0)
    inf.add(1, 1 << 40)
    assert not inf.full()
    inf.add(2, 1 << 40)
    assert inf.full()


def test_progress_accounts_bytes_in_replicate_only() -> None:
    """REPLICATE streams under both budgets; PROBE sends one message at a time regardless."""
    pr = Progress(next_index=1, max_inflight=8, max_inflight_bytes=100)
    pr.sent_append(1, 1, 500)  # probing: no window accounting
    assert pr.is_paused() and pr.inflights.bytes == 0
    pr.maybe_update(1)
    pr.become_replicate()
    pr.sent_append(2, 3, 150)
    assert pr.is_paused() and pr.next == 4 and pr.inflights.bytes == 150
    pr.maybe_update(3)
    assert not pr.is_paused() and pr.inflights.bytes == 0


# -- the leader stops and resumes ------------------------------------------------------------


def _leader_with_held_follower(**options: object) -> CoreNetwork:
    net = CoreNetwork(3, **options)
    net.elect("1")
    net.tick_all(2)
    return net


def _propose_holding(net: CoreNetwork, count: int, size: int, held: list) -> None:
    """Propose ``count`` commands of ``size`` bytes one by one; every message to or from node 3
    is put aside in ``held`` instead of being delivered."""
    for k in range(count):
        net.nodes["1"].propose([bytes([k % 256]) * size])
        net.stabilize(keep=lambda m: not (m.dst == "3" or m.src == "3") or held.append(m))


def test_leader_stops_sending_once_inflight_bytes_are_used_and_resumes_on_acks() -> None:
    """A follower whose acks do not come gets appends until the bytes in flight reach
    max_inflight_bytes (the message count is far from max_inflight), then none; the acks
    free the window and the rest follows."""
    net = _leader_with_held_follower(max_inflight=64, max_inflight_bytes=4000)
    held: list = []
    _propose_holding(net, 10, 1000, held)
    appends = [m for m in held if m.kind is APPEND and m.dst == "3" and m.entries]
    assert len(appends) == 4, "4 x 1000 bytes reach the 4000-byte budget"
    assert net.nodes["1"].raft.progress["3"].inflights.bytes == 4000
    assert net.nodes["1"].raft.progress["3"].is_paused()
    assert net.nodes["1"].commit_index == 11, "the healthy follower keeps the cluster committing"
    # Acks arrive: the window frees and the leader sends the remaining 6 entries.
    for m in held:
        if m.dst == "3":
            net.deliver(m)
    net.stabilize()
    assert net.log("3") == net.log("1")
    assert net.nodes["1"].raft.progress["3"].inflights.bytes == 0


def test_leader_sends_an_entry_larger_than_the_budget() -> None:
    net = _leader_with_held_follower(max_inflight_bytes=100)
    held: list = []
    _propose_holding(net, 3, 1000, held)
    appends = [m for m in held if m.kind is APPEND and m.dst == "3" and m.entries]
    assert [len(m.entries) for m in appends] == [1], "one oversized entry alone, then paused"
    for m in held:
        if m.dst == "3":
            net.deliver(m)
    net.stabilize()
    assert net.log("3") == net.log("1")


# -- RaftLog's entry cache -----------------------------------------------------------------------


class StoreReader:
    """A LogReader over a list of stored entries (what a LogStore holds); counts reads."""

    def __init__(self, entries: list[Entry], first: Index = 1) -> None:
        self.stored = entries
        self.first = first
        self.reads = 0

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        self.reads += 1
        if lo < self.first or hi > self.first + len(self.stored) or lo > hi:
            raise IndexError(f"[{lo}, {hi}) outside the store")
        return self.stored[lo - self.first:hi - self.first]


def ents(first: int, terms: list[int], size: int = 100) -> list[Entry]:
    return [Entry(first + k, t, EntryKind.NORMAL, b"%d/%d/" % (first + k, t) + b"x" * size)
            for k, t in enumerate(terms)]


def _durable_applied(log: RaftLog, entries: list[Entry], store: list[Entry]) -> None:
    """Append, persist and apply ``entries`` as a single-node leader would."""
    log.append(entries)
    store.extend(log.take_unpersisted())
    log.stable_to(entries[-1].index, entries[-1].term)
    log.commit_to(entries[-1].index)
    log.take_committed(1 << 30)


def test_cache_drops_old_durable_applied_entries_and_reads_them_back() -> None:
    store: list[Entry] = []
    reader = StoreReader(store)
    per_entry = 100 + 6 + ENTRY_OVERHEAD  # roughly: payload + bookkeeping
    log = RaftLog(reader=reader, cache_bytes=20 * per_entry)
    terms = [1] * 30 + [2] * 40 + [3] * 30
    for k in range(0, 100, 10):
        _durable_applied(log, ents(k + 1, terms[k:k + 10]), store)
    assert log.cached_bytes <= 20 * per_entry
    assert log.cached_entries < 25 and len(log) == 100 and log.first_index() == 1
    # Everything reads back, across the cached / dropped boundary.
    assert log.slice(1, 101) == store
    assert log.slice(50, 95) == store[49:94]
    assert log.entry(3) == store[2]
    assert reader.reads >= 2
    # Term lookups of dropped entries stay in memory.
    reads = reader.reads
    assert [log.term(i) for i in range(0, 101)] == [0, *terms]
    assert log.first_index_of_term_at(50) == 31 and log.first_index_of_term_at(80) == 71
    assert log.last_index_of_term(2, 100) == 70 and log.last_index_of_term(1, 45) == 30
    assert log.last_index_of_term(4, 100) is None and log.last_index_of_term(2, 20) is None
    assert reader.reads == reads, "term lookups never read the store"


def test_cache_never_drops_unstable_or_unapplied_entries() -> None:
    store: list[Entry] = []
    log = RaftLog(reader=StoreReader(store), cache_bytes=1000)
    log.append(ents(1, [1] * 50))
    assert log.cached_entries == 50, "nothing is durable yet"
    store.extend(log.take_unpersisted())
    log.stable_to(50, 1)
    assert log.cached_entries == 50, "durable but not applied"
    log.commit_to(50)
    log.take_committed(10)
    assert log.first_index() == 1 and log.cached_entries == 40, "only the applied ten go"
    log.take_committed(1000)
    assert 1 <= log.cached_entries <= 3 and log.cached_bytes <= 1000
    assert log.last_term() == 1 and log.slice(1, 51) == store


def test_cache_keeps_the_last_entry() -> None:
    store: list[Entry] = []
    log = RaftLog(reader=StoreReader(store), cache_bytes=1)
    _durable_applied(log, ents(1, [1] * 5 + [2] * 5), store)
    assert log.cached_entries == 1 and log.last_term() == 2 and log.term(5) == 1
    assert log.slice(1, 11) == store


def test_cache_without_reader_keeps_everything() -> None:
    log = RaftLog(cache_bytes=1)
    _durable_applied(log, ents(1, [1] * 20), [])
    assert log.cached_entries == 20


def test_cache_compact_and_restore_across_dropped_entries() -> None:
    store: list[Entry] = []
    log = RaftLog(reader=StoreReader(store), cache_bytes=2000)
    terms = [1] * 20 + [2] * 20
    _durable_applied(log, ents(1, terms), store)
    dropped_to = log.last_index() - log.cached_entries
    assert dropped_to > 15
    log.compact(10)
    assert log.first_index() == 11 and log.term(10) == 1 and log.term(11) == 1
    assert log.slice(1, 41) == store[10:]
    log.compact(25)
    assert log.term(25) == 2 and log.first_index_of_term_at(30) == 26
    assert log.slice(26, 41) == store[25:]
    # A snapshot whose last entry the log holds keeps the suffix.
    assert log.restore(30, 2)
    assert log.first_index() == 31 and log.slice(31, 41) == store[30:]
    assert not log.restore(100, 5)
    assert log.last_index() == 100 and log.cached_entries == 0 and log.cached_bytes == 0


def test_cache_matches_an_uncached_log_under_random_operations() -> None:
    """Oracle test: a log with a tiny cache answers every query as a log without one."""
    for seed in range(40):
        rng = random.Random(seed)
        store: list[Entry] = []
        cached = RaftLog(reader=StoreReader(store), cache_bytes=rng.choice([1, 500, 3000]))
        plain = RaftLog()
        term = 1
        for _ in range(60):
            op = rng.random()
            if op < 0.5:
                term += rng.random() < 0.2
                first = plain.last_index() + 1
                batch = ents(first, [term] * rng.randint(1, 8), size=rng.randint(0, 200))
                for log in (cached, plain):
                    log.append(batch)
            elif op < 0.65 and plain.last_index() > plain.committed:
                # Follower-style conflict: replace an uncommitted suffix.
                start = rng.randint(plain.committed + 1, plain.last_index())
                term += 1
                batch = ents(start, [term] * rng.randint(1, 4), size=10)
                for log in (cached, plain):
                    log.append(batch)
            elif op < 0.85:
                unpersisted = plain.take_unpersisted()
                cached.take_unpersisted()
                if unpersisted:
                    del store[unpersisted[0].index - 1:]
                    store.extend(unpersisted)
                last = plain.last_index()
                for log in (cached, plain):
                    log.stable_to(last, plain.term(last))
                    log.commit_to(min(log.stable, last))
            else:
                n = rng.randint(1, 20)
                assert cached.take_committed(n) == plain.take_committed(n)
            last = plain.last_index()
            assert cached.last_index() == last and len(cached) == len(plain)
            for i in range(0, last + 2):
                assert cached.term(i) == plain.term(i), (seed, i)
            assert cached.slice(1, last + 1) == plain.slice(1, last + 1)
            for i in range(1, last + 1, 3):
                assert cached.first_index_of_term_at(i) == plain.first_index_of_term_at(i)
            for t in range(0, term + 2):
                assert cached.last_index_of_term(t, last) == plain.last_index_of_term(t, last)
        assert cached.cached_entries <= plain.cached_entries


# -- a cluster whose cores have a reader -----------------------------------------------------------


class DiskReader:
    """A LogReader over a simulated node's disk."""

    def __init__(self, disk: DurableState) -> None:
        self.disk = disk

    def entries(self, lo: Index, hi: Index) -> list[Entry]:
        first = self.disk.first
        if lo < first or hi > first + len(self.disk.entries):
            raise IndexError(f"[{lo}, {hi}) outside the disk")
        return self.disk.entries[lo - first:hi - first]


class CachedNetwork(CoreNetwork):
    """CoreNetwork whose cores read dropped entries back from their simulated disks."""

    def _boot(self, node_id: NodeId) -> None:
        disk = self.disks[node_id]
        self.nodes[node_id] = RawNode(
            node_id, self.bootstrap(node_id), rng=random.Random(self.rng.random()),
            options=self.options, hard_state=disk.boot_hard_state(), entries=list(disk.entries),
            snapshot=disk.snapshot, log_reader=DiskReader(disk))
        self.applied[node_id] = list(disk.snapshot_state)


def test_lagging_follower_catches_up_from_entries_read_back() -> None:
    budget = 20_000
    net = CachedNetwork(3, entry_cache_bytes=budget, max_batch_entries=16)
    net.elect("1")
    net.isolate("3")
    for k in range(300):
        net.nodes["1"].propose([b"%05d" % k + b"y" * 200])
        net.stabilize()
    leader_log = net.nodes["1"].raft.log
    assert leader_log.cached_bytes <= budget and leader_log.cached_entries < 100
    assert len(leader_log) == 301
    net.heal()
    net.tick_all(5)
    assert net.disks["3"].entries == net.disks["1"].entries
    assert net.user_data("3") == net.user_data("1") and len(net.user_data("3")) == 300
    # Restarted with the whole log on disk: a fresh core caches what it replays, then drops it.
    net.restart("1")
    net.tick_all(30)
    assert net.nodes["1"].raft.log.cached_bytes <= budget


def test_snapshot_sent_for_compacted_entries_still_works_with_a_cache() -> None:
    net = CachedNetwork(3, entry_cache_bytes=5_000)
    net.elect("1")
    net.isolate("3")
    for k in range(100):
        net.nodes["1"].propose([b"%05d" % k + b"z" * 100])
        net.stabilize()
    meta = net.take_snapshot("1")
    assert isinstance(meta, SnapshotMeta)
    net.heal()
    net.tick_all(5)
    assert net.user_data("3") == net.user_data("1")


def test_reading_back_stops_at_the_byte_limit() -> None:
    """A sender asks for max_batch_entries entries but at most max_batch_bytes of payload: the
    log reads back only about that much, not the whole range (1 MiB entries, 1024 asked)."""
    store: list[Entry] = []
    reader = StoreReader(store)
    log = RaftLog(reader=reader, cache_bytes=1)
    _durable_applied(log, ents(1, [1] * 300, size=10_000), store)
    got = log.slice(1, 1025, 25_000)
    assert 3 <= len(got) <= 5 and got == store[:len(got)]
    assert log.slice(299, 1025, 25_000) == store[298:300], "then the cached tail"
    assert log.slice(5, 6, 1) == [store[4]], "at least one entry"
