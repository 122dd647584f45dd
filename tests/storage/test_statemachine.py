"""Stateful property test: a log store agrees with a list model under any sequence of
append / append_encoded / truncate / compact / reset / sync / close+reopen, for the native and
the pure-Python store (and the memory store, without the encoded path).  Tiny segments make
rolls, multi-segment reads and compaction frequent.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine.codec import encode_entries
from engine.storage.memory import MemoryLogStore
from engine.types import Entry

from .conftest import native_mod, open_log

SETTINGS = settings(
    max_examples=80,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class LogModel(RuleBasedStateMachine):
    """The model: ``first`` and the list of stored entries."""

    impl = "file"

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="raftlog-sm-")
        self.segment_size = 160
        self.memory = MemoryLogStore()
        self.store = self._open()
        self.first = 1
        self.log: list[Entry] = []
        self.term = 1

    def _open(self):
        if self.impl == "memory":
            return self.memory
        return open_log(self.impl, self.dir, segment_size=self.segment_size)

    @property
    def last(self) -> int:
        return self.first + len(self.log) - 1

    def _batch(self, data: st.DataObject) -> list[Entry]:
        start = data.draw(st.integers(self.first, self.last + 1), label="start")
        n = data.draw(st.integers(1, 6), label="n")
        self.term += data.draw(st.integers(0, 1), label="term bump")
        kinds = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n), label="kinds")
        sizes = data.draw(st.lists(st.integers(0, 90), min_size=n, max_size=n), label="sizes")
        return [
            Entry(start + k, self.term, kinds[k], bytes([(start + k) & 0xFF]) * sizes[k])
            for k in range(n)
        ]

    def _apply(self, batch: list[Entry]) -> None:
        start = batch[0].index
        del self.log[start - self.first:]
        self.log.extend(batch)

    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        batch = self._batch(data)
        self.store.append(batch)
        self._apply(batch)

    @precondition(lambda self: self.impl != "memory")
    @rule(data=st.data())
    def append_encoded(self, data: st.DataObject) -> None:
        batch = self._batch(data)
        self.store.append_encoded(encode_entries(batch))
        self._apply(batch)

    @rule(data=st.data())
    def truncate_suffix(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.first - 1, self.last + 2), label="index")
        self.store.truncate_suffix(index)
        del self.log[max(index, self.first) - self.first:]

    @rule(data=st.data())
    def compact_prefix(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(self.first - 1, self.last + 1), label="index")
        self.store.compact_prefix(index)
        new_first = self.store.first_index()
        # Never past index + 1, and never the last entry.
        bound = max(self.first, min(index + 1, self.last)) if self.log else self.first
        assert self.first <= new_first <= bound
        if self.impl == "memory":
            assert new_first == bound
        del self.log[:new_first - self.first]
        self.first = new_first

    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        next_index = data.draw(st.one_of(
            st.integers(1, self.last + 3),  # inside, at or just past the log
            st.integers(self.last + 4, self.last + 200),  # ahead (a snapshot far ahead)
        ), label="next_index")
        self.store.reset(next_index)
        self.first = next_index
        self.log = []

    @rule()
    def sync(self) -> None:
        self.store.sync()

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()
        assert getattr(self.store, "recovery_report", ()) == ()

    @precondition(lambda self: self.log)
    @rule(data=st.data())
    def read_range(self, data: st.DataObject) -> None:
        lo = data.draw(st.integers(self.first, self.last + 1), label="lo")
        hi = data.draw(st.integers(lo, self.last + 1), label="hi")
        assert self.store.entries(lo, hi) == self.log[lo - self.first:hi - self.first]

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.store.first_index() == self.first
        assert self.store.last_index() == self.last
        assert self.store.entries(self.first, self.last + 1) == self.log
        for entry in self.log[:: max(1, len(self.log) // 5)]:
            assert self.store.term_at(entry.index) == entry.term

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class FileLogModel(LogModel):
    impl = "file"


class NativeLogModel(LogModel):
    impl = "native"


class MemoryLogModel(LogModel):
    impl = "memory"


TestFileLogModel = FileLogModel.TestCase
TestFileLogModel.settings = SETTINGS

TestNativeLogModel = pytest.mark.skipif(native_mod is None, reason="native module not built")(
    NativeLogModel.TestCase
)
TestNativeLogModel.settings = SETTINGS

TestMemoryLogModel = MemoryLogModel.TestCase
TestMemoryLogModel.settings = settings(SETTINGS, max_examples=40)
