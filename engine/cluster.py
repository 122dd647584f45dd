"""LocalCluster: n RaftNodes in one process, for tests, benchmarks and demos.

The cluster owns each node's durable stores, so ``crash(i)`` followed by ``restart(i)`` finds what
node i made durable, exactly as a disk would (with ``data_dir`` the stores are real files under
``data_dir/<node id>``).  Faults (isolate, partition, drop, duplicate, delay, reorder) are applied
by the transport through one seeded :class:`~engine.transport.faults.FaultPlan`; one-way cuts
(``cut``, ``cut_outgoing``, ``cut_incoming``) model gray failures, links that work in one
direction only.

Threading: the public methods are meant for one controlling thread; ``wait_for*`` block on a
condition that node threads notify when roles change or entries are applied.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from engine.config import Config
from engine.errors import (
    ConfigError,
    MembershipChangeInProgress,
    NotLeaderError,
    ProposalDropped,
    RaftError,
)
from engine.membership import Membership
from engine.runtime.node import RaftNode
from engine.statemachine import LogStateMachine, StateMachine
from engine.storage.base import LogStore, StableStore
from engine.storage.memory import MemoryLogStore, MemoryStableStore
from engine.storage.snapshot import MemorySnapshotStore, SnapshotStore
from engine.transport.faults import FaultPlan
from engine.transport.memory import MemoryNetwork
from engine.transport.tcp import free_loopback_ports

logger = logging.getLogger(__name__)

StateMachineFactory = Callable[[], StateMachine]



class LocalCluster:
    """n nodes with ids ``n1 .. n<n>``; ``cluster.nodes[i]`` is node ``n<i+1>``."""

    def __init__(self, n: int = 3, *, state_machine: StateMachineFactory | None = None,
                 config: Config | None = None, transport: str = "memory",
                 data_dir: str | None = None, seed: int | None = None) -> None:
        """Build (but do not start) the cluster.

        Raises:
            ConfigError: n < 1, unknown transport, bad config.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n={n!r} must be an integer >= 1")
        if transport not in ("memory", "tcp"):
            raise ConfigError(f"transport={transport!r} must be 'memory' or 'tcp'")
        self.config = config if config is not None else Config()
        if not isinstance(self.config, Config):
            raise ConfigError(f"config={config!r} must be an engine.Config")
        self._factory: StateMachineFactory = state_machine or LogStateMachine
        self._transport_kind = transport
        self._data_dir = data_dir
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self._rng = random.Random(self.seed)
        self.ids = [f"n{k}" for k in range(1, n + 1)]
        if transport == "memory":
            self.network: MemoryNetwork | None = MemoryNetwork(seed=self._rng.randrange(2**32))
            self.faults: FaultPlan = self.network.faults
            self.addresses = {i: f"memory:{i}" for i in self.ids}
        else:
            self.network = None
            self.faults = FaultPlan(seed=self._rng.randrange(2**32))
            ports = free_loopback_ports(n)
            self.addresses = {i: f"127.0.0.1:{p}" for i, p in zip(self.ids, ports, strict=True)}
        # The bootstrap configuration of the original members; nodes added later join with
        # join=True and learn the configuration from the leader.
        self._initial_addresses = dict(self.addresses)
        self._joined: set[str] = set()
        self._next_number = n + 1
        self._stores: dict[str, tuple[LogStore, StableStore, SnapshotStore]] = {}
        self._tcp_counts_of_dead = 0
        self._tcp_kind_counts_of_dead: dict[str, int] = {}
        self._changed = threading.Condition()
        self._generation = 0  # guarded by self._changed; bumped by every node notification
        self._started = False
        self._stopped = False
        self.nodes: list[RaftNode] = [self._make_node(k) for k in range(n)]

    # -- nodes ---------------------------------------------------------------------------------

    def _stores_for(self, node_id: str) -> tuple[LogStore, StableStore, SnapshotStore] | None:
        if self._data_dir is not None:
            return None
        if node_id not in self._stores:
            self._stores[node_id] = (MemoryLogStore(), MemoryStableStore(),
                                     MemorySnapshotStore())
        return self._stores[node_id]

    def _make_node(self, k: int) -> RaftNode:
        node_id = self.ids[k]
        if self.network is not None:
            transport = self.network.endpoint(node_id)
        else:
            from engine.transport.tcp import TcpTransport
            transport = TcpTransport(node_id, self.addresses, faults=self.faults,
                                     seed=self._rng.randrange(2**32))
        stores = self._stores_for(node_id)
        data_dir = None
        if self._data_dir is not None:
            data_dir = os.path.join(self._data_dir, node_id)
            os.makedirs(data_dir, exist_ok=True)
        joined = node_id in self._joined
        peers = dict(self.addresses) if joined else self._initial_addresses
        node = RaftNode(node_id, peers, self._factory(), config=self.config,
                        data_dir=data_dir, transport=transport,
                        log_store=stores[0] if stores else None,
                        stable_store=stores[1] if stores else None,
                        snapshot_store=stores[2] if stores else None,
                        seed=self._rng.randrange(2**32), join=joined)
        node.add_observer(self._notify)
        return node

    def _notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start every node."""
        self._started = True
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        """Stop every node and the network; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for node in self.nodes:
            node.stop()
        if self.network is not None:
            self.network.close()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def crash(self, i: int) -> None:
        """Stop node i abruptly; its durable state survives for :meth:`restart`."""
        self._count_dead_transport(i)
        self.nodes[i].crash()

    def restart(self, i: int) -> RaftNode:
        """Replace node i by a new RaftNode on the same durable state and a fresh state machine
        (rebuilt by replaying the log).  Crashes it first if it still runs."""
        old = self.nodes[i]
        if old.status().running:
            self._count_dead_transport(i)
            old.crash()
        node = self._make_node(i)
        self.nodes[i] = node
        node.start()
        self._notify()
        return node

    # -- membership ----------------------------------------------------------------------------

    def add_node(self, *, voter: bool = True, timeout: float = 30.0) -> RaftNode:
        """Start a new, empty node (id ``n<k>``, the next unused number) and add it to the
        cluster through the leader: as a learner, then (``voter``) as a voter once it has caught
        up (joint consensus).  Returns it once the change is committed; it is appended to
        :attr:`nodes`.  Retries through leader changes until ``timeout``.

        Raises:
            TimeoutError: the change did not complete in time (the node stays in ``nodes``).
            MembershipError: the leader refused the change for good.
            RaftError: the cluster is not running.
        """
        self._check_running("add_node")
        node_id = f"n{self._next_number}"
        self._next_number += 1
        if self.network is not None:
            address = f"memory:{node_id}"
        else:
            address = f"127.0.0.1:{free_loopback_ports(1)[0]}"
        self.ids.append(node_id)
        self.addresses[node_id] = address
        self._joined.add(node_id)
        node = self._make_node(len(self.ids) - 1)
        self.nodes.append(node)
        if self._started:
            node.start()
        deadline = time.monotonic() + timeout
        self._change_until(lambda m: node_id in m.members(),
                           lambda leader: leader.add_learner(node_id, address), deadline)
        if voter:
            self._change_until(lambda m: node_id in m.voters and not m.is_joint,
                               lambda leader: leader.promote(node_id), deadline)
        return node

    def remove_node(self, i: int, *, timeout: float = 30.0) -> RaftNode:
        """Remove node i from the configuration through the leader (joint consensus when it is
        a voter; the leader itself may be removed: it steps down), then stop it and drop it
        from :attr:`nodes` (later nodes' indexes shift down by one).  Returns the stopped node.

        Raises:
            TimeoutError: the change did not complete in time (the node keeps running).
            MembershipError: the leader refused the change for good.
            RaftError: the cluster is not running.
        """
        self._check_running("remove_node")
        node = self.nodes[i]
        node_id = node.id
        deadline = time.monotonic() + timeout
        self._change_until(lambda m: node_id not in m.members() and not m.is_joint,
                           lambda leader: leader.remove_member(node_id), deadline)
        self._count_dead_transport(i)
        node.stop()
        del self.nodes[i]
        del self.ids[i]
        self._notify()
        return node

    def _check_running(self, what: str) -> None:
        if not self._started or self._stopped:
            raise RaftError(f"{what}() needs a running cluster: call start() first "
                            "(and not after stop())")

    def _change_until(self, goal: Callable[[Membership], bool],
                      request: Callable[[RaftNode], object], deadline: float) -> None:
        """Ask the leader for a change until the committed configuration satisfies ``goal``;
        a change lost with its leader, or refused because another is still running, is asked
        again of the next leader."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"membership change not complete in time (seed {self.seed})")
            leader = self.wait_for_leader(remaining)
            if not self._committed_config(leader):
                # A change is under way (joint, or an entry the leader has not seen commit,
                # maybe one that survived its leader): its outcome decides what to ask for.
                self._wait_settled(leader, min(remaining, 0.5))
                continue
            if goal(leader.membership):
                return
            future = request(leader)
            try:
                result = future.result(  # type: ignore[attr-defined]
                    max(0.0, deadline - time.monotonic()))
                if goal(result):
                    return
            except (NotLeaderError, ProposalDropped) as exc:
                logger.info("membership change retried: %s", exc)
            except MembershipChangeInProgress:
                # Another change (a joint configuration's second half, say) is finishing.
                self._wait_settled(leader, 0.5)
            except TimeoutError:
                continue

    def _wait_settled(self, leader: RaftNode, timeout: float) -> None:
        """Wait until ``leader``'s configuration is committed and not joint, or it stops
        leading (then the caller looks for the next leader)."""
        self.wait_for(lambda: self._committed_config(leader)
                      or leader.status().role != "leader", timeout)

    @staticmethod
    def _committed_config(node: RaftNode) -> bool:
        status = node.status()
        return (status.membership is not None and status.membership_committed
                and not status.membership.is_joint)

    def _count_dead_transport(self, i: int) -> None:
        transport = getattr(self.nodes[i], "_transport", None)
        if self.network is None and transport is not None:
            self._tcp_counts_of_dead += transport.message_count()
            for kind, count in transport.message_counts().items():
                self._tcp_kind_counts_of_dead[kind] = (
                    self._tcp_kind_counts_of_dead.get(kind, 0) + count)

    # -- faults --------------------------------------------------------------------------------

    def isolate(self, i: int) -> None:
        """Cut node i off from every other node (both directions)."""
        self.faults.isolate(self.ids[i])

    def rejoin(self, i: int) -> None:
        """Undo :meth:`isolate` for node i (a partition or one-way cut in force still applies)."""
        self.faults.rejoin(self.ids[i])

    def partition(self, *groups: Iterable[int]) -> None:
        """Split the cluster: nodes talk only within their group (indexes, e.g. [0, 1], [2])."""
        self.faults.partition(*[[self.ids[i] for i in group] for group in groups])

    def cut(self, i: int, j: int) -> None:
        """Cut the link from node i to node j in that direction only: i's messages to j are
        dropped, j's messages to i still arrive (a one-way link failure).  Until :meth:`heal`.

        Raises:
            ConfigError: ``i == j``.
        """
        self.faults.cut(self.ids[i], self.ids[j])

    def cut_outgoing(self, i: int) -> None:
        """Node i can receive but not send: every message it sends to another node is dropped
        (a gray failure: it hears the others, they never hear it).  Until :meth:`heal`."""
        self.faults.cut_outgoing(self.ids[i])

    def cut_incoming(self, i: int) -> None:
        """Node i can send but not receive: every message sent to it by another node is dropped
        (a gray failure: the others hear it, it never hears them).  Until :meth:`heal`."""
        self.faults.cut_incoming(self.ids[i])

    def heal(self) -> None:
        """Remove every partition, isolation and one-way cut (:meth:`cut`,
        :meth:`cut_outgoing`, :meth:`cut_incoming`); fault rates are kept."""
        self.faults.heal()

    def set_faults(self, drop: float = 0.0, duplicate: float = 0.0,
                   delay: tuple[float, float] = (0.0, 0.0), reorder: bool = False) -> None:
        """Probabilistic faults on every link (seeded by the cluster's seed)."""
        self.faults.set_faults(drop=drop, duplicate=duplicate, delay=delay, reorder=reorder)

    def message_count(self) -> int:
        """Messages handed to the transport so far by all nodes, dropped ones included."""
        if self.network is not None:
            return self.network.message_count()
        return self._tcp_counts_of_dead + sum(
            n._transport.message_count() for n in self.nodes if n._transport is not None)

    def message_counts(self) -> dict[str, int]:
        """:meth:`message_count` split by message kind (``MessageKind`` names, e.g.
        ``'HEARTBEAT'``, ``'PRE_VOTE'``); every kind is present.  Lets a test wait for protocol
        activity (heartbeat rounds, election attempts) instead of for wall-clock time."""
        if self.network is not None:
            return self.network.message_counts()
        totals = dict(self._tcp_kind_counts_of_dead)
        for node in self.nodes:
            if node._transport is not None:
                for kind, count in node._transport.message_counts().items():
                    totals[kind] = totals.get(kind, 0) + count
        return totals

    # -- waiting -------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate()`` holds (re-checked whenever a node changes role or applies
        entries, and at least every 50 ms); False on timeout.

        The predicate runs without any cluster lock held, so it may block on the nodes (a read,
        say): node threads notify through ``_changed`` and must never wait on a predicate.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._generation
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                if self._generation == seen:  # nothing changed while the predicate ran
                    self._changed.wait(min(remaining, 0.05))

    def leader(self) -> RaftNode | None:
        """The node that effectively leads, or None.

        A node counts only if it reports the leader role AND a majority of the cluster, among the
        running nodes it is connected to (both directions, as far as the cluster's fault plan
        says), reports the same term and it as their leader.  So a leader cut off by
        ``isolate()`` or left in a minority by ``partition()`` is not returned even while it still
        believes it leads (until CheckQuorum makes it step down), and right after an election
        the new leader is returned once a majority has heard from it.
        """
        statuses = {node.id: node.status() for node in self.nodes}
        running = {node_id: s for node_id, s in statuses.items() if s.running}
        best: tuple[int, RaftNode] | None = None
        for node in self.nodes:
            status = statuses[node.id]
            if not status.running or status.role != "leader":
                continue
            backers = {
                peer_id for peer_id, peer in running.items()
                if peer.term == status.term and peer.leader_id == node.id
                and (peer_id == node.id or (self.faults.link_up(node.id, peer_id)
                                            and self.faults.link_up(peer_id, node.id)))}
            membership = status.membership
            voter_sets = ([membership.voters, membership.outgoing] if membership is not None
                          else [tuple(self.ids)])
            if all(len(backers & set(voters)) >= len(voters) // 2 + 1
                   for voters in voter_sets if voters) and (
                    best is None or status.term > best[0]):
                best = (status.term, node)
        return best[1] if best is not None else None

    def wait_for_leader(self, timeout: float = 5.0) -> RaftNode:
        """The leader, once there is one.

        Raises:
            TimeoutError: no leader within ``timeout`` seconds.
        """
        found: list[RaftNode] = []

        def has_leader() -> bool:
            node = self.leader()
            if node is not None:
                found[:] = [node]
            return node is not None

        if not self.wait_for(has_leader, timeout):
            raise TimeoutError(f"no leader within {timeout}s (seed {self.seed})")
        return found[0]

    def wait_applied(self, index: int, nodes: Sequence[int] | None = None,
                     timeout: float = 5.0) -> bool:
        """Block until the given nodes (default: all running) applied ``index``."""
        def done() -> bool:
            chosen = [self.nodes[i] for i in nodes] if nodes is not None else [
                n for n in self.nodes if n.status().running]
            return all(n.last_applied >= index for n in chosen)
        return self.wait_for(done, timeout)
