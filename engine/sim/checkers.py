"""Raft's safety properties, checked over the whole history of a simulated cluster.

See :mod:`engine.sim.simulator` for the list of properties and how the simulator calls these
checks after every action.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence
from itertools import islice
from operator import itemgetter

from engine.core import Message, MessageKind, RawNode
from engine.core.log import RaftLog
from engine.core.raft import Raft
from engine.membership import Membership
from engine.sim.disk import DurableState
from engine.types import Entry, EntryKind, SnapshotMeta

_CONFIG = EntryKind.CONFIG
_RESPONSES = frozenset({MessageKind.APPEND_RESPONSE, MessageKind.HEARTBEAT_RESPONSE,
                        MessageKind.VOTE_RESPONSE, MessageKind.PRE_VOTE_RESPONSE})
_APPEND_RESPONSE = MessageKind.APPEND_RESPONSE
_VOTE_RESPONSES = frozenset({MessageKind.VOTE_RESPONSE, MessageKind.PRE_VOTE_RESPONSE})
_kind_of = itemgetter(2)


class SafetyViolation(AssertionError):
    """A Raft safety or liveness property failed."""


def joint_majority(membership: Membership, holders: Collection[str]) -> bool:
    """``holders`` include a majority of the voters and, while joint, of the outgoing voters
    (written from the definition, independently of :mod:`engine.core.quorum`)."""
    return all(2 * sum(1 for v in voters if v in holders) > len(voters)
               for voters in (membership.voters, membership.outgoing) if voters)


def durable_on(disk: DurableState, index: int, entry: Entry) -> bool:
    """The disk holds ``entry`` at ``index``, in its log or covered by its snapshot."""
    first = disk.first
    if index < first:
        return len(disk.snapshot_state) >= index and disk.snapshot_state[index - 1] == entry
    return index - first < len(disk.entries) and disk.entries[index - first] == entry


def check_transition(before: Membership, after: Membership) -> str | None:
    """Why committing ``after`` right after ``before`` breaks joint consensus, or None: a
    voter change goes through C_old,new (outgoing = the old voters), a joint configuration is
    followed by exactly its C_new, and a change of learners only keeps the voters."""
    if after == before:
        return "the same configuration twice"
    if before.is_joint:
        return None if after == before.leave_joint() else "joint not followed by its C_new"
    if after.is_joint:
        return None if after.outgoing == before.voters else "joint whose outgoing voters are " \
            "not the previous voters"
    return None if after.voters == before.voters else "voters changed without a joint phase"


def _first_difference(a: Sequence[Entry], b: Sequence[Entry]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))


class SafetyChecker:
    """Raft's safety properties over the whole history of one simulated cluster."""

    def __init__(self, ids: list[str], initial: Membership | None = None) -> None:
        """``ids``: every node of the simulation (spare ones too); ``initial``: the bootstrap
        configuration (default: every node a voter)."""
        self.ids = ids
        self.leader_of_term: dict[int, str] = {}
        # The committed configurations, in log order: (index of the CONFIG entry, config); the
        # bootstrap configuration at index 0.  Each one a valid successor of the one before.
        self.configs: list[tuple[int, Membership]] = [(0, initial or Membership(ids))]
        self._config_indexes: list[int] = [0]
        # (leader, term) -> the commit index that leader had at the previous check.
        self.leader_commit: dict[tuple[str, int], int] = {}
        # Per node: (index, entry, configuration) of the configuration in force last verified.
        self._in_force_verified: dict[str, tuple[int, Entry | None, Membership]] = {}
        # Per node: (index in force, first index, length, last entry) of the log last scanned.
        self._in_force_scanned: dict[str, tuple[int, int, int, Entry | None]] = {}
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
        #: Per node: the entries the last disk fault took from its durable log, by index, until
        #: it ends recovering (see on_disk_fault); empty for a node whose disk did not fail.
        self.lost: dict[str, dict[int, Entry]] = {i: {} for i in ids}
        # Per node: the core's recovering mark at the last check (to see recovery end).
        self._recovering: dict[str, int] = dict.fromkeys(ids, 0)
        #: How many times a node ended recovering (each one checked by _check_recovered).
        self.recoveries = 0

    def config_at(self, index: int) -> Membership:
        """The committed configuration in force at committed ``index``."""
        return self.configs[bisect.bisect_right(self._config_indexes, index) - 1][1]

    def _record_configs(self, entries: list[Entry]) -> None:
        if not any(map(_kind_of, entries)):
            return
        for entry in entries:
            if entry.kind == _CONFIG:
                after = Membership.decode(entry.data)
                before = self.configs[-1][1]
                why = check_transition(before, after)
                if why is not None:
                    raise SafetyViolation(
                        f"configuration sequence: committed {after.describe()} at {entry.index} "
                        f"after {before.describe()}: {why}")
                self.configs.append((entry.index, after))
                self._config_indexes.append(entry.index)

    def applied_index(self, node_id: str) -> int:
        return self.applied_base[node_id] + len(self.applied[node_id])

    def _start_applied(self, node_id: str, base: int) -> None:
        self.applied_base[node_id] = base
        self.applied[node_id] = []
        self.applied_checked[node_id] = 0

    def on_restart(self, node_id: str, snapshot: SnapshotMeta | None = None,
                   state: Sequence[Entry] = (), *, recovering: int = 0) -> None:
        """The node booted from its disk: its state machine is the durable snapshot's, and it
        is recovering up to ``recovering`` (0: not recovering)."""
        if snapshot is not None:
            self.check_snapshot(node_id, snapshot, state, "restarts from")
        self._start_applied(node_id, snapshot.index if snapshot else 0)
        self._recovering[node_id] = recovering

    def on_disk_fault(self, node_id: str, lost: Sequence[Entry]) -> None:
        """A disk fault took ``lost`` from the node's durable log (it is booted next).  The
        fault model allows one such fault at a time: while a node has not got its entries
        back, no other disk fails (two replicas losing the same committed entry is beyond
        what any protocol can recover from)."""
        others = sorted(i for i in self.ids if i != node_id and self.lost[i])
        if others:
            raise SafetyViolation(f"fault model: disk fault on {node_id} while {others} still "
                                  f"recover from theirs")
        self.lost[node_id].update((e.index, e) for e in lost)

    def on_send(self, node_id: str, recovering: int, messages: Sequence[Message]) -> None:
        """Messages a core hands out: while it is recovering, every response it sends says so
        (a leader must not count it) and it grants no vote or pre-vote."""
        if not recovering:
            return
        for m in messages:
            if m.kind not in _RESPONSES or (m.dst == node_id and m.kind is _APPEND_RESPONSE):
                continue  # (its own write's acknowledgement to itself is no response)
            if m.kind in _VOTE_RESPONSES and not m.reject:
                raise SafetyViolation(f"recovery: {node_id}, recovering up to {recovering}, "
                                      f"grants a vote: {m.kind.name} to {m.dst} term {m.term}")
            if not m.recovering:
                raise SafetyViolation(f"recovery: {node_id}, recovering up to {recovering}, "
                                      f"sends {m.kind.name} to {m.dst} without the recovering "
                                      f"flag")

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
        want = self.config_at(snapshot.index)
        # An empty configuration stands for the bootstrap one, which a node that joined with
        # no configuration does not know (see Raft._handle_snapshot).
        unknown = snapshot.membership.is_empty and want is self.configs[0][1]
        if snapshot.membership != want and not unknown:
            raise SafetyViolation(f"{name}: it records {snapshot.membership.describe()}, the "
                                  f"committed configuration there is {want.describe()}")

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
            self._check_membership_in_force(node_id, raft, first, entries)
        self._check_recovering(nodes, disks, logs)
        self._check_applied()
        self._check_log_matching(logs)
        self._check_leader_completeness(nodes, logs)
        self._check_durability(disks)
        self._check_leader_commits(nodes, disks)
        self._check_progress(nodes, disks)

    def _check_membership_in_force(self, node_id: str, raft: Raft, first: int,
                                   entries: list[Entry]) -> None:
        """The configuration a core has in force is that of the newest CONFIG entry of its log,
        or, when there is none, the one its compaction point records (the snapshot's, or the
        bootstrap one)."""
        at = raft.memberships.current_index
        if at >= first:
            entry = entries[at - first] if at - first < len(entries) else None
            verified = (at, entry, raft.membership)
            if verified != self._in_force_verified.get(node_id):
                if (entry is None or entry.kind != _CONFIG
                        or Membership.decode(entry.data) != raft.membership):
                    raise SafetyViolation(f"{node_id}: configuration in force "
                                          f"{raft.membership.describe()} (from entry {at}) is "
                                          f"not what its log holds there: {entry}")
                self._in_force_verified[node_id] = verified
        scanned = (at, first, len(entries), entries[-1] if entries else None)
        if scanned != self._in_force_scanned.get(node_id):  # the log changed: scan it again
            if _CONFIG in map(_kind_of, islice(entries, max(at + 1 - first, 0), None)):
                raise SafetyViolation(f"{node_id}: a CONFIG entry after {at}, the one in force")
            self._in_force_scanned[node_id] = scanned

    def _check_recovering(self, nodes: dict[str, RawNode], disks: dict[str, DurableState],
                          logs: dict[str, tuple[int, list[Entry]]]) -> None:
        """A recovering core is a follower (never leads, never campaigns), and only a restart
        makes a core recovering.  When a core ends recovering, see :meth:`_check_recovered`."""
        for node_id in self.ids:
            raft = nodes[node_id].raft
            recovering = raft.recovering
            if recovering and raft.role.value != "follower":
                raise SafetyViolation(f"recovery: {node_id}, recovering up to {recovering}, is "
                                      f"{raft.role.value} in term {raft.term}")
            before = self._recovering[node_id]
            self._recovering[node_id] = recovering
            if recovering and not before:
                raise SafetyViolation(f"recovery: {node_id} became recovering ({recovering}) "
                                      f"without a restart")
            if before and not recovering:
                self.recoveries += 1
                self._check_recovered(node_id, nodes, disks[node_id], logs)

    def _check_recovered(self, node_id: str, nodes: dict[str, RawNode], disk: DurableState,
                         logs: dict[str, tuple[int, list[Entry]]]) -> None:
        """The node just ended recovering.  Its log and its disk hold again (1) every committed
        entry up to the last committed one its disk fault took (compared with the global
        committed log at this moment), and (2) every entry the fault took that the leader of
        its term, still leading, holds at the same index: that leader had it before the fault
        (it made it, or had it when elected), so any append it sent after the fault reaches
        it, and it may still commit it counting the node's old acknowledgement.  Entries the
        node never acknowledged need it no more than a lagging follower: a quorum of others
        holds them once committed."""
        raft = nodes[node_id].raft
        committed = self.committed
        lost = self.lost[node_id]
        first, entries = logs[node_id]

        def held(index: int) -> Entry | None:  # (below ``first``: compacted, on the disk)
            return entries[index - first] if first <= index < first + len(entries) else None

        need = max((i for i, e in lost.items() if i <= len(committed) and committed[i - 1] == e),
                   default=0)
        for index in range(1, need + 1):
            want = committed[index - 1]
            if (index >= first and held(index) != want) or not durable_on(disk, index, want):
                raise SafetyViolation(
                    f"recovery: {node_id} ended recovering without committed entry {want} "
                    f"(log: {held(index)}, durable: {durable_on(disk, index, want)}); its disk "
                    f"fault lost committed entries up to {need}, its log ends at "
                    f"{raft.log.last_index()}")
        leader = self.leader_of_term.get(raft.term)
        if leader is not None and leader != node_id:
            lraft = nodes[leader].raft
            if lraft.role.value == "leader" and lraft.term == raft.term:
                lfirst, lentries = logs[leader]
                for index, entry in sorted(lost.items()):
                    if not (lfirst <= index < lfirst + len(lentries)
                            and lentries[index - lfirst] == entry):
                        continue
                    if ((index >= first and held(index) != entry)
                            or not durable_on(disk, index, entry)):
                        raise SafetyViolation(
                            f"recovery: {node_id} ended recovering without {entry}, which its "
                            f"disk fault took and leader {leader} of its term {raft.term} "
                            f"holds (log: {held(index)}, durable: "
                            f"{durable_on(disk, index, entry)})")
        lost.clear()

    def _holders(self, disks: dict[str, DurableState], index: int, entry: Entry) -> set[str]:
        """The nodes that hold ``entry`` at ``index`` durably, or did until a disk fault took
        it from them and are still recovering (the fault model's one excused failure)."""
        return {n for n, disk in disks.items()
                if durable_on(disk, index, entry) or self.lost[n].get(index) == entry}

    def _check_leader_commits(self, nodes: dict[str, RawNode],
                              disks: dict[str, DurableState]) -> None:
        """When a leader advances its commit index, the entry there is durable on a majority
        of its voters and, while joint, of its outgoing voters as well (its configuration can
        only have moved on from C_old,new to C_new since, whose quorum the joint one implies)."""
        for node_id in self.ids:
            raft = nodes[node_id].raft
            if raft.role.value != "leader":
                continue
            key = (node_id, raft.term)
            commit = raft.log.committed
            seen = self.leader_commit.get(key)
            self.leader_commit[key] = commit
            if seen is None or commit <= seen:
                continue
            entry = self.committed[commit - 1]
            holders = self._holders(disks, commit, entry)
            if not joint_majority(raft.membership, holders):
                raise SafetyViolation(
                    f"joint quorum: leader {node_id} of term {raft.term} committed {entry} held "
                    f"durably by {sorted(holders)} only, under {raft.membership.describe()}")

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
            self._record_configs(new)
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
        """The newest committed entry is durable on a quorum (see :meth:`_holders` for the one
        excuse a disk fault earns); a durable commit index points into the durable log, unless
        the durable recovering mark covers it (the disk lost those entries)."""
        top = len(self.committed)
        for node_id, disk in disks.items():
            end = disk.first - 1 + len(disk.entries)
            if disk.entries and disk.entries[0].index != disk.first:
                raise SafetyViolation(f"{node_id}: durable log starts at {disk.entries[0].index}"
                                      f", after a snapshot at {disk.first - 1}")
            if disk.hard_state.commit > end and disk.hard_state.recovering < disk.hard_state.commit:
                raise SafetyViolation(f"{node_id}: durable commit {disk.hard_state.commit} past "
                                      f"durable log end {end}")
        if top == 0:
            return
        entry = self.committed[top - 1]
        holders = self._holders(disks, top, entry)
        # Committed under the configuration in force at it, or (its leader having moved on
        # from C_old,new meanwhile) under the C_new that follows it.
        config = self.config_at(top)
        if not (joint_majority(config, holders)
                or (config.is_joint and joint_majority(config.leave_joint(), holders))):
            raise SafetyViolation(f"durability: committed entry {entry} is durable on "
                                  f"{sorted(holders)} only, no quorum of {config.describe()}")

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
                if match in self.lost[peer]:
                    continue  # acknowledged before a disk fault took it (the leader will learn)
                at = match - disk.first
                term = log.term(match)
                if at >= len(disk.entries) or (term is not None
                                               and disk.entries[at].term != term):
                    held = disk.entries[at] if at < len(disk.entries) else None
                    raise SafetyViolation(
                        f"leader {node_id} of term {raft.term} has match {match} for {peer}, "
                        f"whose durable log has {held} there (leader's term there: {term})")
