"""Transports: how Raft messages travel between nodes.

``Transport`` is the interface the runtime drives; ``MemoryNetwork``/``MemoryTransport`` connect
nodes inside one process; ``TcpTransport`` connects them over TCP; ``FaultPlan`` injects drops,
duplicates, delays, reordering, isolation and partitions into either.
"""

from engine.transport.base import MessageHandler, Transport
from engine.transport.faults import FaultPlan, LinkOrder
from engine.transport.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    FrameDecoder,
    decode_message,
    encode_message,
)
from engine.transport.memory import MemoryNetwork, MemoryTransport
from engine.transport.tcp import HandshakeError, TcpTransport

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FaultPlan",
    "FrameDecoder",
    "HandshakeError",
    "LinkOrder",
    "MemoryNetwork",
    "MemoryTransport",
    "MessageHandler",
    "TcpTransport",
    "Transport",
    "decode_message",
    "encode_message",
]
