"""The whole cluster seen from any member: what ``raft-engine status HOST:PORT`` prints.

How it is built (:func:`collect`): ask the given member for RAFT.STATUS, which holds the
configuration (voters, learners) and the client address of every member it knows (``--clients``);
ask every other member's client address at the same time (one thread each, each bounded by the
timeout); then merge (:func:`merge`, a pure function) each member's own status with the
leader's view of it (lag, last contact).  A member that does not answer, answers as another id,
or has no known client address is listed as unreachable with the reason.

The view (also what ``--json`` prints)::

    {"asked": "127.0.0.1:6402", "asked_id": "n2", "leader_id": "n1", "term": 3,
     "voters": [...], "outgoing": [...], "learners": [...],
     "members": [{"id": "n1", "client_address": "127.0.0.1:6401", "kind": "voter",
                  "reachable": true, "error": null, "role": "leader", "term": 3,
                  "commit_index": 9, "last_applied": 9, "last_log_index": 9,
                  "snapshot_index": 0, "lag": 0, "last_contact": null, "active": true,
                  "recovering": false, "recovering_up_to": 0, "disk_stalled": false}, ...]}

``lag`` is how many entries the leader's last index is ahead of what it knows the member holds,
``last_contact`` the seconds since the leader last heard from the member (null for the leader
itself and when unknown; ``active`` is the core's ``recent_active``); both are null without a
reachable leader.  The configuration is the leader's when it answered, else the given member's.
"""

from __future__ import annotations

import concurrent.futures
import functools
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import orjson

from engine.errors import ConfigError, RaftError
from engine.kv.admin_client import fetch_status
from engine.transport.tcp import parse_address

Fetch = Callable[[str, float], Mapping[str, Any]]
"""``fetch(client address, timeout)`` -> RAFT.STATUS (raises OSError, RaftError, ValueError)."""

CLEAR = "\x1b[H\x1b[2J"
"""Cursor home + erase the screen: what ``--watch`` writes before each redraw."""

_FAILURES = (OSError, RaftError, ValueError)  # ConfigError is a ValueError


def _natural(node_id: str) -> list[Any]:
    """Sort key putting n2 before n10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", node_id)]


def _configuration(status: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    return (list(status.get("voters") or []), list(status.get("outgoing") or []),
            list(status.get("learners") or []))


def _members(status: Mapping[str, Any]) -> list[str]:
    voters, outgoing, learners = _configuration(status)
    return sorted({*voters, *outgoing, *learners} or {status["id"]}, key=_natural)


def _ask(fetch: Fetch, node_id: str, address: str | None, timeout: float) -> Any:
    """A member's status, or the reason it is unreachable (a str)."""
    if address is None:
        return "no client address known (start the nodes with --clients)"
    try:
        status = fetch(address, timeout)
    except _FAILURES as exc:
        return f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    if status.get("id") != node_id:
        return f"{address} answers as {status.get('id')!r}, not {node_id!r}"
    return status


def _ask_all(fetch: Fetch, targets: Mapping[str, str | None], timeout: float) -> dict[str, Any]:
    if not targets:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(targets)),
                                               thread_name_prefix="cluster-status") as pool:
        futures = {i: pool.submit(_ask, fetch, i, a, timeout) for i, a in targets.items()}
        return {i: f.result() for i, f in futures.items()}


def _leader(statuses: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The answering member that leads in the highest term, if any."""
    leaders = [s for s in statuses.values() if isinstance(s, Mapping) and s.get("role") == "leader"]
    return max(leaders, key=lambda s: s.get("term", 0)) if leaders else None


def collect(address: str, timeout: float = 2.0, *, fetch: Fetch = fetch_status) -> dict[str, Any]:
    """The cluster view (see the module docstring) as seen from the member at ``address``.

    Raises:
        ConfigError: ``address`` is not ``host:port``.
        OSError, RaftError, ValueError: the member at ``address`` gave no status.
    """
    asked = fetch(address, timeout)
    asked_id = asked["id"]
    addresses: dict[str, str] = dict(asked.get("clients") or {})
    addresses[asked_id] = address
    statuses: dict[str, Any] = {asked_id: asked}
    # Members the leader knows but the given member does not yet: one more round, at most.
    for _ in range(2):
        source = _leader(statuses) or asked
        for status in statuses.values():
            if isinstance(status, Mapping):
                for i, a in (status.get("clients") or {}).items():
                    addresses.setdefault(i, a)
        missing = {i: addresses.get(i) for i in _members(source) if i not in statuses}
        if not missing:
            break
        statuses.update(_ask_all(fetch, missing, timeout))
    return merge(address, asked_id, statuses, addresses)


def merge(address: str, asked_id: str, statuses: Mapping[str, Any],
          addresses: Mapping[str, str]) -> dict[str, Any]:
    """The view from each member's answer (its RAFT.STATUS, or a str: why it gave none).

    Members are those of the leader's configuration when a leader answered, else of the given
    member's (``statuses[asked_id]``, which must be a status); sorted by id.
    """
    leader = _leader(statuses)
    source = leader or statuses[asked_id]
    voters, outgoing, learners = _configuration(source)
    peers = (leader.get("peers") or {}) if leader else {}
    rows = []
    for node_id in _members(source):
        status = statuses.get(node_id)
        own = status if isinstance(status, Mapping) else None
        progress = peers.get(node_id) if leader else None
        is_leader = leader is not None and node_id == leader.get("id")
        row: dict[str, Any] = {
            "id": node_id, "client_address": addresses.get(node_id),
            "kind": ("learner" if node_id in learners else
                     "voter" if node_id in voters or node_id in outgoing else "unknown"),
            "reachable": own is not None,
            "error": None if own is not None else (status or "not asked"),
        }
        for key in ("role", "term", "commit_index", "last_applied", "last_log_index",
                    "snapshot_index"):
            row[key] = own.get(key) if own else None
        row["lag"] = 0 if is_leader else (progress.get("lag") if progress else None)
        row["last_contact"] = progress.get("last_contact") if progress else None
        row["active"] = True if is_leader else (progress.get("active") if progress else None)
        up_to = int(own.get("recovering") or 0) if own else 0
        row["recovering"] = bool(up_to) if own else (progress.get("recovering")
                                                      if progress else None)
        row["recovering_up_to"] = up_to
        row["disk_stalled"] = own.get("disk_stalled") if own else None
        rows.append(row)
    return {"asked": address, "asked_id": asked_id,
            "leader_id": leader["id"] if leader else statuses[asked_id].get("leader_id"),
            "term": leader.get("term") if leader else statuses[asked_id].get("term"),
            "voters": voters, "outgoing": outgoing, "learners": learners, "members": rows}


# -- text ----------------------------------------------------------------------------------------


def format_contact(seconds: float | None, active: bool | None) -> str:
    """``12ms``, ``3.4s``, ``2m05s``; without a time: ``never`` (not heard from), ``active``
    (heard from recently, by a server that reports no time), ``?`` (nothing known)."""
    if seconds is None:
        if active is None:
            return "?"
        return "active" if active else "never"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


_COLUMNS = ("ID", "CLIENT", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "CONTACT", "REACHABLE",
            "RECOVERING", "DISK")


def _row_cells(row: Mapping[str, Any], leader_id: str | None) -> list[str]:
    role = row["role"]
    if role == "follower" and row["kind"] == "learner":
        role = "learner"
    if row["id"] == leader_id and row["role"] == "leader":
        contact = "-"
    elif row["lag"] is None and row["active"] is None:
        contact = "?"  # no leader's view of it
    else:
        contact = format_contact(row["last_contact"], row["active"])
    if row["recovering"] is None:
        recovering = "-"
    elif row["recovering"]:
        recovering = f"yes (to {row['recovering_up_to']})" if row["recovering_up_to"] else "yes"
    else:
        recovering = "no"
    disk = "-" if row["disk_stalled"] is None else "stalled" if row["disk_stalled"] else "ok"
    lag = "?" if row["lag"] is None and row["reachable"] else _cell(row["lag"])
    return [row["id"], _cell(row["client_address"]), _cell(role), _cell(row["term"]),
            _cell(row["commit_index"]), _cell(row["last_applied"]), lag, contact,
            "yes" if row["reachable"] else "no", recovering, disk]


def format_cluster(view: Mapping[str, Any]) -> str:
    """The view as a header line, one aligned row per member, then why members are unreachable::

        leader n1, term 3; voters n1, n2, n3 (asked n2 at 127.0.0.1:6402)
        ID  CLIENT          ROLE      TERM  COMMIT  APPLIED  LAG  CONTACT  REACHABLE  ...
        n1  127.0.0.1:6401  leader    3     9       9        0    -        yes        ...
    """
    members = view["members"]
    leader_id = view.get("leader_id")
    leading = any(m["id"] == leader_id and m["role"] == "leader" for m in members)
    if leader_id is None:
        head = "no leader known"
    elif leading:
        head = f"leader {leader_id}, term {view.get('term')}"
    else:
        head = f"leader {leader_id} (not answering; term {view.get('term')} as seen by " \
               f"{view['asked_id']})"
    config = f"voters {', '.join(view['voters']) or '-'}"
    if view.get("outgoing"):
        config += f" (joint: outgoing {', '.join(view['outgoing'])})"
    if view.get("learners"):
        config += f"; learners {', '.join(view['learners'])}"
    lines = [f"{head}; {config} (asked {view['asked_id']} at {view['asked']})"]
    table = [list(_COLUMNS)] + [_row_cells(m, leader_id) for m in members]
    widths = [max(len(r[k]) for r in table) for k in range(len(_COLUMNS))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in table]
    lines += [f"{m['id']}: unreachable: {m['error']}" for m in members if not m["reachable"]]
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------


def watch(draw: Callable[[], str], interval: float, *, out: TextIO,
          sleep: Callable[[float], object] = time.sleep, clear: bool = True,
          iterations: int | None = None) -> int:
    """Write ``draw()`` every ``interval`` seconds (after clearing the screen when ``clear``)
    until Ctrl-C (or after ``iterations`` draws, for tests); returns 0."""
    count = 0
    try:
        while True:
            text = draw()
            out.write((CLEAR if clear else "") + text + "\n")
            out.flush()
            count += 1
            if iterations is not None and count >= iterations:
                return 0
            sleep(interval)
    except KeyboardInterrupt:
        if clear:
            out.write("\n")
        return 0


def run_cluster_status(address: str, *, as_json: bool = False, timeout: float = 2.0,
                       watch_interval: float | None = None,
                       password: bytes | None = None, prog: str = "raft-engine status",
                       fetch: Fetch | None = None,
                       out: TextIO | None = None, err: TextIO | None = None,
                       now: Callable[[], float] = time.time,
                       sleep: Callable[[float], object] = time.sleep,
                       iterations: int | None = None) -> int:
    """``raft-engine status HOST:PORT``: print the cluster view once (0; 1 when the member at
    ``address`` gives no status; 2 for an address that is not ``host:port``), or with
    ``watch_interval`` redraw it every so many seconds until Ctrl-C (0).  ``--json`` prints
    the view as one JSON object (one per line while watching, the screen not cleared).
    ``password``: what every member is AUTHed with first; ``fetch`` replaces RAFT.STATUS over
    the network (tests)."""
    out, err = out or sys.stdout, err or sys.stderr
    ask_status = fetch or functools.partial(fetch_status, password=password)
    try:
        parse_address("address", address)
        if watch_interval is not None and watch_interval <= 0:
            raise ConfigError(f"--watch {watch_interval:g} must be > 0")
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=err)
        return 2

    def ask() -> tuple[dict[str, Any] | None, str | None]:
        try:
            return collect(address, timeout, fetch=ask_status), None
        except _FAILURES as exc:
            return None, f"cannot get the status of {address}: {exc}"

    if watch_interval is None:
        view, error = ask()
        if view is None:
            print(f"{prog}: {error}", file=err)
            return 1
        print(orjson.dumps(view).decode() if as_json else format_cluster(view), file=out)
        return 0
    interval = watch_interval

    def draw() -> str:
        return render(*ask(), as_json=as_json, interval=interval, now=now())

    return watch(draw, interval, out=out, sleep=sleep, clear=not as_json,
                 iterations=iterations)


def render(view: Mapping[str, Any] | None, error: str | None, *, as_json: bool,
           interval: float, now: float) -> str:
    """One ``--watch`` frame: a clock line then the table (or the error); with ``as_json``,
    one JSON line (``{"time": ..., "error": ...}`` when the member gave no status)."""
    if as_json:
        return orjson.dumps({"time": now, **(view or {"error": error})}).decode()
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    body = format_cluster(view) if view is not None else str(error)
    return f"every {interval:g}s, {clock} (Ctrl-C exits)\n{body}"

