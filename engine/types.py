"""Basic value types shared by every layer: ids, terms, indexes, log entries, hard state."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from engine.membership import EMPTY_MEMBERSHIP, Membership

NodeId = str
Term = int
Index = int


class EntryKind(IntEnum):
    """What a log entry carries.

    Only NORMAL entries reach ``StateMachine.apply``; the others are internal to the engine.
    """

    NORMAL = 0  #: a user command, passed to StateMachine.apply
    NOOP = 1  #: the empty entry a new leader appends to commit entries of earlier terms
    CONFIG = 2  #: a membership configuration (data: Membership.encode())


class Entry(NamedTuple):
    """One log entry.

    A NamedTuple rather than a dataclass: entries are created and copied in bulk on the hot path,
    and tuple construction is several times cheaper than a dataclass ``__init__``.  Entries are
    immutable and may be shared between the core, the storage and the transport.
    """

    index: Index
    term: Term
    kind: int
    data: bytes


@dataclass(frozen=True, slots=True)
class HardState:
    """The state Raft must make durable before replying to anyone (Figure 2, "persistent state").

    ``commit`` is stored too so a restarted node knows how far it may replay at once; losing it
    is safe (the leader re-sends it).

    ``recovering`` is nonzero while the node is *recovering* (protocol-aware recovery, CTRL,
    FAST'18): start-up found that its log lost entries it may have acknowledged, up to at least
    this index.  A recovering node does not vote, campaign or count towards any quorum until a
    leader has given it back every entry the leader holds; the mark is durable so that a crash
    in the middle of that does not forget it.
    """

    term: Term = 0
    vote: NodeId | None = None
    commit: Index = 0
    recovering: Index = 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers: every entry up to ``index`` (whose term is ``term``), and the
    configuration in force at that point.

    ``membership`` may be given as a plain collection of voter ids (shorthand for a
    configuration of just those voters).
    """

    index: Index
    term: Term
    membership: Membership = EMPTY_MEMBERSHIP

    def __post_init__(self) -> None:
        if not isinstance(self.membership, Membership):
            object.__setattr__(self, "membership", Membership(voters=self.membership))

    @property
    def voters(self) -> tuple[NodeId, ...]:
        """The voters of :attr:`membership` (the incoming ones while joint)."""
        return self.membership.voters
