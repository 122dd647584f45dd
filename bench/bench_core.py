"""Core micro benchmark (pyperf): entries per second through three sans-IO cores in memory.

    python -m bench.bench_core --quick       # 1 process, a few values: about 10 s
    python -m bench.bench_core               # full pyperf run (20 processes)
    python -m bench.bench_core -o core.json  # pyperf JSON
    python -m bench.bench_core --profile     # cProfile of 2,000 batches, top functions, no pyperf

What one loop does: the leader proposes a batch of 256 16-byte commands (one ``propose`` call,
as the runtime does with the proposals queued since its last round), then every Ready is handled
synchronously until the three cores are quiet: messages are handed straight to ``step`` of their
destination, entries are "persisted" by extending a per-node Python list, ``advance`` steps the
self-acks back in, and committed entries are counted as applied.  No threads, clocks, sockets,
encoding or disk: this is the ceiling the core itself puts on throughput.

pyperf reports the time per entry (``inner_loops`` = batch size); the summary line prints its
inverse, entries/s.  Each timed value starts from a freshly elected cluster (untimed), so the
in-memory log stays bounded.
"""

from __future__ import annotations

import random
import sys
import time

from engine.core import Message, RaftOptions, RawNode
from engine.types import Entry

BATCH = 256
PAYLOAD = 16
IDS = ("1", "2", "3")
COMMANDS = [b"%016d" % k for k in range(BATCH)]
assert all(len(c) == PAYLOAD for c in COMMANDS)


class Cluster:
    """Three RawNodes wired through an in-memory list of messages."""

    def __init__(self, options: RaftOptions | None = None, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.options = options or RaftOptions()
        self.nodes = {i: RawNode(i, IDS, rng=random.Random(rng.random()), options=self.options)
                      for i in IDS}
        self.disks: dict[str, list[Entry]] = {i: [] for i in IDS}
        self.inbox: list[Message] = []
        self.applied = 0
        self.nodes["1"].campaign()
        self.pump()
        if self.nodes["1"].status().role != "leader":
            raise RuntimeError("node 1 did not become leader")
        self.leader = self.nodes["1"]
        self.applied = 0

    def pump(self) -> None:
        """Handle every Ready and deliver every message until all cores are quiet."""
        nodes, disks, inbox = self.nodes, self.disks, self.inbox
        while True:
            busy = False
            for node_id, node in nodes.items():
                if not node.has_ready():
                    continue
                busy = True
                rd = node.ready()
                inbox.extend(rd.messages)
                if rd.entries:
                    disk = disks[node_id]
                    del disk[rd.entries[0].index - 1:]
                    disk.extend(rd.entries)
                for m in rd.messages_after_persist:
                    if m.dst != node_id:
                        inbox.append(m)
                node.advance(rd)
                self.applied += len(rd.committed_entries)
            if inbox:
                busy = True
                batch, inbox[:] = inbox[:], []
                for m in batch:
                    nodes[m.dst].step(m)
            if not busy:
                return

    def run(self, batches: int) -> None:
        """Propose ``batches`` batches, pumping after each."""
        leader, pump = self.leader, self.pump
        for _ in range(batches):
            leader.propose(COMMANDS)
            pump()


def timed(loops: int) -> float:
    """pyperf time function: seconds for ``loops`` batches on a fresh cluster."""
    cluster = Cluster()
    start = time.perf_counter()
    cluster.run(loops)
    elapsed = time.perf_counter() - start
    # The leader applies a batch when it commits; followers a round later.  Check the work.
    if cluster.leader.status().commit_index < loops * BATCH:
        raise RuntimeError("benchmark did not commit what it proposed")
    return elapsed


def profile(batches: int = 2000, top: int = 25) -> None:
    """Print entries/s of one run and cProfile's top functions by own time."""
    import cProfile
    import pstats

    cluster = Cluster()
    start = time.perf_counter()
    cluster.run(batches)
    plain = time.perf_counter() - start
    print(f"{batches * BATCH / plain:,.0f} entries/s without profiler "
          f"({batches} batches of {BATCH} x {PAYLOAD} B)")
    cluster = Cluster()
    prof = cProfile.Profile()
    prof.enable()
    cluster.run(batches)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main() -> None:
    if "--profile" in sys.argv:
        profile()
        return
    import pyperf

    quick = "--quick" in sys.argv

    def forward(cmd: list[str], args: object) -> None:
        """pyperf rebuilds the worker command line: pass --quick on."""
        if getattr(args, "quick", False):
            cmd.append("--quick")

    settings: dict[str, object] = (
        {"processes": 1, "values": 3, "warmups": 1, "min_time": 0.2} if quick else {})
    runner = pyperf.Runner(add_cmdline_args=forward, **settings)  # type: ignore[arg-type]
    runner.argparser.add_argument("--quick", action="store_true",
                                  help="1 process, 3 values (a quick look, not a result)")
    runner.metadata["description"] = (
        f"3 cores in memory, batches of {BATCH} x {PAYLOAD} B commands; time per entry")
    bench = runner.bench_time_func(f"core.3nodes.batch{BATCH}.{PAYLOAD}B", timed,
                                   inner_loops=BATCH)
    if bench is not None and not runner.args.worker:
        mean = bench.mean()
        print(f"core throughput: {1 / mean:,.0f} entries/s "
              f"(target >= 300,000; {bench.get_nvalue()} values)")


if __name__ == "__main__":
    main()
