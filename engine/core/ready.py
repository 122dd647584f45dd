"""Ready: everything one round of the core asks its driver to do.

The driver takes a Ready from ``RawNode.ready()`` and must, in this order:

1. Send ``messages`` at once.  None of them depends on this Ready's durable state: this is how
   the leader sends entries to followers in parallel with its own disk write.
2. Make ``hard_state`` and ``entries`` durable (``entries[0].index`` and later are replaced), then
   and only then send ``messages_after_persist``.  Those addressed to this node itself
   (``dst == id``) are stepped back into the core with ``RawNode.advance(ready)``.
3. Apply ``committed_entries`` to the state machine in order, and release ``read_states`` once
   the applied index reaches their index.

Readys must be persisted in the order they were produced; ``committed_entries`` and
``read_states`` may be processed concurrently with later Readys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.core.messages import Message
from engine.membership import Membership
from engine.types import Entry, HardState, Index, NodeId, SnapshotMeta

if TYPE_CHECKING:
    from engine.core.raft import Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A released ReadIndex request: a read issued under ``context`` may be served once the state
    machine has applied ``index``."""

    index: Index
    context: int


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state a driver may want to observe; present in a Ready only when it changed."""

    role: Role
    leader_id: NodeId | None
    term: int


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver (see the module docstring for the ordering rule)."""

    snapshot: SnapshotMeta | None = None
    """A snapshot received from the leader that the core has installed: BEFORE anything else in
    this Ready, make the log store match it (keep entries after it if the store holds the
    snapshot's last entry with its term, else drop them all), and queue the state machine's
    restore ahead of later committed entries."""

    compact_index: Index = 0
    """When non-zero: the log store may drop entries up to this index (a snapshot covers them)."""

    hard_state: HardState | None = None
    """Term, vote and commit to persist BEFORE sending messages_after_persist; None if unchanged."""

    entries: list[Entry] = field(default_factory=list)
    """Entries to persist BEFORE sending messages_after_persist; ``entries[0].index`` onwards
    replaces whatever the store holds there."""

    messages: list[Message] = field(default_factory=list)
    """Messages to send NOW, without waiting for persistence."""

    messages_after_persist: list[Message] = field(default_factory=list)
    """Messages to send only AFTER hard_state and entries are durable (vote grants, append
    acknowledgements, and self-addressed acks that ``advance`` steps back in)."""

    committed_entries: list[Entry] = field(default_factory=list)
    """Committed and locally durable entries to apply, in index order (internal entries too:
    the driver skips those for the state machine but advances its applied index)."""

    read_states: list[ReadState] = field(default_factory=list)
    """ReadIndex requests confirmed by a quorum."""

    soft_state: SoftState | None = None
    """Role, leader and term, when any changed since the previous Ready."""

    membership: Membership | None = None
    """The configuration now in force, when it changed since the previous Ready (an appended,
    truncated or installed CONFIG entry): the driver updates its address book from it."""

    def must_persist(self) -> bool:
        """True when this Ready carries durable state to write."""
        return (self.hard_state is not None or bool(self.entries) or self.snapshot is not None
                or bool(self.compact_index))

    def must_sync(self) -> bool:
        """True when the write must be flushed to the device before acknowledgements leave."""
        return self.must_persist()
