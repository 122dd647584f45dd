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
heal, restart a node from its durable state (its pending writes are lost), snapshot a node.

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

Checked after every action:

* election safety: at most one leader per term over the whole history;
* log matching: if two logs hold an entry with the same index and term, they are identical up
  to it (checked over the range both still hold, at the highest index where each pair agrees);
* leader completeness: a leader of term T holds every entry known committed at a term < T
  (entries it compacted away count as held: its compaction point must be committed);
* state machine safety: committed prefixes and applied sequences of all nodes (across restarts
  and snapshot installs) are prefixes of one global committed log; every compaction point is a
  committed index with the committed term; every snapshot (taken, installed, restarted from,
  persisted) holds exactly the committed log up to its index;
* durability: every committed entry is in the durable log or the durable snapshot of a majority,
  no durable commit index points past its durable log, and a durable snapshot never goes back;
* ReadIndex linearizability: a released read index is >= every index known committed anywhere
  when the read was requested;
* replication bookkeeping: a leader's ``match`` for a peer never exceeds its own log, and (while
  the peer's durable term is the leader's) the peer's durable log holds the leader's entry there;
  the core's log cursors stay ordered (compacted <= applying <= committed <= last, stable <=
  handed <= last); an applied entry is durable locally when the node snapshots it; the snapshot
  a core would send was really taken.

Then the network heals, pending writes finish, and all nodes tick until they agree on one leader
and one fully committed log (liveness), and a last proposal commits everywhere.

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
        return cls(
            n=3 if seed % 2 == 0 else 5,
            drop=rng.choice([0.0, 0.02, 0.1, 0.3]),
            duplicate=rng.choice([0.0, 0.02, 0.1]),
            faults=rng.choice([0.0, 0.01, 0.03, 0.06]),
            partition=rng.choice([0, 1, 3]),
            restart=rng.choice([0, 1, 3]),
            snapshot=snapshot,
            options=options,
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
        self.ids = [str(i) for i in range(1, self.params.n + 1)]
        self.disks = {i: DurableState() for i in self.ids}
        self.nodes: dict[str, RawNode] = {}
        self.pending: dict[str, deque[Ready]] = {i: deque() for i in self.ids}
        # In flight: (message, its transfer when it is a SNAPSHOT, else None).
        self.queue: list[tuple[Message, _Transfer | None]] = []
        self.cut: set[tuple[str, str]] = set()
        self.checker = SafetyChecker(self.ids)
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
        self.nodes[node_id] = RawNode(
            node_id, self.ids, rng=random.Random(self.rng.getrandbits(64)),
            options=self.params.options, hard_state=disk.hard_state, entries=list(disk.entries),
            snapshot=disk.snapshot)
        self.pending[node_id].clear()
        self.incarnation[node_id] += 1
        self.sm[node_id] = list(disk.snapshot_state)
        self.checker.on_restart(node_id, disk.snapshot, disk.snapshot_state)
        if disk.snapshot is not None:
            self.stats["restarts from snapshot"] += 1

    def check(self) -> None:
        """The safety checks, and: the snapshot each core would send to a lagging follower is
        one that was really taken (the driver could not send anything else)."""
        self.checker.check(self.nodes, self.disks)
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
                self.queue.append((m, _Transfer(incarnation)))
            else:
                self.queue.append((m, None))

    def take_ready(self, node_id: str) -> bool:
        node = self.nodes[node_id]
        if not node.has_ready():
            return False
        rd = node.ready()
        if rd.snapshot is not None:
            # The state machine restores the snapshot before applying anything after it.
            state = self._snapshot_state(node_id, rd.snapshot)
            if sorted(rd.snapshot.voters) != self.ids:
                raise SafetyViolation(f"{node_id} installs a snapshot with voters "
                                      f"{rd.snapshot.voters}, the cluster is {self.ids}")
            self.checker.on_restore(node_id, rd.snapshot, state)
            self.sm[node_id] = list(state)
            self.stats["installs"] += 1
            self.trace.append(f"  {node_id} installs snapshot "
                              f"{rd.snapshot.term}/{rd.snapshot.index}")
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
        meta = SnapshotMeta(last.index, last.term, tuple(self.ids))
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
        ids = self.ids
        if self.params.snapshot and rng.random() < self.params.snapshot:
            self._snapshot()
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
        leaders = [i for i in self.ids if self.nodes[i].raft.role.value == "leader"]
        if roll < p.partition and leaders and rng.random() < 0.5:
            # Leader churn: cut a leader off from everyone (a Figure 8 style history needs
            # several short-lived leaders whose last entries reached few nodes).
            node_id = rng.choice(leaders)
            self.cut |= {(node_id, o) for o in self.ids if o != node_id}
            self.cut |= {(o, node_id) for o in self.ids if o != node_id}
            self.trace.append(f"isolate leader {node_id}")
        elif roll < p.partition:
            shuffled = rng.sample(self.ids, len(self.ids))
            cut_at = rng.randint(1, len(shuffled) - 1)
            side = {n: k < cut_at for k, n in enumerate(shuffled)}
            self.cut = {(a, b) for a in self.ids for b in self.ids
                        if a != b and side[a] != side[b]}
            self.trace.append(f"partition {sorted(shuffled[:cut_at])} {sorted(shuffled[cut_at:])}")
        elif roll < p.partition + 2:
            if self.cut:
                self.cut.clear()
                self.trace.append("heal")
        else:
            # Half the time crash a node with writes still pending: they are lost.
            busy = [i for i in self.ids if self.pending[i]]
            node_id = rng.choice(busy if busy and rng.random() < 0.5 else self.ids)
            lost = len(self.pending[node_id])
            self._boot(node_id)
            self.trace.append(f"restart {node_id} (lost {lost} pending writes)")

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

    def converged(self) -> bool:
        rafts = [self.nodes[i].raft for i in self.ids]
        leaders = [r for r in rafts if r.role.value == "leader"]
        if len(leaders) != 1:
            return False
        leader = leaders[0]
        last = leader.log.last_index()
        last_term = leader.log.last_term()
        if last_term != leader.term:
            return False
        # Same last entry and log matching (checked after every step) give the same log.
        return all(r.term == leader.term and r.leader_id == leader.id
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
            for node_id in self.ids:
                self.nodes[node_id].tick()
            self.drain()
        else:
            raise SafetyViolation("liveness: no stable leader and common committed log after "
                                  f"{SETTLE_TICKS} ticks of a healed network:\n{self.status()}")
        return next(i for i in self.ids if self.nodes[i].raft.role.value == "leader")

    def status(self) -> str:
        lines = []
        for i in self.ids:
            st = self.nodes[i].status()
            progress = {p: (v.state, v.match, v.next, v.inflight)
                        for p, v in st.progress.items()}
            lines.append(f"  {i}: {st.role} term={st.term} leader={st.leader_id} "
                         f"commit={st.commit_index} last={st.last_log_index}/{st.last_log_term} "
                         f"snapshot={st.snapshot_index} progress={progress}")
        return "\n".join(lines)


def drive(sim: Sim, steps: int) -> None:
    """Run ``steps`` random actions with checks after each, then settle and check liveness:
    a last proposal at the settled leader must be applied by every node."""
    for _ in range(steps):
        sim.step()
        sim.check()
    leader = sim.settle()
    final = b"final-write"
    sim.nodes[leader].propose([final])
    sim.drain()
    for _ in range(3):  # followers learn the commit index from the next heartbeat
        for node_id in sim.ids:
            sim.nodes[node_id].tick()
        sim.drain()
    for node_id in sim.ids:
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
