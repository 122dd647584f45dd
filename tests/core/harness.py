"""A synchronous, deterministic network of Raft cores for tests: no threads, no clocks.

Each node has a simulated durable store (hard state + entry list) that survives ``restart``.
Messages sit in ``self.queue`` until delivered; tests choose what to deliver, drop, duplicate or
reorder.  Committed entries are recorded per node in ``applied`` for safety checks.

Membership: the nodes given to the constructor are the original members and boot with that
voter list; :meth:`add_node` starts a joiner that boots with an empty configuration and learns
the real one from the leader (log or snapshot); :meth:`stop_node` shuts a node down (messages to
it are lost) and :meth:`start_node` boots it again from its disk.  On every boot the durable
snapshot and log override the bootstrap configuration.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from engine.core import Message, MessageKind, RaftOptions, RawNode, Ready
from engine.membership import Membership
from engine.sim.disk import DurableState
from engine.types import Entry, EntryKind, HardState, NodeId, SnapshotMeta


class CoreNetwork:
    """n cores wired through an explicit message queue."""

    def __init__(self, ids: Sequence[NodeId] | int, *, seed: int = 0,
                 options: RaftOptions | None = None, **option_overrides: object) -> None:
        if isinstance(ids, int):
            ids = [str(i) for i in range(1, ids + 1)]
        self.ids = list(ids)  #: the running nodes, in the order they are driven
        self.initial = list(ids)  #: the original members (their bootstrap voter list)
        self.seed = seed
        self.rng = random.Random(seed)
        base = options or RaftOptions()
        if option_overrides:
            base = RaftOptions(**{**{f: getattr(base, f) for f in base.__dataclass_fields__},
                                  **option_overrides})
        self.options = base
        self.disks: dict[NodeId, DurableState] = {i: DurableState() for i in self.ids}
        self.nodes: dict[NodeId, RawNode] = {}
        self.applied: dict[NodeId, list[Entry]] = {i: [] for i in self.ids}
        self.queue: list[Message] = []
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.sent: list[Message] = []
        self.read_states: dict[NodeId, list] = {i: [] for i in self.ids}
        self.snapshot_states: dict[tuple[int, int], list[Entry]] = {}
        #: per node, every Ready.membership it produced (the configurations put in force)
        self.reported: dict[NodeId, list[Membership]] = {i: [] for i in self.ids}
        for i in self.ids:
            self._boot(i)

    def bootstrap(self, node_id: NodeId) -> list[NodeId] | Membership:
        """The configuration ``node_id`` boots with before its disk says otherwise: the initial
        voter list for an original member, the empty configuration for a joiner."""
        return list(self.initial) if node_id in self.initial else Membership()

    def _boot(self, node_id: NodeId) -> None:
        disk = self.disks[node_id]
        self.nodes[node_id] = RawNode(
            node_id, self.bootstrap(node_id), rng=random.Random(self.rng.random()),
            options=self.options, hard_state=disk.boot_hard_state(), entries=list(disk.entries),
            snapshot=disk.snapshot)
        self.applied[node_id] = list(disk.snapshot_state)

    # -- membership --------------------------------------------------------------------------

    def add_node(self, node_id: NodeId) -> RawNode:
        """Start a new, empty node that knows no configuration (a joiner): it never campaigns
        and waits for a leader whose configuration includes it.  Returns its RawNode."""
        if node_id in self.disks:
            raise ValueError(f"{node_id} exists already")
        self.disks[node_id] = DurableState()
        self.applied[node_id] = []
        self.read_states[node_id] = []
        self.reported[node_id] = []
        self.ids.append(node_id)
        self._boot(node_id)
        return self.nodes[node_id]

    def stop_node(self, node_id: NodeId) -> None:
        """Shut ``node_id`` down (its disk stays): it is no longer driven, messages from and to
        it are lost, and it can be started again with :meth:`start_node`."""
        self.ids.remove(node_id)
        del self.nodes[node_id]
        self.queue = [m for m in self.queue if m.dst != node_id and m.src != node_id]

    def start_node(self, node_id: NodeId) -> None:
        """Boot a stopped node again from its disk."""
        if node_id in self.nodes:
            raise ValueError(f"{node_id} is running")
        self.ids.append(node_id)
        self._boot(node_id)

    def change(self, voters: Sequence[NodeId], learners: Sequence[NodeId] = (), *,
               leader: NodeId | None = None, ticks: int = 3) -> int:
        """Propose a membership change at ``leader`` (default: the current leader), then
        stabilize and tick so the change completes and everyone learns the commit index.
        Returns the index of the proposed entry."""
        leader = leader or self.leader()
        if leader is None:
            raise AssertionError("no leader")
        index = self.nodes[leader].propose_membership(voters, learners)
        self.stabilize()
        self.tick_all(ticks)
        return index

    def configs(self, node_id: NodeId) -> list[Membership]:
        """The configurations of the CONFIG entries in the node's in-memory log, in order."""
        return [Membership.decode(e.data) for e in self.log(node_id)
                if e.kind == EntryKind.CONFIG]

    def take_snapshot(self, node_id: NodeId) -> SnapshotMeta:
        """Snapshot what ``node_id`` applied and compact its log (durably) behind it; the
        snapshot records the configuration in force at its index."""
        applied = self.applied[node_id]
        last = applied[-1]
        raw = self.nodes[node_id]
        meta = SnapshotMeta(last.index, last.term, raw.raft.memberships.at(last.index))
        self.disks[node_id].compact(meta, applied)
        self.snapshot_states[(meta.index, meta.term)] = list(applied)
        self.nodes[node_id].compact(meta, meta.index)
        return meta

    # -- faults ------------------------------------------------------------------------------

    def isolate(self, node_id: NodeId) -> None:
        for other in self.ids:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def partition(self, *groups: Iterable[NodeId]) -> None:
        group_of = {n: k for k, g in enumerate(groups) for n in g}
        for a in self.ids:
            for b in self.ids:
                if a != b and group_of.get(a) != group_of.get(b):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    def restart(self, node_id: NodeId) -> None:
        """Crash and restart: volatile state and undelivered messages to it are lost."""
        self.queue = [m for m in self.queue if m.dst != node_id and m.src != node_id]
        self._boot(node_id)

    # -- driving -----------------------------------------------------------------------------

    def process_ready(self, node_id: NodeId) -> bool:
        """Take one Ready from the node and handle all of it: send, persist, advance, apply."""
        rd = self.take_ready(node_id)
        if rd is None:
            return False
        self.persist_ready(node_id, rd)
        return True

    def take_ready(self, node_id: NodeId) -> Ready | None:
        """First half of ``process_ready``: take the Ready, send its ``messages`` at once and
        apply its committed entries, but do not persist it yet (a slow disk).  Pass the Ready
        to :meth:`persist_ready` later, in order."""
        node = self.nodes[node_id]
        if not node.has_ready():
            return None
        rd = node.ready()
        self._post(rd.messages)
        if rd.snapshot is not None:
            self.applied[node_id] = list(
                self.snapshot_states[(rd.snapshot.index, rd.snapshot.term)])
        self.applied[node_id].extend(rd.committed_entries)
        self.read_states[node_id].extend(rd.read_states)
        if rd.membership is not None:
            self.reported[node_id].append(rd.membership)
        return rd

    def persist_ready(self, node_id: NodeId, rd: Ready) -> None:
        """Second half of ``process_ready``: the write is durable; send the after-persist
        messages and step the self-addressed ones back in with ``advance``."""
        state = None
        if rd.snapshot is not None:
            state = self.snapshot_states[(rd.snapshot.index, rd.snapshot.term)]
        self.disks[node_id].persist(rd, state)
        self._post([m for m in rd.messages_after_persist if m.dst != node_id])
        self.nodes[node_id].advance(rd)

    def load(self, node_id: NodeId, terms: Sequence[int], *, term: int | None = None,
             vote: NodeId | None = None, commit: int = 0) -> None:
        """Replace a node's disk with a log whose entry ``k`` (1-based) has term ``terms[k-1]``
        (data ``b"<index>/<term>"``) and restart it from that disk."""
        entries = [Entry(i, t, 0, f"{i}/{t}".encode()) for i, t in enumerate(terms, start=1)]
        hard_term = max(terms, default=0) if term is None else term
        self.disks[node_id] = DurableState(HardState(hard_term, vote, commit), entries)
        self.restart(node_id)

    def log(self, node_id: NodeId) -> list[Entry]:
        """The node's whole in-memory log (stable and unstable entries)."""
        raft_log = self.nodes[node_id].raft.log
        return raft_log.slice(raft_log.first_index(), raft_log.last_index() + 1)

    def terms(self, node_id: NodeId) -> list[int]:
        """The terms of the node's in-memory log, in index order."""
        return [e.term for e in self.log(node_id)]

    def take(self, pred: Callable[[Message], bool]) -> list[Message]:
        """Remove and return the queued messages matching ``pred`` (to drop, reorder or
        deliver them by hand)."""
        taken = [m for m in self.queue if pred(m)]
        self.queue = [m for m in self.queue if not pred(m)]
        return taken

    def _post(self, messages: Iterable[Message]) -> None:
        for m in messages:
            self.sent.append(m)
            if (m.src, m.dst) not in self.cut and m.dst in self.nodes:
                self.queue.append(m)

    def deliver(self, m: Message) -> None:
        """Step ``m`` into its destination.  A SNAPSHOT message stands for a whole completed
        chunk transfer: the sender is told it succeeded (or failed, when the link is cut)."""
        if (m.src, m.dst) in self.cut or m.dst not in self.nodes:  # cut, or to a stopped node
            if m.kind is MessageKind.SNAPSHOT and m.src in self.nodes:
                self.nodes[m.src].report_snapshot(m.dst, ok=False)
            return
        self.nodes[m.dst].step(m)
        if m.kind is MessageKind.SNAPSHOT and m.src in self.nodes:
            self.nodes[m.src].report_snapshot(m.dst, ok=True)

    def stabilize(self, max_rounds: int = 100_000,
                  keep: Callable[[Message], bool] | None = None) -> None:
        """Process readys and deliver every queued message until nothing is left."""
        for _ in range(max_rounds):
            progressed = False
            for i in list(self.ids):
                progressed |= self.process_ready(i)
            if self.queue:
                batch, self.queue = self.queue, []
                for m in batch:
                    if keep is None or keep(m):
                        self.deliver(m)
                progressed = True
            if not progressed:
                return
        raise AssertionError("network did not stabilize")

    def tick_all(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            for i in self.ids:
                self.nodes[i].tick()
            self.stabilize()

    def elect(self, node_id: NodeId) -> None:
        self.nodes[node_id].campaign()
        self.stabilize()
        if self.nodes[node_id].status().role != "leader":
            raise AssertionError(f"{node_id} did not win: {self.nodes[node_id].status()}")

    def leader(self) -> NodeId | None:
        leaders = [i for i in self.ids if self.nodes[i].status().role == "leader"]
        return max(leaders, key=lambda i: self.nodes[i].status().term) if leaders else None

    def count(self, kind: MessageKind, **match: object) -> int:
        return sum(1 for m in self.sent if m.kind is kind
                   and all(getattr(m, k) == v for k, v in match.items()))

    def user_data(self, node_id: NodeId) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.kind == 0]
