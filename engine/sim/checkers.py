"""Raft's safety properties, checked over the whole history of a simulated cluster.

See :mod:`engine.sim.simulator` for the list of properties and how the simulator calls these
checks after every action.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from engine.core import RawNode
from engine.core.log import RaftLog
from engine.core.quorum import quorum_size
from engine.sim.disk import DurableState
from engine.types import Entry, SnapshotMeta


class SafetyViolation(AssertionError):
    """A Raft safety or liveness property failed."""




def _first_difference(a: Sequence[Entry], b: Sequence[Entry]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))


class SafetyChecker:
    """Raft's safety properties over the whole history of one simulated cluster."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.quorum = quorum_size(ids)
        self.leader_of_term: dict[int, str] = {}
        # The global committed log: entry i is at position i-1.  commit_term[i-1] is the lowest
        # term at which some node was seen to know index i committed; an upper bound of the term
        # in which it really committed, and nondecreasing in i.
        self.committed: list[Entry] = []
        self.commit_term: list[int] = []
        # Per node: the index its current applied sequence starts after (0, or the snapshot it
        # restarted from or installed last), the entries applied since, and how many were checked.
        self.applied_base: dict[str, int] = dict.fromkeys(ids, 0)
        self.applied: dict[str, list[Entry]] = {i: [] for i in ids}
        self.applied_checked: dict[str, int] = dict.fromkeys(ids, 0)
        # ReadIndex: context -> committed length required when it was requested.
        self.read_required: dict[int, int] = {}

    def applied_index(self, node_id: str) -> int:
        return self.applied_base[node_id] + len(self.applied[node_id])

    def _start_applied(self, node_id: str, base: int) -> None:
        self.applied_base[node_id] = base
        self.applied[node_id] = []
        self.applied_checked[node_id] = 0

    def on_restart(self, node_id: str, snapshot: SnapshotMeta | None = None,
                   state: Sequence[Entry] = ()) -> None:
        """The node booted from its disk: its state machine is the durable snapshot's."""
        if snapshot is not None:
            self.check_snapshot(node_id, snapshot, state, "restarts from")
        self._start_applied(node_id, snapshot.index if snapshot else 0)

    def on_restore(self, node_id: str, snapshot: SnapshotMeta, state: Sequence[Entry]) -> None:
        """The node's state machine is replaced by a snapshot received from the leader."""
        applied = self.applied_index(node_id)
        if snapshot.index <= applied:
            raise SafetyViolation(
                f"{node_id} installs snapshot {snapshot.term}/{snapshot.index} but already "
                f"applied {applied}: its state machine would go back")
        self.check_snapshot(node_id, snapshot, state, "installs")
        self._start_applied(node_id, snapshot.index)

    def check_snapshot(self, node_id: str, snapshot: SnapshotMeta, state: Sequence[Entry],
                       what: str) -> None:
        """A snapshot holds exactly the committed log up to its index, nothing else."""
        name = f"{node_id} {what} snapshot {snapshot.term}/{snapshot.index}"
        if len(state) != snapshot.index or (state and (state[-1].index, state[-1].term)
                                            != (snapshot.index, snapshot.term)):
            raise SafetyViolation(f"{name}: its state does not end at that entry")
        if snapshot.index > len(self.committed):
            raise SafetyViolation(f"{name}: only {len(self.committed)} entries are known "
                                  f"committed (a snapshot of uncommitted entries)")
        if state != self.committed[:snapshot.index]:
            bad = _first_difference(state, self.committed)
            raise SafetyViolation(f"state machine safety: {name} has {state[bad]} at index "
                                  f"{bad + 1}, the cluster committed {self.committed[bad]}")

    def on_apply(self, node_id: str, entries: list[Entry]) -> None:
        applied = self.applied_index(node_id)
        if entries and entries[0].index != applied + 1:
            raise SafetyViolation(
                f"{node_id} applies {entries[0].index} after {applied}: not contiguous")
        self.applied[node_id].extend(entries)

    def on_read_request(self, context: int) -> None:
        self.read_required[context] = len(self.committed)

    def on_read_released(self, node_id: str, index: int, context: int) -> None:
        need = self.read_required.pop(context, None)
        if need is None:
            raise SafetyViolation(f"{node_id} released unknown or repeated read {context}")
        if index < need:
            raise SafetyViolation(
                f"{node_id} released read {context} at index {index}, but index {need} was "
                f"already committed when it was requested (stale read)")

    def check(self, nodes: dict[str, RawNode], disks: dict[str, DurableState]) -> None:
        # Per node: (first index held, the entries held from it on).
        logs: dict[str, tuple[int, list[Entry]]] = {}
        for node_id in self.ids:
            raft = nodes[node_id].raft
            log = raft.log
            first = log.first_index()
            entries = log.slice(first, log.last_index() + 1)
            logs[node_id] = (first, entries)
            if raft.role.value == "leader":
                holder = self.leader_of_term.setdefault(raft.term, node_id)
                if holder != node_id:
                    raise SafetyViolation(
                        f"election safety: {holder} and {node_id} both led term {raft.term}")
            self._record_commit(node_id, log, first, entries, raft.term)
        self._check_applied()
        self._check_log_matching(logs)
        self._check_leader_completeness(nodes, logs)
        self._check_durability(disks)
        self._check_progress(nodes, disks)

    def _record_commit(self, node_id: str, log: RaftLog, first: int, entries: list[Entry],
                       term: int) -> None:
        known = len(self.committed)
        commit = log.committed
        last = log.last_index()
        if not (log.snapshot_index <= log.applying <= commit <= last
                and log.stable <= log.handed <= last):
            raise SafetyViolation(
                f"{node_id}: log cursors out of order: compacted={log.snapshot_index} "
                f"applying={log.applying} committed={commit} stable={log.stable} "
                f"handed={log.handed} last={last}")
        # The compacted prefix stands for a snapshot: it must be committed, ending at the
        # committed entry (same term, so the same prefix by log matching of the committed log).
        compacted = log.snapshot_index
        if compacted:
            if compacted > known:
                raise SafetyViolation(
                    f"{node_id} compacted its log to {compacted}, but only {known} entries are "
                    f"known committed")
            if self.committed[compacted - 1].term != log.snapshot_term:
                raise SafetyViolation(
                    f"state machine safety: {node_id} compacted its log to "
                    f"{log.snapshot_term}/{compacted}, the cluster committed "
                    f"{self.committed[compacted - 1]} there")
        shared = min(known, commit)
        if shared >= first:
            held = entries[:shared - first + 1]
            want = self.committed[first - 1:shared]
            if held != want:
                bad = _first_difference(held, want)
                raise SafetyViolation(
                    f"state machine safety: {node_id} has {held[bad]} at committed index "
                    f"{first + bad}, the cluster committed {want[bad]}")
        if commit > known:
            new = entries[known + 1 - first:commit + 1 - first]
            if len(new) != commit - known:
                raise SafetyViolation(f"{node_id}: commit {commit} beyond its log")
            self.committed.extend(new)
            self.commit_term.extend([term] * (commit - known))
        k = commit - 1
        while k >= 0 and self.commit_term[k] > term:
            self.commit_term[k] = term
            k -= 1

    def _check_applied(self) -> None:
        for node_id in self.ids:
            applied = self.applied[node_id]
            base = self.applied_base[node_id]
            done = self.applied_checked[node_id]
            top = base + len(applied)
            if top > len(self.committed):
                raise SafetyViolation(f"{node_id} applied up to {top}, only "
                                      f"{len(self.committed)} entries are known committed")
            if applied[done:] != self.committed[base + done:top]:
                raise SafetyViolation(
                    f"state machine safety: {node_id} applied {applied[done:]} where the "
                    f"committed log has {self.committed[base + done:top]}")
            self.applied_checked[node_id] = len(applied)

    def _check_log_matching(self, logs: dict[str, tuple[int, list[Entry]]]) -> None:
        ids = self.ids
        for a_pos, a in enumerate(ids):
            fa, la = logs[a]
            for b in ids[a_pos + 1:]:
                fb, lb = logs[b]
                lo = max(fa, fb)
                i = min(fa + len(la), fb + len(lb)) - 1  # the highest index both hold
                while i >= lo and la[i - fa].term != lb[i - fb].term:
                    i -= 1
                if i >= lo and la[lo - fa:i - fa + 1] != lb[lo - fb:i - fb + 1]:
                    raise SafetyViolation(
                        f"log matching: {a} and {b} agree on the term at index {i} but not on "
                        f"the entries from {lo} up to it")

    def _check_leader_completeness(self, nodes: dict[str, RawNode],
                                   logs: dict[str, tuple[int, list[Entry]]]) -> None:
        for node_id in self.ids:
            raft = nodes[node_id].raft
            if raft.role.value != "leader":
                continue
            k = bisect.bisect_left(self.commit_term, raft.term)
            # Up to the compaction point the log was checked to be the committed prefix.
            first, entries = logs[node_id]
            if k >= first and entries[:k - first + 1] != self.committed[first - 1:k]:
                raise SafetyViolation(
                    f"leader completeness: leader {node_id} of term {raft.term} lacks entries "
                    f"committed in earlier terms (first {k} indexes)")

    def _check_durability(self, disks: dict[str, DurableState]) -> None:
        top = len(self.committed)
        for node_id, disk in disks.items():
            end = disk.first - 1 + len(disk.entries)
            if disk.entries and disk.entries[0].index != disk.first:
                raise SafetyViolation(f"{node_id}: durable log starts at {disk.entries[0].index}"
                                      f", after a snapshot at {disk.first - 1}")
            if disk.hard_state.commit > end:
                raise SafetyViolation(f"{node_id}: durable commit {disk.hard_state.commit} past "
                                      f"durable log end {end}")
        if top == 0:
            return
        entry = self.committed[top - 1]
        holders = 0
        for disk in disks.values():
            first = disk.first
            if top < first:  # covered by the durable snapshot
                holders += disk.snapshot_state[top - 1] == entry
            else:
                holders += (top - first < len(disk.entries)
                            and disk.entries[top - first] == entry)
        if holders < self.quorum:
            raise SafetyViolation(f"durability: committed entry {entry} is durable on only "
                                  f"{holders} nodes")


    def _check_progress(self, nodes: dict[str, RawNode], disks: dict[str, DurableState]) -> None:
        """A leader's ``match`` for a peer is a lower bound of what the peer durably holds of
        the leader's log: acks leave only after the write, and while the peer's durable term is
        the leader's, only this leader changed its durable log (and never a matched prefix).
        Catches over-claiming acks, e.g. a snapshot install acknowledging unverified entries."""
        for node_id in self.ids:
            raft = nodes[node_id].raft
            if raft.role.value != "leader":
                continue
            log = raft.log
            for peer, pr in raft.progress.items():
                match = pr.match
                if match > log.last_index():
                    raise SafetyViolation(f"leader {node_id} of term {raft.term} has match "
                                          f"{match} for {peer} past its own log end "
                                          f"{log.last_index()}")
                disk = disks[peer]
                if disk.hard_state.term != raft.term or match < disk.first:
                    continue  # another leader may have changed it, or the snapshot covers it
                at = match - disk.first
                term = log.term(match)
                if at >= len(disk.entries) or (term is not None
                                               and disk.entries[at].term != term):
                    held = disk.entries[at] if at < len(disk.entries) else None
                    raise SafetyViolation(
                        f"leader {node_id} of term {raft.term} has match {match} for {peer}, "
                        f"whose durable log has {held} there (leader's term there: {term})")
