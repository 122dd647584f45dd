"""Whether a restarting node lost entries it may have acknowledged (protocol-aware recovery).

Raft's proofs assume that what a node acknowledged stays on its disk.  When start-up finds less
than that (a rotten newest record cut off as a torn tail, a deleted segment, a damaged suffix
discarded on purpose), the node must not vote as if nothing happened: with the leader down,
its vote could elect a node that lacks an entry the cluster committed counting this node's
acknowledgement (CTRL, Alagappan et al., FAST'18).  Such a node is *recovering* until a leader
has given it back every entry the leader holds; :class:`~engine.core.raft.Raft` enforces that,
this module only decides whether it applies.

Two durable facts tell what the node may have acknowledged: the hard state's commit index
(this node knew those entries committed) and the log store's sync mark (the last index a
completed sync made durable, hence possibly acknowledged; see
``engine.storage.base.SyncMarkStore``).  Pure and deterministic: the runtime and the simulator
both call it on what their disks hold.
"""

from __future__ import annotations

from engine.types import HardState, Index


def recovering_mark(hard_state: HardState, synced_index: Index, held_index: Index) -> Index:
    """The ``HardState.recovering`` value a node starts with.

    ``synced_index`` is the last index the log store had recorded as durable before this start
    (0 when it keeps no such record); ``held_index`` is the last index the node holds now, in
    its log or its snapshot.  Returns 0 when the node holds everything it may have
    acknowledged; otherwise the highest index it may have acknowledged and no longer holds (at
    least that far it must be given entries back).  A node that was already recovering stays
    so: the mark only ends when a leader has restored the log, never at a restart.
    """
    expected = max(hard_state.commit, synced_index)
    lost = expected if expected > held_index else 0
    return max(hard_state.recovering, lost)
