"""ReadIndex requests waiting for a quorum to confirm the leader (Raft thesis section 6.4)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from engine.core.ready import ReadState
from engine.types import Index, NodeId


@dataclass(slots=True)
class _PendingRead:
    index: Index
    context: int
    acks: set[NodeId] = field(default_factory=set)


class ReadOnly:
    """The queue of ReadIndex requests of one leader term, oldest first.

    A heartbeat round carries the newest request's context; an acknowledgement of a context also
    acknowledges every older request, because the follower answered a heartbeat sent after them.
    """

    __slots__ = ("_pending", "_queue")

    def __init__(self) -> None:
        self._pending: dict[int, _PendingRead] = {}
        self._queue: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, index: Index, context: int, self_id: NodeId) -> None:
        """Queue a request issued when the commit index was ``index``."""
        if context in self._pending:
            return
        self._pending[context] = _PendingRead(index, context, {self_id})
        self._queue.append(context)

    def last_context(self) -> int:
        """Context of the newest pending request, 0 when none."""
        return self._queue[-1] if self._queue else 0

    def ack(self, context: int, voter: NodeId) -> set[NodeId] | None:
        """Record ``voter``'s acknowledgement; returns the acks so far (None if unknown)."""
        pending = self._pending.get(context)
        if pending is None:
            return None
        pending.acks.add(voter)
        return pending.acks

    def release_through(self, context: int) -> list[ReadState]:
        """Release the request ``context`` and every older one."""
        if context not in self._pending:
            return []
        released: list[ReadState] = []
        while self._queue:
            ctx = self._queue.popleft()
            pending = self._pending.pop(ctx)
            released.append(ReadState(pending.index, ctx))
            if ctx == context:
                break
        return released

    def clear(self) -> None:
        """Drop every pending request (leadership was lost)."""
        self._pending.clear()
        self._queue.clear()
