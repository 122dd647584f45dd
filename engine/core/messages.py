"""The messages Raft peers exchange, as one immutable record type with a kind.

One record type (like etcd's ``raftpb.Message``) rather than a class per kind keeps the transport
codec and fault injection uniform; the table below says which fields each kind uses.

=====================  ===============================================================
kind                   fields used (besides kind, src, dst, term)
=====================  ===============================================================
APPEND                 index (prev log index), log_term (prev log term), entries, commit,
                       leader_last (the leader's last log index when it sent this), context
                       (to a recovering follower: the recovery nonce it last sent, echoed)
APPEND_RESPONSE        index (last index now matching, or the rejected prev index),
                       reject, reject_hint, conflict_term (rejections with fast backup),
                       recovering, context (a recovering node's recovery nonce)
HEARTBEAT              commit (min of leader commit and the follower's match), context,
                       index (last index the leader has sent this follower), leader_last
HEARTBEAT_RESPONSE     context (echoed, acknowledges ReadIndex rounds), reject (the follower
                       lacks entries up to the heartbeat's index: an append was lost),
                       recovering
VOTE / PRE_VOTE        index, log_term (candidate's last log index and term)
VOTE_RESPONSE /        reject, recovering (a recovering node rejects every vote request)
PRE_VOTE_RESPONSE
SNAPSHOT               index, log_term (the snapshot's last index and term), data (orjson
                       list of the snapshot's voters).  Leader core -> its runtime: "send your
                       latest snapshot to dst"; receiving runtime -> its core once the whole
                       snapshot has arrived and verified: "install it".  Never on the wire.
TIMEOUT_NOW            (none): the leader hands over; campaign at once, skipping pre-vote
VOTE (transfer)        context=CAMPAIGN_TRANSFER after TIMEOUT_NOW
SNAPSHOT_CHUNK         index, log_term (snapshot), context (byte offset of this chunk),
                       commit (total size of the encoded snapshot), data (the chunk)
SNAPSHOT_CHUNK_RESP.   index, log_term (snapshot), context (next byte offset wanted),
                       reject (the receiver gave up on this snapshot: bad checksum)
=====================  ===============================================================

Snapshot chunks are a runtime sub-protocol (see ``engine/runtime/snapshots.py``): the core only
decides that a follower needs a snapshot and installs one that has fully arrived.

``recovering`` is set on every response of a node that is *recovering* (start-up found it lost
entries it may have acknowledged; see :class:`~engine.types.HardState`): the leader does not
count such a peer towards a commit or a ReadIndex quorum, and a recovering follower leaves that
state once an append that echoes its recovery nonce (so it was sent after the leader heard from
this incarnation, not delayed from before the fault) has given it every entry up to the
``leader_last`` it carried.

A message whose ``src == dst`` is local: the core sends it to itself through
``Ready.messages_after_persist`` to learn that its own write is durable (an APPEND_RESPONSE: the
leader's self-ack) or that its own vote is durable (a VOTE_RESPONSE).  Drivers step such messages
back into the same core instead of sending them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from engine.types import Entry, Index, NodeId, Term


class MessageKind(IntEnum):
    """The kinds of message; values are stable because they go on the wire."""

    APPEND = 1
    APPEND_RESPONSE = 2
    HEARTBEAT = 3
    HEARTBEAT_RESPONSE = 4
    VOTE = 5
    VOTE_RESPONSE = 6
    PRE_VOTE = 7
    PRE_VOTE_RESPONSE = 8
    SNAPSHOT = 9
    SNAPSHOT_CHUNK = 10
    SNAPSHOT_CHUNK_RESPONSE = 11
    TIMEOUT_NOW = 12


#: ``Message.context`` of a VOTE sent because of a leadership transfer: voters grant it even
#: inside CheckQuorum's leader lease (the leader asked for it).
CAMPAIGN_TRANSFER = 1


_RESPONSE_OF = {
    MessageKind.VOTE: MessageKind.VOTE_RESPONSE,
    MessageKind.PRE_VOTE: MessageKind.PRE_VOTE_RESPONSE,
}


def vote_response_kind(kind: MessageKind) -> MessageKind:
    """The response kind for a VOTE or PRE_VOTE request."""
    return _RESPONSE_OF[kind]


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One Raft message.  Immutable; shared freely between threads once built."""

    kind: MessageKind
    src: NodeId
    dst: NodeId
    term: Term
    log_term: Term = 0
    index: Index = 0
    entries: Sequence[Entry] = ()
    commit: Index = 0
    reject: bool = False
    reject_hint: Index = 0
    conflict_term: Term = 0
    context: int = 0
    leader_last: Index = 0
    recovering: bool = False
    data: bytes = b""
