"""``raft-engine tune``: measure this deployment, recommend heartbeat and election timeouts.

::

    raft-engine tune                                  # loopback round trip, fsync of $TMPDIR
    raft-engine tune --peers 10.0.0.2:7001,10.0.0.3:7001 --data-dir /var/lib/app/raft
    raft-engine tune --verify 20                      # and check it with a short Figure 16 run
    raft-engine tune --rtt-ms 15 --fsync-ms 2         # no measurement: recommend for these

What it measures: the round trip to each peer (TCP handshakes to ``HOST:PORT``, one round trip
each, so any listening port works, a Raft port for instance) or, without peers, over loopback
(ping-pong with a local echo server); and the data directory's durable-write latency (4 KiB
write + ``fdatasync``, as the log store does per group commit).  The recommendation uses the
99th percentiles.

How it recommends (:func:`recommend`, a pure function of the measurement; the numbers it
prints are the reasoning):

- *broadcast time* ``b = rtt + fsync``: a heartbeat round needs a follower's answer, a vote
  the voter's durable write.  ``election_timeout_min = max(floor, 10 b)``, so a slow round is
  never mistaken for a dead leader (Raft's ``broadcastTime << electionTimeout``; CheckQuorum
  also needs a quorum to answer within one minimum election timeout, and the runtime warns
  when round trips exceed half of it).  ``floor`` (50 ms by default) covers what a Python
  process adds: garbage collection, the GIL, a busy loop.
- ``heartbeat_interval = election_timeout_min / 3``: two lost heartbeats in a row still do not
  start an election.
- the range width ``W``: at least the minimum (the paper's 150-300 ms shape), and wide enough
  that split votes stay rare by the split-vote model of Ongaro's dissertation (section 9.3):
  after the leader crashes, the ``m = n - 1`` remaining servers time out at uniformly random
  points of ``W``; the first one wins outright unless another times out before its
  RequestVote arrives, one one-way latency ``d = rtt / 2`` later.  The gap between the two
  earliest of ``m`` uniform draws exceeds ``d`` with probability ``p = (1 - d / W) ** m``, so
  the expected number of elections is ``1 / p``; ``W`` is widened until ``p >= 0.9``.
- expected time without a leader: the followers heard the last heartbeat on average half an
  interval before the crash, the first of ``m`` draws falls ``W / (m + 1)`` into the range,
  then one vote round (``b``); each extra election costs about another ``min + W / (m + 1) +
  b``.  PreVote adds one round trip (``rtt``) to every election (the Figure 16 benchmark
  measured +11 to +17 ms median at a 15 ms round trip) and keeps a rejoining node from
  deposing a healthy leader; CheckQuorum costs nothing while the round trip stays well under
  the minimum election timeout.
- ``tick_interval = min(10 ms, heartbeat / 5)``: the election timeout keeps its 1 us resolution
  whatever the tick; the tick quantizes heartbeats and the CheckQuorum period.

Values are rounded up to whole milliseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_FLOOR = 0.05
"""Smallest recommended election_timeout_min, seconds (Python pauses; see the module doc)."""
SAFETY = 10.0
"""election_timeout_min as a multiple of the broadcast time (rtt + fsync)."""
TARGET_FIRST_ROUND = 0.9
"""Least probability that the first election after a crash elects (the split-vote model)."""


@dataclass(frozen=True)
class Measurement:
    """What :func:`measure` saw; seconds."""

    rtt_p50: float
    rtt_p99: float
    fsync_p50: float
    fsync_p99: float
    rtt_target: str = "loopback"
    fsync_dir: str = ""
    rtt_samples: int = 0
    fsync_samples: int = 0


@dataclass(frozen=True)
class Recommendation:
    """A configuration and why; seconds."""

    heartbeat_interval: float
    election_timeout_min: float
    election_timeout_max: float
    tick_interval: float
    first_round_win: float          # p of the split-vote model
    expected_elections: float       # 1 / p
    expected_downtime: float        # crash to new leader, PreVote off
    pre_vote_cost: float            # what PreVote adds per election
    reasons: tuple[str, ...] = field(default=())

    def config_kwargs(self) -> dict[str, float]:
        """The Config fields (``Config(**rec.config_kwargs())``)."""
        return {"heartbeat_interval": self.heartbeat_interval,
                "election_timeout_min": self.election_timeout_min,
                "election_timeout_max": self.election_timeout_max,
                "tick_interval": self.tick_interval}


def first_round_win(width: float, one_way: float, n: int) -> float:
    """Probability that the first server to time out after the leader crashed is alone in its
    first ``one_way`` seconds: ``(1 - d/W) ** (n - 1)`` (0 when ``d >= W``)."""
    m = n - 1
    if m <= 1:
        return 1.0
    if width <= 0 or one_way >= width:
        return 0.0
    return (1.0 - one_way / width) ** m


def _ms_up(seconds: float) -> float:
    return math.ceil(seconds * 1e3 - 1e-9) / 1e3


def recommend(rtt: float, fsync: float, *, n: int = 5, floor: float = DEFAULT_FLOOR,
              safety: float = SAFETY, target: float = TARGET_FIRST_ROUND) -> Recommendation:
    """Heartbeat and election range for a round trip ``rtt`` and durable write ``fsync``
    (seconds, the 99th percentiles) in an ``n``-node cluster.  Pure and stable: the same
    inputs give the same recommendation (see the module docstring for the rules).

    Raises:
        ValueError: negative latencies or n < 1.
    """
    if rtt < 0 or fsync < 0 or n < 1 or floor <= 0:
        raise ValueError(f"need rtt >= 0, fsync >= 0, n >= 1, floor > 0 (got {rtt}, {fsync}, "
                         f"{n}, {floor})")
    broadcast = rtt + fsync
    lo = _ms_up(max(floor, safety * broadcast))
    hb = _ms_up(lo / 3)
    one_way = rtt / 2
    m = n - 1
    width = lo
    if m > 1 and first_round_win(width, one_way, n) < target:
        width = one_way / (1.0 - target ** (1.0 / m))
    width = _ms_up(width)
    hi = round(lo + width, 3)
    tick = min(0.01, _ms_up(hb / 5)) if hb >= 0.005 else 0.001
    p = first_round_win(width, one_way, n)
    first = max(0.0, lo + width / (m + 1) - hb / 2) + broadcast
    retry = lo + width / (m + 1) + broadcast
    elections = 1 / p if p > 0 else math.inf
    downtime = first + (elections - 1) * retry
    reasons = (
        f"broadcast time = rtt {rtt * 1e3:.3f} ms + fsync {fsync * 1e3:.3f} ms = "
        f"{broadcast * 1e3:.3f} ms",
        f"election_timeout_min = max(floor {floor * 1e3:g} ms, {safety:g} x broadcast "
        f"{safety * broadcast * 1e3:.1f} ms) = {lo * 1e3:g} ms",
        f"heartbeat_interval = min / 3 = {hb * 1e3:g} ms (two lost heartbeats do not start an "
        "election)",
        f"range width = {width * 1e3:g} ms: at least the minimum; split-vote model with "
        f"{m} remaining servers and one-way latency {one_way * 1e3:.3f} ms gives "
        f"p(first election elects) = (1 - d/W)^{m} = {p:.4f} (target >= {target:g}), "
        f"expected elections {elections:.3f}",
        f"expected time without a leader after a crash ~ {downtime * 1e3:.0f} ms "
        f"(min + W/{m + 1} - heartbeat/2 + broadcast, plus retries); PreVote adds one round "
        f"trip per election (+{rtt * 1e3:.2f} ms), CheckQuorum needs rtt << min "
        f"({rtt * 1e3:.2f} ms vs {lo * 1e3:g} ms: "
        f"{'ok' if rtt < lo / 2 else 'TOO CLOSE: the leader would not hold'})",
        f"tick_interval = {tick * 1e3:g} ms (heartbeat / 5, at most 10 ms; the election "
        "timeout keeps 1 us resolution whatever the tick)",
    )
    return Recommendation(hb, lo, hi, tick, p, elections, downtime, rtt, reasons)


# -- measuring ----------------------------------------------------------------------------------


def _percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def _loopback_rtts(samples: int) -> list[float]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(64):
                conn.sendall(data)

    thread = threading.Thread(target=echo, name="raft-tune-echo", daemon=True)
    thread.start()
    rtts = []
    with socket.create_connection(server.getsockname()) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(samples):
            t0 = time.perf_counter()
            client.sendall(b"x" * 32)
            got = 0
            while got < 32:
                got += len(client.recv(64))
            rtts.append(time.perf_counter() - t0)
    thread.join(2)
    server.close()
    return rtts[min(10, len(rtts) // 10):]  # the first few include warming up


def _handshake_rtts(address: str, samples: int, timeout: float = 2.0) -> list[float]:
    host, _, port = address.rpartition(":")
    rtts = []
    for _ in range(samples):
        t0 = time.perf_counter()
        with socket.create_connection((host, int(port)), timeout=timeout):
            rtts.append(time.perf_counter() - t0)
    return rtts


def _fsync_latencies(directory: str, samples: int) -> list[float]:
    fd, path = tempfile.mkstemp(prefix=".raft-tune-", dir=directory)
    block = os.urandom(4096)
    out = []
    try:
        for _ in range(samples):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return out


def measure(peers: Sequence[str] = (), data_dir: str | None = None, *, rtt_samples: int = 500,
            fsync_samples: int = 100) -> Measurement:
    """Round trips to ``peers`` (TCP handshakes; loopback ping-pong when empty) and the
    4 KiB write + fdatasync latency of ``data_dir`` (default: the temporary directory).

    Raises:
        OSError: a peer does not answer, or the directory is not writable.
    """
    if peers:
        per = max(1, rtt_samples // len(peers))
        rtts = [x for p in peers for x in _handshake_rtts(p, per)]
        target = ",".join(peers)
    else:
        rtts = _loopback_rtts(rtt_samples)
        target = "loopback"
    directory = data_dir or tempfile.gettempdir()
    os.makedirs(directory, exist_ok=True)
    syncs = _fsync_latencies(directory, fsync_samples)
    return Measurement(statistics.median(rtts), _percentile(rtts, 99),
                       statistics.median(syncs), _percentile(syncs, 99), target, directory,
                       len(rtts), len(syncs))


# -- verification -------------------------------------------------------------------------------


def verify(rec: Recommendation, *, rtt: float, trials: int = 20, n: int = 5,
           pre_vote: bool = True) -> dict[str, Any]:
    """A short Figure 16 run of ``rec``: ``n`` nodes in process on the memory transport with
    a one-way delay of ``rtt / 2``, CheckQuorum on, the leader crashed ``trials`` times.
    Needs the source tree's ``bench`` package."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "bench", "figure16.py")) and root not in sys.path:
        sys.path.append(root)  # an editable install's console script: the source tree's bench
    try:
        from bench import figure16
    except ImportError as exc:  # pragma: no cover - installed without the bench package
        raise RuntimeError("--verify needs the bench package of the source tree (run from "
                           "a checkout: python -m engine.cli tune --verify)") from exc
    lo, hi = rec.election_timeout_min, rec.election_timeout_max
    text = f"{lo * 1e3:g}-{hi * 1e3:g}"
    curve = figure16.run_curve(text, pre_vote=pre_vote, trials=trials, delay=rtt / 2, seed=1,
                               check_quorum=True, tick=rec.tick_interval,
                               heartbeat=rec.heartbeat_interval, n=n)
    return curve.stats()


# -- the command --------------------------------------------------------------------------------


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``tune`` on the ``raft-engine`` subparsers."""
    p = sub.add_parser("tune", help="measure RTT and fsync, recommend heartbeat and election "
                                    "timeouts", description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", metavar="HOST:PORT,...",
                   help="peers to measure the round trip to (default: loopback)")
    p.add_argument("--data-dir", metavar="DIR", help="where to measure fdatasync (default: "
                   "the temporary directory)")
    p.add_argument("--nodes", type=int, default=5, metavar="N", help="cluster size (default 5)")
    p.add_argument("--floor", type=float, default=DEFAULT_FLOOR, metavar="SECONDS",
                   help=f"smallest election_timeout_min (default {DEFAULT_FLOOR})")
    p.add_argument("--samples", type=int, default=500, metavar="N", help="round trips measured")
    p.add_argument("--rtt-ms", type=float, help="skip measuring: use this round trip")
    p.add_argument("--fsync-ms", type=float, help="skip measuring: use this fdatasync time")
    p.add_argument("--verify", type=int, nargs="?", const=20, metavar="TRIALS",
                   help="check the recommendation with a short Figure 16 run (default 20 "
                        "leader crashes, in process)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """Body of ``raft-engine tune``."""
    peers = [p for p in (args.peers or "").split(",") if p]
    if args.rtt_ms is not None and args.fsync_ms is not None:
        m = Measurement(args.rtt_ms / 1e3, args.rtt_ms / 1e3, args.fsync_ms / 1e3,
                        args.fsync_ms / 1e3, "given", "given")
    else:
        m = measure(peers, args.data_dir, rtt_samples=args.samples)
        if args.rtt_ms is not None:
            m = dataclasses.replace(m, rtt_p50=args.rtt_ms / 1e3, rtt_p99=args.rtt_ms / 1e3,
                                    rtt_target="given")
        if args.fsync_ms is not None:
            m = dataclasses.replace(m, fsync_p50=args.fsync_ms / 1e3,
                                    fsync_p99=args.fsync_ms / 1e3, fsync_dir="given")
    rec = recommend(m.rtt_p99, m.fsync_p99, n=args.nodes, floor=args.floor)
    try:
        checked = verify(rec, rtt=m.rtt_p50, trials=args.verify, n=args.nodes) \
            if args.verify else None
    except RuntimeError as exc:
        print(f"raft-engine tune: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        import json
        print(json.dumps({"measurement": dataclasses.asdict(m),
                          "recommendation": dataclasses.asdict(rec), "verify": checked},
                         indent=1))
        return 0
    out = sys.stdout
    print(f"round trip ({m.rtt_target}, {m.rtt_samples} samples): p50 {m.rtt_p50 * 1e3:.3f} ms,"
          f" p99 {m.rtt_p99 * 1e3:.3f} ms", file=out)
    print(f"4 KiB write + fdatasync ({m.fsync_dir}, {m.fsync_samples} samples): p50 "
          f"{m.fsync_p50 * 1e3:.3f} ms, p99 {m.fsync_p99 * 1e3:.3f} ms", file=out)
    print("recommended:", file=out)
    print(f"    Config(heartbeat_interval={rec.heartbeat_interval:g}, election_timeout_min="
          f"{rec.election_timeout_min:g}, election_timeout_max={rec.election_timeout_max:g}, "
          f"tick_interval={rec.tick_interval:g})", file=out)
    print("why:", file=out)
    for reason in rec.reasons:
        print(f"  - {reason}", file=out)
    if checked is not None:
        print(f"verified ({checked['trials']} leader crashes in process, memory transport, "
              f"one-way delay {m.rtt_p50 / 2 * 1e3:.3f} ms, PreVote and CheckQuorum on): time "
              f"without a leader median {checked['median_ms']:.0f} ms, p90 "
              f"{checked['p90_ms']:.0f} ms, max {checked['max_ms']:.0f} ms "
              f"({checked['failed']} failed trials); model: ~{rec.expected_downtime * 1e3:.0f}"
              f" ms + {rec.pre_vote_cost * 1e3:.2f} ms PreVote", file=out)
    return 0
