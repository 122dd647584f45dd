"""Stable one-line text for messages, entries and Readys: for logs and golden tests."""

from __future__ import annotations

from collections.abc import Sequence

from engine.core.messages import Message, MessageKind
from engine.core.ready import Ready
from engine.types import Entry, EntryKind


def describe_entries(entries: Sequence[Entry]) -> str:
    """``[t/i KIND data]`` items; long runs are elided in the middle."""
    def one(e: Entry) -> str:
        kind = EntryKind(e.kind).name if e.kind in EntryKind._value2member_map_ else str(e.kind)
        data = e.data[:16].decode("utf-8", "backslashreplace")
        return f"{e.term}/{e.index} {kind}" + (f" {data!r}" if e.data else "")
    if len(entries) > 6:
        items = [one(e) for e in entries[:3]] + [f"... {len(entries) - 6} more ..."] + [
            one(e) for e in entries[-3:]]
    else:
        items = [one(e) for e in entries]
    return "[" + ", ".join(items) + "]"


def describe_message(m: Message) -> str:
    """E.g. ``1->2 APPEND term=2 log_term=1 index=4 commit=3 entries=[2/5 NORMAL 'x']``."""
    parts = [f"{m.src}->{m.dst}", MessageKind(m.kind).name, f"term={m.term}"]
    if m.kind in (MessageKind.APPEND, MessageKind.VOTE, MessageKind.PRE_VOTE):
        parts += [f"log_term={m.log_term}", f"index={m.index}"]
    elif m.kind is MessageKind.APPEND_RESPONSE:
        parts.append(f"index={m.index}")
    if m.commit:
        parts.append(f"commit={m.commit}")
    if m.reject:
        parts.append("REJECT")
        if m.kind is MessageKind.APPEND_RESPONSE:
            parts += [f"hint={m.reject_hint}", f"conflict_term={m.conflict_term}"]
    if m.context:
        parts.append(f"context={m.context}")
    if m.entries:
        parts.append(f"entries={describe_entries(m.entries)}")
    return " ".join(parts)


def describe_ready(rd: Ready) -> str:
    """A multi-line summary of one Ready."""
    lines = []
    if rd.soft_state:
        lines.append(f"role={rd.soft_state.role} leader={rd.soft_state.leader_id} "
                     f"term={rd.soft_state.term}")
    if rd.membership is not None:
        lines.append(f"membership {rd.membership.describe()}")
    if rd.hard_state:
        hs = rd.hard_state
        lines.append(f"hard_state term={hs.term} vote={hs.vote} commit={hs.commit}")
    if rd.entries:
        lines.append(f"entries {describe_entries(rd.entries)}")
    if rd.committed_entries:
        lines.append(f"committed {describe_entries(rd.committed_entries)}")
    lines += [f"send {describe_message(m)}" for m in rd.messages]
    lines += [f"after-persist {describe_message(m)}" for m in rd.messages_after_persist]
    lines += [f"read index={r.index} context={r.context}" for r in rd.read_states]
    return "\n".join(lines)
