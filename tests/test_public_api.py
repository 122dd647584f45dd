"""The public contract of shared/DESIGN.md: names, signatures and error types exist as written."""

from __future__ import annotations

import inspect
from concurrent.futures import Future

import engine
from engine import (
    Config,
    LocalCluster,
    NotLeaderError,
    ProposalDropped,
    RaftError,
    RaftNode,
    StateMachine,
    Status,
)


def test_contract_names_are_exported() -> None:
    for name in ("Config", "RaftNode", "LocalCluster", "StateMachine", "Status",
                 "NotLeaderError", "ProposalDropped", "ConfigError"):
        assert name in engine.__all__
        assert hasattr(engine, name)


def test_error_tree() -> None:
    assert issubclass(NotLeaderError, RaftError)
    assert issubclass(ProposalDropped, RaftError)
    assert issubclass(engine.ConfigError, ValueError)
    err = NotLeaderError("n2")
    assert err.leader_id == "n2"
    assert NotLeaderError(None).leader_id is None


def test_raft_node_signature() -> None:
    params = inspect.signature(RaftNode).parameters
    assert list(params)[:3] == ["node_id", "peers", "state_machine"]
    for keyword in ("config", "data_dir", "transport"):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY


def test_local_cluster_signature() -> None:
    params = inspect.signature(LocalCluster).parameters
    assert params["n"].default == 3
    for keyword in ("state_machine", "config", "transport", "data_dir", "seed"):
        assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["transport"].default == "memory"
    for method in ("start", "stop", "wait_for_leader", "isolate", "rejoin", "partition", "heal",
                   "crash", "restart", "set_faults", "message_count"):
        assert callable(getattr(LocalCluster, method))


def test_status_fields() -> None:
    fields = set(Status.__dataclass_fields__)
    assert {"id", "role", "term", "leader_id", "commit_index", "last_applied",
            "last_log_index"} <= fields


def test_state_machine_protocol_is_runtime_checkable() -> None:
    class Machine:
        def apply(self, index: int, command: bytes) -> object:
            return index

        def snapshot(self) -> bytes:
            return b""

        def restore(self, data: bytes) -> None:
            pass

    assert isinstance(Machine(), StateMachine)
    assert not isinstance(object(), StateMachine)


def test_unstarted_node_fails_futures_instead_of_hanging() -> None:
    node = RaftNode("a", {"a": "memory:a"}, engine.LogStateMachine(), config=Config(),
                    transport=_NullTransport())
    future = node.propose(b"x")
    assert isinstance(future, Future)
    assert isinstance(future.exception(timeout=1), engine.NodeStopped)


class _NullTransport:
    def start(self, handler: object) -> None:
        pass

    def send(self, messages: object) -> None:
        pass

    def close(self) -> None:
        pass


def test_membership_api_of_issue_7() -> None:
    """The membership names the issue gives: RaftNode.change_membership(voters, learners=...)
    -> Future, add_learner / promote / remove_member, LocalCluster.add_node() / remove_node(i),
    transfer_leadership(target_id); MembershipError is a RaftError and a ValueError."""
    params = inspect.signature(RaftNode.change_membership).parameters
    assert list(params)[1:3] == ["voters", "learners"]
    for name in ("add_learner", "promote", "remove_member", "transfer_leadership"):
        assert callable(getattr(RaftNode, name))
    assert "join" in inspect.signature(RaftNode).parameters
    assert list(inspect.signature(LocalCluster.remove_node).parameters)[1] == "i"
    assert callable(LocalCluster.add_node)
    assert issubclass(engine.MembershipError, RaftError)
    assert issubclass(engine.MembershipError, ValueError)
    assert issubclass(engine.MembershipChangeInProgress, engine.MembershipError)
    assert "Membership" in engine.__all__


def test_status_reports_the_configuration() -> None:
    """Status.membership with voters/learners shortcuts; a stopped node reports none."""
    with LocalCluster(3, seed=3) as cluster:
        leader = cluster.wait_for_leader()
        status = leader.status()
        assert status.voters == ("n1", "n2", "n3") and status.learners == ()
        assert status.membership is not None and not status.membership.is_joint
    assert cluster.nodes[0].status().voters == ()
