"""Helpers shared by the transport tests: a recording handler, free ports, log watching.

Everything here waits on a Condition or an Event with a timeout; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable

from engine.core.messages import Message, MessageKind

WAIT = 10.0  # generous upper bound for anything to happen; tests normally finish in ms


class Collector:
    """A MessageHandler that records every message and lets tests wait for them."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self.messages: list[Message] = []  # guarded by self._cv

    def __call__(self, msg: Message) -> None:
        with self._cv:
            self.messages.append(msg)
            self._cv.notify_all()

    def snapshot(self) -> list[Message]:
        with self._cv:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float = WAIT) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: predicate(self.messages), timeout)

    def wait_count(self, count: int, timeout: float = WAIT) -> bool:
        return self.wait_for(lambda msgs: len(msgs) >= count, timeout)


def msg(src: str, dst: str, term: int = 1, kind: MessageKind = MessageKind.HEARTBEAT,
        **fields: object) -> Message:
    return Message(kind=kind, src=src, dst=dst, term=term, **fields)  # type: ignore[arg-type]


def free_port() -> int:
    """A port that was free a moment ago (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def open_fds() -> set[str]:
    """The process's open file descriptors, as "fd -> target" strings."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the fd of the listdir itself
            out.add(f"{name} -> {os.readlink(f'/proc/self/fd/{name}')}")
    return out


def raft_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("raft-"))


class LogWatcher(logging.Handler):
    """Sets an event when a record whose message contains ``needle`` is logged (any thread)."""

    def __init__(self, logger_name: str, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.seen = threading.Event()
        self.records: list[str] = []
        self._logger = logging.getLogger(logger_name)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.records.append(text)
        if self.needle in text:
            self.seen.set()

    def __enter__(self) -> LogWatcher:
        self._old_level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._old_level)
