"""Seeded random schedules over 3- and 5-node clusters, with Raft's safety properties checked
after every step and liveness checked once the network heals.

Each seed picks its own fault mix (swarm testing): drop and duplicate rates, how often the
network partitions and nodes restart, how often nodes snapshot and compact their logs,
PreVote/CheckQuorum/fast-backup switches, window and batch sizes, election timeouts.  A schedule
is a sequence of single actions chosen by the seeded rng: tick one node or all, take a Ready (its
``messages`` leave at once, its write stays pending on a slow disk), finish the oldest pending
write (then its after-persist messages leave and it is advanced), deliver one queued message
chosen at random (so the queue is reordered; the message may be dropped or duplicated), propose
at whoever believes it leads (stale leaders included), request a ReadIndex, partition/isolate/
heal, restart a node from its durable state (its pending writes are lost), snapshot a node,
make a node's disk lose its newest entries.

Snapshots (in about two seeds of three; the others run the snapshot-free schedule exactly as
before snapshots existed): a node snapshots its applied state at its applied index, makes it
durable (``DurableState.compact``) and calls ``compact(meta, compact_index)`` with a random
``compact_index`` between its previous compaction point and the snapshot (so a tail of the log
may stay in memory).  SNAPSHOT messages travel the network like any other (dropped, delayed,
duplicated, reordered, cut); each one stands for one whole transfer, so its first delivery tells
the sender ``report_snapshot(ok=True)`` and its loss (drop or cut) ``ok=False``.  The state a
snapshot stands for is looked up by ``(index, term)`` among the snapshots taken so far; a
follower's ``Ready.snapshot`` replaces its simulated state machine with it and is persisted with
it.  Restarts boot from the durable snapshot plus the durable entries after it.

Membership changes (in about half the seeds, drawn from yet another rng so that the other seeds
replay exactly the schedules they had before): the cluster has 1-3 spare nodes booted as joiners
(empty configuration, so they never campaign until a configuration makes them voters), and a
step may propose a change at whoever believes it leads, computed from that leader's
configuration: add a spare as a learner or a voter, promote a learner, remove or demote a voter
(the leader itself included), remove a learner, replace a voter.  Voter changes go through
C_old,new and the C_new the leader appends itself; a change while one is in progress is refused
(counted).  Spares join the random schedule once a change names them; a removed node keeps
running (and may be added again later, with its old state).  A snapshot records the
configuration in force at its index (``memberships.at``).  After the healed cluster settles, one
more change is made and must complete, and the cluster must settle again.

Disk faults (in about half the seeds, the rate drawn from yet another rng, so that the other
seeds replay exactly the schedules they had before): a step may crash a node (its pending
writes are lost, as in a restart, which already stands for a torn unsynced write) and make its
disk lose its newest 1-3 durable entries, two times in three also its whole uncommitted tail so
that committed entries it acknowledged go too (``DurableState.lose_tail``: a rotten newest
record, a deleted newest segment; the sync mark stays); it boots recovering
(``DurableState.boot_hard_state``).  The fault model is the one protocol-aware recovery is
meant to tolerate: **a disk fault hits one node at a time**.  No new one is injected while any
node is still recovering (in its core, on its disk, or in the checker's books), since two
replicas losing the same committed entry is unrecoverable for any protocol; and none on a voter
of a configuration (committed, or in force on some node) with fewer than three voters, where the
others could elect no leader to give it its entries back.  Likewise no membership change is
proposed while a node recovers.

Checked after every action:

* election safety: at most one leader per term over the whole history (whatever the
  configurations, joint or not, and partitions);
* configurations: the committed CONFIG entries form a valid sequence (a voter change goes
  through C_old,new with the old voters outgoing, a joint configuration is followed by exactly
  its C_new, a learner-only change keeps the voters), so every node's applied configurations
  (checked as part of its applied log) are prefixes of that one sequence; every snapshot records
  the committed configuration at its index (or the empty one for the bootstrap configuration,
  which a joiner that got the log from index 1 cannot know); the configuration each core has in
  force is that of the newest CONFIG entry in its log (or of its compaction point);
* joint quorums: when a leader advances its commit index, the entry is durable on a majority of
  its voters and, while joint, of its outgoing voters too;
* log matching: if two logs hold an entry with the same index and term, they are identical up
  to it (checked over the range both still hold, at the highest index where each pair agrees);
* leader completeness: a leader of term T holds every entry known committed at a term < T
  (entries it compacted away count as held: its compaction point must be committed);
* state machine safety: committed prefixes and applied sequences of all nodes (across restarts
  and snapshot installs) are prefixes of one global committed log; every compaction point is a
  committed index with the committed term; every snapshot (taken, installed, restarted from,
  persisted) holds exactly the committed log up to its index;
* durability: the newest committed entry is in the durable log or the durable snapshot of a
  quorum of the configuration in force at it (or of the C_new after it), no durable commit
  index points past its durable log (unless its durable recovering mark covers it: the disk
  lost those entries), and a durable snapshot never goes back.  Holders are counted honestly:
  a node whose disk fault took the entry does not hold it; the one excuse is that node itself
  (at most one, by the fault model), for that very entry and until it ends recovering, so the
  entry must then be durable on a quorum less that node.  An entry committed after the fault
  gets no excuse: it must be durable on a full quorum (the joint-quorum check at commit time
  uses the same rule);
* recovery: a recovering core is a follower (never leads, never campaigns), grants no vote or
  pre-vote and flags every response it sends; only a restart makes a core recovering; when it
  ends recovering, its log and its disk hold (1) every committed entry up to the last committed
  one its disk fault took (compared with the global committed log at that moment) and (2) every
  entry the fault took that the leader of its term, still leading, holds at that index (that
  leader may yet commit it counting the node's old acknowledgement); entries it never
  acknowledged need it no more than a lagging follower (a quorum of others holds them);
* ReadIndex linearizability: a released read index is >= every index known committed anywhere
  when the read was requested;
* replication bookkeeping: a leader's ``match`` for a peer never exceeds its own log, and (while
  the peer's durable term is the leader's) the peer's durable log holds the leader's entry there
  (unless the peer's disk fault took that index and it has not ended recovering: an
  acknowledgement from before the fault, the leader learns of it from the peer's rejection);
  the core's log cursors stay ordered (compacted <= applying <= committed <= last, stable <=
  handed <= last); an applied entry is durable locally when the node snapshots it; the snapshot
  a core would send was really taken.

Then the network heals, pending writes finish, and the members of the newest committed
configuration (all nodes, without membership changes: the nodes a committed change removed are
shut down, as an operator would) tick until they agree on one leader and one fully committed
log with no node recovering (liveness: recovering nodes must get their entries back and end
recovery, in the core and on disk), and a last proposal commits on all of them.

Replay one seed: ``python -m engine.sim --seed 1234`` (or
``RAFT_SEED=1234 pytest tests/core/test_random_schedules.py``).
More seeds: ``RAFT_SEEDS=2000`` (count) and ``RAFT_SEED_START``; longer runs: ``RAFT_STEPS``.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass

from engine.core import Message, MessageKind, RaftOptions, RawNode, Ready
from engine.core.describe import describe_message
from engine.errors import MembershipError
from engine.membership import Membership
from engine.sim.checkers import SafetyChecker, SafetyViolation
from engine.sim.disk import DurableState
from engine.types import Entry, SnapshotMeta

STEPS = 1000
"""Default number of random actions per schedule."""
SETTLE_TICKS = 600
SNAPSHOT = MessageKind.SNAPSHOT


@dataclass(frozen=True)
class Params:
    """The fault mix and core options of one seed."""

    n: int
    drop: float
    duplicate: float
    faults: float  #: probability that a step is a fault action
    partition: int  #: weight of "partition" among fault actions ("heal" has weight 2)
    restart: int  #: weight of "restart" among fault actions
    snapshot: float  #: probability that a step snapshots a node (0: no snapshots at all)
    options: RaftOptions
    membership: float = 0.0  #: probability that a step proposes a membership change (0: never)
    spares: int = 0  #: nodes booted as joiners (empty configuration) that changes may add
    disk_faults: float = 0.0  #: probability that a step is a disk fault (0: never)

    @classmethod
    def from_rng(cls, seed: int, rng: random.Random) -> Params:
        election_min = rng.randint(3, 10)
        options = RaftOptions(
            heartbeat_ticks=rng.randint(1, max(1, election_min // 3)),
            election_ticks_min=election_min,
            election_ticks_max=election_min + rng.randint(3, election_min + 3),
            max_batch_entries=rng.choice([1, 2, 8, 1024]),
            max_batch_bytes=rng.choice([8, 64, 1 << 20]),
            max_inflight=rng.choice([1, 2, 4, 64]),
            max_committed_per_ready=rng.choice([1, 3, 8192]),
            pre_vote=rng.random() < 0.7,
            check_quorum=rng.random() < 0.7,
            fast_backup=rng.random() < 0.7,
        )
        # Drawn from a separate rng, and the schedule consumes no randomness for snapshots when
        # the rate is 0: a snapshot-free seed replays exactly the schedule it had before
        # snapshots were added to the simulation.
        snap_rng = random.Random(f"snapshot-rate/{seed}")
        snapshot = 0.0 if snap_rng.random() < 1 / 3 else snap_rng.choice([0.01, 0.03, 0.1])
        # Likewise for membership changes (about half the seeds).
        member_rng = random.Random(f"membership-rate/{seed}")
        membership = 0.0 if member_rng.random() < 1 / 2 else member_rng.choice([0.01, 0.03,
                                                                                0.06])
        spares = member_rng.randint(1, 3) if membership else 0
        # Likewise for disk faults (about half the seeds).
        disk_rng = random.Random(f"disk-fault-rate/{seed}")
        disk_faults = 0.0 if disk_rng.random() < 1 / 2 else disk_rng.choice([0.003, 0.01,
                                                                              0.02])
        return cls(
            n=3 if seed % 2 == 0 else 5,
            drop=rng.choice([0.0, 0.02, 0.1, 0.3]),
            duplicate=rng.choice([0.0, 0.02, 0.1]),
            faults=rng.choice([0.0, 0.01, 0.03, 0.06]),
            partition=rng.choice([0, 1, 3]),
            restart=rng.choice([0, 1, 3]),
            snapshot=snapshot,
            options=options,
            membership=membership,
            spares=spares,
            disk_faults=disk_faults,
        )


def _describe(m: Message) -> str:
    text = describe_message(m)
    if m.kind is SNAPSHOT:
        text += f" snapshot={m.log_term}/{m.index}"
    return text


class _Transfer:
    """The driver's record of one snapshot transfer (one SNAPSHOT message from the core):
    reported to the sender once, and only to the incarnation that asked for it."""

    __slots__ = ("incarnation", "reported")

    def __init__(self, incarnation: int) -> None:
        self.incarnation = incarnation
        self.reported = False


class Sim:
    """A cluster of RawNodes with slow disks and an adversarial network, all seeded."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.params = Params.from_rng(seed, self.rng)
        n = self.params.n
        #: the original members (bootstrapped with this voter list) ...
        self.initial = [str(i) for i in range(1, n + 1)]
        #: ... and every node, spare joiners included
        self.ids = self.initial + [str(i) for i in range(n + 1, n + 1 + self.params.spares)]
        #: the nodes the random schedule drives (ticks, Readys, writes, faults): the original
        #: members, and each spare from the first change that names it (before, it has nothing
        #: to do, and choosing it would only dilute the schedule)
        self.live = list(self.initial)
        self.disks = {i: DurableState() for i in self.ids}
        self.nodes: dict[str, RawNode] = {}
        self.pending: dict[str, deque[Ready]] = {i: deque() for i in self.ids}
        # In flight: (message, its transfer when it is a SNAPSHOT, else None).
        self.queue: list[tuple[Message, _Transfer | None]] = []
        self.cut: set[tuple[str, str]] = set()
        self.checker = SafetyChecker(self.ids, Membership(self.initial))
        self.trace: list[str] = []
        self.stats: Counter[str] = Counter()
        self.next_command = 0
        self.next_context = 1
        self.drop = self.params.drop
        self.duplicate = self.params.duplicate
        # Each node's simulated state machine: every entry it applied, from index 1 (a snapshot
        # restore replaces it), and the states of all snapshots ever taken, by (index, term).
        self.sm: dict[str, list[Entry]] = {i: [] for i in self.ids}
        self.snapshot_states: dict[tuple[int, int], list[Entry]] = {}
        self.incarnation: dict[str, int] = dict.fromkeys(self.ids, 0)
        for i in self.ids:
            self._boot(i)

    # -- node lifecycle ------------------------------------------------------------------------

    def _boot(self, node_id: str) -> None:
        disk = self.disks[node_id]
        bootstrap = self.initial if node_id in self.initial else Membership()
        self.nodes[node_id] = RawNode(
            node_id, bootstrap, rng=random.Random(self.rng.getrandbits(64)),
            options=self.params.options, hard_state=disk.boot_hard_state(),
            entries=list(disk.entries),
            snapshot=disk.snapshot)
        self.pending[node_id].clear()
        self.incarnation[node_id] += 1
        self.sm[node_id] = list(disk.snapshot_state)
        self.checker.on_restart(node_id, disk.snapshot, disk.snapshot_state,
                                recovering=disk.hard_state.recovering)
        if disk.hard_state.recovering:
            self.stats["boots recovering"] += 1
        if disk.snapshot is not None:
            self.stats["restarts from snapshot"] += 1

    def check(self) -> None:
        """The safety checks, and: the snapshot each core would send to a lagging follower is
        one that was really taken (the driver could not send anything else)."""
        self.checker.check(self.nodes, self.disks)
        self.stats["recoveries"] = self.checker.recoveries
        for node_id in self.ids:
            meta = self.nodes[node_id].raft.snapshot
            if meta is not None:
                self._snapshot_state(node_id, meta)

    def _snapshot_state(self, node_id: str, meta: SnapshotMeta) -> list[Entry]:
        state = self.snapshot_states.get((meta.index, meta.term))
        if state is None:
            raise SafetyViolation(f"{node_id}: snapshot {meta.term}/{meta.index} was never taken "
                                  f"by any node")
        return state

    def _post(self, node_id: str, messages: list[Message]) -> None:
        incarnation = self.incarnation[node_id]
        for m in messages:
            if m.kind is SNAPSHOT:
                self.stats["snapshot messages"] += 1
                if Membership.decode(m.data).is_empty:  # taken by a joiner, see checkers.py
                    self.stats["snapshot messages without a configuration"] += 1
                self.queue.append((m, _Transfer(incarnation)))
            else:
                self.queue.append((m, None))

    def take_ready(self, node_id: str) -> bool:
        node = self.nodes[node_id]
        if not node.has_ready():
            return False
        rd = node.ready()
        self.checker.on_send(node_id, node.raft.recovering, rd.messages)
        self.checker.on_send(node_id, node.raft.recovering, rd.messages_after_persist)
        if rd.snapshot is not None:
            # The state machine restores the snapshot before applying anything after it.
            state = self._snapshot_state(node_id, rd.snapshot)
            # (on_restore checks the snapshot's configuration is the committed one there)
            self.checker.on_restore(node_id, rd.snapshot, state)
            self.sm[node_id] = list(state)
            self.stats["installs"] += 1
            if node_id not in self.initial:
                self.stats["installs by joiners"] += 1
            self.trace.append(f"  {node_id} installs snapshot "
                              f"{rd.snapshot.term}/{rd.snapshot.index}")
        if rd.membership is not None:
            self.stats["configurations put in force"] += 1
        self._post(node_id, rd.messages)
        self.checker.on_apply(node_id, rd.committed_entries)
        self.sm[node_id].extend(rd.committed_entries)
        for rs in rd.read_states:
            self.checker.on_read_released(node_id, rs.index, rs.context)
        self.pending[node_id].append(rd)
        return True

    def persist_one(self, node_id: str) -> bool:
        if not self.pending[node_id]:
            return False
        rd = self.pending[node_id].popleft()
        disk = self.disks[node_id]
        state = None
        if rd.snapshot is not None:
            state = self._snapshot_state(node_id, rd.snapshot)
            self.checker.check_snapshot(node_id, rd.snapshot, state, "persists")
            if disk.snapshot is not None and rd.snapshot.index <= disk.snapshot.index:
                raise SafetyViolation(
                    f"{node_id}: Ready.snapshot {rd.snapshot.index} is not newer than the "
                    f"durable snapshot {disk.snapshot.index}")
        if rd.compact_index and rd.compact_index > disk.first - 1:
            raise SafetyViolation(f"{node_id}: Ready.compact_index {rd.compact_index} beyond "
                                  f"the durable snapshot {disk.first - 1}")
        disk.persist(rd, state)
        self._post(node_id, [m for m in rd.messages_after_persist if m.dst != node_id])
        self.nodes[node_id].advance(rd)
        return True

    def _report(self, m: Message, transfer: _Transfer | None, *, ok: bool) -> None:
        if transfer is None or transfer.reported:
            return
        transfer.reported = True
        if transfer.incarnation == self.incarnation[m.src]:  # a crash forgets its transfers
            self.nodes[m.src].report_snapshot(m.dst, ok=ok)
            self.stats["snapshot transfers ok" if ok else "snapshot transfers failed"] += 1

    def deliver(self, m: Message, transfer: _Transfer | None) -> None:
        if (m.src, m.dst) in self.cut:
            self._report(m, transfer, ok=False)
            return
        self.nodes[m.dst].step(m)
        self._report(m, transfer, ok=True)

    def can_snapshot(self, node_id: str) -> bool:
        """The node applied entries past its durable snapshot, and is not in the middle of
        installing a snapshot from the leader (one in a Ready not yet taken or not yet
        persisted: a driver that compacted its store behind that write would have the older
        snapshot overwrite the newer one)."""
        applied = len(self.sm[node_id])
        return (applied > self.disks[node_id].first - 1
                and applied == self.nodes[node_id].raft.log.applying
                and not any(rd.snapshot is not None for rd in self.pending[node_id]))

    def take_snapshot(self, node_id: str) -> None:
        """Snapshot the node's applied state, make it durable, compact the core's log."""
        sm = self.sm[node_id]
        last = sm[-1]
        raft = self.nodes[node_id].raft
        meta = SnapshotMeta(last.index, last.term, raft.memberships.at(last.index))
        self.checker.check_snapshot(node_id, meta, sm, "takes")
        disk = self.disks[node_id]
        at = meta.index - disk.first
        if not (0 <= at < len(disk.entries) and disk.entries[at] == last):
            raise SafetyViolation(f"{node_id} applied {last}, which is not in its durable log")
        key = (meta.index, meta.term)
        if key in self.snapshot_states and self.snapshot_states[key] != sm:
            raise SafetyViolation(f"two snapshots at {meta.term}/{meta.index} differ")
        self.snapshot_states[key] = list(sm)
        log = self.nodes[node_id].raft.log
        lo = log.snapshot_index
        compact_index = meta.index if self.rng.random() < 0.5 else self.rng.randint(lo, meta.index)
        disk.compact(meta, sm)
        self.nodes[node_id].compact(meta, compact_index)
        self.stats["snapshots"] += 1
        self.trace.append(f"snapshot {node_id} {meta.term}/{meta.index} compact={compact_index}")

    # -- the random schedule -------------------------------------------------------------------

    def step(self) -> None:
        """One random action.  The mix gives roughly a dozen deliveries, Readys and writes per
        tick, so elections complete and entries commit between faults."""
        rng = self.rng
        ids = self.live
        if self.params.snapshot and rng.random() < self.params.snapshot:
            self._snapshot()
            return
        if self.params.membership and rng.random() < self.params.membership:
            if self.recovering():
                # A change while a node is recovering could leave a configuration whose
                # quorums need its vote (two voters, one of them recovering): no leader could
                # ever be elected to give it its entries back (see _survivable).
                self.stats["membership deferred: a node is recovering"] += 1
                return
            self._change_membership()
            return
        if self.params.disk_faults and rng.random() < self.params.disk_faults:
            self._disk_fault()
            return
        if rng.random() < self.params.faults:
            self._fault()
            return
        action = rng.random()
        if action < 0.08:
            if rng.random() < 0.3:
                node_id = rng.choice(ids)
                self.nodes[node_id].tick()
                self.trace.append(f"tick {node_id}")
            else:
                for node_id in ids:
                    self.nodes[node_id].tick()
                self.trace.append("tick all")
        elif action < 0.28:
            node_id = rng.choice(ids)
            if self.take_ready(node_id):
                self.trace.append(f"ready {node_id}")
        elif action < 0.45:
            node_id = rng.choice(ids)
            if self.persist_one(node_id):
                self.trace.append(f"persist {node_id}")
        elif action < 0.90:
            for _ in range(rng.randint(1, 3)):
                self._deliver_random()
        elif action < 0.97:
            self._propose()
        else:
            self._read()

    def _snapshot(self) -> None:
        """Snapshot a node that can: a leader half the time (its compaction is what makes
        lagging followers need a snapshot), else any."""
        ready = [i for i in self.ids if self.can_snapshot(i)]
        if not ready:
            return
        leaders = [i for i in ready if self.nodes[i].raft.role.value == "leader"]
        pool = leaders if leaders and self.rng.random() < 0.7 else ready
        self.take_snapshot(self.rng.choice(pool))

    CHANGES = ("add learner", "add voter", "promote", "remove voter", "demote",
               "remove learner", "replace")

    def _change_membership(self, node_id: str | None = None) -> None:
        """Propose a random change at whoever believes it leads (stale leaders too), computed
        from that leader's configuration in force: add a spare node (one not in the
        configuration: never added yet, or removed before) as a learner or a voter, promote a
        learner, remove or demote a voter (the leader itself included, down to one voter),
        remove a learner, or replace a voter by a spare or a learner.  Refusals (a change in
        progress) are part of the test."""
        rng = self.rng
        if node_id is None:
            leaders = [i for i in self.ids if self.nodes[i].raft.role.value == "leader"]
            if not leaders:
                return
            node_id = rng.choice(leaders)
        current = self.nodes[node_id].membership
        voters, learners = set(current.voters), set(current.learners)
        spares = [i for i in self.ids if i not in current.members()]
        possible = {"add learner": bool(spares), "add voter": bool(spares),
                    "promote": bool(learners), "remove voter": len(voters) > 1,
                    "demote": len(voters) > 1, "remove learner": bool(learners),
                    "replace": bool(spares or learners)}
        kinds = [k for k in self.CHANGES if possible[k]]
        if not kinds:
            return
        # Learners are rarely there at the moment of a change: use them when they are.
        kind = "promote" if learners and rng.random() < 0.4 else rng.choice(kinds)
        if kind in ("add learner", "add voter"):
            (learners if kind == "add learner" else voters).add(rng.choice(spares))
        elif kind == "promote":
            node = rng.choice(sorted(learners))
            learners.remove(node)
            voters.add(node)
        elif kind in ("remove voter", "demote"):
            node = rng.choice(sorted(voters))
            voters.remove(node)
            if kind == "demote":
                learners.add(node)
        elif kind == "remove learner":
            learners.remove(rng.choice(sorted(learners)))
        else:  # replace
            node = rng.choice(sorted(set(spares) | learners))
            voters.remove(rng.choice(sorted(voters)))
            learners.discard(node)
            voters.add(node)
        target = f"voters={sorted(voters)} learners={sorted(learners)}"
        try:
            index = self.nodes[node_id].propose_membership(sorted(voters), sorted(learners))
        except MembershipError as exc:
            self.stats["membership refused"] += 1
            self.trace.append(f"membership {node_id} {kind} {target}: refused ({exc})")
            return
        self.stats[f"membership {kind}"] += 1
        if node_id not in voters:
            self.stats["membership leader leaves"] += 1
        named = voters | learners
        self.live = [i for i in self.ids if i in self.live or i in named]
        self.trace.append(f"membership {node_id} {kind} {target} at {index}")

    def _deliver_random(self) -> None:
        if not self.queue:
            return
        rng = self.rng
        k = rng.randrange(len(self.queue))
        self.queue[k], self.queue[-1] = self.queue[-1], self.queue[k]
        m, transfer = self.queue.pop()
        if rng.random() < self.drop:
            self.trace.append(f"drop {_describe(m)}")
            self._report(m, transfer, ok=False)
            return
        if rng.random() < self.duplicate:
            self.queue.append((m, transfer))
        cut = (m.src, m.dst) in self.cut
        self.trace.append(("cut " if cut else "deliver ") + _describe(m))
        self.deliver(m, transfer)

    def _propose(self) -> None:
        leaders = [i for i in self.ids if self.nodes[i].raft.role.value == "leader"]
        if not leaders:
            return
        node_id = self.rng.choice(leaders)
        count = self.rng.randint(1, 4)
        commands = [f"c{self.next_command + k}".encode() for k in range(count)]
        self.next_command += count
        self.nodes[node_id].propose(commands)
        self.trace.append(f"propose {node_id} {commands}")

    def _read(self) -> None:
        leaders = [i for i in self.ids if self.nodes[i].raft.role.value == "leader"]
        if not leaders:
            return
        node_id = self.rng.choice(leaders)
        context = self.next_context
        self.next_context += 1
        self.checker.on_read_request(context)
        self.nodes[node_id].read_index(context)
        self.trace.append(f"read {node_id} context={context}")

    def _fault(self) -> None:
        rng, p = self.rng, self.params
        roll = rng.uniform(0, p.partition + 2 + p.restart)
        ids = self.live
        leaders = [i for i in ids if self.nodes[i].raft.role.value == "leader"]
        if roll < p.partition and leaders and rng.random() < 0.5:
            # Leader churn: cut a leader off from everyone (a Figure 8 style history needs
            # several short-lived leaders whose last entries reached few nodes).
            node_id = rng.choice(leaders)
            self.cut |= {(node_id, o) for o in ids if o != node_id}
            self.cut |= {(o, node_id) for o in ids if o != node_id}
            self.trace.append(f"isolate leader {node_id}")
        elif roll < p.partition:
            shuffled = rng.sample(ids, len(ids))
            cut_at = rng.randint(1, len(shuffled) - 1)
            side = {n: k < cut_at for k, n in enumerate(shuffled)}
            self.cut = {(a, b) for a in ids for b in ids
                        if a != b and side[a] != side[b]}
            self.trace.append(f"partition {sorted(shuffled[:cut_at])} {sorted(shuffled[cut_at:])}")
        elif roll < p.partition + 2:
            if self.cut:
                self.cut.clear()
                self.trace.append("heal")
        else:
            # Half the time crash a node with writes still pending: they are lost.
            busy = [i for i in ids if self.pending[i]]
            node_id = rng.choice(busy if busy and rng.random() < 0.5 else ids)
            lost = len(self.pending[node_id])
            self._boot(node_id)
            self.trace.append(f"restart {node_id} (lost {lost} pending writes)")

    def recovering(self) -> list[str]:
        """The nodes that are recovering lost entries: in the core, or durably (a node whose
        core ended recovery boots recovering again until it has saved that), or in the
        checker's books (a disk fault took entries from it that it has not got back)."""
        return [i for i in self.ids
                if self.nodes[i].raft.recovering or self.disks[i].hard_state.recovering
                or self.checker.lost[i]]

    def _survivable(self, node_id: str) -> bool:
        """Every configuration that may be in force (the newest committed one, and the one in
        force on each node) keeps a quorum of voters other than ``node_id``: a recovering
        node neither votes nor counts, so with two voters (or one) a fault on one of them
        would leave no leader to give it its entries back, ever."""
        configs = [self.checker.configs[-1][1]] + [self.nodes[i].membership for i in self.ids]
        return all(node_id not in voters or len(voters) >= 3
                   for config in configs for voters in (config.voters, config.outgoing))

    def _disk_fault(self) -> None:
        """Crash a node (any, or one with the longest durable log; its pending writes are
        lost), make its disk lose its newest durable entries (``DurableState.lose_tail``: 1-3
        of them, and two times in three also its whole uncommitted tail, so that committed
        entries go too), and boot it: it comes up recovering.  One fault at a time: none while
        a node is still recovering, and none that :meth:`_survivable` rules out."""
        if self.recovering():
            self.stats["disk faults deferred: a node is recovering"] += 1
            return
        rng = self.rng
        eligible = [i for i in self.live if self.disks[i].entries and self._survivable(i)]
        if not eligible:
            return
        if rng.random() < 0.5:
            node_id = rng.choice(eligible)
        else:  # a node with the longest durable log: the one most likely to have acknowledged
            # the newest committed entries, which may then be on a bare quorum
            longest = max(self.disks[i].last_index for i in eligible)
            node_id = rng.choice([i for i in eligible if self.disks[i].last_index == longest])
        disk = self.disks[node_id]
        committed = self.checker.committed
        count = rng.randint(1, 3)
        if rng.random() < 2 / 3:
            count += max(0, disk.last_index - len(committed))
        pending = len(self.pending[node_id])
        lost = disk.lose_tail(min(count, len(disk.entries)))
        self.checker.on_disk_fault(node_id, lost)
        self._boot(node_id)
        if not self.nodes[node_id].raft.recovering:
            raise SafetyViolation(f"{node_id} lost {len(lost)} durable entries but did not boot "
                                  f"recovering (hard state {disk.hard_state}, sync mark "
                                  f"{disk.synced_index})")
        lost_committed = sum(1 for e in lost
                             if e.index <= len(committed) and committed[e.index - 1] == e)
        self.stats["disk faults"] += 1
        if lost_committed:
            self.stats["disk faults losing committed entries"] += 1
        self.trace.append(f"disk fault {node_id}: lost entries {lost[0].index}..{lost[-1].index}"
                          f" ({lost_committed} committed) and {pending} pending writes; boots "
                          f"recovering up to {disk.hard_state.recovering}")

    # -- liveness --------------------------------------------------------------------------------

    def drain(self) -> None:
        """Synchronously handle every Ready and deliver every message until quiet."""
        for _ in range(100_000):
            busy = False
            for node_id in self.ids:
                while self.persist_one(node_id):
                    busy = True
                if self.take_ready(node_id):
                    busy = True
                    self.persist_one(node_id)
            if self.queue:
                batch, self.queue = self.queue, []
                for m, transfer in batch:
                    self.deliver(m, transfer)
                busy = True
            self.check()
            if not busy:
                return
        raise SafetyViolation("the healed network never went quiet")

    def members(self) -> list[str]:
        """The nodes that still take part after healing, in ``ids`` order: the members of the
        newest committed configuration, and of the configurations in force on those (an
        uncommitted change may have added nodes, whose votes it needs).  Only they are ticked
        after healing and must converge (all nodes, without membership changes).  The nodes
        a committed change removed are shut down, as an operator would: one removed while cut
        off never learns it and would campaign forever in its C_old,new, disrupting a cluster
        that runs without PreVote and CheckQuorum (thesis 4.2.3)."""
        final = set(self.checker.configs[-1][1].members())
        for node_id in list(final):
            final.update(self.nodes[node_id].membership.members())
        return [i for i in self.ids if i in final]

    def converged(self) -> bool:
        final = self.checker.configs[-1][1]
        if final.is_joint:
            return False
        rafts = [self.nodes[i].raft for i in self.members()]
        leaders = [r for r in rafts if r.role.value == "leader"]
        if len(leaders) != 1:
            return False
        leader = leaders[0]
        last = leader.log.last_index()
        last_term = leader.log.last_term()
        if last_term != leader.term or leader.membership != final:
            return False
        # Same last entry and log matching (checked after every step) give the same log.
        return all(r.term == leader.term and r.leader_id == leader.id and not r.recovering
                   and r.log.committed == last and r.log.applying == last
                   and r.log.last_index() == last and r.log.last_term() == last_term
                   for r in rafts)

    def settle(self) -> str:
        """Heal, stop faults, tick until one leader and one committed log; returns the leader."""
        self.cut.clear()
        self.drop = self.duplicate = 0.0
        self.trace.append("== settle ==")
        self.drain()
        for _ in range(SETTLE_TICKS):
            if self.converged():
                break
            for node_id in self.members():
                self.nodes[node_id].tick()
            self.drain()
        else:
            raise SafetyViolation("liveness: no stable leader and common committed log after "
                                  f"{SETTLE_TICKS} ticks of a healed network:\n{self.status()}")
        return next(i for i in self.members() if self.nodes[i].raft.role.value == "leader")

    def status(self) -> str:
        lines = []
        for i in self.ids:
            st = self.nodes[i].status()
            progress = {p: (v.state, v.match, v.next, v.inflight)
                        for p, v in st.progress.items()}
            lines.append(f"  {i}: {st.role} term={st.term} leader={st.leader_id} "
                         f"commit={st.commit_index} last={st.last_log_index}/{st.last_log_term} "
                         f"snapshot={st.snapshot_index} {st.membership.describe()} "
                         f"progress={progress}")
        if self.params.membership:
            lines.append(f"  committed configurations: "
                         f"{[(i, m.describe()) for i, m in self.checker.configs]}")
        return "\n".join(lines)


def drive(sim: Sim, steps: int) -> None:
    """Run ``steps`` random actions with checks after each, then settle and check liveness:
    a last proposal at the settled leader must be applied by every node."""
    for _ in range(steps):
        sim.step()
        sim.check()
    leader = sim.settle()
    if sim.params.membership:
        # One more change, in the healed network: it must complete, and the nodes of the new
        # configuration converge on a leader again.
        sim._change_membership(leader)
        leader = sim.settle()
    final = b"final-write"
    sim.nodes[leader].propose([final])
    sim.drain()
    for _ in range(3):  # followers learn the commit index from the next heartbeat
        for node_id in sim.members():
            sim.nodes[node_id].tick()
        sim.drain()
    for node_id in sim.members():
        if sim.disks[node_id].hard_state.recovering:
            raise SafetyViolation(f"liveness: {node_id} is still durably recovering")
        sm = sim.sm[node_id]
        if not sm or sm[-1].data != final:
            raise SafetyViolation(f"liveness: {node_id} did not apply the final write")
        if sm != sim.checker.committed[:len(sm)]:
            raise SafetyViolation(f"state machine safety: {node_id}'s final state differs from "
                                  f"the committed log")


def run_schedule(seed: int, steps: int = STEPS) -> Sim:
    """Run one seed; on failure the message carries the seed, the last actions and the
    one-line replay command."""
    sim = Sim(seed)
    try:
        drive(sim, steps)
    except AssertionError as exc:  # SafetyViolation, or an assertion inside the harness
        raise AssertionError(
            f"{exc}\nSEED={seed} params={sim.params}\nlast actions:\n  "
            + "\n  ".join(sim.trace[-40:])
            + f"\nreplay: python -m engine.sim --seed {seed}"
        ) from exc
    return sim
