"""Offline damage to a stopped node's data directory, the way real disks fail: a flipped bit in
a log record, a segment that vanished, a tail cut short, a rotten hard state or snapshot.

For tests and the fault-table command.  The directory is the one
:func:`engine.storage.open.open_stores` opens (``RaftNode(data_dir=...)``; with
``LocalCluster(data_dir=d)`` it is ``d/<node id>``): log segments ``<first index>.seg`` and
``hardstate`` directly in it, snapshots in its ``snapshots`` subdirectory (formats:
:mod:`engine.storage.filestore`, :mod:`engine.codec`, :mod:`engine.storage.snapshot`).  Never
call these on the directory of a running node: its stores keep files open and an offset index
in memory.

Each function returns a :class:`Damage` saying which file it changed, where, and how, so a test
can assert what recovery reports.  What opening the log then does (the rules of
:class:`~engine.storage.filestore.FileLogStore`, shared by the native store):

* a flipped byte in the newest record, or a cut tail: a torn tail, truncated at that record and
  listed in ``recovery_report``;
* a flipped byte in an older record (a valid record follows it, or it is not in the newest
  segment), or a missing segment between others: :class:`~engine.errors.CorruptLogError`;
* the newest segment deleted: the log ends earlier (a lost tail; the hard state's commit index
  may then be past the end, which ``open_stores`` logs).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from engine.storage.filestore import (
    _SEGMENT_NAME,
    HARDSTATE_FILE,
    SEGMENT_HEADER_SIZE,
    _check_record,
)
from engine.storage.open import SNAPSHOT_SUBDIR
from engine.storage.snapshot import CRC_START, SNAPSHOT_HEADER, SNAPSHOT_HEADER_SIZE, _parse_name
from engine.types import Index

__all__ = [
    "Damage",
    "RecordLocation",
    "corrupt_hard_state",
    "corrupt_snapshot",
    "delete_newest_segment",
    "delete_segment",
    "flip_byte",
    "log_records",
    "truncate_tail",
]

logger = logging.getLogger(__name__)

_HARDSTATE_TERM_OFFSET = 16  # HARDSTATE_HEADER: magic 8, version 4, vote length 4, then term


@dataclass(frozen=True, slots=True)
class Damage:
    """What a damage function did: ``action`` to ``file`` (a path) at byte ``offset``,
    ``length`` bytes; ``index`` is the log index concerned (0 when none)."""

    action: str
    file: str
    offset: int = 0
    length: int = 0
    index: Index = 0

    def __str__(self) -> str:
        where = f" (log index {self.index})" if self.index else ""
        return f"{self.action} {self.file} at offset {self.offset}, {self.length} bytes{where}"


@dataclass(frozen=True, slots=True)
class RecordLocation:
    """Where the record of log index ``index`` lies: ``size`` bytes at ``offset`` of ``file``."""

    index: Index
    file: str
    offset: int
    size: int


def _segments(data_dir: str) -> list[tuple[Index, str]]:
    """``(first index, path)`` of every segment, oldest first."""
    names = sorted(n for n in os.listdir(data_dir) if _SEGMENT_NAME.match(n))
    return [(int(n[:20]), os.path.join(data_dir, n)) for n in names]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _segment_records(path: str, first: Index) -> list[RecordLocation]:
    """The valid records of one segment, up to the first bad one (as recovery scans it)."""
    data = _read(path)
    out = []
    at, expect = SEGMENT_HEADER_SIZE, first
    while at < len(data):
        why, size = _check_record(data, at, len(data), expect)
        if why is not None:
            break
        out.append(RecordLocation(expect, path, at, size))
        at += size
        expect += 1
    return out


def log_records(data_dir: str | os.PathLike[str]) -> list[RecordLocation]:
    """Every valid log record in ``data_dir``'s segments, in index order (each segment read up
    to its first bad record)."""
    out: list[RecordLocation] = []
    for first, path in _segments(os.fspath(data_dir)):
        out.extend(_segment_records(path, first))
    return out


def _locate(data_dir: str, index: Index) -> RecordLocation:
    for first, path in reversed(_segments(data_dir)):
        if first <= index:
            for rec in _segment_records(path, first):
                if rec.index == index:
                    return rec
            break
    raise LookupError(f"no valid record for log index {index} in {data_dir}")


def _flip(path: str, offset: int, mask: int) -> int:
    """XOR the byte at ``offset`` of ``path`` with ``mask``; returns the new byte."""
    if not 1 <= mask <= 0xFF:
        raise ValueError(f"mask={mask!r} must be in [1, 255]")
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1)
        if len(old) != 1:
            raise ValueError(f"offset {offset} is past the end of {path}")
        new = old[0] ^ mask
        f.seek(offset)
        f.write(bytes([new]))
    return new


def flip_byte(data_dir: str | os.PathLike[str], index: Index,
              offset_in_record: int | None = None, *, mask: int = 0x01) -> Damage:
    """Flip bits (XOR ``mask``, one bit by default) of one byte in the record of log index
    ``index``.  ``offset_in_record`` counts from the record's first byte (its CRC; the header
    is :data:`engine.codec.HEADER_SIZE` bytes); by default the record's last byte (the last
    payload byte, or the kind when the payload is empty), which only the CRC can catch.

    Raises:
        LookupError: no valid record holds ``index``.
        ValueError: ``offset_in_record`` is outside the record, or a bad ``mask``.
    """
    rec = _locate(os.fspath(data_dir), index)
    off = rec.size - 1 if offset_in_record is None else offset_in_record
    if not 0 <= off < rec.size:
        raise ValueError(f"offset_in_record={off} is outside the {rec.size}-byte record of "
                         f"index {index}")
    _flip(rec.file, rec.offset + off, mask)
    logger.warning("damage: flipped byte %d of the record of index %d in %s", off, index,
                   rec.file)
    return Damage("flipped a byte of", rec.file, rec.offset + off, 1, index)


def delete_segment(data_dir: str | os.PathLike[str], containing_index: Index) -> Damage:
    """Delete the segment file that holds log index ``containing_index``.

    Raises:
        LookupError: no segment holds it.
    """
    segments = _segments(os.fspath(data_dir))
    for k, (first, path) in enumerate(segments):
        end = segments[k + 1][0] if k + 1 < len(segments) else None
        if first <= containing_index and (end is None or containing_index < end):
            if end is None and not any(r.index == containing_index
                                       for r in _segment_records(path, first)):
                break
            return _unlink(path, first, "deleted segment")
    raise LookupError(f"no segment of {os.fspath(data_dir)} holds log index {containing_index}")


def delete_newest_segment(data_dir: str | os.PathLike[str]) -> Damage:
    """Delete the newest segment file (the log then ends where the one before it ends).

    Raises:
        LookupError: there is no segment.
    """
    segments = _segments(os.fspath(data_dir))
    if not segments:
        raise LookupError(f"no segment in {os.fspath(data_dir)}")
    first, path = segments[-1]
    return _unlink(path, first, "deleted the newest segment")


def _unlink(path: str, first: Index, action: str) -> Damage:
    size = os.path.getsize(path)
    os.unlink(path)
    logger.warning("damage: %s %s (%d bytes, first index %d)", action, path, size, first)
    return Damage(action, path, 0, size, first)


def truncate_tail(data_dir: str | os.PathLike[str], nbytes: int) -> Damage:
    """Cut the last ``nbytes`` bytes off the newest segment (a torn write), at most down to
    nothing.  ``index`` of the result is the newest log index whose record was cut (0 when only
    the header was).

    Raises:
        LookupError: there is no segment.
        ValueError: ``nbytes < 1``.
    """
    if not isinstance(nbytes, int) or nbytes < 1:
        raise ValueError(f"nbytes={nbytes!r} must be an int >= 1")
    segments = _segments(os.fspath(data_dir))
    if not segments:
        raise LookupError(f"no segment in {os.fspath(data_dir)}")
    first, path = segments[-1]
    size = os.path.getsize(path)
    keep = max(0, size - nbytes)
    cut = [r.index for r in _segment_records(path, first) if r.offset + r.size > keep]
    os.truncate(path, keep)
    logger.warning("damage: cut %d bytes off the end of %s", size - keep, path)
    return Damage("cut the tail of", path, keep, size - keep, cut[0] if cut else 0)


def corrupt_hard_state(data_dir: str | os.PathLike[str], *, mask: int = 0x01) -> Damage:
    """Flip a bit of the term in the ``hardstate`` file (its CRC then fails: loading it raises
    CorruptLogError).

    Raises:
        FileNotFoundError: there is no hard state file.
    """
    path = os.path.join(os.fspath(data_dir), HARDSTATE_FILE)
    offset = _HARDSTATE_TERM_OFFSET
    _flip(path, offset, mask)
    logger.warning("damage: flipped a bit of the term in %s", path)
    return Damage("flipped a byte of", path, offset, 1)


def corrupt_snapshot(data_dir: str | os.PathLike[str], *, mask: int = 0x01) -> Damage:
    """Flip a bit in the newest snapshot file of ``<data_dir>/snapshots``: in its state machine
    data (its first byte), or in its header's index when it has no data (the CRC fails either
    way: the store then falls back to the previous snapshot).  ``index`` is the snapshot's.

    Raises:
        LookupError: there is no snapshot file.
    """
    directory = os.path.join(os.fspath(data_dir), SNAPSHOT_SUBDIR)
    found = sorted((key, name) for name in os.listdir(directory)
                   if (key := _parse_name(name)) is not None) if os.path.isdir(directory) else []
    if not found:
        raise LookupError(f"no snapshot file in {directory}")
    (index, _term), name = found[-1]
    path = os.path.join(directory, name)
    size = os.path.getsize(path)
    head = _read(path)[:SNAPSHOT_HEADER_SIZE]
    block = SNAPSHOT_HEADER.unpack(head)[5] if len(head) == SNAPSHOT_HEADER_SIZE else 0
    offset = SNAPSHOT_HEADER_SIZE + block  # the first data byte
    if offset >= size:
        offset = CRC_START  # no data: the index field
    _flip(path, offset, mask)
    logger.warning("damage: flipped a bit at offset %d of snapshot %s", offset, path)
    return Damage("flipped a byte of", path, offset, 1, index)

