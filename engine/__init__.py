"""raft-engine: a Raft replication engine for Python.

The public contract (see README.md)::

    from engine import Config, RaftNode, LocalCluster, StateMachine, Status, NotLeaderError
"""

from engine.cluster import LocalCluster
from engine.config import Config
from engine.errors import (
    ConfigError,
    CorruptLogError,
    FrameError,
    InvariantError,
    MembershipChangeInProgress,
    MembershipError,
    NodeStopped,
    NotLeaderError,
    Overloaded,
    ProposalDropped,
    RaftError,
    ReadTimeout,
    StorageError,
    TransferError,
)
from engine.membership import Membership
from engine.runtime.node import RaftNode
from engine.statemachine import CounterStateMachine, LogStateMachine, StateMachine
from engine.status import Status
from engine.types import Entry, EntryKind, HardState

__all__ = [
    "Config",
    "ConfigError",
    "CorruptLogError",
    "CounterStateMachine",
    "Entry",
    "EntryKind",
    "FrameError",
    "HardState",
    "InvariantError",
    "LocalCluster",
    "LogStateMachine",
    "Membership",
    "MembershipChangeInProgress",
    "MembershipError",
    "NodeStopped",
    "NotLeaderError",
    "Overloaded",
    "ProposalDropped",
    "RaftError",
    "RaftNode",
    "ReadTimeout",
    "StateMachine",
    "Status",
    "StorageError",
    "TransferError",
]

__version__ = "0.1.0"
