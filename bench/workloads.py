"""Measurement drivers that run against a started :class:`engine.LocalCluster`.

Only the public API is used (``propose``, ``read``, ``status``, ``campaign``, ``crash``,
``restart``, ``isolate``/``rejoin``, ``set_faults``, ``message_count``, ``wait_for``), so the same
drivers work on every transport and store.  Every driver returns plain numbers; turning them into
pyperf benchmarks and tables is bench/scenarios.py's and bench/report.py's job.

Clocks: ``time.perf_counter`` for durations.  Randomness: only the ``random.Random`` passed in.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine import LocalCluster, NodeStopped, NotLeaderError, ProposalDropped, RaftNode
from engine.transport.framing import encode_message

RETRYABLE = (NotLeaderError, ProposalDropped, NodeStopped, TimeoutError)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of an already sorted sequence; nan when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of latencies in seconds, reported in microseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"ops": 0}
    return {
        "ops": len(ordered),
        "p50_us": percentile(ordered, 50) * 1e6,
        "p90_us": percentile(ordered, 90) * 1e6,
        "p99_us": percentile(ordered, 99) * 1e6,
        "max_us": ordered[-1] * 1e6,
        "mean_us": sum(ordered) / len(ordered) * 1e6,
    }


def payload_of(size: int, tag: int = 0) -> bytes:
    """A payload of ``size`` bytes (at least 8) that starts with a unique-ish tag."""
    head = tag.to_bytes(8, "big")
    return (head + b"x" * max(0, size - 8))[:max(size, 8)]


def ready_leader(cluster: LocalCluster, timeout: float = 10.0) -> RaftNode:
    """Wait for a leader and for one proposal to commit through it (its no-op is then committed
    too, so the next measured proposal does not pay for the election)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        node = cluster.wait_for_leader(timeout=max(0.1, deadline - time.monotonic()))
        try:
            node.propose(b"warm").result(timeout=max(0.1, deadline - time.monotonic()))
            return node
        except RETRYABLE as exc:
            last_error = exc
            time.sleep(0.01)
    raise TimeoutError(f"no leader able to commit within {timeout}s ({last_error!r})")


# -- sequential client --------------------------------------------------------------------------

def measure_latency(cluster: LocalCluster, payload: bytes, *, ops: int, warmup_ops: int,
                    budget_s: float, timeout: float = 5.0) -> tuple[list[float], int]:
    """One client, one proposal at a time: seconds from ``propose`` to the future resolving.

    Runs ``warmup_ops`` unmeasured proposals, then up to ``ops`` measured ones or until
    ``budget_s`` seconds have passed (at least 20 are measured).  A proposal that fails because
    leadership moved is retried on the new leader and its latency includes the retries (what a
    client sees).  Returns (latencies, retries).
    """
    node = ready_leader(cluster)
    retries = 0
    perf = time.perf_counter
    values: list[float] = []
    deadline = math.inf
    for k in range(warmup_ops + ops):
        if k == warmup_ops:
            deadline = perf() + budget_s
        start = perf()
        while True:
            try:
                node.propose(payload).result(timeout)
                break
            except RETRYABLE:
                retries += 1
                node = ready_leader(cluster, timeout=30.0)
        end = perf()
        if k >= warmup_ops:
            values.append(end - start)
            if end > deadline and len(values) >= 20:
                break
    return values, retries


# -- saturation ---------------------------------------------------------------------------------

@dataclass
class ThroughputResult:
    windows: list[tuple[float, int]]           # (seconds, commits) per measured window
    errors: int = 0                            # futures that failed (leader change, ...)
    outstanding: int = 0

    @property
    def rates(self) -> list[float]:
        return [c / s for s, c in self.windows if s > 0]

    def summary(self) -> dict[str, float]:
        rates = sorted(self.rates)
        total_s = sum(s for s, _ in self.windows)
        total_c = sum(c for _, c in self.windows)
        return {
            "commits_per_s": statistics.median(rates) if rates else 0.0,   # median window
            "commits_per_s_mean": total_c / total_s if total_s else 0.0,
            "commits_per_s_min": rates[0] if rates else 0.0,
            "commits_per_s_max": rates[-1] if rates else 0.0,
            "commits": total_c,
            "windows": len(self.windows),
            "errors": self.errors,
            "outstanding": self.outstanding,
        }


def measure_throughput(cluster: LocalCluster, payload: bytes, *, outstanding: int,
                       warmup_s: float, windows: int, window_s: float,
                       stall_timeout: float = 10.0) -> ThroughputResult:
    """Keep ``outstanding`` proposals in flight on the leader and count completions per window.

    The driver keeps the futures in a FIFO: it tops the window up to ``outstanding``, waits for
    the oldest future, then takes every finished one off the front (commits resolve in log
    order, so the front finishes first).  This costs the shared GIL much less than a
    done-callback and a semaphore per proposal (measured: about 1.4x the throughput on 2 cores).
    The first ``warmup_s`` seconds are not counted.  When leadership moves (fault scenarios) the
    driver follows the new leader; failed proposals are counted in ``errors``, not as commits.
    """
    node = ready_leader(cluster)
    pending: deque[Future] = deque()
    ok = failed = 0
    perf = time.perf_counter
    marks: list[tuple[float, int]] = []
    boundaries = [warmup_s + k * window_s for k in range(windows + 1)]
    start = perf()
    next_mark = 0
    propose = node.propose
    while next_mark <= windows:
        if len(pending) < outstanding:
            if node.status().role != "leader":
                node = ready_leader(cluster, timeout=30.0)
                propose = node.propose
            for _ in range(outstanding - len(pending)):
                pending.append(propose(payload))
        head = pending.popleft()
        try:
            head.result(stall_timeout)
            ok += 1
        except RETRYABLE:
            if not head.done():
                raise TimeoutError(f"no proposal completed for {stall_timeout}s") from None
            failed += 1
        while pending and pending[0].done():
            if pending.popleft().exception() is None:
                ok += 1
            else:
                failed += 1
        now = perf()
        if now - start >= boundaries[next_mark]:
            marks.append((now, ok))
            next_mark += 1
    # Give what is in flight a moment to finish (not counted) before the cluster stops.
    futures_wait(pending, timeout=min(stall_timeout, 1.0))  # stop() fails the rest
    result = ThroughputResult(windows=[], errors=failed, outstanding=outstanding)
    for (t0, c0), (t1, c1) in itertools.pairwise(marks):
        result.windows.append((t1 - t0, c1 - c0))
    return result


# -- faults: elections and recovery -------------------------------------------------------------

def max_term(cluster: LocalCluster) -> int:
    return max(n.status().term for n in cluster.nodes)


@dataclass
class ElectionObservation:
    seconds: float
    term_increases: int
    leader_changes: int
    leaderless_share: float
    latencies: list[float] = field(default_factory=list)
    failed_ops: int = 0

    def per_minute(self, count: int) -> float:
        return count * 60.0 / self.seconds if self.seconds > 0 else math.nan


def observe_elections(cluster: LocalCluster, seconds: float, *, client_pause: float | None = 0.005,
                      sample_every: float = 0.005, flaky: tuple[float, float] | None = None,
                      rng: random.Random | None = None) -> ElectionObservation:
    """Watch a running cluster for ``seconds``: count term increases and leader changes, and the
    share of samples with no leader.

    ``client_pause``: a light sequential client proposes, rests that long, proposes again (None:
    no client, only heartbeats cross the network).  ``flaky=(period, down)``: every ``period``
    seconds a follower (chosen with ``rng``) is isolated for ``down`` seconds and then rejoins,
    the situation pre-vote and check-quorum exist for.
    """
    stop = threading.Event()
    latencies: list[float] = []
    failures = [0]
    rng = rng or random.Random(0)

    def client() -> None:
        k = 0
        while not stop.is_set():
            node = cluster.leader()
            if node is None:
                stop.wait(0.002)
                continue
            k += 1
            t0 = time.perf_counter()
            try:
                node.propose(payload_of(16, k)).result(timeout=2.0)
                latencies.append(time.perf_counter() - t0)
            except RETRYABLE:
                failures[0] += 1
            stop.wait(client_pause)

    threads = []
    if client_pause is not None:
        threads.append(threading.Thread(target=client, name="bench-client", daemon=True))
    term0 = max_term(cluster)
    leader0 = cluster.leader()
    last_leader = leader0.id if leader0 is not None else None
    changes = 0
    samples = leaderless = 0
    isolated: int | None = None
    next_flap = flaky[0] if flaky else math.inf
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        while (now := time.perf_counter() - start) < seconds:
            if flaky is not None and now >= next_flap:
                if isolated is None:
                    leader = cluster.leader()
                    followers = [k for k, n in enumerate(cluster.nodes) if n is not leader]
                    isolated = rng.choice(followers)
                    cluster.isolate(isolated)
                    next_flap = now + flaky[1]
                else:
                    cluster.rejoin(isolated)
                    isolated = None
                    next_flap = now + max(0.0, flaky[0] - flaky[1])
            node = cluster.leader()
            samples += 1
            if node is None:
                leaderless += 1
            elif node.id != last_leader:
                changes += 1
                last_leader = node.id
            time.sleep(sample_every)
    finally:
        stop.set()
        if isolated is not None:
            cluster.rejoin(isolated)
        for t in threads:
            t.join(5.0)
    elapsed = time.perf_counter() - start
    return ElectionObservation(seconds=elapsed, term_increases=max_term(cluster) - term0,
                               leader_changes=changes,
                               leaderless_share=leaderless / samples if samples else math.nan,
                               latencies=latencies, failed_ops=failures[0])


@dataclass
class Recovery:
    to_leader_s: float        # crash -> a running node leads in a higher term
    to_commit_s: float        # crash -> first proposal committed by the new leader


def crash_and_recover(cluster: LocalCluster, *, timeout: float = 20.0) -> Recovery:
    """Crash the leader; time the election of a new one and its first commit; restart the
    crashed node and let it catch up before returning."""
    leader = ready_leader(cluster, timeout)
    index = cluster.nodes.index(leader)
    old_term = leader.status().term
    found: list[RaftNode] = []

    def new_leader() -> bool:
        node = cluster.leader()
        if node is not None and node.status().term > old_term:
            found[:] = [node]
            return True
        return False

    t0 = time.perf_counter()
    cluster.crash(index)
    if not cluster.wait_for(new_leader, timeout):
        raise TimeoutError(f"no new leader {timeout}s after crashing n{index + 1}")
    t_leader = time.perf_counter()
    t_commit = math.nan
    deadline = t0 + timeout
    while time.perf_counter() < deadline:
        node = cluster.leader()
        if node is None:
            time.sleep(0.001)
            continue
        try:
            node.propose(b"recover").result(timeout=max(0.05, deadline - time.perf_counter()))
            t_commit = time.perf_counter()
            break
        except RETRYABLE:
            time.sleep(0.001)
    cluster.restart(index)
    ready_leader(cluster, timeout)
    commit = max(n.status().commit_index for n in cluster.nodes)
    cluster.wait_applied(commit, timeout=timeout)
    return Recovery(to_leader_s=t_leader - t0, to_commit_s=t_commit - t0)


# -- churn ---------------------------------------------------------------------------------------

@dataclass
class ChurnResult:
    seconds: float
    crashes: int
    to_leader_s: list[float]
    acked: int
    lost: int
    lost_examples: list[str]
    latencies: list[float]
    retries: int
    leader_availability: float
    commit_availability: float
    timeouts: int = 0


def run_churn(cluster: LocalCluster, *, seconds: float, rng: random.Random, clients: int = 4,
              interval: tuple[float, float] = (1.0, 2.0), payload_size: int = 16,
              election_timeout: float = 10.0) -> ChurnResult:
    """Crash the leader every ``interval`` seconds (restarting it once a new leader is up) while
    ``clients`` sequential clients propose unique commands and retry on failure.

    Afterwards every acknowledged command must be in the leader's state machine at the index its
    future reported (the state machine must be :class:`engine.LogStateMachine`); ``lost`` counts
    the ones that are not.
    """
    stop = threading.Event()
    lock = threading.Lock()
    acked: dict[int, bytes] = {}            # index -> command, guarded by lock
    ack_times: list[float] = []
    latencies: list[float] = []
    retries = [0]
    conflicts: list[str] = []

    def client(k: int) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            command = f"c{k}-{seq}".encode().ljust(payload_size, b".")
            t0 = time.perf_counter()
            while not stop.is_set():
                node = cluster.leader()
                if node is None:
                    stop.wait(0.001)
                    continue
                try:
                    index = node.propose(command).result(timeout=3.0)
                except RETRYABLE:
                    with lock:
                        retries[0] += 1
                    stop.wait(0.001)
                    continue
                now = time.perf_counter()
                with lock:
                    if index in acked and acked[index] != command:
                        conflicts.append(f"index {index} acked twice")
                    acked[index] = command
                    ack_times.append(now)
                    latencies.append(now - t0)
                break

    samples = [0, 0]   # [total, with a leader]

    def sampler() -> None:
        while not stop.is_set():
            samples[0] += 1
            if cluster.leader() is not None:
                samples[1] += 1
            stop.wait(0.01)

    ready_leader(cluster)
    threads = [threading.Thread(target=client, args=(k,), name=f"bench-client-{k}", daemon=True)
               for k in range(clients)]
    threads.append(threading.Thread(target=sampler, name="bench-sampler", daemon=True))
    to_leader: list[float] = []
    timeouts = 0
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        while True:
            pause = rng.uniform(*interval)
            if time.perf_counter() - start + pause > seconds:
                break
            time.sleep(pause)
            leader = cluster.leader()
            if leader is None:
                continue
            index = cluster.nodes.index(leader)
            old_term = leader.status().term
            t0 = time.perf_counter()
            cluster.crash(index)

            def elected(old_term: int = old_term) -> bool:
                node = cluster.leader()
                return node is not None and node.status().term > old_term

            if cluster.wait_for(elected, election_timeout):
                to_leader.append(time.perf_counter() - t0)
            else:
                timeouts += 1
            cluster.restart(index)
        remaining = seconds - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
    finally:
        stop.set()
        for t in threads:
            t.join(10.0)
    elapsed = time.perf_counter() - start

    # Verification: every acknowledged (index, command) is in the state machine.
    leader = ready_leader(cluster, 20.0)
    commit = leader.status().commit_index
    cluster.wait_applied(commit, timeout=20.0)
    applied: dict[int, bytes] = leader.read(
        lambda sm: {i: bytes(c) for i, c in sm.commands}).result(20.0)
    with lock:
        missing = [(i, c) for i, c in acked.items() if applied.get(i) != c]
        acked_count = len(acked)
        times = sorted(ack_times)
    examples = [f"index {i}: acked {c!r}, found {applied.get(i)!r}" for i, c in missing[:5]]
    examples += conflicts[:5]

    # Commit availability: share of 100 ms slots in which at least one command was acknowledged.
    slot = 0.1
    slots = max(1, int(elapsed / slot))
    busy = {int((t - start) / slot) for t in times if 0 <= t - start < slots * slot}
    return ChurnResult(seconds=elapsed, crashes=len(to_leader) + timeouts,
                       to_leader_s=to_leader, acked=acked_count,
                       lost=len(missing) + len(conflicts), lost_examples=examples,
                       latencies=latencies, retries=retries[0],
                       leader_availability=samples[1] / samples[0] if samples[0] else math.nan,
                       commit_availability=len(busy) / slots, timeouts=timeouts)


# -- divergent log (fast backup) -----------------------------------------------------------------

@dataclass
class Convergence:
    divergent_entries: int    # entries only the stale node has
    leader_terms: int         # distinct terms the majority wrote while the node was away
    seconds: float            # rejoin -> stale node applied the leader's commit index
    messages: int             # messages sent by all nodes during convergence
    converged: bool


def diverge_and_converge(cluster: LocalCluster, *, entries: int, terms: int,
                         payload: bytes = b"d" * 16, timeout: float = 120.0,
                         progress: Callable[[str], None] | None = None) -> Convergence:
    """Build a follower whose log diverges from the leader's by ``entries`` entries, then time
    how long it takes to converge once it rejoins.

    Construction (public API only; the cluster's config must have ``check_quorum=False`` so an
    isolated leader keeps leading): isolate the leader X and propose ``entries`` commands to it;
    they land in X's log only, in X's term.  The other nodes elect a new leader and commit at
    least as many entries over ``terms`` terms (``campaign()`` on an up-to-date follower starts
    each new term).  Then X rejoins: it steps down, and the leader walks back through X's log to
    the last agreeing index.  Without fast backup that costs a round trip per entry; with it one
    per term.
    """
    say = progress or (lambda _msg: None)
    old = ready_leader(cluster)
    x = cluster.nodes.index(old)
    base = old.status().last_log_index
    cluster.isolate(x)
    for _ in range(entries):
        old.propose(payload)          # never commits; fails with ProposalDropped later
    if not cluster.wait_for(lambda: old.status().last_log_index >= base + entries, timeout):
        raise TimeoutError("isolated leader did not append the divergent entries")
    say(f"isolated n{x + 1} holds {entries} divergent entries")
    others = [k for k in range(len(cluster.nodes)) if k != x]
    per_term = max(1, math.ceil((entries + 1) / terms))
    seen_terms: set[int] = set()
    old_term = old.status().term
    found: list[RaftNode] = []
    for t in range(terms):

        def majority_leader(floor: int = old_term) -> bool:
            for k in others:
                s = cluster.nodes[k].status()
                if s.role == "leader" and s.term > floor:
                    found[:] = [cluster.nodes[k]]
                    return True
            return False

        if not cluster.wait_for(majority_leader, timeout):
            raise TimeoutError(f"majority elected no leader for term round {t}")
        leader = found[0]
        futures = [leader.propose(payload) for _ in range(per_term)]
        for f in futures:
            f.result(timeout)
        seen_terms.add(leader.status().term)
        old_term = leader.status().term
        if t == terms - 1:
            break
        commit = leader.status().commit_index
        follower = next(cluster.nodes[k] for k in others if cluster.nodes[k] is not leader)
        if not follower.wait_applied(commit, timeout):
            raise TimeoutError("follower did not catch up before campaigning")
        follower.campaign().result(timeout)
    leader = found[0]
    target = leader.status().commit_index
    say(f"majority wrote {per_term * len(seen_terms)} entries over {len(seen_terms)} terms; "
        f"rejoining n{x + 1}")
    m0 = cluster.message_count()
    t0 = time.perf_counter()
    cluster.rejoin(x)
    stale = cluster.nodes[x]
    ok = cluster.wait_for(lambda: stale.last_applied >= target, timeout)
    seconds = time.perf_counter() - t0
    messages = cluster.message_count() - m0
    return Convergence(divergent_entries=entries, leader_terms=len(seen_terms),
                       seconds=seconds, messages=messages, converged=ok)


# -- snapshots and leadership transfer ------------------------------------------------------------


class TableStateMachine:
    """A state machine with a realistic snapshot cost: the last command per key, 10,000 keys
    (key = index mod 10,000), serialised with orjson."""

    KEYS = 10_000

    def __init__(self) -> None:
        self.table: dict[int, bytes] = {}

    def apply(self, index: int, command: bytes) -> object:
        self.table[index % self.KEYS] = command
        return index

    def snapshot(self) -> bytes:
        return orjson.dumps({str(k): v.hex() for k, v in self.table.items()})

    def restore(self, data: bytes) -> None:
        self.table = {int(k): bytes.fromhex(v) for k, v in orjson.loads(data).items()}


def percentiles_ms(values: Sequence[float]) -> dict[str, float]:
    """p50 and max of durations in seconds, reported in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": math.nan, "max": math.nan, "count": 0}
    return {"p50": percentile(ordered, 50) * 1e3, "max": ordered[-1] * 1e3,
            "count": len(ordered)}


def follower_catch_up(cluster: LocalCluster, entries: int,
                      progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Cut one follower off, commit ``entries`` entries, reconnect it, and time how long it
    takes to apply everything the leader committed.  Reports seconds, messages sent during the
    catch-up, and whether it went through a snapshot (the follower's snapshot_index moved)."""
    leader = ready_leader(cluster)
    lagging = (cluster.nodes.index(leader) + 1) % len(cluster.nodes)
    follower = cluster.nodes[lagging]
    cluster.isolate(lagging)
    payload = payload_of(16)
    pending: deque[Future] = deque()
    for _ in range(entries):
        pending.append(leader.propose(payload))
        if len(pending) >= 1000:
            pending.popleft().result(30)
    while pending:
        pending.popleft().result(30)
    commit = leader.status().commit_index
    progress(f"follower {follower.id} is {commit - follower.last_applied} entries behind")
    snapshot_before = follower.status().snapshot_index
    messages_before = cluster.message_count()
    start = time.perf_counter()
    cluster.rejoin(lagging)
    converged = cluster.wait_for(lambda: follower.last_applied >= commit, timeout=120.0)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "converged": converged,
            "messages": cluster.message_count() - messages_before,
            "via_snapshot": follower.status().snapshot_index > snapshot_before,
            "snapshot_bytes": len(leader.read(lambda sm: sm.snapshot()).result(10)),
            "behind": commit}


def time_transfers(cluster: LocalCluster, count: int) -> list[float]:
    """Move leadership round-robin ``count`` times; seconds per transfer."""
    times = []
    for _ in range(count):
        leader = ready_leader(cluster)
        target = cluster.nodes[(cluster.nodes.index(leader) + 1) % len(cluster.nodes)]
        start = time.perf_counter()
        leader.transfer_leadership(target.id).result(10)
        times.append(time.perf_counter() - start)
    return times


class ByteCountingTransport:
    """Wraps a node's transport and counts what it receives, as the bytes each message takes
    on the wire (the TCP frame encoding), whatever the transport really is."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bytes_received = 0
        self.messages_received = 0
        self._lock = threading.Lock()

    def start(self, handler: Callable[[Any], None]) -> None:
        def counting(message: Any) -> None:
            size = len(encode_message(message))
            with self._lock:
                self.bytes_received += size
                self.messages_received += 1
            handler(message)
        self.inner.start(counting)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def preload(cluster: LocalCluster, entries: int, payload: bytes,
            progress: Callable[[str], None] = lambda _m: None) -> int:
    """Commit ``entries`` entries through the leader (1,000 outstanding); returns the commit
    index reached."""
    leader = ready_leader(cluster)
    pending: deque[Future] = deque()
    for k in range(entries):
        pending.append(leader.propose(payload))
        if len(pending) >= 1000:
            pending.popleft().result(60)
        if k and k % 250_000 == 0:
            progress(f"preloaded {k:,} entries")
    while pending:
        pending.popleft().result(60)
    return leader.status().commit_index


def join_new_node(cluster: LocalCluster, node_id: str,
                  state_machine: Callable[[], Any]) -> dict[str, Any]:
    """Bring a new, empty node into the cluster through the public API, as an operator would:
    start it with ``join=True``, ``add_learner`` it, wait until it has applied everything the
    leader had committed, then ``promote`` it.  Memory transport only (the new endpoint comes
    from the cluster's network).  Reports seconds to catch up and to become a voter, and the
    bytes and messages it received.  ``state_machine()`` builds the new node's machine (the
    same kind as the cluster's)."""
    assert cluster.network is not None, "join_new_node needs the in-memory transport"
    leader = ready_leader(cluster)
    commit, term = leader.status().commit_index, leader.status().term
    transport = ByteCountingTransport(cluster.network.endpoint(node_id))
    address = f"memory:{node_id}"
    node = RaftNode(node_id, {**cluster.addresses, node_id: address},
                    state_machine(), config=cluster.config, transport=transport, join=True)
    node.start()
    try:
        start = time.perf_counter()
        leader.add_learner(node_id, address).result(60)
        caught_up = node.wait_applied(commit, timeout=300)
        catch_up_s = time.perf_counter() - start
        # Promote through whoever leads now: a leadership change during the catch-up would
        # otherwise end the run with NotLeaderError; it is reported instead.
        leader = ready_leader(cluster)
        leader.promote(node_id).result(300)
        voter_s = time.perf_counter() - start
        status = node.status()
        return {"seconds_to_catch_up": catch_up_s, "seconds_to_voter": voter_s,
                "caught_up": caught_up, "entries": commit,
                "bytes_received": transport.bytes_received,
                "messages_received": transport.messages_received,
                "via_snapshot": status.snapshot_index > 0,
                "leader_changed_during_catch_up": leader.status().term != term,
                "voters": list(leader.membership.voters)}
    finally:
        node.stop()
