"""FaultPlan: seeded decisions about what the network does to each message.

Both transports ask the same plan, per message, on the sending side::

    delays = plan.decide(src, dst)
    # ()          dropped
    # (d,)        deliver once, d seconds from now
    # (d1, d2)    deliver twice (a duplicate), each after its own delay

The plan holds the *link state* (isolated nodes, a partition, one-way cuts) and the *fault
rates* (drop, duplicate, delay, reorder).  All randomness comes from the plan's own
``random.Random(seed)``, and a draw is made only for a rate that is switched on, so the decisions
are a pure function of the seed and the sequence of calls: a failing seed reproduces (given the
same call order).  Link state involves no randomness.

Reordering: with ``reorder=False`` a transport keeps every link FIFO even when messages are
delayed (a later message waits for an earlier, more delayed one; see :class:`LinkOrder`).  With
``reorder=True`` each copy gets an independent random delay, from ``delay`` when that range is
non-zero and otherwise from ``[0, reorder_window]``, so later messages may overtake earlier ones.

Link state semantics (documented choices):

* A node can always reach itself.
* ``isolate(n)`` cuts every link to and from ``n``; ``rejoin(n)`` restores them, but does not undo
  a partition.
* ``partition(g1, g2, ...)`` replaces any earlier partition: nodes in the same group can talk,
  nodes in different groups cannot, and nodes named in no group are cut from everyone.
* One-way cuts model gray failures, where a link works in one direction only: ``cut(a, b)``
  drops every message from ``a`` to ``b`` while ``b -> a`` still works; ``cut_outgoing(n)`` cuts
  every link from ``n`` (it can receive but not send); ``cut_incoming(n)`` every link to ``n``
  (it can send but not receive).  They add to isolations and the partition: a message passes
  only if no rule cuts its link.  ``rejoin(n)`` does not undo them; ``heal()`` does.
* ``heal()`` removes the partition, every isolation and every one-way cut (fault rates are
  unchanged; reset them with ``set_faults()``).

Both transports filter with :meth:`FaultPlan.decide_ordered` on the sending side and
:meth:`FaultPlan.link_up` where a message is handed on (the memory transport's delay thread, the
TCP receiver), always with the direction ``(src, dst)`` of the message, so every cut, one-way or
not, is honoured by both and also drops messages already in flight on the cut direction.

Locking: one lock, ``self._lock``, guards every field below; every public method takes it, so any
thread may call any method.  ``active`` is read without the lock on the hot path (a bool read is
atomic) so that a fault-free plan costs the transports one attribute load.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Hashable, Iterable

from engine.errors import ConfigError

logger = logging.getLogger(__name__)

NodeId = str

_DROPPED: tuple[float, ...] = ()
_NOW: tuple[float, ...] = (0.0,)

DEFAULT_REORDER_WINDOW = 0.002
"""Seconds: upper bound of the random delay reorder=True adds when ``delay`` is (0, 0)."""


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}={value!r} must be a number in [0, 1]")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ConfigError(f"{name}={value!r} must be in [0, 1]")
    return value


def _check_delay(delay: tuple[float, float]) -> tuple[float, float]:
    try:
        lo, hi = delay
    except (TypeError, ValueError):
        raise ConfigError(f"delay={delay!r} must be a pair (lo, hi) of seconds") from None
    for label, value in (("lo", lo), ("hi", hi)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"delay={delay!r}: {label} must be a number of seconds")
        if not math.isfinite(value):
            raise ConfigError(f"delay={delay!r}: {label} must be finite")
    if lo < 0:
        raise ConfigError(f"delay={delay!r}: lo={lo} must be >= 0")
    if lo > hi:
        raise ConfigError(f"delay={delay!r}: lo={lo} must be <= hi={hi}")
    return float(lo), float(hi)


class FaultPlan:
    """Thread-safe, seeded fault decisions shared by all the transports of one cluster.

    Args:
        seed: seed of the plan's private ``random.Random``; None seeds from the OS (not
            reproducible).
        reorder_window: seconds; the delay range used by ``reorder=True`` when ``delay`` is
            ``(0, 0)``.

    Raises:
        ConfigError: ``reorder_window`` is negative or not finite.
    """

    def __init__(self, seed: int | None = None, *, reorder_window: float = DEFAULT_REORDER_WINDOW):
        if not (isinstance(reorder_window, int | float) and math.isfinite(reorder_window)
                and reorder_window >= 0):
            raise ConfigError(f"reorder_window={reorder_window!r} must be a finite number >= 0")
        self.seed = seed
        self._lock = threading.Lock()
        # --- everything below is guarded by self._lock ---
        self._rng = random.Random(seed)
        self._reorder_window = float(reorder_window)
        self._drop = 0.0
        self._duplicate = 0.0
        self._delay_lo = 0.0
        self._delay_hi = 0.0
        self._reorder = False
        self._isolated: set[NodeId] = set()
        # node -> group number while a partition is in force, else None.
        self._groups: dict[NodeId, int] | None = None
        # One-way cuts: directed links (src, dst); nodes that cannot send; nodes that cannot
        # receive.  See the module docstring.
        self._cut_links: set[tuple[NodeId, NodeId]] = set()
        self._cut_outgoing: set[NodeId] = set()
        self._cut_incoming: set[NodeId] = set()
        # True when any rate or link cut is in force; written under the lock, read without it.
        self.active = False

    # ------------------------------------------------------------------ configuration

    def set_faults(self, drop: float = 0.0, duplicate: float = 0.0,
                   delay: tuple[float, float] = (0.0, 0.0), reorder: bool = False) -> None:
        """Set the fault rates for every link (the defaults switch all faults off).

        Args:
            drop: probability in [0, 1] that a message is lost.
            duplicate: probability in [0, 1] that a delivered message arrives twice.
            delay: (lo, hi) seconds, 0 <= lo <= hi; each copy is delayed uniformly in [lo, hi].
            reorder: let later messages overtake earlier ones (see the module docstring).

        Raises:
            ConfigError: a value is out of range; the message names the field and the rule.
                Nothing is changed then.
        """
        drop = _check_probability("drop", drop)
        duplicate = _check_probability("duplicate", duplicate)
        lo, hi = _check_delay(delay)
        if not isinstance(reorder, bool):
            raise ConfigError(f"reorder={reorder!r} must be a bool")
        with self._lock:
            self._drop, self._duplicate = drop, duplicate
            self._delay_lo, self._delay_hi = lo, hi
            self._reorder = reorder
            self._update_active()
        logger.info("faults set: drop=%s duplicate=%s delay=(%s, %s) reorder=%s",
                    drop, duplicate, lo, hi, reorder)

    def isolate(self, node: NodeId) -> None:
        """Cut every link to and from ``node`` until ``rejoin(node)`` or ``heal()``."""
        with self._lock:
            self._isolated.add(node)
            self._update_active()
        logger.info("isolated %s", node)

    def rejoin(self, node: NodeId) -> None:
        """Undo ``isolate(node)`` (a partition in force still applies).  No-op if not isolated."""
        with self._lock:
            self._isolated.discard(node)
            self._update_active()
        logger.info("rejoined %s", node)

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Split the network: only nodes in the same group can talk; unlisted nodes are cut off.

        Replaces any earlier partition; isolations stay in force.

        Raises:
            ConfigError: a node is named in two groups, or a group is a bare str (which would
                otherwise be split into characters).
        """
        for group in groups:
            if isinstance(group, str):
                raise ConfigError(f"partition: group {group!r} must be an iterable of node ids "
                                  "(a list), not a str")
        mapping: dict[NodeId, int] = {}
        materialized = [sorted(group) for group in groups]
        for number, group in enumerate(materialized):
            for node in group:
                if node in mapping and mapping[node] != number:
                    raise ConfigError(f"partition: node {node!r} is in groups {mapping[node]} "
                                      f"and {number}; a node may be in one group only")
                mapping[node] = number
        with self._lock:
            self._groups = mapping
            self._update_active()
        logger.info("partitioned %s", materialized)

    def cut(self, src: NodeId, dst: NodeId) -> None:
        """Drop every message from ``src`` to ``dst`` until ``heal()``; ``dst -> src`` is not
        affected (a one-way link failure).

        Raises:
            ConfigError: ``src == dst`` (a node always reaches itself).
        """
        if src == dst:
            raise ConfigError(f"cut: src and dst are both {src!r}; a node always reaches itself")
        with self._lock:
            self._cut_links.add((src, dst))
            self._update_active()
        logger.info("cut %s -> %s", src, dst)

    def cut_outgoing(self, node: NodeId) -> None:
        """Drop every message ``node`` sends to another node until ``heal()``; it still
        receives (a node that can receive but not send)."""
        self._cut_node(self._cut_outgoing, node, "outgoing")

    def cut_incoming(self, node: NodeId) -> None:
        """Drop every message another node sends to ``node`` until ``heal()``; it still
        sends (a node that can send but not receive)."""
        self._cut_node(self._cut_incoming, node, "incoming")

    def _cut_node(self, cuts: set[NodeId], node: NodeId, direction: str) -> None:
        with self._lock:
            cuts.add(node)
            self._update_active()
        logger.info("cut %s links of %s", direction, node)

    def heal(self) -> None:
        """Remove the partition, every isolation and every one-way cut.  Fault rates are
        unchanged."""
        with self._lock:
            self._groups = None
            self._isolated.clear()
            self._cut_links.clear()
            self._cut_outgoing.clear()
            self._cut_incoming.clear()
            self._update_active()
        logger.info("healed")

    @property
    def reorder(self) -> bool:
        """Whether messages may currently overtake one another on a link."""
        with self._lock:
            return self._reorder

    def _update_active(self) -> None:
        # Caller holds self._lock.
        self.active = bool(self._drop or self._duplicate or self._delay_hi or self._reorder
                           or self._isolated or self._groups is not None or self._cut_links
                           or self._cut_outgoing or self._cut_incoming)

    # ------------------------------------------------------------------ decisions

    def _link_up_locked(self, src: NodeId, dst: NodeId) -> bool:
        if src == dst:
            return True
        if self._isolated and (src in self._isolated or dst in self._isolated):
            return False
        if self._cut_outgoing and src in self._cut_outgoing:
            return False
        if self._cut_incoming and dst in self._cut_incoming:
            return False
        if self._cut_links and (src, dst) in self._cut_links:
            return False
        groups = self._groups
        if groups is not None:
            group = groups.get(src)
            return group is not None and group == groups.get(dst)
        return True

    def link_up(self, src: NodeId, dst: NodeId) -> bool:
        """Whether the link ``src -> dst`` is currently connected (no randomness involved)."""
        if not self.active:
            return True
        with self._lock:
            return self._link_up_locked(src, dst)

    def decide(self, src: NodeId, dst: NodeId) -> tuple[float, ...]:
        """The delivery delays, in seconds, of one message from ``src`` to ``dst``.

        ``()`` means the message is dropped, ``(d,)`` that it is delivered once after ``d``
        seconds, ``(d1, d2)`` that it is delivered twice.
        """
        return self.decide_ordered(src, dst)[0]

    def decide_ordered(self, src: NodeId, dst: NodeId) -> tuple[tuple[float, ...], bool]:
        """Like :meth:`decide`, and also whether reordering is allowed for this message.

        Transports use the flag to keep the link FIFO (see :class:`LinkOrder`); returning both
        under one lock acquisition keeps them consistent with each other.
        """
        if not self.active:
            return _NOW, False
        with self._lock:
            if not self._link_up_locked(src, dst):
                return _DROPPED, self._reorder
            rng = self._rng
            if self._drop and rng.random() < self._drop:
                return _DROPPED, self._reorder
            copies = 2 if self._duplicate and rng.random() < self._duplicate else 1
            lo, hi = self._delay_lo, self._delay_hi
            if self._reorder and not hi:
                lo, hi = 0.0, self._reorder_window
            if not hi:
                return (_NOW if copies == 1 else (0.0, 0.0)), self._reorder
            if copies == 1:
                return (rng.uniform(lo, hi),), self._reorder
            return (rng.uniform(lo, hi), rng.uniform(lo, hi)), self._reorder


class LinkOrder:
    """Per-link bookkeeping that keeps links FIFO while some of their messages are delayed.

    A transport calls :meth:`schedule` for every copy a :class:`FaultPlan` lets through, and
    :meth:`released` when a copy it delayed is handed on.  With ``reorder=False`` a copy is never
    due before an earlier copy on the same link, so a zero-delay message queues behind a delayed
    one instead of overtaking it.

    Not thread-safe: the owning transport guards it with its own lock (documented there).
    """

    __slots__ = ("_due", "_pending")

    def __init__(self) -> None:
        # link -> latest due time among its pending delayed copies (present iff pending).
        self._due: dict[Hashable, float] = {}
        # link -> number of delayed copies not yet released.
        self._pending: dict[Hashable, int] = {}

    def has_pending(self) -> bool:
        """Whether any link has a delayed copy not yet released."""
        return bool(self._pending)

    def schedule(self, link: Hashable, now: float, delay: float, reorder: bool) -> float | None:
        """The absolute due time (same clock as ``now``) for one copy, or None for "at once".

        A non-None result must later be matched by one :meth:`released` call for ``link``.
        """
        last = self._due.get(link)
        if delay <= 0.0 and (last is None or reorder):
            return None
        due = now + delay
        if last is not None:
            if not reorder and last > due:
                due = last
            self._due[link] = max(last, due)
        else:
            self._due[link] = due
        self._pending[link] = self._pending.get(link, 0) + 1
        return due

    def released(self, link: Hashable) -> None:
        """One delayed copy on ``link`` was handed on (delivered or dropped)."""
        left = self._pending.get(link, 0) - 1
        if left > 0:
            self._pending[link] = left
        else:
            self._pending.pop(link, None)
            self._due.pop(link, None)
