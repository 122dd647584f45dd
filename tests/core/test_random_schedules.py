"""Seeded random schedules over 3- and 5-node clusters, with Raft's safety properties checked
after every step and liveness checked once the network heals.

Each seed picks its own fault mix (swarm testing): drop and duplicate rates, how often the
network partitions and nodes restart, PreVote/CheckQuorum/fast-backup switches, window and batch
sizes, election timeouts.  A schedule is a sequence of single actions chosen by the seeded rng:
tick one node or all, take a Ready (its ``messages`` leave at once, its write stays pending on a
slow disk), finish the oldest pending write (then its after-persist messages leave and it is
advanced), deliver one queued message chosen at random (so the queue is reordered; the message
may be dropped or duplicated), propose at whoever believes it leads (stale leaders included),
request a ReadIndex, partition/isolate/heal, restart a node from its durable state (its pending
writes are lost).

Checked after every action:

* election safety: at most one leader per term over the whole history;
* log matching: if two logs hold an entry with the same index and term, they are identical up
  to it (checked at the highest index where each pair agrees, which implies every lower one);
* leader completeness: a leader of term T holds every entry known committed at a term < T;
* state machine safety: committed prefixes and applied sequences of all nodes (across restarts)
  are prefixes of one global committed log;
* durability: every committed entry is in the durable log of a majority, and no durable commit
  index points past its durable log;
* ReadIndex linearizability: a released read index is >= every index known committed anywhere
  when the read was requested.

Then the network heals, pending writes finish, and all nodes tick until they agree on one leader
and one fully committed log (liveness), and a last proposal commits everywhere.

Replay one seed: ``RAFT_SEED=1234 pytest tests/core/test_random_schedules.py``.
More seeds: ``RAFT_SEEDS=2000`` (count) and ``RAFT_SEED_START``; longer runs: ``RAFT_STEPS``.
"""

from __future__ import annotations

import bisect
import os
import random
from collections import deque
from dataclasses import dataclass

import pytest

from engine.core import Message, RaftOptions, RawNode, Ready
from engine.core.describe import describe_message
from engine.core.quorum import quorum_size
from engine.types import Entry
from tests.core.harness import DurableState

_SEED = os.environ.get("RAFT_SEED")
SEEDS = ([int(_SEED)] if _SEED else
         list(range(int(os.environ.get("RAFT_SEED_START", "0")),
                    int(os.environ.get("RAFT_SEED_START", "0"))
                    + int(os.environ.get("RAFT_SEEDS", "200")))))
STEPS = int(os.environ.get("RAFT_STEPS", "1000"))
SETTLE_TICKS = 600


class SafetyViolation(AssertionError):
    """A Raft safety or liveness property failed."""


@dataclass(frozen=True)
class Params:
    """The fault mix and core options of one seed."""

    n: int
    drop: float
    duplicate: float
    faults: float  #: probability that a step is a fault action
    partition: int  #: weight of "partition" among fault actions ("heal" has weight 2)
    restart: int  #: weight of "restart" among fault actions
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
        return cls(
            n=3 if seed % 2 == 0 else 5,
            drop=rng.choice([0.0, 0.02, 0.1, 0.3]),
            duplicate=rng.choice([0.0, 0.02, 0.1]),
            faults=rng.choice([0.0, 0.01, 0.03, 0.06]),
            partition=rng.choice([0, 1, 3]),
            restart=rng.choice([0, 1, 3]),
            options=options,
        )


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
        # Per node: entries applied since its last restart, and how many were checked.
        self.applied: dict[str, list[Entry]] = {i: [] for i in ids}
        self.applied_checked: dict[str, int] = dict.fromkeys(ids, 0)
        # ReadIndex: context -> committed length required when it was requested.
        self.read_required: dict[int, int] = {}

    def on_restart(self, node_id: str) -> None:
        self.applied[node_id] = []
        self.applied_checked[node_id] = 0

    def on_apply(self, node_id: str, entries: list[Entry]) -> None:
        applied = self.applied[node_id]
        if entries and entries[0].index != len(applied) + 1:
            raise SafetyViolation(
                f"{node_id} applies {entries[0].index} after {len(applied)}: not contiguous")
        applied.extend(entries)

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
        logs: dict[str, list[Entry]] = {}
        for node_id in self.ids:
            raft = nodes[node_id].raft
            log = raft.log
            entries = log.slice(1, log.last_index() + 1)
            logs[node_id] = entries
            if raft.role.value == "leader":
                holder = self.leader_of_term.setdefault(raft.term, node_id)
                if holder != node_id:
                    raise SafetyViolation(
                        f"election safety: {holder} and {node_id} both led term {raft.term}")
            self._record_commit(node_id, entries, log.committed, raft.term)
        self._check_applied()
        self._check_log_matching(logs)
        self._check_leader_completeness(nodes, logs)
        self._check_durability(disks)

    def _record_commit(self, node_id: str, entries: list[Entry], commit: int, term: int) -> None:
        known = len(self.committed)
        shared = min(known, commit)
        if entries[:shared] != self.committed[:shared]:
            bad = next(i for i in range(shared) if entries[i] != self.committed[i])
            raise SafetyViolation(
                f"state machine safety: {node_id} has {entries[bad]} at committed index "
                f"{bad + 1}, the cluster committed {self.committed[bad]}")
        if commit > known:
            self.committed.extend(entries[known:commit])
            self.commit_term.extend([term] * (commit - known))
        k = commit - 1
        while k >= 0 and self.commit_term[k] > term:
            self.commit_term[k] = term
            k -= 1

    def _check_applied(self) -> None:
        for node_id in self.ids:
            applied = self.applied[node_id]
            done = self.applied_checked[node_id]
            if len(applied) > len(self.committed):
                raise SafetyViolation(f"{node_id} applied {len(applied)} entries, only "
                                      f"{len(self.committed)} are known committed")
            if applied[done:] != self.committed[done:len(applied)]:
                raise SafetyViolation(
                    f"state machine safety: {node_id} applied {applied[done:]} where the "
                    f"committed log has {self.committed[done:len(applied)]}")
            self.applied_checked[node_id] = len(applied)

    def _check_log_matching(self, logs: dict[str, list[Entry]]) -> None:
        ids = self.ids
        for a_pos, a in enumerate(ids):
            la = logs[a]
            for b in ids[a_pos + 1:]:
                lb = logs[b]
                i = min(len(la), len(lb))
                while i > 0 and la[i - 1].term != lb[i - 1].term:
                    i -= 1
                if la[:i] != lb[:i]:
                    raise SafetyViolation(
                        f"log matching: {a} and {b} agree on the term at index {i} but not on "
                        f"the entries up to it")

    def _check_leader_completeness(self, nodes: dict[str, RawNode],
                                   logs: dict[str, list[Entry]]) -> None:
        for node_id in self.ids:
            raft = nodes[node_id].raft
            if raft.role.value != "leader":
                continue
            k = bisect.bisect_left(self.commit_term, raft.term)
            if logs[node_id][:k] != self.committed[:k]:
                raise SafetyViolation(
                    f"leader completeness: leader {node_id} of term {raft.term} lacks entries "
                    f"committed in earlier terms (first {k} indexes)")

    def _check_durability(self, disks: dict[str, DurableState]) -> None:
        top = len(self.committed)
        for node_id, disk in disks.items():
            if disk.hard_state.commit > len(disk.entries):
                raise SafetyViolation(f"{node_id}: durable commit {disk.hard_state.commit} past "
                                      f"durable log end {len(disk.entries)}")
        if top == 0:
            return
        entry = self.committed[top - 1]
        holders = sum(1 for d in disks.values()
                      if len(d.entries) >= top and d.entries[top - 1] == entry)
        if holders < self.quorum:
            raise SafetyViolation(f"durability: committed entry {entry} is durable on only "
                                  f"{holders} nodes")


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
        self.queue: list[Message] = []
        self.cut: set[tuple[str, str]] = set()
        self.checker = SafetyChecker(self.ids)
        self.trace: list[str] = []
        self.next_command = 0
        self.next_context = 1
        self.drop = self.params.drop
        self.duplicate = self.params.duplicate
        for i in self.ids:
            self._boot(i)

    # -- node lifecycle ------------------------------------------------------------------------

    def _boot(self, node_id: str) -> None:
        disk = self.disks[node_id]
        self.nodes[node_id] = RawNode(
            node_id, self.ids, rng=random.Random(self.rng.getrandbits(64)),
            options=self.params.options, hard_state=disk.hard_state, entries=list(disk.entries))
        self.pending[node_id].clear()
        self.checker.on_restart(node_id)

    def take_ready(self, node_id: str) -> bool:
        node = self.nodes[node_id]
        if not node.has_ready():
            return False
        rd = node.ready()
        self.queue.extend(rd.messages)
        self.checker.on_apply(node_id, rd.committed_entries)
        for rs in rd.read_states:
            self.checker.on_read_released(node_id, rs.index, rs.context)
        self.pending[node_id].append(rd)
        return True

    def persist_one(self, node_id: str) -> bool:
        if not self.pending[node_id]:
            return False
        rd = self.pending[node_id].popleft()
        self.disks[node_id].persist(rd)
        self.queue.extend(m for m in rd.messages_after_persist if m.dst != node_id)
        self.nodes[node_id].advance(rd)
        return True

    def deliver(self, m: Message) -> None:
        if (m.src, m.dst) in self.cut:
            return
        self.nodes[m.dst].step(m)

    # -- the random schedule -------------------------------------------------------------------

    def step(self) -> None:
        """One random action.  The mix gives roughly a dozen deliveries, Readys and writes per
        tick, so elections complete and entries commit between faults."""
        rng = self.rng
        ids = self.ids
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

    def _deliver_random(self) -> None:
        if not self.queue:
            return
        rng = self.rng
        k = rng.randrange(len(self.queue))
        self.queue[k], self.queue[-1] = self.queue[-1], self.queue[k]
        m = self.queue.pop()
        if rng.random() < self.drop:
            self.trace.append(f"drop {describe_message(m)}")
            return
        if rng.random() < self.duplicate:
            self.queue.append(m)
        cut = (m.src, m.dst) in self.cut
        self.trace.append(("cut " if cut else "deliver ") + describe_message(m))
        self.deliver(m)

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
                for m in batch:
                    self.deliver(m)
                busy = True
            self.checker.check(self.nodes, self.disks)
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
        if leader.log.last_term() != leader.term:
            return False
        want = leader.log.slice(1, last + 1)
        return all(r.term == leader.term and r.leader_id == leader.id
                   and r.log.committed == last and r.log.applying == last
                   and r.log.slice(1, r.log.last_index() + 1) == want for r in rafts)

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
                         f"progress={progress}")
        return "\n".join(lines)


def drive(sim: Sim, steps: int) -> None:
    """Run ``steps`` random actions with checks after each, then settle and check liveness:
    a last proposal at the settled leader must be applied by every node."""
    for _ in range(steps):
        sim.step()
        sim.checker.check(sim.nodes, sim.disks)
    leader = sim.settle()
    final = b"final-write"
    sim.nodes[leader].propose([final])
    sim.drain()
    for _ in range(3):  # followers learn the commit index from the next heartbeat
        for node_id in sim.ids:
            sim.nodes[node_id].tick()
        sim.drain()
    for node_id in sim.ids:
        data = [e.data for e in sim.checker.applied[node_id]]
        if not data or data[-1] != final:
            raise SafetyViolation(f"liveness: {node_id} did not apply the final write")


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
            + f"\nreplay: RAFT_SEED={seed} pytest tests/core/test_random_schedules.py"
        ) from exc
    return sim


@pytest.mark.parametrize("seed", SEEDS)
def test_random_schedule(seed: int) -> None:
    """Safety after every step and liveness after healing, for one seeded schedule (3 nodes for
    even seeds, 5 for odd)."""
    run_schedule(seed)


def test_schedules_do_real_work() -> None:
    """Guard against a vacuous simulator: across a few seeds, leaders are elected in several
    terms, hundreds of entries commit, and faults (drops, restarts, partitions) happen."""
    terms, committed, restarts, partitions = 0, 0, 0, 0
    for seed in range(8):
        sim = run_schedule(seed, STEPS)
        terms += len(sim.checker.leader_of_term)
        committed += len(sim.checker.committed)
        restarts += sum(1 for t in sim.trace if t.startswith("restart"))
        partitions += sum(1 for t in sim.trace if t.startswith("partition"))
    assert terms >= 8 and committed >= 100 and restarts + partitions >= 1
