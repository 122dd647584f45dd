"""Walks the datadriven scripts in tests/testdata/core through an interaction environment.

Commands (ids are node ids, "all" where it makes sense):

- ``add-nodes N [seed=S] [prevote=true] [checkquorum=true] [fastbackup=true] [inflight=K]
  [batch=K]``: a fresh CoreNetwork of N nodes.
- ``campaign ID``; ``propose ID data...``; ``read-index ID CONTEXT``.
- ``process-ready ID...``: hand out one Ready per node (printed), persist it and send it all.
- ``deliver-msgs [drop=(ids)]``: deliver every queued message once (printed); messages to the
  listed nodes are dropped instead.
- ``stabilize``: process-ready and deliver-msgs until nothing is left (all printed).
- ``tick ID [n=K]``; ``tick-all [n=K]`` (quietly stabilizes after each tick).
- ``isolate ID``; ``heal``; ``restart ID``.
- ``status [ID...]``; ``raft-log ID``.

Golden output comes from :mod:`engine.core.describe`; regenerate with ``RAFT_REWRITE=1``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.describe import describe_entries, describe_message, describe_ready
from tests.core.harness import CoreNetwork
from tests.datadriven import Command, run_file

TESTDATA = Path(__file__).resolve().parent.parent / "testdata" / "core"


class InteractionEnv:
    """Turns script commands into calls on a CoreNetwork and describes what happened."""

    def __init__(self) -> None:
        self.net: CoreNetwork | None = None

    @property
    def n(self) -> CoreNetwork:
        if self.net is None:
            raise ValueError("add-nodes first")
        return self.net

    def handle(self, cmd: Command) -> str:
        method = getattr(self, "cmd_" + cmd.name.replace("-", "_"), None)
        if method is None:
            raise ValueError(f"line {cmd.line}: unknown command {cmd.name!r}")
        return method(cmd)

    def _ids(self, cmd: Command) -> list[str]:
        if not cmd.positional or cmd.positional == ["all"]:
            return self.n.ids
        return cmd.positional

    # -- commands ------------------------------------------------------------------------------

    def cmd_add_nodes(self, cmd: Command) -> str:
        def flag(key: str, default: bool) -> bool:
            return cmd.get(key, str(default).lower()) == "true"

        self.net = CoreNetwork(
            int(cmd.positional[0]), seed=int(cmd.get("seed", "0")),
            pre_vote=flag("prevote", True), check_quorum=flag("checkquorum", True),
            fast_backup=flag("fastbackup", True), max_inflight=int(cmd.get("inflight", "64")),
            max_batch_entries=int(cmd.get("batch", "1024")))
        return self.status(self.n.ids)

    def cmd_campaign(self, cmd: Command) -> str:
        self.n.nodes[cmd.positional[0]].campaign()
        return ""

    def cmd_propose(self, cmd: Command) -> str:
        node_id, *data = cmd.positional
        first, term = self.n.nodes[node_id].propose([d.encode() for d in data])
        return f"first index {first} term {term}"

    def cmd_read_index(self, cmd: Command) -> str:
        node_id, context = cmd.positional
        self.n.nodes[node_id].read_index(int(context))
        return ""

    def cmd_process_ready(self, cmd: Command) -> str:
        out: list[str] = []
        for node_id in self._ids(cmd):
            out += self._process(node_id)
        return "\n".join(out)

    def _process(self, node_id: str) -> list[str]:
        rd = self.n.take_ready(node_id)
        if rd is None:
            return []
        self.n.persist_ready(node_id, rd)
        return [f"> {node_id} handling Ready",
                *("  " + line for line in describe_ready(rd).splitlines())]

    def cmd_deliver_msgs(self, cmd: Command) -> str:
        return "\n".join(self._deliver(set(cmd.get_list("drop"))))

    def _deliver(self, drop: set[str]) -> list[str]:
        batch, self.n.queue = self.n.queue, []
        out = []
        for m in batch:
            if m.dst in drop:
                out.append(f"dropped: {describe_message(m)}")
            else:
                out.append(describe_message(m))
                self.n.deliver(m)
        return out

    def cmd_stabilize(self, cmd: Command) -> str:
        out: list[str] = []
        for _ in range(1000):
            progressed = False
            for node_id in self.n.ids:
                lines = self._process(node_id)
                out += lines
                progressed |= bool(lines)
            if self.n.queue:
                out += self._deliver(set())
                progressed = True
            if not progressed:
                return "\n".join(out)
        raise AssertionError("did not stabilize")

    def cmd_tick(self, cmd: Command) -> str:
        for _ in range(int(cmd.get("n", "1"))):
            self.n.nodes[cmd.positional[0]].tick()
        return ""

    def cmd_tick_all(self, cmd: Command) -> str:
        self.n.tick_all(int(cmd.get("n", "1")))
        return self.status(self.n.ids)

    def cmd_isolate(self, cmd: Command) -> str:
        self.n.isolate(cmd.positional[0])
        return ""

    def cmd_heal(self, cmd: Command) -> str:
        self.n.heal()
        return ""

    def cmd_restart(self, cmd: Command) -> str:
        self.n.restart(cmd.positional[0])
        return self.status([cmd.positional[0]])

    def cmd_status(self, cmd: Command) -> str:
        return self.status(self._ids(cmd))

    def status(self, ids: list[str]) -> str:
        lines = []
        for node_id in ids:
            st = self.n.nodes[node_id].status()
            lines.append(f"{node_id}: {st.role} term={st.term} vote={st.vote} "
                         f"leader={st.leader_id} commit={st.commit_index} "
                         f"last={st.last_log_index}/{st.last_log_term}")
        return "\n".join(lines)

    def cmd_raft_log(self, cmd: Command) -> str:
        return describe_entries(self.n.log(cmd.positional[0]))


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_interaction(path: Path) -> None:
    """Each script's commands produce exactly its golden output."""
    env = InteractionEnv()
    run_file(path, env.handle)
