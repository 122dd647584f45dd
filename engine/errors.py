"""The error tree of the engine.

Every error the library raises derives from :class:`RaftError`.  Each class says whose fault it
was (the caller's, a peer's, the disk's) and what is still usable afterwards, in the spirit of
h11's LocalProtocolError / RemoteProtocolError.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by the engine."""


class ConfigError(RaftError, ValueError):
    """The caller passed an invalid configuration.

    Raised at construction time, before any thread or file exists; nothing needs cleaning up.
    The message names the field, its value and the rule it broke.
    """


class NotLeaderError(RaftError):
    """The operation needs the leader and this node is not it.

    ``leader_id`` is the id of the node this node believes leads, or None when unknown.
    Nothing was proposed or read: retrying on the leader is safe.
    """

    def __init__(self, leader_id: str | None, message: str | None = None) -> None:
        self.leader_id = leader_id
        super().__init__(message or f"not the leader (leader is {leader_id!r})")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.leader_id, str(self)))


class ProposalDropped(RaftError):
    """The proposal did not commit while this node led.

    Raised when leadership was lost before the entry committed or when the entry was
    overwritten by another leader's entry.  The outcome may be unknown: an entry that was
    replicated before leadership was lost can still be committed by the next leader, exactly as
    with hashicorp/raft's ErrLeadershipLost.  Callers that need exactly-once semantics should make
    commands idempotent (for example with a client id and sequence number).
    """


class NodeStopped(RaftError):
    """The node was stopped (or crashed) before the operation completed."""


class ReadTimeout(RaftError):
    """A linearizable read could not confirm leadership in time; no state was returned."""


class InvariantError(RaftError):
    """An internal invariant was broken: a bug in the engine, never the caller's fault.

    The object that raised it must not be used again.
    """


class StorageError(RaftError):
    """A durable store failed (I/O error, full disk).

    The write that raised it did not happen; what was durable before is still durable.
    """


class CorruptLogError(StorageError):
    """The durable log is corrupt inside its committed prefix.

    The node refuses to start rather than serve wrong data.  The message names the file and the
    offset of the first bad record.
    """


class FrameError(RaftError):
    """A peer sent bytes that do not parse as a frame.

    Raised inside the transport, which drops the frame (or the connection), logs it, and keeps
    the node running.  Never reaches the Raft core.
    """


class TransferError(RaftError):
    """A leadership transfer did not complete (timed out, or another node took over).

    The old leader accepts proposals again (if it still leads); nothing was lost.
    """


class Overloaded(RaftError):
    """Too many proposals are waiting to commit (``Config.max_pending_proposals``).

    Nothing was proposed: retry later, or slow the producer down.  This is the engine's
    back-pressure: without it a leader whose followers cannot keep up would queue without bound.
    """


class MembershipError(RaftError, ValueError):
    """A membership change was refused: another change is still in progress, or the requested
    configuration is invalid (no voters, a node both voter and learner, nothing changes).

    Nothing was proposed; the configuration in force is unchanged.
    """


class MembershipChangeInProgress(MembershipError):
    """A membership change was refused because another one has not finished yet (a joint
    configuration, an uncommitted configuration entry, or a change the node is still driving):
    retry once it completes."""
