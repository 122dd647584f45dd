"""A bounded window of AppendEntries messages in flight to one follower."""

from __future__ import annotations

from collections import deque

from engine.errors import InvariantError
from engine.types import Index


class Inflights:
    """The last index of each append in flight, oldest first, at most ``capacity`` of them.

    Acknowledgements free every slot up to the acknowledged index (acks are cumulative).
    """

    __slots__ = ("_capacity", "_last_indexes")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise InvariantError(f"inflight capacity {capacity} must be >= 1")
        self._capacity = capacity
        self._last_indexes: deque[Index] = deque()

    @property
    def capacity(self) -> int:
        """Most messages in flight."""
        return self._capacity

    def __len__(self) -> int:
        return len(self._last_indexes)

    def full(self) -> bool:
        """True when no further message may be sent until an ack frees a slot."""
        return len(self._last_indexes) >= self._capacity

    def add(self, last_index: Index) -> None:
        """Record a sent message whose last entry is ``last_index`` (indexes must increase)."""
        if self.full():
            raise InvariantError("inflights window overflow")
        if self._last_indexes and last_index <= self._last_indexes[-1]:
            raise InvariantError(
                f"inflight {last_index} not after {self._last_indexes[-1]}")
        self._last_indexes.append(last_index)

    def free_le(self, index: Index) -> None:
        """Free every slot whose message ends at or before ``index``."""
        last_indexes = self._last_indexes
        while last_indexes and last_indexes[0] <= index:
            last_indexes.popleft()

    def free_first_one(self) -> None:
        """Free the oldest slot: its message may have been lost (heartbeat-response recovery)."""
        if self._last_indexes:
            self._last_indexes.popleft()

    def reset(self) -> None:
        """Forget every message in flight."""
        self._last_indexes.clear()
