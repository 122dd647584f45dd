"""The runtime side of a membership change: learners first, catch-up, then joint consensus.

``RaftNode.change_membership`` creates one :class:`MembershipChange`; the loop thread (its only
owner) calls :meth:`MembershipChange.advance` after every round.  The stages:

1. ``LEARNERS``: nodes that are to become voters but are not members yet are added as learners
   first (a learner-only configuration needs no joint phase), so that a new, empty node does not
   count towards any majority while it copies the log, and commits do not stall.
2. ``CATCH_UP``: wait until each of them has matched the leader's log as it was when this stage
   began (``Config.catchup_timeout`` at most).
3. ``JOINT``: propose the target configuration; the core appends C_old,new and, once that
   commits, C_new.  The change resolves with the final :class:`~engine.membership.Membership`
   once C_new is committed.

A change fails with ``MembershipError`` when the core refuses it or catch-up times out, and
with ``ProposalDropped`` when leadership is lost before it completes (the outcome may be
unknown: a new leader finishes a joint configuration it inherited).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future

from engine.core import RawNode
from engine.errors import MembershipError, ProposalDropped
from engine.runtime.proposals import settle

logger = logging.getLogger(__name__)


class Stage(enum.Enum):
    """Where a membership change stands."""

    LEARNERS = "learners"
    CATCH_UP = "catch-up"
    JOINT = "joint"
    DONE = "done"


class MembershipChange:
    """One requested change, driven by the loop thread (not thread-safe)."""

    def __init__(self, voters: frozenset[str], learners: frozenset[str],
                 addresses: Mapping[str, str], future: Future, *,
                 catchup_timeout: float) -> None:
        self.voters = voters
        self.learners = learners
        self.addresses = dict(addresses)
        self.future = future
        self.stage = Stage.LEARNERS
        self._catchup_timeout = catchup_timeout
        self._entry_index = 0  # the CONFIG entry this stage waits for
        self._catchup_target = 0
        self._catchup_deadline = 0.0

    @property
    def done(self) -> bool:
        """True once the future is settled."""
        return self.stage is Stage.DONE

    def start(self, raw: RawNode) -> None:
        """Begin on the leader (loop thread).  Settles the future at once on a refusal."""
        self._propose_learners(raw)

    def advance(self, raw: RawNode, now: float) -> None:
        """Move on when the current stage's condition holds (loop thread, every round)."""
        if self.stage is Stage.DONE:
            return
        if self.stage is Stage.LEARNERS and self._config_committed(raw):
            self._begin_catch_up(raw, now)
        if self.stage is Stage.CATCH_UP:
            lagging = self._lagging(raw)
            if not lagging:
                self._propose(raw, sorted(self.voters), sorted(self.learners))
                if self.stage is Stage.CATCH_UP:
                    self.stage = Stage.JOINT
            elif now >= self._catchup_deadline:
                self._fail(MembershipError(
                    f"{sorted(lagging)} did not catch up with the leader's log (index "
                    f"{self._catchup_target}) within catchup_timeout="
                    f"{self._catchup_timeout}s; they remain learners"))
        if self.stage is Stage.JOINT and self._config_committed(raw):
            membership = raw.membership
            self.stage = Stage.DONE
            logger.info("%s: membership change complete: %s", raw.id, membership.describe())
            settle(self.future, membership)

    def leadership_lost(self, raw: RawNode) -> None:
        """The node stopped leading: finish if the change completed first, else fail."""
        if self.stage is Stage.DONE:
            return
        if self.stage is Stage.JOINT and self._config_committed(raw):
            self.advance(raw, time.monotonic())
            return
        self._fail(ProposalDropped(
            f"{raw.id} lost leadership during a membership change ({self.stage.value}); "
            "a new leader may still complete it"))

    def fail(self, error: BaseException) -> None:
        """Give up with ``error`` (the node stopped)."""
        self._fail(error)

    # -- stages ------------------------------------------------------------------------------

    def _propose_learners(self, raw: RawNode) -> None:
        current = raw.membership
        members = set(current.members())
        newcomers = self.voters - members
        if not newcomers:
            self._begin_catch_up(raw, time.monotonic())
            return
        # Newcomers join as learners, next to the learners the caller wants kept.
        learners = sorted((set(current.learners) | newcomers) - set(current.voters))
        self._propose(raw, list(current.voters), learners)

    def _begin_catch_up(self, raw: RawNode, now: float) -> None:
        self.stage = Stage.CATCH_UP
        self._catchup_target = raw.last_index
        self._catchup_deadline = now + self._catchup_timeout

    def _lagging(self, raw: RawNode) -> set[str]:
        """Future voters that are not yet voters and have not matched the catch-up target."""
        current = raw.membership
        lagging = set()
        for node_id in self.voters:
            if current.can_vote(node_id) or node_id == raw.id:
                continue
            match = raw.peer_match(node_id)
            if match is None or match < self._catchup_target:
                lagging.add(node_id)
        return lagging

    def _propose(self, raw: RawNode, voters: list[str], learners: list[str]) -> None:
        try:
            self._entry_index = raw.propose_membership(voters, learners, self.addresses)
        except Exception as exc:  # MembershipError, NotLeaderError: nothing was proposed
            self._fail(exc)

    def _config_committed(self, raw: RawNode) -> bool:
        """The newest configuration is committed, not joint, and at or after our entry."""
        current_index = raw.membership_index
        return (current_index >= self._entry_index and raw.commit_index >= current_index
                and not raw.membership.is_joint)

    def _fail(self, error: BaseException) -> None:
        if self.stage is Stage.DONE:
            return
        self.stage = Stage.DONE
        settle(self.future, error=error)


