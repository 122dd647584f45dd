"""A replicated Redis-compatible key-value service: the example of embedding the engine.

* :mod:`engine.kv.machine`: :class:`KVMachine`, the replicated state (SET, GET, DEL, INCR,
  APPEND, EXISTS, MSET, MGET) and its binary command and snapshot formats.
* :mod:`engine.kv.resp`: the RESP2 protocol (sans-IO parser and encoder).
* :mod:`engine.kv.server`: :class:`KVServer`, a RESP2 TCP server in front of a RaftNode.

Run a node with ``raft-engine node ...`` (see :mod:`engine.cli`) and talk to it with redis-cli.
"""

from engine.kv.machine import KVMachine, Op, decode_command, encode_command
from engine.kv.resp import ProtocolError, RespParser, encode, parse_reply
from engine.kv.server import KVServer

__all__ = [
    "KVMachine",
    "KVServer",
    "Op",
    "ProtocolError",
    "RespParser",
    "decode_command",
    "encode",
    "encode_command",
    "parse_reply",
]
