"""The sans-IO Raft core: a deterministic state machine driven by tick/step/propose/ready."""

from engine.core.messages import Message, MessageKind
from engine.core.raft import Raft, RaftOptions, Role
from engine.core.raw_node import CoreStatus, PeerProgress, RawNode
from engine.core.ready import ReadState, Ready, SoftState

__all__ = [
    "CoreStatus",
    "Message",
    "MessageKind",
    "PeerProgress",
    "Raft",
    "RaftOptions",
    "RawNode",
    "ReadState",
    "Ready",
    "Role",
    "SoftState",
]
