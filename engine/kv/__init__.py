"""A replicated Redis-compatible key-value service: the example of embedding the engine.

* :mod:`engine.kv.machine`: :class:`KVMachine`, the replicated state (Redis string commands,
  with expiry decided from times carried in commands) and its binary command and snapshot
  formats.
* :mod:`engine.kv.resp`: the RESP2 and RESP3 protocol (sans-IO parser and encoder).
* :mod:`engine.kv.server`: :class:`KVServer`, a RESP2/RESP3 TCP server in front of a RaftNode.
* :mod:`engine.kv.admin`: its RAFT.TRANSFER and RAFT.SNAPSHOT commands.
* :mod:`engine.kv.admin_client`, :mod:`engine.kv.cluster_view`: one-shot requests to a node,
  and the cluster view of ``raft-engine status``.

Run a node with ``raft-engine node ...`` (see :mod:`engine.cli`) and talk to it with redis-cli.
"""

from engine.kv.machine import KVMachine, Op, decode_command, decode_timed, encode_command
from engine.kv.resp import ProtocolError, RespParser, encode, parse_reply
from engine.kv.server import KVServer

__all__ = [
    "KVMachine",
    "KVServer",
    "Op",
    "ProtocolError",
    "RespParser",
    "decode_command",
    "decode_timed",
    "encode",
    "encode_command",
    "parse_reply",
]
