"""The StateMachine protocol: the user's replicated object, and two small reference machines."""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

import orjson


@runtime_checkable
class StateMachine(Protocol):
    """What a user replicates.

    Threading contract: ``apply``, ``snapshot``, ``restore`` and the functions passed to
    ``RaftNode.read`` are all called from one thread, never concurrently: the node's loop
    thread ``raft-<id>-loop`` by default (it applies in bounded slices between network
    rounds), or the ``raft-<id>-apply`` thread with ``Config.apply_thread=True`` (choose that
    when ``apply`` blocks on IO or locks).  A state machine needs no locking of its own unless
    other threads of the user's touch it.

    Optional batch form: a state machine may also define
    ``apply_batch(first_index: int, commands: list[bytes]) -> Sequence[object]``, which the node
    then calls instead of ``apply`` for each run of consecutive user entries (indexes
    ``first_index, first_index + 1, ...``), expecting one result per command.  An exception it
    raises becomes the result of every proposal of that run.

    Errors: an exception raised by ``apply`` does not stop the node.  The entry counts as applied
    (every replica sees the same command and, being deterministic, fails the same way); the
    exception becomes the result of the proposal's future on the node that proposed it.
    """

    def apply(self, index: int, command: bytes) -> object:
        """Apply one committed user command.  Called once per user entry, in index order;
        internal entries are skipped so ``index`` may jump.  Must be deterministic."""
        ...

    def snapshot(self) -> bytes:
        """Serialize the whole state (must reflect exactly the entries applied so far)."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with one produced by :meth:`snapshot`."""
        ...


class LogStateMachine:
    """Records every applied command; ``apply`` returns the index.  For tests and benchmarks.

    ``commands`` may be read from other threads under ``self.lock``.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.commands: list[tuple[int, bytes]] = []  # guarded by self.lock

    def apply(self, index: int, command: bytes) -> object:
        with self.lock:
            self.commands.append((index, command))
        return index

    def snapshot(self) -> bytes:
        with self.lock:
            return orjson.dumps([[i, c.hex()] for i, c in self.commands])

    def restore(self, data: bytes) -> None:
        with self.lock:
            self.commands = [(i, bytes.fromhex(c)) for i, c in orjson.loads(data)]


class CounterStateMachine:
    """The cheapest useful machine: counts applied commands; ``apply`` returns the count."""

    def __init__(self) -> None:
        self.count = 0

    def apply(self, index: int, command: bytes) -> object:
        self.count += 1
        return self.count

    def snapshot(self) -> bytes:
        return str(self.count).encode()

    def restore(self, data: bytes) -> None:
        self.count = int(data)
