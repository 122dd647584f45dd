"""RawNode: the seven verbs a driver uses to run one Raft core (after etcd's rawnode.go).

``tick``, ``step``, ``propose``, ``read_index``, ``has_ready``, ``ready`` and ``advance``; plus
``campaign`` and ``status`` for tests and tools.  No IO happens here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.core.messages import Message
from engine.core.raft import Raft, RaftOptions
from engine.core.ready import Ready
from engine.membership import EMPTY_MEMBERSHIP, Membership
from engine.types import Entry, HardState, Index, NodeId, SnapshotMeta, Term


@dataclass(frozen=True, slots=True)
class PeerProgress:
    """What the leader knows of one peer's replication."""

    match: Index
    next: Index
    state: str
    inflight: int
    recent_active: bool


@dataclass(frozen=True, slots=True)
class CoreStatus:
    """A snapshot of one core's state."""

    id: NodeId
    role: str
    term: Term
    vote: NodeId | None
    leader_id: NodeId | None
    commit_index: Index
    applying_index: Index
    stable_index: Index
    last_log_index: Index
    last_log_term: Term
    snapshot_index: Index
    log_entries: int
    membership: Membership = EMPTY_MEMBERSHIP
    progress: dict[NodeId, PeerProgress] = field(default_factory=dict)


class RawNode:
    """A Raft core plus the bookkeeping of handing out Readys.  One thread owns it."""

    def __init__(self, node_id: NodeId, voters: Sequence[NodeId] | Membership, *,
                 rng: random.Random,
                 options: RaftOptions | None = None, hard_state: HardState | None = None,
                 entries: Sequence[Entry] = (), applied: Index = 0,
                 snapshot: SnapshotMeta | None = None) -> None:
        """See :class:`engine.core.raft.Raft`; ``entries`` and ``hard_state`` are what the
        node's durable stores hold.

        Raises:
            ConfigError: when a voter sequence omits ``node_id``.
        """
        self.raft = Raft(node_id, voters, rng=rng, options=options, hard_state=hard_state,
                         entries=entries, applied=applied, snapshot=snapshot)

    @property
    def id(self) -> NodeId:
        """This node's id."""
        return self.raft.id

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (as if the election timeout had elapsed)."""
        self.raft.campaign()

    def step(self, message: Message) -> None:
        """Feed one message received from a peer."""
        self.raft.step(message)

    def propose(self, commands: Sequence[bytes]) -> tuple[Index, Term]:
        """Propose commands as one batch; returns (first index, term).

        Raises:
            NotLeaderError: when this node is not the leader.
        """
        return self.raft.propose(commands)

    def read_index(self, context: int) -> None:
        """Ask for a linearizable read point, released in ``Ready.read_states``.

        Raises:
            NotLeaderError: when this node is not the leader.
        """
        self.raft.read_index(context)

    def compact(self, snapshot: SnapshotMeta, compact_index: Index) -> None:
        """A snapshot is durable; drop log entries up to ``compact_index`` (see Raft.compact)."""
        self.raft.compact(snapshot, compact_index)

    def report_snapshot(self, peer: NodeId, *, ok: bool) -> None:
        """The driver finished (``ok``) or abandoned sending the snapshot to ``peer``."""
        self.raft.report_snapshot(peer, ok=ok)

    def propose_membership(self, voters: Sequence[NodeId], learners: Sequence[NodeId] = (),
                           addresses: dict[NodeId, str] | None = None) -> Index:
        """Start a membership change (see Raft.propose_membership); returns the entry's index.

        Raises:
            NotLeaderError: not the leader.
            MembershipError: a change is in progress or the configuration is invalid.
        """
        return self.raft.propose_membership(voters, learners, addresses)

    @property
    def membership(self) -> Membership:
        """The configuration in force on this node."""
        return self.raft.membership

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to ``target`` (see Raft.transfer_leadership).

        Raises:
            NotLeaderError: not the leader.
            ValueError: ``target`` is not another voter.
        """
        self.raft.transfer_leadership(target)

    def has_ready(self) -> bool:
        """True when :meth:`ready` has work."""
        return self.raft.has_ready()

    def ready(self) -> Ready:
        """Take the pending work (see :mod:`engine.core.ready` for what to do with it)."""
        return self.raft.ready()

    def advance(self, ready: Ready) -> None:
        """Tell the core that ``ready``'s entries and hard state are durable: steps back the
        self-addressed messages of ``ready.messages_after_persist``.  The driver sends the others
        itself.  Readys must be advanced in the order they were produced."""
        own_id = self.raft.id
        for m in ready.messages_after_persist:
            if m.dst == own_id:
                self.raft.step(m)

    def status(self) -> CoreStatus:
        """A snapshot of the core's state."""
        r = self.raft
        return CoreStatus(
            id=r.id, role=r.role.value, term=r.term, vote=r.vote, leader_id=r.leader_id,
            commit_index=r.log.committed, applying_index=r.log.applying,
            stable_index=r.log.stable, last_log_index=r.log.last_index(),
            last_log_term=r.log.last_term(), snapshot_index=r.log.snapshot_index,
            log_entries=len(r.log), membership=r.membership,
            progress={peer: PeerProgress(pr.match, pr.next, pr.state.value, len(pr.inflights),
                                         pr.recent_active)
                      for peer, pr in r.progress.items()})
