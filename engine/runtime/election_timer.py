"""The election timer at the resolution it was drawn with, whatever the tick.

The core draws its randomized election timeout in subticks (1 us with Config) and counts time
in ticks.  Ticking alone would fire the timeout at the next tick boundary, so every node whose
timeout falls into the same tick would campaign at once: a 150-155 ms range with a 10 ms tick
was really one value, and split votes never ended.  The loop therefore does three things:

- before stepping messages it tells the core how far into the tick it is
  (``RawNode.set_clock_phase``), so a timer restarted by a heartbeat is timed from the
  heartbeat, not from the tick;
- after every tick it asks the core whether the election timer expires before the next tick
  (``RawNode.election_due``) and, if so, arms a ``call_at`` for that exact point;
- when that fires it calls ``RawNode.expire_election``, which campaigns unless a message
  restarted the timer meanwhile.

The core stays deterministic: the phase is an input like a message, and a driver that never
sets it (the simulator, the core tests) gets the classic tick-granular behaviour.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from engine.core import RawNode

_EARLY = 0.002
"""Seconds before the deadline the loop timer is armed: uvloop's timers have millisecond
resolution, so the last stretch is waited out with ``call_soon`` (the loop keeps polling IO
meanwhile).  This costs at most a couple of ms of loop iterations per election on a node whose
leader is gone (a healthy leader's heartbeats restart the timer before any deadline is armed)."""


class ElectionTimer:
    """Loop thread only: the sub-tick phase and the one-shot election deadline of one node.
    Times are ``time.monotonic()`` (microseconds; uvloop's ``loop.time()`` has milliseconds)."""

    __slots__ = (
        "_due",
        "_fire",
        "_handle",
        "_loop",
        "_per_tick",
        "_subtick",
        "_target",
        "_tick_at",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_interval: float,
                 subticks_per_tick: int, fire: Callable[[int], None]) -> None:
        self._loop = loop
        self._per_tick = subticks_per_tick
        self._subtick = tick_interval / subticks_per_tick
        self._tick_at = time.monotonic()
        self._handle: asyncio.Handle | None = None
        self._fire = fire  # called with the phase (subticks since the tick) when it fires
        self._target = 0.0
        self._due = 0

    def phase(self) -> int:
        """Subticks since the last tick (at most one tick's worth)."""
        if self._per_tick == 1:
            return 0
        sub = int((time.monotonic() - self._tick_at) / self._subtick)
        return sub if sub < self._per_tick else self._per_tick - 1

    def ticked(self, raw: RawNode) -> None:
        """The core just ticked: arm the deadline if one falls before the next tick (an older
        one is cancelled: the tick moved the core's clock past it)."""
        now = self._tick_at = time.monotonic()
        self.cancel()
        due = raw.election_due()
        if due is not None:
            self._due = due
            self._target = target = now + due * self._subtick
            delay = target - now - _EARLY
            if delay > 0:
                self._handle = self._loop.call_later(delay, self._wait)
            else:
                self._handle = self._loop.call_soon(self._wait)

    def _wait(self) -> None:
        if time.monotonic() < self._target:
            self._handle = self._loop.call_soon(self._wait)
            return
        self._handle = None
        self._fire(max(self._due, self.phase()))

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
