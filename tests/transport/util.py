"""Helpers shared by the transport tests: a recording handler, free ports, log watching.

Everything here waits on a Condition or an Event with a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from engine.core.messages import Message, MessageKind

WAIT = 10.0  # generous upper bound for anything to happen; tests normally finish in ms

T = TypeVar("T")


class Collector:
    """A MessageHandler that records every message and lets tests wait for them."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self.messages: list[Message] = []  # guarded by self._cv
        self.thread_ids: set[int] = set()  # threading.get_ident() of every caller; self._cv

    def __call__(self, msg: Message) -> None:
        with self._cv:
            self.messages.append(msg)
            self.thread_ids.add(threading.get_ident())
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


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop: ``"uvloop"`` or ``"asyncio"`` (the default loop)."""
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class LoopThread:
    """An event loop running forever in a thread of the test's (as a node's runtime runs its
    loop), for transports started with ``loop=``.  ``stop`` stops and joins the thread,
    ``close`` also closes the loop (unless another LoopThread runs it by then).

    Args:
        kind: ``"uvloop"`` or ``"asyncio"``, for a new loop.
        loop: run this (stopped, not closed) loop instead of a new one.
    """

    def __init__(self, kind: str, name: str = "test-loop",
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = new_loop(kind) if loop is None else loop
        self._running = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        assert self._running.wait(WAIT)
        assert self.thread.ident is not None
        self.ident: int = self.thread.ident

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._running.set)
        self.loop.run_forever()

    def call(self, fn: Callable[[], T], timeout: float = WAIT) -> T:
        """Run ``fn`` on the loop thread (in FIFO order with other callbacks) and return its
        result or raise its exception."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def is_serving(self) -> bool:
        """The loop runs and still executes callbacks."""
        return self.thread.is_alive() and self.call(lambda: True)

    def stop(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # already closed
                self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)
            assert not self.thread.is_alive()

    def close(self) -> None:
        self.stop()
        if not self.loop.is_closed() and not self.loop.is_running():
            self.loop.close()


def port_is_free(address: str) -> bool:
    """Whether nothing listens on ``address`` ("host:port") any more: binding it succeeds."""
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            return False
        return True
