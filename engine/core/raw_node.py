"""RawNode: the façade a driver uses to run one Raft core (after etcd's rawnode.go).

The Ready cycle: ``tick``, ``step``, ``propose``, ``read_index``, ``has_ready``, ``ready`` and
``advance``.  Leader operations: ``propose_membership``, ``transfer_leadership``, ``compact``,
``report_snapshot``; ``campaign`` for tests and tools.  Read-only views for drivers (``role``,
``term``, ``leader_id``, ``commit_index``, ``progress``, ...) and ``status()``.  RawNode owns the
Ready bookkeeping (the hard and soft state last handed out, so a Ready carries them only when
they changed); the :class:`~engine.core.raft.Raft` behind it is the core's internal state, which
drivers do not touch (the simulator's checkers and the core's own tests read it as ``raft``).
No IO happens here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.core.log import LogReader
from engine.core.messages import Message, MessageKind
from engine.core.raft import Raft, RaftOptions, Role
from engine.core.ready import Ready, SoftState
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
    recovering: bool = False  #: its latest response said it is recovering lost entries
    inflight_bytes: int = 0  #: payload bytes of the appends in flight


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
    recovering: Index = 0  #: see HardState.recovering (0: not recovering)


_APPEND_RESPONSE = MessageKind.APPEND_RESPONSE


class RawNode:
    """A Raft core plus the bookkeeping of handing out Readys.  One thread owns it."""

    def __init__(self, node_id: NodeId, voters: Sequence[NodeId] | Membership, *,
                 rng: random.Random,
                 options: RaftOptions | None = None, hard_state: HardState | None = None,
                 entries: Sequence[Entry] = (), applied: Index = 0,
                 snapshot: SnapshotMeta | None = None,
                 log_reader: LogReader | None = None) -> None:
        """See :class:`engine.core.raft.Raft`; ``entries`` and ``hard_state`` are what the
        node's durable stores hold, ``log_reader`` reads the log store back (it bounds the
        in-memory log by ``options.entry_cache_bytes``; without one every entry stays cached).

        Raises:
            ConfigError: when a voter sequence omits ``node_id``.
        """
        self.raft = Raft(node_id, voters, rng=rng, options=options, hard_state=hard_state,
                         entries=entries, applied=applied, snapshot=snapshot,
                         log_reader=log_reader)
        # The hard and soft state the last Ready handed out (what the driver already knows).
        self._prev_hard_state = hard_state or HardState()
        self._prev_soft_state = SoftState(self.raft.role, None, self.raft.term)

    @property
    def id(self) -> NodeId:
        """This node's id."""
        return self.raft.id

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.raft.tick()

    def set_clock_phase(self, subticks: int) -> None:
        """Say how many subticks (``options.subticks_per_tick`` to a tick) have passed since
        the last :meth:`tick`, before stepping messages: election timers restarted by them are
        then timed from that point, not from the tick.  Optional (0 when never called)."""
        self.raft.clock_phase = subticks

    def election_due(self) -> int | None:
        """Subticks after the last tick at which the election timer expires, if before the
        next tick; the driver then calls :meth:`expire_election` at that point."""
        return self.raft.election_due()

    def expire_election(self, subticks: int) -> None:
        """The sub-tick election timer armed from :meth:`election_due` fired, ``subticks``
        after the last tick; a no-op if a message restarted the timer meanwhile."""
        self.raft.expire_election(subticks)

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

    def set_disk_stalled(self, stalled: bool) -> None:
        """Report whether this node's durable writes are stalled (see
        :meth:`engine.core.raft.Raft.set_disk_stalled`)."""
        self.raft.set_disk_stalled(stalled)

    def has_ready(self) -> bool:
        """True when :meth:`ready` has work."""
        r = self.raft
        log = r.log
        prev_hard, prev_soft = self._prev_hard_state, self._prev_soft_state
        return bool(
            r._msgs or r._msgs_after_persist or r._read_states
            or log.handed < log.last_index() or log.has_committed_to_apply()
            or r._installed_snapshot is not None or r._compact_index
            or r._membership_changed
            or r.term != prev_hard.term or r.vote != prev_hard.vote
            or log.committed != prev_hard.commit or r.recovering != prev_hard.recovering
            or r.role is not prev_soft.role or r.leader_id != prev_soft.leader_id)

    def ready(self) -> Ready:
        """Take the pending work (see :mod:`engine.core.ready` for what to do with it)."""
        r = self.raft
        rd = Ready()
        hs = r.hard_state()
        if hs != self._prev_hard_state:
            rd.hard_state = hs
            self._prev_hard_state = hs
        ss = r.soft_state()
        if ss != self._prev_soft_state:
            rd.soft_state = ss
            self._prev_soft_state = ss
        rd.snapshot, r._installed_snapshot = r._installed_snapshot, None
        rd.compact_index, r._compact_index = r._compact_index, 0
        rd.entries = r.log.take_unpersisted()
        rd.messages, r._msgs = r._msgs, []
        rd.messages_after_persist, r._msgs_after_persist = r._msgs_after_persist, []
        if rd.entries:
            last = rd.entries[-1]
            rd.messages_after_persist.append(Message(
                kind=_APPEND_RESPONSE, src=r.id, dst=r.id, term=r.term,
                index=last.index, log_term=last.term))
        rd.committed_entries = r.log.take_committed(r.options.max_committed_per_ready)
        rd.read_states, r._read_states = r._read_states, []
        if r._membership_changed:
            rd.membership, r._membership_changed = r.membership, False
        return rd

    def advance(self, ready: Ready) -> None:
        """Tell the core that ``ready``'s entries and hard state are durable: steps back the
        self-addressed messages of ``ready.messages_after_persist``.  The driver sends the others
        itself.  Readys must be advanced in the order they were produced."""
        own_id = self.raft.id
        for m in ready.messages_after_persist:
            if m.dst == own_id:
                self.raft.step(m)

    # -- read-only views for drivers ------------------------------------------------------------

    @property
    def role(self) -> Role:
        """The current role."""
        return self.raft.role

    @property
    def term(self) -> Term:
        """The current term."""
        return self.raft.term

    @property
    def peers(self) -> tuple[NodeId, ...]:
        """The other members this node replicates to or votes with."""
        return self.raft.peers

    @property
    def heartbeat_elapsed(self) -> int:
        """Leader only: ticks since its last heartbeat round (0 in the tick that sent one)."""
        return self.raft.heartbeat_elapsed

    @property
    def disk_stalled(self) -> bool:
        """True while the driver reports this node's durable writes stalled."""
        return self.raft.disk_stalled

    @property
    def recovering(self) -> Index:
        """Nonzero while recovering lost entries (see HardState.recovering)."""
        return self.raft.recovering

    @property
    def leader_id(self) -> NodeId | None:
        """The leader this node knows of (None: unknown)."""
        return self.raft.leader_id

    @property
    def lead_transferee(self) -> NodeId | None:
        """Leader only: the node leadership is being handed to, if any."""
        return self.raft.lead_transferee

    @property
    def commit_index(self) -> Index:
        """The highest log index known to be committed."""
        return self.raft.log.committed

    @property
    def last_index(self) -> Index:
        """The index of the last entry in the log (the snapshot's index when the log is
        empty)."""
        return self.raft.log.last_index()

    @property
    def log_entries(self) -> int:
        """Entries held in the log after the compaction point."""
        return len(self.raft.log)

    @property
    def snapshot(self) -> SnapshotMeta | None:
        """The newest snapshot the core knows of (installed or taken locally), or None."""
        return self.raft.snapshot

    @property
    def membership_index(self) -> Index:
        """The log index of the configuration in force (0: the bootstrap one)."""
        return self.raft.memberships.current_index

    def peer_match(self, peer: NodeId) -> Index | None:
        """Leader only: the highest index known replicated on ``peer`` (None: not tracked)."""
        pr = self.raft.progress.get(peer)
        return pr.match if pr is not None else None

    def progress(self) -> dict[NodeId, PeerProgress]:
        """Leader only: each peer's replication progress ({} on other roles)."""
        r = self.raft
        if r.role is not Role.LEADER:
            return {}
        return self._peer_progress()

    def _peer_progress(self) -> dict[NodeId, PeerProgress]:
        r = self.raft
        recovering = r._recovering_peers
        return {peer: PeerProgress(pr.match, pr.next, pr.state.value, len(pr.inflights),
                                   pr.recent_active, peer in recovering, pr.inflights.bytes)
                for peer, pr in r.progress.items()}

    def status(self) -> CoreStatus:
        """A snapshot of the core's state."""
        r = self.raft
        return CoreStatus(
            id=r.id, role=r.role.value, term=r.term, vote=r.vote, leader_id=r.leader_id,
            commit_index=r.log.committed, applying_index=r.log.applying,
            stable_index=r.log.stable, last_log_index=r.log.last_index(),
            last_log_term=r.log.last_term(), snapshot_index=r.log.snapshot_index,
            log_entries=len(r.log), membership=r.membership,
            progress=self._peer_progress(), recovering=r.recovering)
