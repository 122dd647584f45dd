"""The LogStore / StableStore contract suite (test_contract.py) run over the fault-injecting
wrappers with no fault armed: a FaultyLogStore over a memory store must behave exactly as the
memory store, and reopening it (a crash after ``sync()``/``close()``) keeps what was synced."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.storage.faulty import DiskFaults, FaultyLogStore, FaultyStableStore

from .test_contract import (  # noqa: F401  (collected here, with the fixtures below)
    test_append_and_read_back,
    test_append_before_first_index_is_rejected,
    test_append_empty_is_a_noop,
    test_append_rejects_gaps_and_non_contiguous,
    test_append_replaces_conflicting_suffix,
    test_compact_prefix,
    test_compact_prefix_keeps_the_last_entry,
    test_entries_range_errors,
    test_fresh_store_is_empty,
    test_kinds_and_payload_sizes_survive,
    test_log_survives_reopen,
    test_protocols,
    test_reset,
    test_reset_rejects_bad_indexes,
    test_reset_survives_reopen_and_repeats,
    test_stable_store_round_trip,
    test_sync_and_close_are_safe,
    test_truncate_below_first_keeps_first_index,
    test_truncate_suffix,
)


def _reopening(make: Callable[[], Any]) -> Callable[[], Any]:
    """``open()``: the first call makes a store, each later one reopens it (``crash()``)."""
    opened: list[Any] = []

    def factory() -> Any:
        opened.append(opened[-1].crash() if opened else make())
        return opened[-1]

    factory.impl = "memory"  # type: ignore[attr-defined]  # it behaves as the memory store
    return factory


@pytest.fixture
def log_factory() -> Iterator[Callable[[], Any]]:
    yield _reopening(lambda: FaultyLogStore(faults=DiskFaults("contract")))


@pytest.fixture
def stable_factory() -> Iterator[Callable[[], Any]]:
    yield _reopening(lambda: FaultyStableStore(faults=DiskFaults("contract")))
