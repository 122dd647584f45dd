"""A bounded window of AppendEntries messages in flight to one follower."""

from __future__ import annotations

from collections import deque

from engine.errors import InvariantError
from engine.types import Index


class Inflights:
    """The appends in flight, oldest first: at most ``capacity`` messages and, when
    ``max_bytes`` is non-zero, fewer than ``max_bytes`` payload bytes (after etcd-io/raft's
    ``tracker/inflights.go``).

    The byte budget is checked before a send, not against its size: an append is always sent
    when the window holds less than ``max_bytes``, even if it alone exceeds the budget (so an
    entry larger than the budget still goes out, alone), and the window is full once its bytes
    reach ``max_bytes``.  Acknowledgements free every slot up to the acknowledged index (acks
    are cumulative), and their bytes with them.
    """

    __slots__ = ("_bytes", "_capacity", "_last_indexes", "_max_bytes", "_sizes")

    def __init__(self, capacity: int, max_bytes: int = 0) -> None:
        if capacity < 1:
            raise InvariantError(f"inflight capacity {capacity} must be >= 1")
        if max_bytes < 0:
            raise InvariantError(f"inflight max_bytes {max_bytes} must be >= 0")
        self._capacity = capacity
        self._max_bytes = max_bytes  # 0: no byte limit
        self._last_indexes: deque[Index] = deque()
        self._sizes: deque[int] = deque()  # payload bytes of each message, parallel to the above
        self._bytes = 0  # Invariant: self._bytes == sum(self._sizes)

    @property
    def capacity(self) -> int:
        """Most messages in flight."""
        return self._capacity

    @property
    def max_bytes(self) -> int:
        """Payload bytes in flight at which the window is full (0: no byte limit)."""
        return self._max_bytes

    @property
    def bytes(self) -> int:
        """Payload bytes of the messages in flight."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._last_indexes)

    def full(self) -> bool:
        """True when no further message may be sent until an ack frees a slot (or bytes)."""
        return len(self._last_indexes) >= self._capacity or (
            self._max_bytes != 0 and self._bytes >= self._max_bytes)

    def add(self, last_index: Index, size: int = 0) -> None:
        """Record a sent message whose last entry is ``last_index`` (indexes must increase),
        carrying ``size`` payload bytes."""
        if self.full():
            raise InvariantError("inflights window overflow")
        if self._last_indexes and last_index <= self._last_indexes[-1]:
            raise InvariantError(
                f"inflight {last_index} not after {self._last_indexes[-1]}")
        self._last_indexes.append(last_index)
        self._sizes.append(size)
        self._bytes += size

    def free_le(self, index: Index) -> None:
        """Free every slot whose message ends at or before ``index``."""
        last_indexes = self._last_indexes
        sizes = self._sizes
        while last_indexes and last_indexes[0] <= index:
            last_indexes.popleft()
            self._bytes -= sizes.popleft()

    def free_first_one(self) -> None:
        """Free the oldest slot: its message may have been lost (heartbeat-response recovery)."""
        if self._last_indexes:
            self._last_indexes.popleft()
            self._bytes -= self._sizes.popleft()

    def reset(self) -> None:
        """Forget every message in flight."""
        self._last_indexes.clear()
        self._sizes.clear()
        self._bytes = 0
