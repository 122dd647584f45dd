"""The runtime: what drives one Raft core with real time, real sockets and real disks.

Thread map (every thread is named, and ``RaftNode.stop()`` joins each one)
=========================================================================

``raft-<id>-loop`` (always)
    Runs the node's asyncio event loop (uvloop when importable); see
    :mod:`engine.runtime.loop`.  Owns the :class:`~engine.core.RawNode` and everything around
    it: pending reads, the leadership transfer and membership change in progress, the snapshot
    sender and receiver, the tick timer.  With the TCP transport it also owns every socket of
    the node (the transport runs on this loop: no thread of its own).  By default it also
    writes the log and hard state (inline, in C with the GIL released; everything that arrived
    during one fdatasync shares the next) and applies committed entries to the state machine
    in bounded slices (``Config.apply_slice``), resolving the proposal futures.
    Reached by: ``NodeLoop.post(event)``, a deque append plus one wake-up
    (``call_soon_threadsafe``; at most one pending), used by every public method of
    ``RaftNode`` and by the transports' delivery.  Code running *on* this loop (the KV
    server, ``await node.propose_async()`` on ``node.loop``) posts with ``call_soon`` instead:
    no hand-off at all.

``raft-<id>-snapshot`` (always)
    Encodes and saves snapshots the state machine produced (``SnapshotStore.save``), off the
    hot path; tells the loop when each is durable (a posted event).  Reached by a
    deque + Condition of jobs.

``raft-<id>-apply`` (only with ``Config.apply_thread``)
    Owns the state machine instead of the loop thread, for machines whose ``apply()`` blocks.
    Reached by a queue.SimpleQueue of work in order (entries, reads, restore, snapshot).

``raft-<id>-storage`` (only with ``Config.storage_thread`` and on-disk stores)
    Owns the log and stable stores instead of the loop thread and writes with group commit;
    posts each written group back to the loop (``PERSISTED``).

``raft-<id>-net`` (only for a TCP transport started without a loop, e.g. used on its own)
    The transport's own event loop.  ``RaftNode`` always starts its transport on the node's
    loop, so a node has no such thread.

``raft-memnet-delay`` (in-memory network with delays only)
    Delivers delayed copies of messages; shared by every node of a ``LocalCluster``.

``raft-<id>-events`` (only once somebody called ``RaftNode.subscribe``)
    Delivers the node's typed events (:mod:`engine.events`) to the subscribers, in order, so
    that no subscriber ever runs on the loop thread.  Reached by a queue.SimpleQueue (bounded
    by a size check: beyond ``engine.events.MAX_QUEUED`` new events are dropped and counted);
    ``stop()`` joins it.

``raft-metrics`` (only with ``raft-engine node --metrics`` or ``engine.metrics.serve``)
    Serves ``/metrics`` over HTTP, one scrape at a time, and runs the collector
    (:class:`engine.metrics.RaftCollector`) on itself.  Shared with the node threads: nothing
    but reads.  The counters (:class:`~engine.runtime.telemetry.Telemetry`) have one writing
    thread each and are plain ints/floats read under the GIL; histograms are read through
    ``Histogram.snapshot()`` (the bucket list copied first); ``Status`` is immutable; the
    transports' counters are ints (or read under their own ``_count_lock``).  An embedder's
    own exporter may scrape from any thread the same way.  ``MetricsServer.close()`` joins it.

``raft-<id>-halt`` (only after a fatal error)
    Stops a node whose loop or storage thread failed (the failing thread cannot join itself).

Shared structures and their guards
----------------------------------
- ``NodeLoop._inbox`` (deque): any thread appends, the loop thread pops; ``_wake_pending`` is
  cleared by the loop before it drains.
- ``ProposalRegistry``: its own lock (the loop registers; whoever applies resolves).
- ``NodeLoop.status`` (an immutable ``Status`` replaced by the loop after each round) and
  ``Applier.last_applied`` (an int written by the state machine's owner): read by any thread.
- The snapshot store: ``SnapshotPipeline._lock`` around every call.
- The log store with ``Config.storage_thread``: ``Persister._store_lock``, held by the storage
  thread while it writes and syncs a group and by the loop thread while the core reads back
  entries it dropped from its entry cache (``Persister.read_entries``).  Without the storage
  thread the loop owns the store, except while the native syncer thread runs an fdatasync
  (``end_sync`` hands it back; a read-back waits for it).
- The fault-injecting stores (``engine.storage.faulty``): one lock per simulated disk,
  ``DiskFaults._cond``.
- The TCP transport's per-peer send queues: ``TcpTransport._queue_lock``.

LocalCluster gives each node its own loop thread, as separate processes would have: a node that
crashes or is paused stops alone, and the in-memory transport hands messages between loops with
one wake-up per burst.

Modules: ``node`` (the public façade), ``loop`` (the loop thread), ``recovery`` (start-up),
``snapshot_pipeline`` (taking, saving, sending, receiving snapshots),
``applier``, ``persister``, ``proposals`` (futures and their registry), ``snapshots`` (the
InstallSnapshot chunk protocol), ``membership`` (a staged membership change).
"""
