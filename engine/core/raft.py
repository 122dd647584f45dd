"""Raft: the protocol as a deterministic state machine.

No threads, sockets, clocks or files: time advances only through :meth:`Raft.tick`, messages
arrive only through :meth:`Raft.step`, and everything the protocol wants done comes out of
:meth:`Raft.ready`.  The randomized election timeout is drawn from the ``random.Random`` the caller
passes in, so the same inputs and seed give the same outputs.

Structure (after etcd-io/raft): the ``become_*`` methods are the only places that change the role
and set ``self._step_role``/``self._tick_role``; :meth:`step` handles what is common to every role
(term comparison, votes) and dispatches the rest to one function per role.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import repeat
from operator import itemgetter
from typing import Any

from engine.core.log import LogReader, RaftLog
from engine.core.membership_log import MembershipLog
from engine.core.messages import CAMPAIGN_TRANSFER, Message, MessageKind, vote_response_kind
from engine.core.quorum import (
    VoteResult,
    joint_committed_index,
    joint_quorum_active,
    joint_vote_result,
)
from engine.core.read_only import ReadOnly
from engine.core.ready import ReadState, SoftState
from engine.core.tracker import Progress, ProgressState
from engine.errors import (
    ConfigError,
    InvariantError,
    MembershipChangeInProgress,
    MembershipError,
    NotLeaderError,
    ProposalDropped,
)
from engine.membership import Membership
from engine.types import Entry, EntryKind, HardState, Index, NodeId, SnapshotMeta, Term

logger = logging.getLogger(__name__)

APPEND = MessageKind.APPEND
APPEND_RESPONSE = MessageKind.APPEND_RESPONSE
HEARTBEAT = MessageKind.HEARTBEAT
HEARTBEAT_RESPONSE = MessageKind.HEARTBEAT_RESPONSE
VOTE = MessageKind.VOTE
VOTE_RESPONSE = MessageKind.VOTE_RESPONSE
PRE_VOTE = MessageKind.PRE_VOTE
PRE_VOTE_RESPONSE = MessageKind.PRE_VOTE_RESPONSE
SNAPSHOT = MessageKind.SNAPSHOT
TIMEOUT_NOW = MessageKind.TIMEOUT_NOW

# Responses whose meaning depends on this node's durable state (a granted vote, acknowledged
# entries, a term just adopted): they wait in Ready.messages_after_persist.
_AFTER_PERSIST = frozenset({APPEND_RESPONSE, VOTE_RESPONSE, PRE_VOTE_RESPONSE, HEARTBEAT_RESPONSE})

_data_of = itemgetter(3)
_new_tuple = tuple.__new__


class Role(StrEnum):
    """The role of a node; the value is what ``Status.role`` reports."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class RaftOptions:
    """Core settings, with time in ticks (the runtime converts seconds from Config).

    The randomized election timeout is drawn in *subticks* (``subticks_per_tick`` to a tick),
    uniformly from ``election_subticks_min`` to ``election_subticks_max`` inclusive, so a range
    narrower than a tick keeps its randomness (Config uses 1 us subticks).  Left at 0 they
    default to ``election_ticks_min * subticks_per_tick`` and ``election_ticks_max *
    subticks_per_tick - 1``: with one subtick per tick that is the classic whole-tick draw in
    ``[election_ticks_min, election_ticks_max)``.  See :meth:`Raft.election_due`.
    """

    heartbeat_ticks: int = 1
    election_ticks_min: int = 10
    election_ticks_max: int = 20
    subticks_per_tick: int = 1
    election_subticks_min: int = 0  #: 0: election_ticks_min * subticks_per_tick
    election_subticks_max: int = 0  #: 0: election_ticks_max * subticks_per_tick - 1 (inclusive)
    max_batch_entries: int = 1024
    max_batch_bytes: int = 1 << 20
    max_inflight: int = 64
    max_inflight_bytes: int = 32 << 20  #: 0: no byte limit (see Inflights)
    entry_cache_bytes: int = 64 << 20  #: see RaftLog; needs a log reader to take effect
    max_committed_per_ready: int = 8192
    pre_vote: bool = True
    check_quorum: bool = True
    fast_backup: bool = True

    def __post_init__(self) -> None:
        if self.heartbeat_ticks < 1:
            raise ConfigError(f"heartbeat_ticks={self.heartbeat_ticks} must be >= 1")
        if self.election_ticks_min <= self.heartbeat_ticks:
            raise ConfigError(f"election_ticks_min={self.election_ticks_min} must be > "
                              f"heartbeat_ticks={self.heartbeat_ticks}")
        if self.election_ticks_max <= self.election_ticks_min:
            raise ConfigError(f"election_ticks_max={self.election_ticks_max} must be > "
                              f"election_ticks_min={self.election_ticks_min}")
        if self.subticks_per_tick < 1:
            raise ConfigError(f"subticks_per_tick={self.subticks_per_tick} must be >= 1")
        if self.election_subticks_min == 0:
            object.__setattr__(self, "election_subticks_min",
                               self.election_ticks_min * self.subticks_per_tick)
        if self.election_subticks_max == 0:
            object.__setattr__(self, "election_subticks_max",
                               self.election_ticks_max * self.subticks_per_tick - 1)
        if self.election_subticks_min <= self.heartbeat_ticks * self.subticks_per_tick:
            raise ConfigError(f"election_subticks_min={self.election_subticks_min} must be > "
                              f"heartbeat_ticks * subticks_per_tick="
                              f"{self.heartbeat_ticks * self.subticks_per_tick}")
        if self.election_subticks_max < self.election_subticks_min:
            raise ConfigError(f"election_subticks_max={self.election_subticks_max} must be >= "
                              f"election_subticks_min={self.election_subticks_min}")
        for name in ("max_batch_entries", "max_batch_bytes", "max_inflight",
                     "max_committed_per_ready", "entry_cache_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_inflight_bytes < 0:
            raise ConfigError(f"max_inflight_bytes={self.max_inflight_bytes} must be >= 0")

    @classmethod
    def from_config(cls, config: Any) -> RaftOptions:
        """Options from an :class:`engine.config.Config` (seconds converted to ticks)."""
        return cls(
            heartbeat_ticks=config.heartbeat_ticks,
            election_ticks_min=config.election_ticks_min,
            election_ticks_max=config.election_ticks_max,
            subticks_per_tick=config.subticks_per_tick,
            election_subticks_min=config.election_subticks_min,
            election_subticks_max=config.election_subticks_max,
            max_batch_entries=config.max_batch_entries,
            max_batch_bytes=config.max_batch_bytes,
            max_inflight=config.max_inflight,
            max_inflight_bytes=config.max_inflight_bytes,
            entry_cache_bytes=config.entry_cache_bytes,
            pre_vote=config.pre_vote,
            check_quorum=config.check_quorum,
            fast_backup=config.fast_backup,
        )


class Raft:
    """One node's Raft state.  Not thread-safe: one driver thread owns it."""

    def __init__(self, node_id: NodeId, voters: Sequence[NodeId] | Membership, *,
                 rng: random.Random, options: RaftOptions | None = None,
                 hard_state: HardState | None = None, entries: Sequence[Entry] = (),
                 applied: Index = 0, snapshot: SnapshotMeta | None = None,
                 log_reader: LogReader | None = None) -> None:
        """Create a node from its durable state: ``hard_state``, the newest ``snapshot`` and the
        stable ``entries`` that follow it.

        ``log_reader`` reads back durable entries (the node's LogStore): with one, the log
        keeps only ``options.entry_cache_bytes`` of entries in memory (see
        :class:`~engine.core.log.RaftLog`); without, it keeps them all.

        ``voters`` is the bootstrap configuration, in force until the snapshot or a CONFIG entry
        says otherwise: a sequence of voter ids (this node among them), or a
        :class:`~engine.membership.Membership`, which may leave this node out (a learner, or an
        empty one for a node that joins an existing cluster and learns its configuration from
        the leader).

        Raises:
            ConfigError: when a voter sequence omits ``node_id`` or repeats ids.
        """
        if not isinstance(voters, Membership):
            if node_id not in voters:
                raise ConfigError(f"node_id={node_id!r} must be one of voters={sorted(voters)!r}")
            if len(set(voters)) != len(voters):
                raise ConfigError(f"voters={list(voters)!r} must not repeat")
            voters = Membership(voters)
        self.id: NodeId = node_id
        self.options = options or RaftOptions()
        self._rng = rng
        hard_state = hard_state or HardState()
        self.term: Term = hard_state.term
        self.vote: NodeId | None = hard_state.vote
        #: Nonzero while this node is *recovering* (see HardState.recovering): it lost entries it
        #: may have acknowledged, so it neither votes nor campaigns until a leader has given it
        #: back everything the leader holds.
        self.recovering: Index = hard_state.recovering
        #: Recovering only: a number drawn at boot that this node sends in its append responses
        #: and the leader echoes in its appends.  An append that echoes it was sent after the
        #: leader heard from this incarnation, so its ``leader_last`` covers every entry this
        #: node acknowledged before it lost them (a delayed or duplicated append from before
        #: the fault may not).
        self._recovery_nonce = rng.randrange(1, 1 << 63) if self.recovering else 0
        #: Recovering only: the index a fresh append of this term brought the log to, covering
        #: the leader's whole log; recovery ends once this node's own write reaches it.
        self._recovered_at: Index = 0
        #: Leader only: peers whose latest response said they are recovering (not counted
        #: towards commit or ReadIndex quorums), with the nonce to echo to each.
        self._recovering_peers: dict[NodeId, int] = {}
        #: The driver says this node's durable writes are stalled (see set_disk_stalled).
        self.disk_stalled = False
        #: The newest durable snapshot (what the leader sends to followers that need it).
        self.snapshot: SnapshotMeta | None = snapshot
        # A disk that lost entries can leave the durable commit index past the log (the node is
        # then recovering, see HardState.recovering); it can only know committed what it holds.
        held = entries[-1].index if entries else snapshot.index if snapshot is not None else 0
        committed = min(hard_state.commit, held)
        if snapshot is not None:
            self.log = RaftLog(entries, snapshot_index=snapshot.index,
                               snapshot_term=snapshot.term, committed=committed,
                               applied=max(applied, snapshot.index), reader=log_reader,
                               cache_bytes=self.options.entry_cache_bytes)
        else:
            self.log = RaftLog(entries, committed=committed, applied=applied, reader=log_reader,
                               cache_bytes=self.options.entry_cache_bytes)
        base = snapshot.membership if snapshot is not None and not snapshot.membership.is_empty \
            else voters
        self.memberships = MembershipLog(base, self.log.snapshot_index)
        self.memberships.observe(entries, self.log.term)
        #: The configuration in force and the peers it implies (every other member).
        self.membership: Membership = self.memberships.current
        self.peers: tuple[NodeId, ...] = ()
        #: Leader only: peers that the configuration in force leaves out but the committed one
        #: has (in ``peers`` until the configuration in force commits; see :meth:`_set_peers`).
        self._departing: tuple[NodeId, ...] = ()
        self._membership_changed = False  # for the next Ready
        #: Leader only: index of the newest CONFIG entry that may not be committed yet; a
        #: membership change is refused until the commit index reaches it.
        self.pending_config_index: Index = 0
        self._installed_snapshot: SnapshotMeta | None = None  # for the next Ready
        self._compact_index: Index = 0  # for the next Ready
        self.leader_id: NodeId | None = None
        self.role = Role.FOLLOWER
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        #: Leader only: the node leadership is being handed to (proposals are refused meanwhile).
        self.lead_transferee: NodeId | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        #: Sub-tick election timer (see :meth:`election_due`): subticks since the last tick
        #: (an input the driver sets, 0 at every tick), the drawn timeout in subticks, the phase
        #: at which the timer last restarted, and the deadline in subticks after the tick that
        #: preceded that restart.
        self.clock_phase = 0
        self._election_draw = 0
        self._election_phase = 0
        self._election_deadline = 0
        self.read_only = ReadOnly()
        # ReadIndex requests that arrived before this leader committed an entry of its term.
        self._pending_read_contexts: list[int] = []
        self._msgs: list[Message] = []
        self._msgs_after_persist: list[Message] = []
        self._read_states: list[ReadState] = []
        self._step_role = self._step_follower
        self._tick_role = self._tick_election
        self._set_membership(self.membership)
        self._membership_changed = False  # the driver reads the initial one from the core
        if self.recovering and self.membership.voters == (self.id,) \
                and not self.membership.is_joint:
            # No peer holds a copy to give back: the entries are gone for good.  Waiting would
            # only make the cluster unavailable forever; say so loudly and go on.
            logger.error("%s lost entries up to %d that it may have acknowledged, and it is the "
                         "only voter: no peer can restore them; continuing without them",
                         self.id, self.recovering)
            self.recovering = 0
        self.become_follower(self.term, None)

    # -- role transitions --------------------------------------------------------------------

    def _reset(self, term: Term) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
            self._recovered_at = 0  # only the leader of one term vouches for its own log
        self._recovering_peers = {}
        self.leader_id = None
        self.heartbeat_elapsed = 0
        options = self.options
        self._election_draw = self._rng.randrange(options.election_subticks_min,
                                                  options.election_subticks_max + 1)
        self._restart_election_timer()
        self.votes = {}
        self.read_only.clear()
        self._pending_read_contexts.clear()
        self.lead_transferee = None

    def become_follower(self, term: Term, leader_id: NodeId | None) -> None:
        """Follow ``leader_id`` (None when unknown) in ``term``."""
        self._step_role = self._step_follower
        self._tick_role = self._tick_election
        self._reset(term)
        self.leader_id = leader_id
        self.role = Role.FOLLOWER
        self.progress = {}
        if self._departing:
            self._set_peers()

    def become_pre_candidate(self) -> None:
        """Start a pre-vote round: neither the term nor the vote changes.

        Raises:
            InvariantError: when called on a leader.
        """
        if self.role is Role.LEADER:
            raise InvariantError("leader -> pre-candidate")
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election
        self.votes = {}
        self.leader_id = None
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        """Start an election in a new term, voting for itself.

        Raises:
            InvariantError: when called on a leader.
        """
        if self.role is Role.LEADER:
            raise InvariantError("leader -> candidate")
        self._step_role = self._step_candidate
        self._tick_role = self._tick_election
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        """Take office: reset follower progress and append the no-op of this term.

        Raises:
            InvariantError: when called on a follower (a leader must be elected first).
        """
        if self.role is Role.FOLLOWER:
            raise InvariantError("follower -> leader")
        self._step_role = self._step_leader
        self._tick_role = self._tick_heartbeat
        self._reset(self.term)
        self.leader_id = self.id
        self.role = Role.LEADER
        self._set_peers()
        next_index = self.log.last_index() + 1
        max_inflight, max_bytes = self.options.max_inflight, self.options.max_inflight_bytes
        self.progress = {v: Progress(next_index, max_inflight, max_inflight_bytes=max_bytes)
                         for v in self.peers}
        own = self.progress[self.id] = Progress(next_index, max_inflight)
        own.match = self.log.stable
        own.become_replicate()
        own.recent_active = True
        # Any CONFIG entry in the log may be uncommitted: no new change until this term's no-op
        # commits (it commits everything before it).
        self.pending_config_index = next_index
        self.log.append([Entry(next_index, self.term, EntryKind.NOOP, b"")])
        logger.info("%s became leader at term %d", self.id, self.term)

    # -- time --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.clock_phase = 0
        self._tick_role()

    def _restart_election_timer(self) -> None:
        """Start the election timer again at the current clock phase, with the timeout drawn
        at the last reset (``randomized_election_timeout`` is the tick it expires at when the
        driver only ticks)."""
        self.election_elapsed = 0
        self._election_phase = phase = self.clock_phase
        self._election_deadline = deadline = self._election_draw + phase
        self.randomized_election_timeout = -(-deadline // self.options.subticks_per_tick)

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout and self._may_campaign():
            self._restart_election_timer()
            self.campaign()

    def election_due(self) -> int | None:
        """Subticks after the last tick at which the election timer expires, when that falls
        before the next tick (None otherwise, and on a leader or a node that may not campaign).

        A driver that only ticks sees the timeout at the next tick; one that wants the drawn
        resolution (the runtime) calls :meth:`expire_election` at that point of the tick."""
        elapsed = self.election_elapsed
        if self.role is Role.LEADER or elapsed != self.randomized_election_timeout - 1:
            return None
        per_tick = self.options.subticks_per_tick
        offset = self._election_deadline - elapsed * per_tick
        if not 0 < offset < per_tick or not self._may_campaign():
            return None
        return offset

    def expire_election(self, phase: int) -> None:
        """The driver's sub-tick election timer fired ``phase`` subticks after the last tick:
        campaign if the timer still expires by then (a message may have restarted it)."""
        self.clock_phase = phase
        if (self.role is not Role.LEADER
                and self.election_elapsed == self.randomized_election_timeout - 1
                and self.election_elapsed * self.options.subticks_per_tick + phase
                >= self._election_deadline
                and self._may_campaign()):
            self._restart_election_timer()
            self.campaign()

    def _may_campaign(self) -> bool:
        """A node that cannot start an election (a learner, a joiner, a recovering node, one
        whose disk is stalled) keeps counting instead of restarting its timer, so that its
        CheckQuorum lease (see :meth:`_in_leader_lease`) runs out once its leader is silent and
        it answers other candidates (as etcd's tickElection)."""
        return self.promotable() and not self.recovering and not self.disk_stalled

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.options.election_ticks_min:
            self.election_elapsed = 0
            if self.lead_transferee is not None:
                logger.info("%s: leadership transfer to %s timed out", self.id,
                            self.lead_transferee)
                self.lead_transferee = None
            if self.options.check_quorum:
                if not self._quorum_active():
                    logger.info("%s steps down at term %d: no quorum heard (CheckQuorum)",
                                self.id, self.term)
                    self.become_follower(self.term, None)
                    return
                for peer_id, pr in self.progress.items():
                    if peer_id != self.id:
                        pr.recent_active = False
        if self.heartbeat_elapsed >= self.options.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self.read_only.last_context())

    def _quorum_active(self) -> bool:
        active = {v for v, pr in self.progress.items() if pr.recent_active or v == self.id}
        return joint_quorum_active(self.membership.voters, self.membership.outgoing, active)

    def promotable(self) -> bool:
        """True when this node's vote counts in the configuration in force (so it may campaign);
        learners, removed nodes and joiners that know no configuration yet are not."""
        return self.membership.can_vote(self.id)

    # -- elections -----------------------------------------------------------------------------

    def campaign(self) -> None:
        """Start an election (a pre-vote round first when PreVote is on).  No-op on a leader
        and on a node that cannot vote (see :meth:`promotable`)."""
        if self.role is Role.LEADER or not self.promotable():
            return
        if self.recovering:
            logger.info("%s does not campaign: it is recovering entries up to %d it may have "
                        "acknowledged", self.id, self.recovering)
            return
        if self.disk_stalled:
            logger.info("%s does not campaign: its disk is stalled", self.id)
            return
        if self.options.pre_vote:
            self._campaign(PRE_VOTE)
        else:
            self._campaign(VOTE)

    def _campaign(self, kind: MessageKind, *, transfer: bool = False) -> None:
        if kind is PRE_VOTE:
            self.become_pre_candidate()
            vote_term = self.term + 1
            # A pre-vote changes no state, so the node's own grant counts at once.
            self.votes[self.id] = True
            if self._tally() is not VoteResult.PENDING:
                return
        else:
            self.become_candidate()
            vote_term = self.term
            # The node's own vote counts only once it is durable: it goes through the
            # after-persist queue like any vote grant.
            self._send(VOTE_RESPONSE, self.id, term=vote_term)
        last_index, last_term = self.log.last_index(), self.log.last_term()
        membership = self.membership
        for peer in self.peers:
            if membership.can_vote(peer):
                self._send(kind, peer, term=vote_term, index=last_index, log_term=last_term,
                           context=CAMPAIGN_TRANSFER if transfer else 0)

    def _tally(self) -> VoteResult:
        """Count votes; on a decision, act on it.  Returns the result."""
        result = joint_vote_result(self.membership.voters, self.membership.outgoing, self.votes)
        if result is VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(VOTE)
            else:
                self.become_leader()
                self._broadcast_append()
        elif result is VoteResult.LOST:
            self.become_follower(self.term, None)
        return result

    def _handle_vote_request(self, m: Message) -> None:
        if self.recovering:
            # It may have acknowledged entries its log lost: a vote could elect a leader that
            # lacks a committed entry (CTRL, FAST'18).  Refuse until a leader restores them.
            self._send(vote_response_kind(m.kind), m.src, term=self.term, reject=True)
            return
        can_vote = (self.vote == m.src
                    or (self.vote is None and self.leader_id is None)
                    or (m.kind is PRE_VOTE and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A pre-vote grant is answered in the candidate's future term; a vote grant in the
            # (now equal) current term.
            self._send(vote_response_kind(m.kind), m.src, term=m.term)
            if m.kind is VOTE:
                self._restart_election_timer()
                self.vote = m.src
        else:
            self._send(vote_response_kind(m.kind), m.src, term=self.term, reject=True)

    # -- the step function -------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Process one message from a peer (or a self-addressed message from ``Ready``)."""
        if m.src == self.id and m.kind is APPEND_RESPONSE:
            self._on_persisted(m.index, m.log_term)
            self._after_commit()
            return
        if m.term > self.term:
            if ((m.kind is VOTE or m.kind is PRE_VOTE) and self._in_leader_lease()
                    and not (m.kind is VOTE and m.context == CAMPAIGN_TRANSFER)):
                # CheckQuorum's lease: we heard from a live leader recently, so this candidate
                # is disruptive (a rejoining node, say).  Ignore it.
                return
            if m.kind is PRE_VOTE or (m.kind is PRE_VOTE_RESPONSE and not m.reject):
                pass  # pre-votes never change the term: that is their whole point
            elif m.kind is APPEND or m.kind is HEARTBEAT or m.kind is SNAPSHOT:
                self.become_follower(m.term, m.src)
            else:
                self.become_follower(m.term, None)
        elif m.term < self.term:
            if ((self.options.check_quorum or self.options.pre_vote)
                    and (m.kind is APPEND or m.kind is HEARTBEAT or m.kind is SNAPSHOT)):
                # A stale leader (e.g. back from a partition) learns our term and steps down.
                # Without this it could keep a PreVote/CheckQuorum cluster from electing.
                self._send(APPEND_RESPONSE, m.src, term=self.term)
            elif m.kind is PRE_VOTE:
                self._send(PRE_VOTE_RESPONSE, m.src, term=self.term, reject=True)
            return
        if m.kind is VOTE or m.kind is PRE_VOTE:
            self._handle_vote_request(m)
            return
        self._step_role(m)
        if self.role is Role.LEADER:
            self._after_commit()

    def _in_leader_lease(self) -> bool:
        if not self.options.check_quorum or self.leader_id is None:
            return False
        options = self.options
        elapsed = (self.election_elapsed * options.subticks_per_tick + self.clock_phase
                   - self._election_phase)
        return elapsed < options.election_subticks_min

    def _step_follower(self, m: Message) -> None:
        if m.kind is APPEND:
            self._restart_election_timer()
            self.leader_id = m.src
            self._handle_append(m)
        elif m.kind is HEARTBEAT:
            self._restart_election_timer()
            self.leader_id = m.src
            self._handle_heartbeat(m)
        elif m.kind is SNAPSHOT:
            self._restart_election_timer()
            self.leader_id = m.src
            self._handle_snapshot(m)
        elif (m.kind is TIMEOUT_NOW and self.promotable() and not self.recovering
              and not self.disk_stalled):
            logger.info("%s campaigns at once: %s hands over leadership", self.id, m.src)
            self._campaign(VOTE, transfer=True)

    def _step_candidate(self, m: Message) -> None:
        if m.kind is APPEND or m.kind is HEARTBEAT or m.kind is SNAPSHOT:
            self.become_follower(m.term, m.src)
            self._step_follower(m)
        elif (m.kind is VOTE_RESPONSE and self.role is Role.CANDIDATE) or (
                m.kind is PRE_VOTE_RESPONSE and self.role is Role.PRE_CANDIDATE):
            self.votes.setdefault(m.src, not m.reject)
            self._tally()

    def _step_leader(self, m: Message) -> None:
        if m.kind is APPEND_RESPONSE:
            self._handle_append_response(m)
        elif m.kind is HEARTBEAT_RESPONSE:
            self._handle_heartbeat_response(m)

    # -- follower side of replication -------------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(APPEND_RESPONSE, m.src, index=log.committed)
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            if m.entries and self.memberships.observe(m.entries, log.term):
                self._set_membership(self.memberships.current)
            if (self.recovering and m.context == self._recovery_nonce
                    and last_new >= m.leader_last):
                # The log now matches the leader's whole log as it was when it sent this, after
                # it heard from this incarnation: that log holds every entry this node
                # acknowledged to it, and every entry committed before its term (Leader
                # Completeness).
                self._recovered_at = max(self._recovered_at, last_new)
                self._maybe_finish_recovering()
            self._send(APPEND_RESPONSE, m.src, index=last_new)
            return
        last = log.last_index()
        if m.index > last:
            conflict_term, hint = 0, last + 1
        else:
            conflict_term = log.term(m.index) or 0
            hint = max(log.first_index_of_term_at(m.index), log.committed + 1)
        self._send(APPEND_RESPONSE, m.src, index=m.index, reject=True, reject_hint=hint,
                   conflict_term=conflict_term)

    def _handle_heartbeat(self, m: Message) -> None:
        last = self.log.last_index()
        self.log.commit_to(min(m.commit, last))
        # m.index is the last index the leader had sent us before this heartbeat.  Lacking it
        # means an append was lost: say so, and the leader falls back to probing.
        self._send(HEARTBEAT_RESPONSE, m.src, context=m.context, reject=m.index > last)

    def _handle_snapshot(self, m: Message) -> None:
        """Install a snapshot that the runtime has received in full and verified (Figure 13)."""
        log = self.log
        if m.index <= log.committed:
            self._send(APPEND_RESPONSE, m.src, index=log.committed)
            return
        membership = Membership.decode(m.data) if m.data else Membership()
        if membership.is_empty:
            # The sender did not know the configuration there: a node that joined with no
            # configuration and got the log from index 1 knows none before the first CONFIG
            # entry, so none is committed up to the snapshot and the bootstrap configuration
            # is in force there, which is this node's base (as when booting from such a
            # snapshot: see __init__).
            membership = self.memberships.base
        meta = SnapshotMeta(m.index, m.log_term, membership)
        log.restore(m.index, m.log_term)
        if self.memberships.restore(membership, m.index, log.term):
            self._set_membership(self.memberships.current)
        self.snapshot = meta
        self._installed_snapshot = meta
        logger.info("%s installed snapshot %d/%d from %s", self.id, m.log_term, m.index, m.src)
        # Acknowledge the snapshot only: a kept suffix is matched (or cut) by the next append,
        # so the leader never counts entries it has not itself checked.
        self._send(APPEND_RESPONSE, m.src, index=m.index)

    # -- snapshots taken locally -------------------------------------------------------------

    def compact(self, snapshot: SnapshotMeta, compact_index: Index) -> None:
        """A snapshot covering ``snapshot`` is durable: remember it (it is what followers that
        fall behind the log will be sent) and drop log entries up to ``compact_index``
        (``<= snapshot.index``; keeping a tail lets slightly lagging followers catch up from the
        log instead of a snapshot).

        Raises:
            InvariantError: the snapshot is ahead of what was applied, or compact_index is ahead
                of the snapshot.
        """
        if compact_index > snapshot.index:
            raise InvariantError(f"compact_index {compact_index} > snapshot {snapshot.index}")
        if snapshot.index > self.log.applying:
            raise InvariantError(f"snapshot {snapshot.index} ahead of applied {self.log.applying}")
        if self.snapshot is None or snapshot.index > self.snapshot.index:
            self.snapshot = snapshot
        if compact_index > self.log.snapshot_index:
            self.log.compact(compact_index)
            self.memberships.compact(compact_index)
            self._compact_index = compact_index

    def report_snapshot(self, peer: NodeId, *, ok: bool) -> None:
        """The runtime finished (ok) or gave up (not ok) sending a snapshot to ``peer``."""
        pr = self.progress.get(peer) if self.role is Role.LEADER else None
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        pending = pr.pending_snapshot
        pr.become_probe()
        if ok:
            pr.next = max(pr.next, pending + 1)
        # Wait for the next heartbeat response (or the follower's ack) before trying again.
        pr.probe_sent = True

    def _send_snapshot(self, peer: NodeId, pr: Progress) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            raise InvariantError(f"{peer} needs compacted entries but there is no snapshot")
        pr.become_snapshot(snapshot.index)
        self._send(SNAPSHOT, peer, index=snapshot.index, log_term=snapshot.term,
                   data=snapshot.membership.encode())
        logger.info("%s sends snapshot %d/%d to %s", self.id, snapshot.term, snapshot.index, peer)

    # -- leader side of replication ----------------------------------------------------------

    def propose(self, commands: Sequence[bytes]) -> tuple[Index, Term]:
        """Append user commands to the leader's log and send them.

        Returns the index of the first new entry and the term they were proposed in; entry
        ``k`` of ``commands`` gets index ``first + k``.

        Raises:
            NotLeaderError: when this node is not the leader.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        first = self.log.last_index() + 1
        if commands:
            # tuple.__new__(Entry, fields) builds each Entry in C; calling the NamedTuple class
            # goes through a Python-level __new__ per entry (2-3x slower for a 256-entry batch).
            self.log.append(list(map(_new_tuple, repeat(Entry), zip(
                range(first, first + len(commands)), repeat(self.term),
                repeat(EntryKind.NORMAL), commands))))
            self._broadcast_append()
            self._after_commit()
        return first, self.term

    def _broadcast_append(self) -> None:
        for peer in self.peers:
            self._send_appends(peer, allow_empty=True)
        if not self.peers:
            self._maybe_commit()

    def _send_appends(self, peer: NodeId, *, allow_empty: bool) -> None:
        """Send as many appends to ``peer`` as its window allows (at least one if
        ``allow_empty``, to carry the commit index)."""
        pr = self.progress[peer]
        log = self.log
        options = self.options
        while not pr.is_paused():
            next_index = pr.next
            prev_term = log.term(next_index - 1)
            if prev_term is None:
                self._send_snapshot(peer, pr)
                return
            entries = log.slice(next_index, next_index + options.max_batch_entries,
                                options.max_batch_bytes)
            if not entries and not allow_empty:
                return
            size = sum(map(len, map(_data_of, entries)))
            if size > options.max_batch_bytes and len(entries) > 1:
                entries, size = self._limit_bytes(entries)
            self._send(APPEND, peer, index=next_index - 1, log_term=prev_term, entries=entries,
                       commit=log.committed, leader_last=log.last_index(),
                       context=self._recovering_peers.get(peer, 0)
                       if self._recovering_peers else 0)
            pr.sent_append(len(entries), next_index - 1 + len(entries), size)
            if not entries or pr.state is not ProgressState.REPLICATE:
                return
            allow_empty = False

    def _limit_bytes(self, entries: list[Entry]) -> tuple[list[Entry], int]:
        """The longest prefix of ``entries`` within max_batch_bytes of payload (at least one
        entry), and its payload size."""
        limit = self.options.max_batch_bytes
        total = 0
        for count, entry in enumerate(entries):
            size = len(entry.data)
            if total + size > limit:
                return (entries[:count], total) if count else (entries[:1], size)
            total += size
        return entries, total

    def _broadcast_heartbeat(self, context: int) -> None:
        committed = self.log.committed
        for peer in self.peers:
            pr = self.progress[peer]
            self._send(HEARTBEAT, peer, commit=min(pr.match, committed), index=pr.next - 1,
                       context=context)

    def _note_recovering(self, peer: NodeId, m: Message) -> None:
        """Leader: track whether ``peer`` said it is recovering (see :attr:`recovering`), and
        the nonce its append responses carry."""
        peers = self._recovering_peers
        if m.recovering:
            if peer not in peers:
                logger.info("%s: %s is recovering lost entries; not counted towards commit "
                            "or read quorums until it has them back", self.id, peer)
                peers[peer] = 0
            if m.kind is APPEND_RESPONSE and m.context:
                peers[peer] = m.context
        elif peer in peers:
            del peers[peer]
            self._maybe_commit()  # its match counts again

    def _handle_append_response(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.recovering or self._recovering_peers:
            self._note_recovering(m.src, m)
        if m.reject:
            self._handle_rejection(pr, m)
            return
        was_paused = pr.is_paused()
        if pr.maybe_update(m.index):
            if pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                pr.become_probe()
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            # Followers learn the new commit index from the next append or heartbeat; an empty
            # append per commit would double the message count for no client-visible gain.
            self._maybe_commit()
            self._send_appends(m.src, allow_empty=False)
            if m.src == self.lead_transferee and pr.match == self.log.last_index():
                self._send(TIMEOUT_NOW, m.src)
        elif was_paused:
            self._send_appends(m.src, allow_empty=False)

    def _handle_rejection(self, pr: Progress, m: Message) -> None:
        if 0 < m.reject_hint <= pr.match:
            # The peer lacks an entry it acknowledged: its log shrank (a lost tail, a deleted
            # segment, a restore from backup).  Start over from what it says it holds; a stale
            # rejection that reordering delivered late costs a resend, nothing more.
            logger.warning("%s: %s no longer holds entries it acknowledged (match %d, it has "
                           "up to %d); resending from there", self.id, m.src, pr.match,
                           m.reject_hint - 1)
            pr.reset_match(m.reject_hint - 1)
            self._send_appends(m.src, allow_empty=True)
            return
        if self.options.fast_backup:
            next_hint = m.reject_hint
            if m.conflict_term:
                own_last = self.log.last_index_of_term(m.conflict_term, m.index)
                if own_last is not None:
                    next_hint = own_last + 1
        else:
            next_hint = m.index  # classic Raft: back up by one entry per round trip
        if pr.maybe_decrease_to(m.index, next_hint):
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
                pr.next = max(pr.match + 1, min(m.index, next_hint))
            self._send_appends(m.src, allow_empty=True)

    def _handle_heartbeat_response(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.recovering or self._recovering_peers:
            self._note_recovering(m.src, m)
        if m.reject and pr.state is ProgressState.REPLICATE:
            pr.become_probe()  # an append in flight was lost; resend from the known match
        pr.probe_sent = False
        if pr.match < self.log.last_index() or m.reject or m.recovering:
            # Alive but behind.  If acks (or appends) in flight were lost, nothing else would
            # resend (next already points past them): free a window slot and send from next,
            # even an empty append, which the follower acks (match catches up) or rejects
            # (-> probe).  Also when it lacks what it acknowledged (its log shrank: the
            # append's rejection resets it) or is recovering (the append ends its recovery).
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            self._send_appends(m.src, allow_empty=True)
        if m.context and not m.recovering:
            acks = self.read_only.ack(m.context, m.src)
            if acks is not None and joint_vote_result(
                    self.membership.voters, self.membership.outgoing,
                    dict.fromkeys(acks, True)) is VoteResult.WON:
                self._read_states.extend(self.read_only.release_through(m.context))

    def _on_persisted(self, index: Index, term: Term) -> None:
        """This node's own write up to (index, term) is durable."""
        self.log.stable_to(index, term)
        if self._recovered_at:
            self._maybe_finish_recovering()
        if self.role is Role.LEADER:
            own = self.progress[self.id]
            if own.maybe_update(self.log.stable):
                self._maybe_commit()

    def _maybe_finish_recovering(self) -> None:
        """End recovery once the entries that brought the log up to the leader's are durable
        here (until then a crash would lose them again; the durable mark stays meanwhile)."""
        if self.recovering and self._recovered_at and self.log.stable >= self._recovered_at:
            logger.info("%s has its lost entries back (log matches the leader's up to %d): "
                        "it votes and counts again", self.id, self._recovered_at)
            self.recovering = 0
            self._recovered_at = 0

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum matches, counting only entries of the
        current term (Figure 8).  Returns True when it moved."""
        recovering = self._recovering_peers
        index = joint_committed_index(
            self.membership.voters, self.membership.outgoing,
            {v: 0 if v in recovering else pr.match for v, pr in self.progress.items()}
            if recovering else {v: pr.match for v, pr in self.progress.items()})
        if index <= self.log.committed or self.log.term(index) != self.term:
            return False
        first_of_term = self.log.committed < index and not self._committed_in_term_before()
        self.log.commit_to(index)
        if first_of_term and self._pending_read_contexts:
            contexts, self._pending_read_contexts = self._pending_read_contexts, []
            for context in contexts:
                self.read_index(context)
        return True

    def _committed_in_term_before(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    # -- membership changes ------------------------------------------------------------------

    def propose_membership(self, voters: Sequence[NodeId], learners: Sequence[NodeId] = (),
                           addresses: dict[NodeId, str] | None = None) -> Index:
        """Start moving to a configuration of ``voters`` and ``learners``.

        When the voter set changes this appends the joint configuration C_old,new; once that
        commits the leader appends C_new by itself (see :meth:`_after_commit`).  A change of
        learners only is appended directly.  ``addresses`` add to the address book.  Returns the
        index of the appended entry; the change is complete when a non-joint configuration at or
        after it is committed (:attr:`membership` not joint and ``commit >=
        memberships.current_index``).

        Raises:
            NotLeaderError: not the leader.
            MembershipError: a change is in progress (joint, or a CONFIG entry not yet
                committed), a leadership transfer is in progress, or the configuration is
                invalid or identical to the current one.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.lead_transferee is not None:
            raise MembershipError(f"leadership is being transferred to {self.lead_transferee}")
        if self.membership.is_joint or self.pending_config_index > self.log.committed:
            raise MembershipChangeInProgress(
                f"a membership change is in progress: configuration entry "
                f"{max(self.pending_config_index, self.memberships.current_index)} is not "
                f"committed or the cluster is still joint ({self.membership.describe()})")
        try:
            changed = self.membership.change_to(voters, learners, addresses)
        except ValueError as exc:
            raise MembershipError(str(exc)) from None
        return self._append_config(changed)

    def _append_config(self, membership: Membership) -> Index:
        index = self.log.last_index() + 1
        entry = Entry(index, self.term, EntryKind.CONFIG, membership.encode())
        self.log.append([entry])
        self.memberships.observe([entry], self.log.term)
        self._set_membership(self.memberships.current)
        self.pending_config_index = index
        logger.info("%s appends configuration %d: %s", self.id, index, membership.describe())
        self._broadcast_append()
        return index

    def _set_membership(self, membership: Membership) -> None:
        """Put ``membership`` in force: peers, and on a leader the progress of each member."""
        self.membership = membership
        self._membership_changed = True
        self._set_peers()
        self._sync_progress()
        if self.lead_transferee is not None and not membership.can_vote(self.lead_transferee):
            self.lead_transferee = None

    def _set_peers(self) -> None:
        """``peers``: every other member of the configuration in force.  A leader whose
        configuration is not committed yet also keeps replicating to the members of the
        committed one that it leaves out (``_departing``), until it commits: that is how a
        removed voter receives the C_new entry that removes it (otherwise it would stay in
        C_old,new, where it is still a voter, and campaign forever)."""
        members = self.membership.members()
        departing: tuple[NodeId, ...] = ()
        if self.role is Role.LEADER and self.log.committed < self.memberships.current_index:
            departing = tuple(p for p in self.memberships.at(self.log.committed).members()
                              if p != self.id and p not in members)
        self._departing = departing
        self.peers = tuple(p for p in members if p != self.id) + departing

    def _sync_progress(self) -> None:
        """Leader: new peers get a Progress, dropped ones lose theirs."""
        if self.role is not Role.LEADER:
            return
        next_index = self.log.last_index() + 1
        for peer in self.peers:
            if peer not in self.progress:
                pr = self.progress[peer] = Progress(
                    next_index, self.options.max_inflight,
                    max_inflight_bytes=self.options.max_inflight_bytes)
                pr.recent_active = True  # give a new member an election timeout to answer
        for peer in [p for p in self.progress if p != self.id and p not in self.peers]:
            del self.progress[peer]

    def _after_commit(self) -> None:
        """Leader: act on a committed configuration.  A committed joint configuration is
        followed by C_new at once; a committed configuration that leaves this leader out (or
        makes it a learner) ends its term: it hands over to the most up-to-date voter and steps
        down (thesis 4.2.2)."""
        membership = self.membership
        if self.role is not Role.LEADER or (not membership.outgoing and not self._departing
                                             and self.id in membership.voters):
            return  # the common case: nothing to do
        if self.log.committed < self.memberships.current_index:
            return
        if self._departing:
            self._set_peers()  # committed: stop replicating to the members it removed
            self._sync_progress()
        if membership.is_joint:
            self._append_config(membership.leave_joint())
            return
        if self.id in membership.voters:
            return
        last = self.log.last_index()
        candidates = [(pr.match, peer) for peer, pr in self.progress.items()
                      if peer != self.id and membership.can_vote(peer)]
        if candidates:
            match, successor = max(candidates)
            if match == last:
                self._send(TIMEOUT_NOW, successor)
        logger.info("%s steps down: not a voter of the committed configuration (%s)", self.id,
                    membership.describe())
        self.become_follower(self.term, None)

    # -- gray failures -----------------------------------------------------------------------

    def set_disk_stalled(self, stalled: bool) -> None:
        """The driver's verdict on this node's disk: True when a durable write has been running
        for longer than it allows (a gray failure), False once writes complete again.  While
        stalled the node does not lead (a leader steps down at once: nothing it appends would
        become durable here, and a leader with a sick disk keeps its followers from electing a
        healthy one), campaign or take over a transfer; it still votes and follows."""
        if stalled == self.disk_stalled:
            return
        self.disk_stalled = stalled
        if not stalled:
            logger.info("%s: its disk answers again", self.id)
            return
        if self.role is Role.LEADER:
            logger.warning("%s steps down at term %d: its disk is stalled", self.id, self.term)
            self.become_follower(self.term, None)
        else:
            logger.warning("%s: its disk is stalled; it will not campaign", self.id)

    # -- leadership transfer -----------------------------------------------------------------

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to ``target`` (thesis section 3.10): stop accepting proposals, bring
        the target's log up to date, then tell it to campaign at once (TIMEOUT_NOW).  Abandoned
        after an election timeout if the target has not taken over.

        Raises:
            NotLeaderError: when this node is not the leader.
            ValueError: when ``target`` is not another voter.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if target == self.id or not self.membership.can_vote(target):
            raise ValueError(f"cannot transfer leadership to {target!r}: not another voter "
                             f"({self.membership.describe()})")
        if target in self._recovering_peers:
            raise ValueError(f"cannot transfer leadership to {target!r}: it is recovering lost "
                             "entries and does not campaign until it has them back")
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(TIMEOUT_NOW, target)
        else:
            self._send_appends(target, allow_empty=True)

    # -- reads -------------------------------------------------------------------------------

    def read_index(self, context: int) -> None:
        """Request a linearizable read point; released in ``Ready.read_states`` under
        ``context`` (a non-zero id chosen by the caller, unique while pending).

        Raises:
            NotLeaderError: when this node is not the leader.
            ValueError: when ``context`` is 0.
        """
        if context == 0:
            raise ValueError("read context must be non-zero")
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if not self._committed_in_term_before():
            # Until an entry of this term commits, the leader's commit index may lag what the
            # previous leader committed (thesis 6.4 step 1).
            self._pending_read_contexts.append(context)
            return
        if self.membership.voters == (self.id,) and not self.membership.is_joint:
            self._read_states.append(ReadState(self.log.committed, context))
            return
        self.read_only.add(self.log.committed, context, self.id)
        self._broadcast_heartbeat(context)

    # -- output ------------------------------------------------------------------------------

    def _send(self, kind: MessageKind, dst: NodeId, *, term: Term | None = None,
              **fields: Any) -> None:
        if self.recovering and kind in _AFTER_PERSIST:
            fields["recovering"] = True
            if kind is APPEND_RESPONSE:
                fields["context"] = self._recovery_nonce
        m = Message(kind=kind, src=self.id, dst=dst,
                    term=self.term if term is None else term, **fields)
        if kind in _AFTER_PERSIST:
            self._msgs_after_persist.append(m)
        else:
            self._msgs.append(m)

    def hard_state(self) -> HardState:
        """The current durable-state triple."""
        return HardState(self.term, self.vote, self.log.committed, self.recovering)

    def soft_state(self) -> SoftState:
        """The current volatile role, leader and term."""
        return SoftState(self.role, self.leader_id, self.term)

