"""open_stores: native when the compiled module imports, else pure Python with a warning."""

from __future__ import annotations

import logging
import sys

import pytest

from engine.storage.filestore import FileLogStore, FileStableStore
from engine.storage.open import open_stores
from engine.types import Entry, HardState

from .conftest import native_mod


@pytest.mark.skipif(native_mod is None, reason="native module not built")
def test_picks_native(tmp_path, monkeypatch):
    monkeypatch.delenv("RAFT_ENGINE_NO_NATIVE", raising=False)
    log, stable = open_stores(str(tmp_path / "node"))
    try:
        assert isinstance(log, native_mod.NativeLogStore)
        assert isinstance(stable, native_mod.NativeStableStore)
        log.append([Entry(1, 1, 0, b"x")])
        log.sync()
        stable.save(HardState(term=1, vote="n1", commit=1))
    finally:
        log.close()
        stable.close()


def test_falls_back_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("RAFT_ENGINE_NO_NATIVE", raising=False)
    monkeypatch.setitem(sys.modules, "engine.storage.native", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="engine.storage.open"):
        log, stable = open_stores(str(tmp_path), fsync=False)
    try:
        assert isinstance(log, FileLogStore)
        assert isinstance(stable, FileStableStore)
        assert "native log store unavailable" in caplog.text
    finally:
        log.close()
        stable.close()


def test_env_switch(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RAFT_ENGINE_NO_NATIVE", "1")
    with caplog.at_level(logging.WARNING, logger="engine.storage.open"):
        log, stable = open_stores(str(tmp_path))
    log.close()
    stable.close()
    assert isinstance(log, FileLogStore)
    assert "RAFT_ENGINE_NO_NATIVE" in caplog.text


def test_warns_when_commit_is_past_the_log(tmp_path, caplog):
    log, stable = open_stores(str(tmp_path), fsync=False)
    log.append([Entry(i, 1, 0, b"") for i in range(1, 4)])
    stable.save(HardState(term=1, vote=None, commit=10))
    log.close()
    stable.close()
    with caplog.at_level(logging.WARNING, logger="engine.storage.open"):
        log, stable = open_stores(str(tmp_path), fsync=False)
    log.close()
    stable.close()
    assert "commit=10" in caplog.text and "ends at index 3" in caplog.text
