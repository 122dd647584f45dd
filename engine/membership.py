"""Membership: who votes, who only listens, and where everyone can be reached.

A configuration is a value carried by CONFIG log entries and by snapshots.  It takes effect on
a node as soon as the entry is appended to that node's log (Raft thesis section 4.1), committed or
not; a truncated log falls back to the newest configuration still in it.

Changes of the voter set go through joint consensus (thesis 4.3, after etcd's ``confchange``):

* ``C_old`` -> ``C_old,new``: the joint configuration, ``voters`` = the new voters and
  ``outgoing`` = the old ones.  While it is in force, elections and commitment need a majority
  of each set separately.
* ``C_old,new`` -> ``C_new``: the leader appends this as soon as the joint entry commits
  (:meth:`Membership.leave_joint`).

Learners receive the log but never vote, campaign or count towards a majority.  A voter being
demoted to a learner is in ``outgoing`` and ``learners`` at once while joint; otherwise the
voter and learner sets are disjoint.

The address book (id -> "host:port") travels with the configuration so that a node added later
can be reached by everyone, including nodes that join long after from a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

NodeId = str


def _ids(value: Iterable[NodeId], field: str) -> tuple[NodeId, ...]:
    if isinstance(value, str | bytes):
        raise ValueError(f"Membership.{field}={value!r} must be a collection of node ids, "
                         "not a single string")
    ids = list(value)
    for node_id in ids:
        if not isinstance(node_id, str) or not node_id:
            raise ValueError(f"Membership.{field} has {node_id!r}: ids are non-empty strings")
    return tuple(sorted(set(ids)))


@dataclass(frozen=True, slots=True)
class Membership:
    """One cluster configuration (immutable; every collection is a sorted tuple).

    Attributes:
        voters: the voters (while joint: the *incoming* voters).
        outgoing: while joint, the voters of the configuration being left; else empty.
        learners: non-voting members that receive the log.
        addresses: id -> "host:port" for every member the configuration knows an address for.
    """

    voters: tuple[NodeId, ...] = ()
    outgoing: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    addresses: tuple[tuple[NodeId, str], ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "voters", _ids(self.voters, "voters"))
        set_(self, "outgoing", _ids(self.outgoing, "outgoing"))
        set_(self, "learners", _ids(self.learners, "learners"))
        book = self.addresses
        pairs = sorted(book.items()) if isinstance(book, Mapping) else sorted(book)
        for pair in pairs:
            if (len(pair) != 2 or not isinstance(pair[0], str) or not isinstance(pair[1], str)):
                raise ValueError(f"Membership.addresses has {pair!r}: want id -> 'host:port'")
        set_(self, "addresses", tuple((k, v) for k, v in pairs))
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError(f"Membership.addresses repeats an id: {pairs!r}")
        both = set(self.voters) & set(self.learners)
        if both:
            raise ValueError(f"{sorted(both)} cannot be both voter and learner")
        if self.outgoing and not self.voters:
            raise ValueError("a joint configuration needs incoming voters")

    # -- queries ---------------------------------------------------------------------------

    @property
    def is_joint(self) -> bool:
        """True while leaving ``outgoing`` for ``voters`` (C_old,new)."""
        return bool(self.outgoing)

    @property
    def is_empty(self) -> bool:
        """True for the configuration of a node that has not yet learned one (a joiner)."""
        return not self.voters and not self.learners

    def members(self) -> tuple[NodeId, ...]:
        """Every node that receives the log: voters of both halves and learners, sorted."""
        return tuple(sorted(set(self.voters) | set(self.outgoing) | set(self.learners)))

    def can_vote(self, node_id: NodeId) -> bool:
        """True when ``node_id``'s vote counts in some majority (so it may campaign)."""
        return node_id in self.voters or node_id in self.outgoing

    def address_book(self) -> dict[NodeId, str]:
        """The addresses as a new dict."""
        return dict(self.addresses)

    # -- transitions ------------------------------------------------------------------------

    def change_to(self, voters: Iterable[NodeId], learners: Iterable[NodeId] = (),
                  addresses: Mapping[NodeId, str] | None = None) -> Membership:
        """The configuration that starts the move to ``voters`` and ``learners``: the joint
        configuration when the voter set changes, else the new configuration directly (a
        learner-only change needs no joint phase: no majority changes).

        ``addresses`` adds or replaces entries of the address book; addresses of nodes that
        leave are dropped once the change completes.

        Raises:
            ValueError: this configuration is joint already, the new voter set is empty, a
                node is both voter and learner, or the change changes nothing.
        """
        if self.is_joint:
            raise ValueError("a membership change is still in progress (joint configuration)")
        new_voters, new_learners = _ids(voters, "voters"), _ids(learners, "learners")
        if not new_voters:
            raise ValueError("the new configuration needs at least one voter")
        book = self.address_book()
        book.update(addresses or {})
        outgoing = self.voters if new_voters != self.voters else ()
        if not outgoing:
            keep = set(new_voters) | set(new_learners)
            book = {k: v for k, v in book.items() if k in keep}
        changed = Membership(new_voters, outgoing, new_learners, book)
        if changed == self:
            raise ValueError(f"voters={list(new_voters)} learners={list(new_learners)} is the "
                             "current configuration")
        return changed

    def leave_joint(self) -> Membership:
        """C_new of a joint configuration: the incoming voters and the learners (demoted voters
        stay learners); the address book keeps members only.

        Raises:
            ValueError: this configuration is not joint.
        """
        if not self.is_joint:
            raise ValueError("not a joint configuration")
        keep = set(self.voters) | set(self.learners)
        return Membership(self.voters, (), self.learners,
                          {k: v for k, v in self.addresses if k in keep})

    # -- encoding ---------------------------------------------------------------------------

    def encode(self) -> bytes:
        """Canonical bytes (JSON with sorted keys): equal configurations encode equally."""
        return orjson.dumps({"voters": self.voters, "outgoing": self.outgoing,
                             "learners": self.learners, "addresses": dict(self.addresses)},
                            option=orjson.OPT_SORT_KEYS)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Membership:
        """Parse :meth:`encode`'s output.

        Raises:
            ValueError: the bytes are not a valid encoded configuration (message says why).
        """
        try:
            raw: Any = orjson.loads(bytes(data))
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"membership is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or set(raw) - {"voters", "outgoing", "learners",
                                                   "addresses"}:
            raise ValueError(f"membership must be an object with voters/outgoing/learners/"
                             f"addresses, got {str(raw)[:80]!r}")
        for key in ("voters", "outgoing", "learners"):
            if not isinstance(raw.get(key, []), list):
                raise ValueError(f"membership {key} must be a list")
        if not isinstance(raw.get("addresses", {}), dict):
            raise ValueError("membership addresses must be an object")
        return cls(raw.get("voters", ()), raw.get("outgoing", ()), raw.get("learners", ()),
                   raw.get("addresses", {}))

    @classmethod
    def bootstrap(cls, peers: Mapping[NodeId, str]) -> Membership:
        """The initial configuration of a new cluster: every peer a voter."""
        return cls(tuple(peers), (), (), peers)

    def describe(self) -> str:
        """Short text for logs: ``voters=[a,b] outgoing=[..] learners=[..]``."""
        text = f"voters={list(self.voters)}"
        if self.outgoing:
            text += f" outgoing={list(self.outgoing)}"
        if self.learners:
            text += f" learners={list(self.learners)}"
        return text


EMPTY_MEMBERSHIP = Membership()
