"""The registry of proposal futures, from propose() until apply.

Owner: shared by the loop thread (which registers futures and fails them on leadership loss) and
the apply thread (which resolves them); every access holds ``self._lock``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError

from engine.errors import ProposalDropped
from engine.types import Entry, EntryKind, Index, Term


def settle(future: Future, result: object = None, error: BaseException | None = None) -> None:
    """Complete ``future`` unless it is already done (e.g. cancelled by its owner)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class ProposalRegistry:
    """Futures keyed by log index, each remembering the term it was proposed in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Index, tuple[Term, Future]] = {}  # guarded by self._lock

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def register(self, first: Index, term: Term, futures: Sequence[Future]) -> None:
        """Futures for entries ``first, first + 1, ...`` proposed in ``term``."""
        with self._lock:
            pending = self._pending
            for offset, future in enumerate(futures):
                pending[first + offset] = (term, future)

    def resolve(self, entries: Sequence[Entry], results: Sequence[object],
                errors: Sequence[BaseException | None]) -> None:
        """Entries were applied with ``results``/``errors`` (parallel to ``entries``).

        A future whose entry was replaced by another term's entry fails with ProposalDropped.
        """
        if not self._pending:
            return
        with self._lock:
            pop = self._pending.pop
            done = [(pop(e.index, None), e, r, x) for e, r, x in zip(entries, results, errors,
                                                                       strict=True)]
        for item, entry, result, error in done:
            if item is None:
                continue
            term, future = item
            if term != entry.term or entry.kind != EntryKind.NORMAL:
                settle(future, error=ProposalDropped(
                    f"entry {entry.index} of term {term} was replaced by one of term {entry.term}"))
            else:
                settle(future, result, error)

    def fail_after(self, index: Index, error: BaseException) -> int:
        """Fail every future for an index above ``index``; returns how many."""
        with self._lock:
            doomed = [i for i in self._pending if i > index]
            items = [self._pending.pop(i) for i in doomed]
        for _, future in items:
            settle(future, error=error)
        return len(items)
