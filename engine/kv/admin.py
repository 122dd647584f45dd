"""The KV server's administrative commands besides RAFT.STATUS and RAFT.MEMBER.

``RAFT.TRANSFER <id>``
    on the leader: hand leadership to the voter ``<id>``; answers, once ``<id>`` leads, the JSON
    ``{"leader_id": <id>, "leader_address": <its client address or null>}``.  A follower answers
    ``-NOTLEADER`` as for writes; a target that is not another voter, or that did not take
    over in time (``TransferError``), gets ``-ERR`` with the reason.  Asking the leader to
    transfer to itself answers at once (it already leads).
``RAFT.SNAPSHOT``
    on any node: take a snapshot now; answers its index (an integer) once it is durable and
    the log has been compacted behind it (0 when nothing was applied yet).

Each handler runs on the server's loop (see :mod:`engine.kv.server`) and returns either a reply
or a :class:`~concurrent.futures.Future` of one, which the connection answers in order like
RAFT.MEMBER's.  Exceptions that the server's ``error_reply`` does not turn into a clear line
(``ValueError`` from a bad target) are settled as ``-ERR`` replies here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import orjson

from engine.errors import RaftError
from engine.kv.resp import Error
from engine.runtime.node import RaftNode

ARITY = {b"raft.transfer": 2, b"raft.snapshot": 1}
"""Redis arity of each command here (the name counts)."""


def _clean(text: str, limit: int = 200) -> str:
    return text[:limit].replace("\r", " ").replace("\n", " ")


def _relay(source: Future, convert: Callable[[Any], object]) -> Future:
    """A future of ``convert(result)``; ValueError/TypeError become ``-ERR`` replies, other
    exceptions are passed on (the server maps them: NotLeaderError -> -NOTLEADER, ...)."""
    reply: Future = Future()

    def done(f: Future) -> None:
        exc = f.exception()
        if exc is None:
            reply.set_result(convert(f.result()))
        elif isinstance(exc, ValueError | TypeError) and not isinstance(exc, RaftError):
            reply.set_result(Error(f"ERR {_clean(str(exc))}"))
        else:
            reply.set_exception(exc)
    source.add_done_callback(done)
    return reply


def transfer(node: RaftNode, args: list[bytes], client_addresses: Mapping[str, str]) -> object:
    """RAFT.TRANSFER <id>: a Future of the JSON reply (see the module docstring)."""
    target = args[0].decode("utf-8", "replace")
    if not target:
        return Error("ERR the target node id must not be empty")

    def leads(leader_id: str) -> bytes:
        return orjson.dumps({"leader_id": leader_id,
                             "leader_address": client_addresses.get(leader_id)})
    status = node.status()
    if target == node.id and status.role == "leader":
        return leads(target)
    return _relay(node.transfer_leadership(target), leads)


def snapshot(node: RaftNode, args: list[bytes]) -> object:
    """RAFT.SNAPSHOT: a Future of the snapshot's index."""
    return _relay(node.snapshot(), int)


def command(node: RaftNode, name: bytes, args: list[bytes],
            client_addresses: Mapping[str, str]) -> object:
    """Run the admin command ``name`` (lower case, arity checked against :data:`ARITY`)."""
    if name == b"raft.transfer":
        return transfer(node, args, client_addresses)
    if name == b"raft.snapshot":
        return snapshot(node, args)
    raise RaftError(f"not an admin command: {name!r}")
