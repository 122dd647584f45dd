"""Storage-fault table: what a damaged disk costs a 3-node cluster, in acknowledged writes.

    python -m bench.storage_faults                       # every row + catch-up of 100,000 entries
    python -m bench.storage_faults --quick               # fewer commands, catch-up of 5,000
    python -m bench.storage_faults --markdown faults.md  # also write the table there
    python -m bench.storage_faults --row "middle segment" --catchup 0   # rows whose label matches

Each row runs a fresh 3-node :class:`~engine.LocalCluster` on real on-disk stores (``data_dir``
in a temporary directory, memory transport, fsync on, a :class:`~engine.LogStateMachine`).  A
client loop proposes unique commands and records each one whose future resolved (acknowledged).
The target node (the current leader, or a follower) is stopped, its data directory damaged with
:mod:`engine.storage.damage`, and restarted; when the restart raises, the row records "refused
to start" and the run goes on with that node down.  The client keeps writing (a number of
commands, not a time), the network is healed, and once every running node applied the leader's
commit index the row counts **acked writes lost**: acknowledged commands missing from the applied
state of at least one running node.  Any value but 0 is a durability bug.

"outcome" says what the target did: *recovered from peers* (it came up recovering,
``Status.recovering > 0``, and a leader gave the entries back), *log re-fetched* (it came up
with a shorter log but no mark, and caught up), *refused to start* (the restart raised: the
error class and message), *stopped with a clear error* (it started, then halted), *fell back
to snapshot N* (its newest snapshot was unreadable: it restored an older one and replayed the
log), *no damage visible* (it came up with the log and state it had).  The notes say what was
damaged, the log's end and the recovering mark at restart, and how many nodes ran at the end.

The last row is issue 12's worst case: the follower's newest record held an acknowledged entry
that only it and the (now crashed) leader had.  The third node must not be elected meanwhile
(the damaged follower, recovering, must refuse its votes); the row lets it campaign for a number
of vote requests, then brings the leader back.

Log segments are 64 MiB and LocalCluster has no knob for their size, so the two segment rows
re-cut the stopped target's (single) segment into several offline first, byte for byte what a
store with small segments writes (:func:`split_segments`), then delete one.

``--catchup N`` (0: skip) times a follower that must re-fetch nearly all of N entries: its log
is lost (the only segment deleted) or rotten at index 2 (with ``recover_corrupt_log``), with
snapshots off so the leader streams the log; then with snapshots on (one every 40% of N), the
follower keeping its own snapshots (it re-fetches the last ~20%) or losing them too (the leader
sends its snapshot, then the rest of the log).  Every wait is a
``cluster.wait_for`` with a timeout; nothing sleeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from bench.report import _table
from engine import Config, LocalCluster, LogStateMachine, RaftError, RaftNode
from engine.status import Status
from engine.storage import damage
from engine.storage.filestore import encode_segment_header, segment_name
from engine.storage.open import SNAPSHOT_SUBDIR

__all__ = ["CASES", "Case", "CatchupResult", "RowResult", "lost_writes", "main",
           "markdown_table", "run_case", "run_catchup", "split_segments"]

BASE = Config(tick_interval=0.005, heartbeat_interval=0.02, election_timeout_min=0.1,
              election_timeout_max=0.2, fsync=True, snapshot_threshold=0)
"""Fast elections (~0.1-0.2 s), fsync on, no automatic snapshots unless a row asks."""

SNAPSHOTS = {"snapshot_threshold": 20, "snapshot_trailing_entries": 5}
"""For the snapshot rows: a snapshot (and log compaction) every 20 applied entries."""

LIVENESS = 20.0
"""Seconds: upper bound of any wait (a bound for liveness on a busy machine, not a timing)."""

SEGMENTS = 4
"""How many segments the segment rows cut the target's log into."""

COMPACTED_SEGMENTS = 16
"""... and the every-snapshot row, so that compaction removes some (the runtime compacts only
behind the older of the two snapshots it keeps, so the log always covers that one)."""

COLUMNS = ("fault", "where", "hits", "recover_corrupt_log", "outcome", "acked writes lost",
           "notes")


# -- damage -----------------------------------------------------------------------------------

def split_segments(data_dir: str, pieces: int) -> int:
    """Re-cut the log segments of a stopped node's ``data_dir`` into ``pieces`` segments of
    about equal record counts (fsynced).  Same records, same bytes, just more files: what a
    store with a smaller ``segment_size`` would have written.  Returns the number of segments.
    """
    records = damage.log_records(data_dir)
    old = sorted(n for n in os.listdir(data_dir) if n.endswith(".seg"))
    if len(records) < pieces:
        return len(old)
    blobs: dict[str, bytes] = {}
    for name in old:
        with open(os.path.join(data_dir, name), "rb") as f:
            blobs[os.path.join(data_dir, name)] = f.read()
    step = len(records) // pieces
    starts = [k * step for k in range(pieces)]
    bounds = [*starts[1:], len(records)]
    tmp = []
    for lo, hi in zip(starts, bounds, strict=True):
        chunk = records[lo:hi]
        body = b"".join(blobs[r.file][r.offset:r.offset + r.size] for r in chunk)
        path = os.path.join(data_dir, segment_name(chunk[0].index) + ".new")
        with open(path, "wb") as f:
            f.write(encode_segment_header(chunk[0].index) + body)
            f.flush()
            os.fsync(f.fileno())
        tmp.append(path)
    for name in old:
        os.unlink(os.path.join(data_dir, name))
    for path in tmp:
        os.rename(path, path[:-len(".new")])
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return pieces


def _newest_record(d: str) -> damage.Damage:
    return damage.flip_byte(d, damage.log_records(d)[-1].index)


def _torn_tail(d: str) -> damage.Damage:
    return damage.truncate_tail(d, 3)


def _middle_record(d: str) -> damage.Damage:
    records = damage.log_records(d)
    return damage.flip_byte(d, records[len(records) // 2].index)


def _hard_state(d: str) -> damage.Damage:
    return damage.corrupt_hard_state(d)


def _newest_snapshot(d: str) -> damage.Damage:
    return damage.corrupt_snapshot(d)


def _every_snapshot(d: str) -> damage.Damage:
    """Flip a bit in each snapshot file (corrupt_snapshot rots the newest one; each rotten one is
    moved aside while the next is done)."""
    directory = os.path.join(d, SNAPSHOT_SUBDIR)
    done: list[tuple[str, damage.Damage]] = []
    while _snapshot_files(d):
        hurt = damage.corrupt_snapshot(d)
        os.rename(hurt.file, hurt.file + ".aside")
        done.append((hurt.file, hurt))
    for path, _ in done:
        os.rename(path + ".aside", path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return damage.Damage(f"flipped a byte of each of the {len(done)} snapshot files in",
                         directory)


def _newest_segment(d: str) -> damage.Damage:
    split_segments(d, SEGMENTS)
    return damage.delete_newest_segment(d)


def _middle_segment(d: str) -> damage.Damage:
    split_segments(d, SEGMENTS)
    records = damage.log_records(d)
    return damage.delete_segment(d, records[len(records) // 2].index)


def _only_segment(d: str) -> damage.Damage:
    return damage.delete_newest_segment(d)


# -- cases ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Case:
    """One row: ``fault`` done to ``where``'s data dir, hitting ``hits``."""

    fault: str
    where: str  # "leader" or "follower"
    hits: str
    recover_corrupt_log: bool
    inflict: Callable[[str], damage.Damage]
    snapshots: bool = False
    worst_case: bool = False
    compacted: bool = False  # snapshot rows: the log compacted (no longer starts at 1)

    @property
    def label(self) -> str:
        flag = "on" if self.recover_corrupt_log else "off"
        return f"{self.fault} / {self.where} / {self.hits} / recover_corrupt_log={flag}"

    def config(self) -> Config:
        extra = SNAPSHOTS if self.snapshots else {}
        return dataclasses.replace(BASE, recover_corrupt_log=self.recover_corrupt_log, **extra)


def _both(fault: str, hits: str, inflict: Callable[[str], damage.Damage], *,
          flags: Sequence[bool] = (False,), snapshots: bool = False) -> list[Case]:
    return [Case(fault, where, hits, flag, inflict, snapshots)
            for where in ("follower", "leader") for flag in flags]


WORST = "follower (leader down)"

CASES: tuple[Case, ...] = (
    *_both("bit flip", "newest record", _newest_record),
    Case("torn write", "follower", "newest record", False, _torn_tail),
    *_both("bit flip", "committed prefix (middle record)", _middle_record, flags=(False, True)),
    *_both("bit flip", "hard state", _hard_state, flags=(False, True)),
    *_both("bit flip", "newest snapshot", _newest_snapshot, snapshots=True),
    *[Case("bit flip", "follower", "every snapshot, log compacted", flag, _every_snapshot,
           snapshots=True, compacted=True) for flag in (False, True)],
    *_both("deleted file", "newest segment", _newest_segment),
    *_both("deleted file", "middle segment", _middle_segment, flags=(False, True)),
    Case("deleted file", "follower", "only segment (whole log)", False, _only_segment),
    Case("bit flip", WORST, "newest record, an acked entry only it and the leader held",
         False, _newest_record, worst_case=True),
)


# -- client -----------------------------------------------------------------------------------

class Client:
    """Proposes unique commands to whoever leads and records the acknowledged ones."""

    def __init__(self, cluster: LocalCluster, window: int = 8) -> None:
        self.cluster = cluster
        self.window = window
        self.acked: list[bytes] = []
        self.failed: Counter[str] = Counter()  # error class -> proposals it failed
        self._next = 0

    def _command(self) -> bytes:
        self._next += 1
        return b"cmd-%08d" % self._next

    def write(self, count: int, timeout: float = LIVENESS) -> None:
        """Get ``count`` more commands acknowledged (retrying through leader changes).

        Raises:
            TimeoutError: not done within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        done = 0
        while done < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{done}/{count} writes acknowledged in {timeout}s "
                                   f"(seed {self.cluster.seed})")
            leader = self.cluster.wait_for_leader(remaining)
            batch = [self._command() for _ in range(min(self.window, count - done))]
            futures = leader.propose_many(batch)
            for command, future in zip(batch, futures, strict=True):
                try:
                    future.result(max(0.05, deadline - time.monotonic()))
                except (RaftError, TimeoutError) as exc:
                    # Not acknowledged (it may still commit: not counted either way).
                    self.failed[type(exc).__name__] += 1
                else:
                    self.acked.append(command)
                    done += 1


def applied(node: RaftNode) -> list[bytes]:
    """The commands ``node``'s LogStateMachine applied (read under its lock)."""
    machine = node.state_machine
    assert isinstance(machine, LogStateMachine)
    with machine.lock:
        return [command for _, command in machine.commands]


def _running(cluster: LocalCluster) -> list[RaftNode]:
    return [n for n in cluster.nodes if n.status().running]


def _converged(cluster: LocalCluster) -> bool:
    leader = cluster.leader()
    if leader is None:
        return False
    commit = leader.status().commit_index
    return all(s.last_applied == commit and s.recovering == 0
               for s in (n.status() for n in _running(cluster)))


def _snapshot_files(data_dir: str) -> list[str]:
    directory = os.path.join(data_dir, SNAPSHOT_SUBDIR)
    return sorted(n for n in os.listdir(directory) if n.endswith(".snap")) if os.path.isdir(
        directory) else []


def _short(message: str, limit: int = 120) -> str:
    text = " ".join(message.split())
    text = text.replace("|", "/")
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextmanager
def _cluster(config: Config, seed: int) -> Iterator[tuple[LocalCluster, str]]:
    root = tempfile.mkdtemp(prefix="raft-storage-faults-")
    cluster = LocalCluster(3, state_machine=LogStateMachine, config=config, data_dir=root,
                           seed=seed)
    try:
        with cluster:
            yield cluster, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- one row ----------------------------------------------------------------------------------

@dataclass(slots=True)
class RowResult:
    case: Case
    outcome: str
    lost: int
    notes: list[str] = field(default_factory=list)
    acked: int = 0
    seconds: float = 0.0

    def cells(self) -> list[str]:
        c = self.case
        return [c.fault, c.where, c.hits, "on" if c.recover_corrupt_log else "off",
                self.outcome, str(self.lost), "; ".join(self.notes)]


@dataclass(frozen=True, slots=True)
class Sizes:
    before: int  # acked writes before the fault
    down: int  # while the target is down
    after: int  # after its restart


QUICK = Sizes(30, 10, 20)
FULL = Sizes(200, 50, 150)


def run_case(case: Case, sizes: Sizes, seed: int) -> RowResult:
    """Run one row on a fresh cluster and return its result."""
    start = time.monotonic()
    with _cluster(case.config(), seed) as (cluster, root):
        client = Client(cluster)
        if case.worst_case:
            result = _worst_case(case, cluster, root, client, sizes)
        else:
            result = _ordinary_case(case, cluster, root, client, sizes)
        _settle(cluster, client, result)
    result.acked = len(client.acked)
    result.seconds = time.monotonic() - start
    return result


def _wait_all_applied(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(LIVENESS)
    commit = leader.status().commit_index
    if not cluster.wait_applied(commit, timeout=LIVENESS):
        raise TimeoutError(f"nodes did not apply {commit} (seed {cluster.seed})")


def _ordinary_case(case: Case, cluster: LocalCluster, root: str, client: Client,
                   sizes: Sizes) -> RowResult:
    notes: list[str] = []
    client.write(sizes.before)
    _wait_all_applied(cluster)
    leader = cluster.wait_for_leader(LIVENESS)
    lead = cluster.nodes.index(leader)
    target = lead if case.where == "leader" else (lead + 1) % 3
    node_id = cluster.ids[target]
    data_dir = os.path.join(root, node_id)
    if case.snapshots:
        ready = _write_until(cluster, client, lambda: len(_snapshot_files(data_dir)) >= 2)
        if ready and case.compacted:
            # Small segments, then writes until a snapshot compacts whole ones away (the log
            # stops starting at index 1).
            cluster.nodes[target].stop()
            split_segments(data_dir, COMPACTED_SEGMENTS)
            cluster.restart(target)
            ready = _write_until(cluster, client, lambda: _compacted(data_dir))
        if not ready:
            return RowResult(case, "NOT RUN: the snapshots or compaction did not happen", 0,
                             notes)
        _wait_all_applied(cluster)
    before = cluster.nodes[target].status()
    cluster.nodes[target].stop()
    # The newest snapshot file, not Status.snapshot_index: the status can lag a snapshot saved
    # just before the stop.
    snapshot_on_disk = max(map(int, _snapshot_indexes(data_dir)), default=0)
    if case.snapshots:
        notes.append(f"snapshot files {', '.join(_snapshot_indexes(data_dir))}; "
                     f"log holds {_log_span(data_dir)}")
    client.write(sizes.down)
    hurt = case.inflict(data_dir)
    notes.append(_describe(hurt, data_dir))
    outcome = _restart(cluster, target, before, notes, root, snapshot_on_disk)
    client.write(sizes.after)
    return RowResult(case, outcome, 0, notes)


def _write_until(cluster: LocalCluster, client: Client, done: Callable[[], bool],
                 step: int = 10, limit: int = 40) -> bool:
    """Write ``step`` commands at a time until ``done()`` (at most ``limit`` steps)."""
    for _ in range(limit):
        if cluster.wait_for(done, 0.0):
            return True
        client.write(step)
    return cluster.wait_for(done, LIVENESS)


def _compacted(data_dir: str) -> bool:
    """Two snapshots on disk and the log's oldest segment compacted away (it no longer starts
    at index 1)."""
    return (len(_snapshot_files(data_dir)) >= 2
            and segment_name(1) not in os.listdir(data_dir))


def _snapshot_indexes(data_dir: str) -> list[str]:
    return [str(int(name.rsplit("-", 1)[1].split(".")[0], 16))
            for name in _snapshot_files(data_dir)]


def _log_span(data_dir: str) -> str:
    records = damage.log_records(data_dir)
    return f"{records[0].index}..{records[-1].index}" if records else "nothing"


def _describe(hurt: damage.Damage, data_dir: str) -> str:
    name = os.path.relpath(hurt.file, data_dir)
    where = f" (index {hurt.index})" if hurt.index else ""
    return f"{hurt.action} {name}{where}"


def _restart(cluster: LocalCluster, target: int, before: Status, notes: list[str],
             root: str, snapshot_on_disk: int = 0) -> str:
    try:
        node = cluster.restart(target)
    except Exception as exc:  # recorded in the table
        return f"refused to start: {_error(exc, root)}"
    status = node.status()
    notes.append(f"log ends {before.last_log_index} -> {status.last_log_index} at restart, "
                 f"recovering mark {status.recovering}")
    if snapshot_on_disk or status.snapshot_index:
        notes.append(f"newest snapshot file {snapshot_on_disk}, restored "
                     f"{status.snapshot_index or 'none'} at restart")
    if not status.running:
        return f"stopped with a clear error: {_stop_error(node, root)}"
    if status.recovering > 0:
        return "recovering -> ?"  # settled in _settle
    if status.last_log_index < before.last_log_index:
        return "shorter log, no mark -> ?"
    if status.snapshot_index < snapshot_on_disk:
        older = f"snapshot {status.snapshot_index}" if status.snapshot_index else "the log alone"
        return f"fell back to {older}, replayed the log"
    return "no damage visible"


def _error(exc: BaseException, root: str) -> str:
    return f"{type(exc).__name__}: {_short(str(exc).replace(root + os.sep, ''))}"


def _stop_error(node: RaftNode, root: str) -> str:
    exc = node.propose(b"probe").exception()
    return _error(exc, root) if exc is not None else "(none)"


def _worst_case(case: Case, cluster: LocalCluster, root: str, client: Client,
                sizes: Sizes) -> RowResult:
    """Issue 12's reproduction: the acked entry lives only on the leader and one follower; the
    follower's copy rots while the leader is down.  The cluster must stay leaderless (the
    damaged follower must not vote for the third node, which lacks the entry) until the leader
    is back."""
    notes: list[str] = []
    client.write(sizes.before)
    _wait_all_applied(cluster)
    leader = cluster.wait_for_leader(LIVENESS)
    lead = cluster.nodes.index(leader)
    follower, third = (lead + 1) % 3, (lead + 2) % 3
    cluster.isolate(third)
    client.write(1)
    index = leader.status().last_log_index
    data_dir = os.path.join(root, cluster.ids[follower])
    before = cluster.nodes[follower].status()
    cluster.nodes[follower].stop()
    hurt = case.inflict(data_dir)
    notes.append(_describe(hurt, data_dir))
    if hurt.index != index:
        notes.append(f"the acked entry was {index}, not the newest record")
    cluster.crash(lead)
    cluster.rejoin(third)
    outcome = _restart(cluster, follower, before, notes, root)
    # While the leader is down every election must fail.  Measured in campaign messages
    # (PRE_VOTE / VOTE requests), not in time.
    sent = _campaign_messages(cluster)
    tried = cluster.wait_for(lambda: cluster.leader() is not None
                             or _campaign_messages(cluster) >= sent + CAMPAIGN_REQUESTS, LIVENESS)
    leader_now = cluster.leader()
    if leader_now is not None:
        notes.append(f"LEADER ELECTED WITHOUT THE ACKED ENTRY: {leader_now.id}")
    else:
        notes.append(f"leaderless while the leader was down: {_campaign_messages(cluster) - sent}"
                     f" vote requests, no leader{'' if tried else ' (until the timeout)'}")
    cluster.restart(lead)
    client.write(sizes.after)
    return RowResult(case, outcome, 0, notes)


CAMPAIGN_REQUESTS = 20
"""Vote and pre-vote requests the worst-case row lets the two live nodes send (about ten failed
campaigns of the undamaged one) before it brings the leader back."""


def _campaign_messages(cluster: LocalCluster) -> int:
    counts = cluster.message_counts()
    return counts["PRE_VOTE"] + counts["VOTE"]


def lost_writes(acked: Sequence[bytes], views: Iterable[Sequence[bytes]]) -> int:
    """How many of the ``acked`` commands are missing from at least one of the ``views``
    (each a running node's applied commands); all of them when there is no view."""
    sets = [set(view) for view in views]
    return sum(1 for c in set(acked) if not sets or any(c not in s for s in sets))


def _settle(cluster: LocalCluster, client: Client, result: RowResult) -> None:
    """Heal, wait for convergence, count the lost acknowledged writes, finish the outcome."""
    cluster.heal()
    converged = cluster.wait_for(lambda: _converged(cluster), LIVENESS)
    running = _running(cluster)
    views = {n.id: applied(n) for n in running}
    result.lost = lost_writes(client.acked, views.values())
    longest = max(views.values(), key=len) if views else []
    if any(v != longest[:len(v)] for v in views.values()):
        result.notes.append("APPLIED SEQUENCES DIVERGE")
    if len(set(longest)) != len(longest):
        result.notes.append("a command applied twice")
    if not converged:
        result.notes.append("DID NOT CONVERGE: " + ", ".join(
            f"{s.id} applied={s.last_applied} recovering={s.recovering}"
            for s in (n.status() for n in cluster.nodes)))
    down = [n.id for n in cluster.nodes if not n.status().running]
    result.notes.append(f"{len(running)} nodes running at the end"
                        + (f" ({', '.join(down)} down)" if down else ""))
    if "-> ?" in result.outcome:
        recovered = converged and all(n.status().recovering == 0 for n in running)
        if result.outcome.startswith("recovering"):
            result.outcome = ("recovered from peers" if recovered
                              else "still recovering at the end")
        else:
            result.outcome = "log re-fetched" if recovered else "did not catch up"
    failed = ", ".join(f"{n} {name}" for name, n in sorted(client.failed.items()))
    result.notes.append(f"{len(client.acked)} acked" + (f", failed: {failed}" if failed else ""))


# -- table ------------------------------------------------------------------------------------

def markdown_table(results: Sequence[RowResult]) -> str:
    return "\n".join(_table(list(COLUMNS), (r.cells() for r in results))) + "\n"


# -- catch-up ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CatchupResult:
    label: str
    entries: int
    refetched: int  # entries the follower lacked at restart
    restart_seconds: float  # cluster.restart(): open, replay, start
    seconds: float  # from just before restart to recovering == 0 and applied == commit
    recovering_mark: int
    checked: str  # the follower's applied commands against the leader's; the leader's term

    @property
    def rate(self) -> float:
        return self.refetched / self.seconds if self.seconds > 0 else 0.0

    def cells(self) -> list[str]:
        return [self.label, str(self.entries), str(self.refetched), str(self.recovering_mark),
                f"{self.restart_seconds:.2f}", f"{self.seconds:.2f}", f"{self.rate:,.0f}",
                self.checked]


CATCHUP_COLUMNS = ("case", "entries written", "entries re-fetched", "recovering mark",
                   "restart s", "catch-up s", "entries/s", "check")

CATCHUP_CASES = ("only segment deleted, snapshots off",
                 "bit flip at index 2, recover_corrupt_log, snapshots off",
                 "only segment deleted, its own snapshots kept, snapshots on",
                 "segment and snapshots deleted (InstallSnapshot), snapshots on")


def run_catchup(label: str, entries: int, seed: int, *, batch: int = 1000) -> CatchupResult:
    """Write ``entries`` entries, damage a follower so it must re-fetch nearly all of them,
    restart it and time its catch-up."""
    snapshots = "snapshots on" in label
    config = dataclasses.replace(
        BASE, recover_corrupt_log="recover_corrupt_log" in label,
        # Snapshots at about 40% and 80% of the entries: never one that covers them all.
        snapshot_threshold=max(1, entries * 2 // 5) if snapshots else 0,
        snapshot_trailing_entries=max(1, entries // 100) if snapshots else 0,
        max_pending_proposals=max(BASE.max_pending_proposals, 2 * batch))
    with _cluster(config, seed) as (cluster, root):
        leader = cluster.wait_for_leader(LIVENESS)
        written = 0
        while written < entries:
            n = min(batch, entries - written)
            futures = leader.propose_many([b"e-%09d" % (written + k) for k in range(n)])
            for future in futures:
                future.result(LIVENESS)
            written += n
        _wait_all_applied(cluster)
        lead = cluster.nodes.index(leader)
        follower = (lead + 1) % 3
        data_dir = os.path.join(root, cluster.ids[follower])
        cluster.nodes[follower].stop()
        if "bit flip" in label:
            damage.flip_byte(data_dir, 2)
        else:
            damage.delete_newest_segment(data_dir)
        if "snapshots deleted" in label:
            shutil.rmtree(os.path.join(data_dir, SNAPSHOT_SUBDIR))
        commit, term = leader.status().commit_index, leader.status().term
        t0 = time.perf_counter()
        node = cluster.restart(follower)
        t1 = time.perf_counter()
        status = node.status()
        have = max(status.last_log_index, status.snapshot_index)
        done = cluster.wait_for(lambda: (s := node.status()).recovering == 0
                                and s.last_applied >= commit, 600.0)
        t2 = time.perf_counter()
        if not done:
            raise TimeoutError(f"catch-up of {label!r} not done in 600 s (seed {seed})")
        same = applied(node) == applied(leader)
        kept = leader.status().term == term and leader.status().role == "leader"
        checked = ("same commands as the leader" if same else "COMMANDS DIFFER") + (
            ", same leader and term" if kept else ", LEADER CHANGED")
        return CatchupResult(label, entries, commit - have, t1 - t0, t2 - t0,
                             status.recovering, checked)


def catchup_table(results: Sequence[CatchupResult]) -> str:
    return "\n".join(_table(list(CATCHUP_COLUMNS), (r.cells() for r in results))) + "\n"


# -- command line -----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.storage_faults",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer commands per row, catch-up of 5,000 entries (well under a minute)")
    p.add_argument("--markdown", metavar="PATH", help="also write the table(s) to PATH")
    p.add_argument("--row", action="append", default=[], metavar="TEXT",
                   help="run only the rows whose label contains TEXT (repeatable)")
    p.add_argument("--catchup", type=int, default=None, metavar="N",
                   help="entries the recovering follower re-fetches (default 100000, "
                        "5000 with --quick; 0 skips)")
    p.add_argument("--no-table", action="store_true", help="only the catch-up measurement")
    p.add_argument("--seed", type=int, default=1, help="seed of the first cluster (default 1)")
    p.add_argument("--verbose", action="store_true", help="show the engine's warnings")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    engine_logger = logging.getLogger("engine")
    level = engine_logger.level
    if not args.verbose:
        engine_logger.setLevel(logging.CRITICAL)  # damage and recovery warn by design
    try:
        return _run(args)
    finally:
        engine_logger.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    catchup = args.catchup if args.catchup is not None else (5_000 if args.quick else 100_000)
    cases = [c for c in CASES if not args.row or any(t in c.label for t in args.row)]
    out: list[str] = []
    results: list[RowResult] = []
    if not args.no_table:
        for k, case in enumerate(cases):
            result = run_case(case, sizes, args.seed + k)
            results.append(result)
            print(f"[{k + 1}/{len(cases)}] {case.label}: {result.outcome}, lost {result.lost} "
                  f"({result.seconds:.1f} s)", file=sys.stderr, flush=True)
        out.append(markdown_table(results))
    if catchup > 0:
        timed = []
        for k, label in enumerate(CATCHUP_CASES):
            timed.append(run_catchup(label, catchup, args.seed + 100 + k))
            print(f"catch-up: {' | '.join(timed[-1].cells())}", file=sys.stderr, flush=True)
        out.append(f"Catch-up of a recovering follower, {catchup} entries written:\n\n"
                   + catchup_table(timed))
    text = "\n".join(out)
    print(text, end="")
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    return 1 if any(r.lost or "NOT RUN" in r.outcome for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
