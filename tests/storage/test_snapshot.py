"""Snapshot format and stores (engine/storage/snapshot.py).

Round trips (of full configurations: joint, learners, addresses), "newest wins", pruning,
corrupt files skipped with a warning (never wrong data), version-1 files (a voters block instead
of the membership block) still read, leftover temp files, full disks (tmpfs, RLIMIT_FSIZE,
monkeypatched ``os``), a property test that decoding random or damaged bytes raises only
CorruptSnapshotError, and incoming snapshots (InstallSnapshot chunks written to a temporary file
or bytearray, verified at finish, committed or aborted).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import codec
from engine.errors import StorageError
from engine.membership import Membership
from engine.storage import snapshot as snapmod
from engine.storage.base import IncomingSnapshot, SnapshotStore
from engine.storage.open import open_snapshot_store
from engine.storage.snapshot import (
    SNAPSHOT_HEADER_SIZE,
    CorruptSnapshotError,
    FileSnapshotStore,
    MemorySnapshotStore,
    SnapshotMeta,
    decode_snapshot,
    encode_snapshot,
    snapshot_file_name,
)

from .conftest import use_pure_codec

ROOT = Path(__file__).resolve().parents[2]
# Joint (n1,n2,old -> n1,n2,nœud-3), with a learner and an address for each: every field set.
JOINT = Membership(
    voters=("n1", "n2", "nœud-3"), outgoing=("n1", "n2", "old"), learners=("l1",),
    addresses={"n1": "10.0.0.1:7000", "n2": "10.0.0.2:7000", "nœud-3": "[::1]:7003",
               "old": "10.0.0.9:7000", "l1": "learner.example:7000"})
META = SnapshotMeta(index=42, term=7, membership=JOINT)
DATA = bytes(range(256)) * 40


def meta_at(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(index, term, ("a", "b", "c"))


def forge(block: bytes, data: bytes = b"", *, version: int = 2, index: int = 1,
          term: int = 1) -> bytes:
    """An encoded snapshot built by hand around ``block``, with a correct CRC."""
    body = struct.pack("<QQIQ", index, term, len(block), len(data)) + block + data
    return b"RAFTSNP\0" + struct.pack("<II", version, codec.crc32c(body)) + body


def v1_snapshot(index: int, term: int, voters: tuple[str, ...], data: bytes) -> bytes:
    """A snapshot as version 1 wrote it: per voter a 4-byte length and its UTF-8."""
    block = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in voters)
    return forge(block, data, version=1, index=index, term=term)


def data_at(index: int) -> bytes:
    return f"state at {index}|".encode() * (index % 17 + 1)


def snap_files(directory: Path) -> list[str]:
    return sorted(p for p in os.listdir(directory) if p.endswith(".snap"))


@pytest.fixture(params=["memory", "file"])
def store_factory(request, tmp_path):
    """``open()`` for each snapshot store, reopening the same place (memory: the same object)."""
    memory = MemorySnapshotStore()
    opened = []

    def factory(**kwargs):
        store = memory if request.param == "memory" else FileSnapshotStore(
            str(tmp_path / "snaps"), fsync=False, **kwargs)
        opened.append(store)
        return store

    factory.impl = request.param
    yield factory
    for store in opened:
        store.close()


# --- format ---------------------------------------------------------------------------------


def test_format_layout():
    buf = encode_snapshot(META, DATA)
    block = JOINT.encode()
    assert buf[:8] == b"RAFTSNP\0"
    assert struct.unpack_from("<IIQQIQ", buf, 8) == (
        2, codec.crc32c(buf[16:]), 42, 7, len(block), len(DATA))
    assert buf[44:44 + len(block)] == block
    assert buf[44 + len(block):] == DATA
    assert len(buf) == SNAPSHOT_HEADER_SIZE + len(block) + len(DATA)
    assert buf == forge(block, DATA, index=42, term=7)
    assert decode_snapshot(buf) == (META, DATA)
    assert decode_snapshot(bytearray(buf)) == (META, DATA)
    assert decode_snapshot(memoryview(buf)) == (META, DATA)


def test_full_membership_round_trips():
    meta, data = decode_snapshot(encode_snapshot(META, DATA))
    assert data == DATA
    m = meta.membership
    assert m == JOINT and m.is_joint
    assert m.voters == ("n1", "n2", "nœud-3") and meta.voters == m.voters
    assert m.outgoing == ("n1", "n2", "old")
    assert m.learners == ("l1",)
    assert m.address_book() == JOINT.address_book()
    # A demoted voter is outgoing and learner at once while joint.
    demoting = Membership(("a", "b"), ("a", "b", "c"), ("c",), {"c": "h:1"})
    meta = SnapshotMeta(3, 2, demoting)
    assert decode_snapshot(encode_snapshot(meta, b"x")) == (meta, b"x")


def test_format_edge_values():
    for meta, data in [
        (SnapshotMeta(0, 0, ()), b""),
        (SnapshotMeta(0, 0), b""),
        (SnapshotMeta(2**64 - 1, 2**64 - 1, ("é",)), b"\0"),
        (SnapshotMeta(5, 1, ("x" * 5000, "y")), bytes(70_000)),
        (SnapshotMeta(6, 1, Membership(learners=("only-a-learner",))), b"d"),
        (SnapshotMeta(7, 1, Membership(("a",), addresses={"a": "\"q\"\\\0\n"})), b"d"),
    ]:
        assert decode_snapshot(encode_snapshot(meta, data)) == (meta, data)


def test_pure_python_crc_reads_native_bytes(monkeypatch):
    buf = encode_snapshot(META, DATA[:3000])
    use_pure_codec(monkeypatch)
    assert decode_snapshot(buf) == (META, DATA[:3000])
    assert encode_snapshot(META, DATA[:3000]) == buf


def _hacked_meta() -> SnapshotMeta:
    meta = SnapshotMeta(1, 1, ("a",))
    object.__setattr__(meta, "membership", ("a",))  # bypasses the conversion to Membership
    return meta


@pytest.mark.parametrize(("make", "exc"), [
    (lambda: SnapshotMeta(-1, 1, ()), ValueError),
    (lambda: SnapshotMeta(1, 2**64, ()), ValueError),
    (lambda: SnapshotMeta(True, 1, ()), ValueError),
    (lambda: SnapshotMeta(1, 1, "abc"), ValueError),  # raised by SnapshotMeta itself
    (lambda: SnapshotMeta(1, 1, ("",)), ValueError),  # raised by SnapshotMeta itself
    (lambda: SnapshotMeta(1, 1, ("\ud800",)), ValueError),
    (lambda: SnapshotMeta(1, 1, Membership(("a",), addresses={"a": "\udfff:1"})), ValueError),
    (_hacked_meta, ValueError),
    (lambda: (1, 1, ()), TypeError),
])
def test_unencodable_meta_is_rejected(make, exc, store_factory):
    with pytest.raises(exc):
        encode_snapshot(make(), b"x")
    store = store_factory()
    with pytest.raises(exc):
        store.save(make(), b"x")
    assert store.latest() is None


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda b: b[:10], "shorter than"),
    (lambda b: b[:-1], "says"),
    (lambda b: b + b"\0", "says"),
    (lambda b: b"XAFTSNP\0" + b[8:], "magic"),
    (lambda b: b[:8] + b"\3" + b[9:], "version"),
    (lambda b: b[:8] + b"\0" + b[9:], "version"),
    (lambda b: b[:12] + bytes([b[12] ^ 1]) + b[13:], "CRC"),
    (lambda b: b[:20] + bytes([b[20] ^ 0x80]) + b[21:], "CRC"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "CRC"),
    (lambda b: b"", "shorter than"),
])
def test_decode_reports_what_is_wrong(mutate, reason):
    with pytest.raises(CorruptSnapshotError, match=reason) as info:
        decode_snapshot(mutate(encode_snapshot(META, DATA)))
    assert isinstance(info.value, StorageError)
    assert reason in info.value.reason


@pytest.mark.parametrize(("block", "why"), [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "must be an object"),
    (b'{"voters":["a"],"extra":1}', "must be an object"),
    (b'{"voters":"a"}', "voters must be a list"),
    (b'{"addresses":[]}', "addresses must be an object"),
    (b'{"voters":[""]}', "non-empty"),
    (b'{"voters":["a"],"learners":["a"]}', "both voter and learner"),
    (b'{"outgoing":["a"]}', "incoming voters"),
    (b'{"addresses":{"a":1}}', "host:port"),
    (b'{"voters":[1,"a"]}', ""),  # TypeError inside Membership: still reported as corrupt
    (b'{"voters":[["a"]]}', ""),
])
def test_decode_rejects_a_bad_membership_block_even_with_a_good_crc(block, why):
    """A buffer forged with a valid CRC but a malformed membership block."""
    with pytest.raises(CorruptSnapshotError, match="membership block at offset 44") as info:
        decode_snapshot(forge(block, b"data"))
    assert why in info.value.reason
    assert f"({len(block)} bytes) is malformed" in info.value.reason


def test_a_bit_flip_in_the_membership_block_is_caught_by_the_crc():
    buf = encode_snapshot(META, DATA)
    for at in (44, 45, 44 + len(JOINT.encode()) // 2, 44 + len(JOINT.encode()) - 1):
        bad = buf[:at] + bytes([buf[at] ^ 0x04]) + buf[at + 1:]
        with pytest.raises(CorruptSnapshotError, match="CRC"):
            decode_snapshot(bad)


def test_version_rewritten_to_1_is_corrupt():
    """The version field is outside the CRC; a v2 block read as a v1 voters block fails."""
    buf = encode_snapshot(META, DATA)
    with pytest.raises(CorruptSnapshotError, match="voter"):
        decode_snapshot(buf[:8] + struct.pack("<I", 1) + buf[12:])


# --- version 1 ------------------------------------------------------------------------------


def test_version_1_is_read_as_a_voters_only_membership():
    buf = v1_snapshot(42, 7, ("n1", "n2", "nœud-3"), DATA)
    meta, data = decode_snapshot(buf)
    assert data == DATA
    assert meta == SnapshotMeta(42, 7, Membership(voters=("n1", "n2", "nœud-3")))
    assert meta.voters == ("n1", "n2", "nœud-3")
    assert not meta.membership.is_joint and meta.membership.learners == ()
    assert meta.membership.addresses == ()
    assert decode_snapshot(v1_snapshot(0, 0, (), b"")) == (SnapshotMeta(0, 0), b"")
    # Re-encoding writes version 2.
    again = encode_snapshot(meta, data)
    assert struct.unpack_from("<I", again, 8) == (2,)
    assert decode_snapshot(again) == (meta, data)


def test_decode_rejects_bad_voters_even_with_a_good_crc():
    """A version-1 buffer forged with a valid CRC but a malformed voters block."""
    for block in (b"\5\0\0\0ab", b"\1\0", b"\2\0\0\0\xff\xfe"):
        with pytest.raises(CorruptSnapshotError, match="voter"):
            decode_snapshot(forge(block, version=1))
    # Well-formed, but not a configuration today (ids are non-empty).
    with pytest.raises(CorruptSnapshotError, match="not a valid configuration"):
        decode_snapshot(v1_snapshot(1, 1, ("a", ""), b""))


def test_v1_bit_flip_is_caught_by_the_crc():
    buf = v1_snapshot(5, 2, ("a", "b"), b"data")
    bad = buf[:49] + bytes([buf[49] ^ 1]) + buf[50:]
    with pytest.raises(CorruptSnapshotError, match="CRC"):
        decode_snapshot(bad)


def test_file_store_reads_a_version_1_data_directory(tmp_path):
    """A data directory written before version 2 still loads, by either read path."""
    old_meta = SnapshotMeta(20, 2, ("a", "b", "c"))
    v1 = v1_snapshot(20, 2, ("a", "b", "c"), data_at(20))
    (tmp_path / snapshot_file_name(old_meta)).write_bytes(v1)
    store = FileSnapshotStore(str(tmp_path), fsync=False)
    assert store.latest() == (old_meta, data_at(20))
    meta, stream = store.open_latest()
    with stream:
        assert meta == old_meta
        assert stream.read() == v1  # streamed to followers unchanged
    store.save(META, DATA)  # new snapshots are version 2
    assert store.latest() == (META, DATA)
    raw = (tmp_path / snapshot_file_name(META)).read_bytes()
    assert struct.unpack_from("<I", raw, 8) == (2,)
    store.close()


def test_save_encoded_accepts_version_1(store_factory):
    """A follower gets a version-1 snapshot streamed from a leader's old file."""
    store = store_factory()
    v1 = v1_snapshot(20, 2, ("a", "b"), b"old state")
    assert store.save_encoded(v1) == SnapshotMeta(20, 2, ("a", "b"))
    assert store.latest() == (SnapshotMeta(20, 2, ("a", "b")), b"old state")
    if store_factory.impl == "file":  # stored byte for byte
        name = snapshot_file_name(SnapshotMeta(20, 2, ("a", "b")))
        assert (Path(store.directory) / name).read_bytes() == v1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_of_random_bytes_raises_only_corrupt(buf):
    try:
        meta, data = decode_snapshot(buf)
    except CorruptSnapshotError:
        return
    assert encode_snapshot(meta, data) == buf  # only a real snapshot may decode


_ID = st.text(min_size=1, max_size=8)


@st.composite
def memberships(draw):
    voters = draw(st.sets(_ID, max_size=4))
    outgoing = draw(st.sets(_ID, max_size=4)) if voters else set()
    learners = draw(st.sets(_ID, max_size=3)) - voters
    members = sorted(voters | outgoing | learners)
    addresses = {m: draw(st.text(max_size=12)) for m in members if draw(st.booleans())}
    return Membership(voters, outgoing, learners, addresses)


@st.composite
def snapshots(draw):
    meta = SnapshotMeta(
        draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)), draw(memberships()))
    return meta, draw(st.binary(max_size=300))


@settings(max_examples=300, deadline=None)
@given(snapshots(), st.data())
def test_decode_of_damaged_bytes_raises_only_corrupt(snap, data):
    meta, payload = snap
    buf = encode_snapshot(meta, payload)
    assert decode_snapshot(buf) == (meta, payload)
    kind = data.draw(st.sampled_from(["burst", "truncate", "extend", "splice"]), label="kind")
    if kind == "burst":  # up to 4 changed bytes in a row: CRC32C catches every such burst
        at = data.draw(st.integers(0, len(buf) - 1), label="at")
        n = data.draw(st.integers(1, min(4, len(buf) - at)), label="n")
        noise = data.draw(st.binary(min_size=n, max_size=n), label="noise")
        bad = buf[:at] + bytes(a ^ b for a, b in zip(buf[at:at + n], noise, strict=True)) \
            + buf[at + n:]
        if bad == buf:
            return
    elif kind == "truncate":
        bad = buf[:data.draw(st.integers(0, len(buf) - 1), label="cut")]
    elif kind == "extend":
        bad = buf + data.draw(st.binary(min_size=1, max_size=8), label="tail")
    else:  # a piece of another snapshot pasted in
        other = encode_snapshot(*data.draw(snapshots(), label="other"))
        at = data.draw(st.integers(0, len(buf)), label="at")
        bad = buf[:at] + other[at:]
        if bad in (buf, other):  # the two agree from `at` on (or `at` is 0)
            return
    with pytest.raises(CorruptSnapshotError):
        decode_snapshot(bad)


# --- both stores ----------------------------------------------------------------------------


def test_protocol(store_factory):
    assert isinstance(store_factory(), SnapshotStore)


def test_round_trip(store_factory):
    store = store_factory()
    assert store.latest() is None
    assert store.open_latest() is None
    store.save(META, DATA)
    assert store.latest() == (META, DATA)
    meta, stream = store.open_latest()
    with stream:
        assert meta == META
        assert stream.read() == encode_snapshot(META, DATA)
    store.close()
    store.close()
    again = store_factory()
    assert again.latest() == (META, DATA)


def test_save_encoded(store_factory):
    store = store_factory()
    buf = encode_snapshot(META, DATA)
    assert store.save_encoded(memoryview(buf)) == META
    assert store.latest() == (META, DATA)
    newer = encode_snapshot(meta_at(50, 8), b"new")
    damaged = newer[:-1] + bytes([newer[-1] ^ 1])
    with pytest.raises(CorruptSnapshotError):
        store.save_encoded(damaged)
    with pytest.raises(CorruptSnapshotError):
        store.save_encoded(newer[:30])
    assert store.latest() == (META, DATA)
    if store_factory.impl == "file":
        assert snap_files(Path(store.directory)) == [snapshot_file_name(META)]
        assert (Path(store.directory) / snapshot_file_name(META)).read_bytes() == buf


def test_newest_wins(store_factory, caplog):
    store = store_factory()
    store.save(meta_at(10, 2), data_at(10))
    store.save(meta_at(30, 3), data_at(30))
    assert store.latest() == (meta_at(30, 3), data_at(30))
    with caplog.at_level(logging.WARNING, logger="engine.storage.snapshot"):
        store.save(meta_at(20, 3), data_at(20))  # older than the stored one
    assert "older" in caplog.text
    assert store.latest() == (meta_at(30, 3), data_at(30))
    store.save(meta_at(30, 3), b"same snapshot saved again")
    assert store.latest() == (meta_at(30, 3), b"same snapshot saved again")
    store.save(meta_at(31, 3), data_at(31))
    assert store.latest() == (meta_at(31, 3), data_at(31))


def test_closed_file_store_refuses(tmp_path):
    store = FileSnapshotStore(str(tmp_path))
    store.close()
    for call in (lambda: store.save(META, DATA), store.latest, store.open_latest):
        with pytest.raises(StorageError, match="closed"):
            call()


# --- the file store -------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keep_prunes(tmp_path, keep):
    store = FileSnapshotStore(str(tmp_path), fsync=False, keep=keep)
    for i in range(1, 7):
        store.save(meta_at(i * 10, 1 + i // 3), data_at(i * 10))
    kept = [snapshot_file_name(meta_at(i * 10, 1 + i // 3)) for i in range(7 - keep, 7)]
    assert snap_files(tmp_path) == sorted(kept)
    assert store.latest() == (meta_at(60, 3), data_at(60))
    store.close()


def test_keep_must_be_positive(tmp_path):
    for keep in (0, -1, 1.5):
        with pytest.raises(ValueError):
            FileSnapshotStore(str(tmp_path), keep=keep)


def test_newest_is_by_index_not_name(tmp_path):
    """The file name sorts by term first; the store orders by (index, term)."""
    store = FileSnapshotStore(str(tmp_path), fsync=False, keep=5)
    store.save(SnapshotMeta(100, 2, ()), b"a")
    store.save(SnapshotMeta(90, 9, ()), b"b")  # a higher term, but older (not a real history)
    assert store.latest() == (SnapshotMeta(100, 2, ()), b"a")
    store.close()


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


CORRUPTIONS = {
    "flip-data": lambda p: _flip(p, p.stat().st_size - 3),
    "flip-header": lambda p: _flip(p, 17),
    "flip-membership": lambda p: _flip(p, 46),
    "bad-membership": lambda p: p.write_bytes(
        forge(b'{"voters":["a"],"learners":["a"]}', data_at(30), index=30, term=2)),
    "bad-v1-voters": lambda p: p.write_bytes(
        forge(b"\x09\0\0\0ab", data_at(30), version=1, index=30, term=2)),
    "flip-magic": lambda p: _flip(p, 0),
    "truncate": lambda p: p.write_bytes(p.read_bytes()[:-100]),
    "truncate-header": lambda p: p.write_bytes(p.read_bytes()[:20]),
    "empty": lambda p: p.write_bytes(b""),
    "trailing": lambda p: p.write_bytes(p.read_bytes() + b"x"),
    "renamed": lambda p: p.write_bytes(encode_snapshot(meta_at(31, 2), data_at(30))),
}


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_corrupt_newest_falls_back(tmp_path, caplog, damage):
    store = FileSnapshotStore(str(tmp_path), fsync=False)
    store.save(meta_at(20, 2), data_at(20))
    store.save(meta_at(30, 2), data_at(30))
    newest = tmp_path / snapshot_file_name(meta_at(30, 2))
    CORRUPTIONS[damage](newest)
    with caplog.at_level(logging.WARNING, logger="engine.storage.snapshot"):
        assert store.latest() == (meta_at(20, 2), data_at(20))
    assert "corrupt snapshot" in caplog.text and newest.name in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.storage.snapshot"):
        meta, stream = store.open_latest()
    with stream:
        assert meta == meta_at(20, 2)
        assert stream.read() == encode_snapshot(meta_at(20, 2), data_at(20))
    assert newest.name in caplog.text
    # A reopened store still skips it; the next save prunes it once it is not among the newest.
    store.close()
    store = FileSnapshotStore(str(tmp_path), fsync=False)
    assert store.latest() == (meta_at(20, 2), data_at(20))
    store.save(meta_at(40, 2), data_at(40))
    store.save(meta_at(50, 2), data_at(50))
    assert not newest.exists()
    assert store.latest() == (meta_at(50, 2), data_at(50))
    store.close()


def test_all_corrupt_is_none(tmp_path, caplog):
    store = FileSnapshotStore(str(tmp_path), fsync=False)
    store.save(meta_at(20, 2), data_at(20))
    store.save(meta_at(30, 2), data_at(30))
    for name in snap_files(tmp_path):
        _flip(tmp_path / name, 50)
    with caplog.at_level(logging.WARNING, logger="engine.storage.snapshot"):
        assert store.latest() is None
        assert store.open_latest() is None
    assert caplog.text.count("corrupt snapshot") == 4
    store.close()


def test_leftover_temp_files_are_removed_at_open(tmp_path):
    store = FileSnapshotStore(str(tmp_path), fsync=False)
    store.save(META, DATA)
    store.close()
    (tmp_path / "snapshot-abc123.tmp").write_bytes(b"half a snapshot")
    (tmp_path / "snapshot-0000000000000007-000000000000002b.snap.x1.tmp").write_bytes(b"")
    (tmp_path / "unrelated.txt").write_bytes(b"keep me")
    (tmp_path / "snapshot-zz.snap").write_bytes(b"not a snapshot name: ignored")
    store = FileSnapshotStore(str(tmp_path), fsync=False)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [snapshot_file_name(META), "unrelated.txt", "snapshot-zz.snap"])
    assert store.latest() == (META, DATA)
    store.close()


def test_stream_survives_pruning(tmp_path):
    """A leader streaming the latest snapshot is not disturbed by newer saves pruning it."""
    store = FileSnapshotStore(str(tmp_path), fsync=False, keep=1)
    store.save(meta_at(10), DATA)
    _, stream = store.open_latest()
    store.save(meta_at(20), b"newer")
    assert snap_files(tmp_path) == [snapshot_file_name(meta_at(20))]
    with stream:
        assert decode_snapshot(stream.read()) == (meta_at(10), DATA)
    store.close()


def test_memory_store_keeps_data_over_close():
    store = MemorySnapshotStore()
    store.save(META, bytearray(DATA))
    store.close()
    assert store.latest() == (META, DATA)
    assert isinstance(store.latest()[1], bytes)


def test_open_snapshot_store_uses_a_subfolder(tmp_path):
    from engine.storage.open import open_stores

    log, stable = open_stores(str(tmp_path), fsync=False)
    snaps = open_snapshot_store(str(tmp_path), fsync=False)
    try:
        snaps.save(META, DATA)
        assert snap_files(tmp_path / "snapshots") == [snapshot_file_name(META)]
        log.reset(META.index + 1)
        log.close()
        log, _ = open_stores(str(tmp_path), fsync=False)  # the subfolder does not bother it
        assert log.first_index() == META.index + 1
    finally:
        log.close()
        stable.close()
        snaps.close()
    again = open_snapshot_store(str(tmp_path))
    assert again.latest() == (META, DATA)
    again.close()


# --- failures while saving ------------------------------------------------------------------


def _no_temp_files(directory: Path) -> bool:
    return not [n for n in os.listdir(directory) if n.endswith(".tmp")]


@pytest.mark.parametrize("call", ["pwrite", "fsync", "replace"])
def test_failed_save_keeps_the_previous(tmp_path, monkeypatch, call):
    store = FileSnapshotStore(str(tmp_path), fsync=True)
    store.save(meta_at(10), data_at(10))
    real = getattr(os, call)
    state = {"n": 0}

    def failing(*args, **kwargs):
        state["n"] += 1
        if call == "pwrite":  # half the bytes reach the file, then the disk is full
            real(args[0], bytes(args[1][: len(args[1]) // 2]), args[2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(snapmod.os, call, failing)
    if call == "pwrite":  # the pwrite of the file store's helper
        from engine.storage import filestore
        monkeypatch.setattr(filestore.os, "pwrite", failing)
    with pytest.raises(StorageError) as info:
        store.save(meta_at(20), b"x" * 100_000)
    monkeypatch.undo()
    assert state["n"] >= 1
    assert info.value.errno == errno.ENOSPC
    assert _no_temp_files(tmp_path)
    assert store.latest() == (meta_at(10), data_at(10))
    store.save(meta_at(20), data_at(20))  # space is back
    assert store.latest() == (meta_at(20), data_at(20))
    store.close()


def test_tmpfs_full(small_fs):
    store = open_snapshot_store(str(small_fs), fsync=True)
    store.save(meta_at(10), b"a" * (100 << 10))
    with pytest.raises(StorageError) as info:
        store.save(meta_at(20), b"b" * (1 << 20))
    assert info.value.errno == errno.ENOSPC
    assert str(small_fs) in str(info.value)
    assert _no_temp_files(small_fs / "snapshots")
    assert store.latest() == (meta_at(10), b"a" * (100 << 10))
    store.save(meta_at(20), b"b" * (200 << 10))  # fits once the failed one is gone
    assert store.latest() == (meta_at(20), b"b" * (200 << 10))
    store.close()


RLIMIT_CHILD = r"""
import json, resource, signal, sys
from engine.errors import StorageError
from engine.storage.snapshot import FileSnapshotStore, SnapshotMeta
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
store = FileSnapshotStore(sys.argv[1], fsync=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
store.save(SnapshotMeta(10, 1, ("a",)), b"small" * 1000)
err = None
try:
    store.save(SnapshotMeta(20, 1, ("a",)), b"large" * 20_000)
except StorageError as exc:
    err = exc
meta, data = store.latest()
print(json.dumps({"errno": err and err.errno, "msg": str(err), "index": meta.index,
                  "ok": data == b"small" * 1000}))
"""


def test_rlimit_fsize(tmp_path):
    result = subprocess.run([sys.executable, "-c", RLIMIT_CHILD, str(tmp_path)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errno"] == errno.EFBIG
    assert report["index"] == 10 and report["ok"]
    assert _no_temp_files(tmp_path)
    assert snap_files(tmp_path) == [snapshot_file_name(SnapshotMeta(10, 1, ("a",)))]


# --- incoming snapshots (InstallSnapshot chunks written as they arrive) ---------------------


def chunks(buf: bytes, size: int = 1000) -> list[bytes]:
    return [buf[at:at + size] for at in range(0, len(buf), size)]


def incoming_files(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(snapmod.INCOMING_PREFIX))


def receive(store, buf: bytes, meta: SnapshotMeta = META, size: int = 1000,
            total: int | None = None):
    """An incoming snapshot of ``store`` with all of ``buf`` written, not finished."""
    incoming = store.begin_incoming(meta.index, meta.term, len(buf) if total is None else total)
    for chunk in chunks(buf, size):
        incoming.write(chunk)
    return incoming


def test_incoming_happy_path(store_factory):
    """Chunks appended in order, verified, read back, committed: then it is the latest."""
    store = store_factory()
    store.save(meta_at(10), data_at(10))
    buf = encode_snapshot(META, DATA)
    incoming = store.begin_incoming(META.index, META.term, len(buf))
    assert isinstance(incoming, IncomingSnapshot)
    assert (incoming.index, incoming.term, incoming.total, incoming.received) == (
        META.index, META.term, len(buf), 0)
    if store_factory.impl == "file":
        directory = Path(store.directory)
        assert incoming_files(directory) == [os.path.basename(incoming.path)]
        assert incoming.path.startswith(str(directory / "snapshot-incoming-0000000000000007-"))
    for k, chunk in enumerate(chunks(buf)):
        incoming.write(memoryview(chunk) if k % 2 else chunk)
        assert incoming.received == min(len(buf), (k + 1) * 1000)
        if store_factory.impl == "file":
            assert Path(incoming.path).stat().st_size == incoming.received
    assert store.latest() == (meta_at(10), data_at(10))  # not a snapshot of the store yet
    assert incoming.finish() == META
    assert incoming.finish() == META  # idempotent
    assert incoming.read() == (buf, DATA)
    with pytest.raises(ValueError):
        incoming.write(b"more")
    store.commit_incoming(incoming)
    assert incoming.state == "committed"
    assert store.latest() == (META, DATA)
    incoming.abort()  # a no-op once committed
    assert store.latest() == (META, DATA)
    with pytest.raises(ValueError):
        store.commit_incoming(incoming)
    if store_factory.impl == "file":
        assert incoming_files(directory) == []
        assert snap_files(directory) == sorted([snapshot_file_name(meta_at(10)),
                                                snapshot_file_name(META)])
        assert (directory / snapshot_file_name(META)).read_bytes() == buf
    again = store_factory()
    assert again.latest() == (META, DATA)


def _flipped(buf: bytes, at: int) -> bytes:
    return buf[:at] + bytes([buf[at] ^ 0x10]) + buf[at + 1:]


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda buf, meta: (_flipped(buf, len(buf) // 2), meta), "CRC mismatch"),
    (lambda buf, meta: (_flipped(buf, 20), meta), "CRC mismatch"),  # in the header's index
    (lambda buf, meta: (buf[:-5], meta), "bytes, but the header"),
    (lambda buf, meta: (buf[:30], meta), "shorter than the 44-byte header"),
    (lambda buf, meta: (buf, meta_at(meta.index + 1, meta.term)), "the leader announced"),
    (lambda buf, meta: (buf, meta_at(meta.index, meta.term + 1)), "the leader announced"),
])
def test_incoming_corruption_is_detected_at_finish(store_factory, damage, reason):
    """A damaged chunk (or a header that disagrees with what the leader announced) fails
    finish() with CorruptSnapshotError, and the incoming snapshot is gone."""
    store = store_factory()
    store.save(meta_at(10), data_at(10))
    buf, announced = damage(encode_snapshot(META, DATA), META)
    incoming = receive(store, buf, announced)
    with pytest.raises(CorruptSnapshotError, match=reason) as info:
        incoming.finish()
    assert incoming.state == "aborted"
    if store_factory.impl == "file":
        assert incoming.path in str(info.value)
        assert incoming_files(Path(store.directory)) == []
    for call in (incoming.finish, incoming.read, lambda: store.commit_incoming(incoming)):
        with pytest.raises(ValueError):
            call()
    incoming.abort()  # idempotent
    assert store.latest() == (meta_at(10), data_at(10))


def test_incoming_size_must_match_the_announced_total(store_factory):
    store = store_factory()
    buf = encode_snapshot(META, DATA)
    incoming = store.begin_incoming(META.index, META.term, len(buf) + 1)
    incoming.write(buf)
    with pytest.raises(CorruptSnapshotError, match="received, the leader announced"):
        incoming.finish()
    assert store.latest() is None


@pytest.mark.parametrize("when", ["writing", "finished"])
def test_incoming_abort_removes_it(store_factory, when):
    store = store_factory()
    buf = encode_snapshot(META, DATA)
    incoming = receive(store, buf if when == "finished" else buf[:2500], total=len(buf))
    if when == "finished":
        incoming.finish()
    if store_factory.impl == "file":
        assert os.path.exists(incoming.path)
    incoming.abort()
    incoming.abort()
    assert incoming.state == "aborted"
    if store_factory.impl == "file":
        assert not os.path.exists(incoming.path)
        assert os.listdir(store.directory) == []
    with pytest.raises(ValueError):
        incoming.write(b"x")
    with pytest.raises(ValueError):
        store.commit_incoming(incoming)
    assert store.latest() is None


def test_incoming_keeps_no_file_open(tmp_path):
    """Between calls an incoming snapshot holds no file descriptor (a node that crashes or is
    dropped mid-transfer leaks none)."""
    store = FileSnapshotStore(str(tmp_path), fsync=True)
    buf = encode_snapshot(META, DATA)
    before = len(os.listdir("/proc/self/fd"))
    incoming = store.begin_incoming(META.index, META.term, len(buf))
    for chunk in chunks(buf):
        incoming.write(chunk)
        assert len(os.listdir("/proc/self/fd")) == before
    incoming.finish()
    incoming.read()
    assert len(os.listdir("/proc/self/fd")) == before
    store.commit_incoming(incoming)
    assert len(os.listdir("/proc/self/fd")) == before
    store.close()


def test_stale_incoming_files_are_removed_at_open(tmp_path):
    """An incoming file left by a crash (unfinished or finished, never committed) is not a
    snapshot: latest() ignores it, and the next open of the store deletes it."""
    store = FileSnapshotStore(str(tmp_path), fsync=False)
    store.save(meta_at(10), data_at(10))
    newer = encode_snapshot(meta_at(20), data_at(20))
    half = receive(store, newer[:100], meta_at(20), total=len(newer))
    whole = receive(store, newer, meta_at(20))
    whole.finish()
    assert len(incoming_files(tmp_path)) == 2
    assert store.latest() == (meta_at(10), data_at(10))
    meta, stream = store.open_latest()
    stream.close()
    assert meta == meta_at(10)
    store.save(meta_at(11), data_at(11))  # pruning leaves them alone
    store.save(meta_at(12), data_at(12))
    assert len(incoming_files(tmp_path)) == 2
    del half, whole  # the process "crashed": nobody aborts them
    store.close()
    store = FileSnapshotStore(str(tmp_path), fsync=False)
    assert incoming_files(tmp_path) == []
    assert snap_files(tmp_path) == [snapshot_file_name(meta_at(11)),
                                    snapshot_file_name(meta_at(12))]
    assert store.latest() == (meta_at(12), data_at(12))
    store.close()


def test_commit_incoming_makes_it_latest_and_prunes(tmp_path):
    store = FileSnapshotStore(str(tmp_path), fsync=True, keep=2)
    for index in (10, 20):
        store.save(meta_at(index), data_at(index))
    incoming = receive(store, encode_snapshot(meta_at(30, 2), data_at(30)), meta_at(30, 2))
    incoming.finish()
    store.commit_incoming(incoming)
    assert snap_files(tmp_path) == [snapshot_file_name(meta_at(20)),
                                    snapshot_file_name(meta_at(30, 2))]
    assert sorted(os.listdir(tmp_path)) == snap_files(tmp_path)  # no temporary file left
    assert store.latest() == (meta_at(30, 2), data_at(30))
    store.close()
    reopened = FileSnapshotStore(str(tmp_path))
    assert reopened.latest() == (meta_at(30, 2), data_at(30))
    reopened.close()


def test_commit_incoming_refuses_others(store_factory, tmp_path):
    """Only a finished incoming snapshot of the same store can be committed."""
    store = store_factory()
    other = MemorySnapshotStore() if store_factory.impl == "file" else FileSnapshotStore(
        str(tmp_path / "other"), fsync=False)
    buf = encode_snapshot(META, DATA)
    foreign = receive(other, buf)
    foreign.finish()
    with pytest.raises(ValueError, match="not an incoming snapshot of this store"):
        store.commit_incoming(foreign)
    unfinished = receive(store, buf)
    with pytest.raises(ValueError, match="commit"):
        store.commit_incoming(unfinished)
    unfinished.abort()
    foreign.abort()
    other.close()
    assert store.latest() is None


@pytest.mark.parametrize(("index", "term", "total"), [(-1, 1, 10), (1, True, 10), (1, 1, 2.0)])
def test_begin_incoming_checks_its_arguments(store_factory, index, term, total):
    with pytest.raises(ValueError):
        store_factory().begin_incoming(index, term, total)


def test_closed_file_store_refuses_incoming(tmp_path):
    store = FileSnapshotStore(str(tmp_path), fsync=False)
    buf = encode_snapshot(META, DATA)
    incoming = receive(store, buf[:1000], total=len(buf))
    finished = receive(store, buf)
    finished.finish()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.begin_incoming(1, 1, 100)
    with pytest.raises(StorageError, match="closed"):
        incoming.write(buf[1000:])
    with pytest.raises(StorageError, match="closed"):
        store.commit_incoming(finished)
    assert finished.state == "aborted"
    incoming.abort()
    assert os.listdir(tmp_path) == []


def test_failed_incoming_write_keeps_the_offset(tmp_path, monkeypatch):
    """A chunk that does not fit (disk full) raises StorageError with errno; received does not
    move, so the same chunk can be written again once there is space."""
    from engine.storage import filestore

    store = FileSnapshotStore(str(tmp_path), fsync=False)
    buf = encode_snapshot(META, DATA)
    incoming = store.begin_incoming(META.index, META.term, len(buf))
    incoming.write(buf[:2000])
    real = os.pwrite

    def full(fd, data, offset):
        real(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(filestore.os, "pwrite", full)
    with pytest.raises(StorageError) as info:
        incoming.write(buf[2000:3000])
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert incoming.received == 2000
    incoming.write(buf[2000:])
    assert incoming.finish() == META
    assert incoming.read() == (buf, DATA)
    incoming.abort()
    store.close()


@pytest.mark.parametrize("call", ["fsync", "replace"])
def test_failed_commit_deletes_the_incoming_file(tmp_path, monkeypatch, call):
    store = FileSnapshotStore(str(tmp_path), fsync=True)
    store.save(meta_at(10), data_at(10))
    incoming = receive(store, encode_snapshot(meta_at(20), data_at(20)), meta_at(20))
    incoming.finish()

    def failing(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(snapmod.os, call, failing)
    with pytest.raises(StorageError) as info:
        store.commit_incoming(incoming)
    monkeypatch.undo()
    assert info.value.errno == errno.EIO
    assert incoming.state == "aborted"
    assert _no_temp_files(tmp_path)
    assert store.latest() == (meta_at(10), data_at(10))
    store.close()
