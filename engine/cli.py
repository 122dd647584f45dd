"""The ``raft-engine`` command: run a replicated KV node, a local cluster, or ask a node's status.

::

    raft-engine node --id n1 --peers n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003 \\
        --data-dir /var/lib/kv/n1 --client 127.0.0.1:6401 \\
        --clients n1=127.0.0.1:6401,n2=127.0.0.1:6402,n3=127.0.0.1:6403
    raft-engine cluster --nodes 3            # three such nodes as local subprocesses
    raft-engine status 127.0.0.1:6401        # every member: role, term, indexes, lag, contact
    raft-engine status 127.0.0.1:6401 --watch  # the same, redrawn every 2 s (--json: for scripts)
    raft-engine status 127.0.0.1:6401 --node   # that node only: leader, indexes, voters, learners
    raft-engine transfer 127.0.0.1:6401 n2     # hand leadership to n2; returns once n2 leads
    raft-engine snapshot 127.0.0.1:6402        # snapshot n2 now; prints the snapshot's index
    raft-engine node --id n4 --join ...      # a new node (--peers: the members and itself)
    raft-engine member 127.0.0.1:6401 add n4 127.0.0.1:7004   # on the leader: n4 as a learner
    raft-engine member 127.0.0.1:6401 promote n4              # then a voter (or: remove n4)
    raft-engine tune [--peers H:P,...] [--data-dir DIR] [--verify]  # recommend timeouts

``node`` reads the same settings from a TOML file (``--config node.toml``, keys as the long
flags with ``_`` or ``-``, e.g. ``election_timeout_min = 0.3``, ``fsync = false``,
``peers = {n1 = "127.0.0.1:7001", ...}``, plus any other :class:`~engine.config.Config` field
such as ``tick_interval`` or ``read_timeout``); flags given on the command line win.  Bad flags or
settings print an error and exit with status 2; SIGTERM or SIGINT stop a node gracefully (exit 0).
Logs go to stderr.  ``python -m engine.cli`` works as well.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from engine import tune
from engine.config import Config
from engine.errors import ConfigError, RaftError
from engine.kv import admin_client, cluster_view
from engine.kv.machine import KVMachine
from engine.kv.server import KVServer
from engine.runtime.node import RaftNode
from engine.transport.tcp import TcpTransport, parse_address

logger = logging.getLogger(__name__)

PROG = "raft-engine"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class UsageError(Exception):
    """Bad flags or settings: reported on stderr with exit status 2."""


# -- settings of `node` ------------------------------------------------------------------------


def _mapping(text: Any, what: str) -> dict[str, str]:
    """``"n1=host:port,n2=host:port"`` (or a TOML table) -> {"n1": "host:port", ...}."""
    if isinstance(text, Mapping):
        items = [(str(k), v) for k, v in text.items()]
    elif isinstance(text, str):
        items = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            node_id, sep, address = part.partition("=")
            if not sep or not node_id:
                raise UsageError(f"--{what}: {part!r} is not of the form ID=HOST:PORT")
            items.append((node_id.strip(), address.strip()))
    else:
        raise UsageError(f"{what}={text!r} must be ID=HOST:PORT,... or a table")
    result: dict[str, str] = {}
    for node_id, address in items:
        if not isinstance(address, str):
            raise UsageError(f"{what}[{node_id!r}]={address!r} must be a 'host:port' string")
        if node_id in result:
            raise UsageError(f"--{what}: {node_id!r} is given twice")
        try:
            parse_address(node_id, address)
        except ConfigError as exc:
            raise UsageError(f"--{what}: {exc}") from None
        result[node_id] = address
    if not result:
        raise UsageError(f"--{what} is empty")
    return result


_NODE_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "id": str,
    "peers": lambda v: _mapping(v, "peers"),
    "data_dir": str,
    "client": str,
    "clients": lambda v: _mapping(v, "clients"),
    "secret_file": str,
    "client_password_file": str,
    "heartbeat_interval": float,
    "election_timeout_min": float,
    "election_timeout_max": float,
    "max_batch_entries": int,
    "max_inflight": int,
    "disk_stall_timeout": float,
    "fsync": bool,
    "recover_corrupt_log": bool,
    "join": bool,
    "log_level": str,
    "gc_threshold": int,
    "metrics": str,
    "latency_sample_every": int,
}
"""Every flag of ``node`` (TOML key = flag name with ``_``), with the type it must have."""

_CONFIG_FIELDS = {f.name: type(f.default) for f in dataclasses.fields(Config)
                  if type(f.default) in (bool, int, float, str)}
"""Every engine Config field may be set in the TOML file (the common ones also by flag)."""


def _checked(key: str, value: Any) -> Any:
    kind = _NODE_SETTINGS.get(key) or _CONFIG_FIELDS[key]
    if kind is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{key}={value!r} must be true or false")
        return value
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UsageError(f"{key}={value!r} must be an integer")
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise UsageError(f"{key}={value!r} must be a number")
    if kind is str and not isinstance(value, str):
        raise UsageError(f"{key}={value!r} must be a string")
    return kind(value)


def load_toml(path: str) -> dict[str, Any]:
    """The settings in a TOML file, keys normalized to ``_`` and type-checked.

    Raises:
        UsageError: unreadable file, bad TOML, an unknown key or a value of the wrong type.
    """
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: invalid TOML: {exc}") from None
    settings: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name == "no_fsync":
            name, value = "fsync", (not value) if isinstance(value, bool) else value
        if name not in _NODE_SETTINGS and name not in _CONFIG_FIELDS:
            known = sorted(set(_NODE_SETTINGS) | set(_CONFIG_FIELDS))
            raise UsageError(f"--config {path}: unknown key {key!r} (known: {', '.join(known)})")
        settings[name] = _checked(name, value)
    return settings


def node_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TOML file's settings (when ``--config`` is given) overridden by the flags given."""
    settings = load_toml(args.config) if args.config else {}
    for name in _NODE_SETTINGS:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = _NODE_SETTINGS[name](value)
    for required in ("id", "peers", "client"):
        if required not in settings:
            raise UsageError(f"--{required.replace('_', '-')} is required (flag or config key)")
    if settings["id"] not in settings["peers"]:
        raise UsageError(f"--id {settings['id']!r} is not one of --peers "
                         f"({', '.join(settings['peers'])})")
    try:
        parse_address(settings["id"], settings["client"])
    except ConfigError as exc:
        raise UsageError(f"--client: {exc}") from None
    level = str(settings.get("log_level", "INFO")).upper()
    if level not in _LOG_LEVELS:
        raise UsageError(f"--log-level {level!r} must be one of {', '.join(_LOG_LEVELS)}")
    settings["log_level"] = level
    if settings.get("gc_threshold", 0) < 0:
        raise UsageError(f"--gc-threshold {settings['gc_threshold']} must be >= 0")
    return settings


DEFAULT_GC_THRESHOLD = 100_000
"""Young-generation GC threshold of a node process.  Python's default (700 allocations) runs a
collection every few hundred commits at saturation, each scanning every young object: about a
fifth of the leader's CPU.  The engine's objects are short-lived and acyclic, so collecting less
often costs little memory."""


def tune_gc(threshold: int) -> None:
    """Move everything allocated so far out of the collector's sight (``gc.freeze``) and set the
    young-generation threshold; ``threshold`` 0 leaves Python's defaults.

    Raises:
        ValueError: a negative threshold.
    """
    if threshold < 0:
        raise ValueError(f"gc threshold {threshold} must be >= 0")
    if threshold == 0:
        return
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)


def build_config(settings: Mapping[str, Any]) -> Config:
    """The engine Config from node settings.

    Raises:
        UsageError: the values break a Config rule (the message names field and rule).
    """
    fields = {k: v for k, v in settings.items() if k in _CONFIG_FIELDS}
    try:
        return Config(**fields)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def read_secret(path: str, flag: str = "--secret-file") -> bytes:
    """The secret kept in ``path`` (surrounding whitespace stripped): the shared transport
    secret, or (``flag="--client-password-file"``) the password clients AUTH with.

    Raises:
        UsageError: unreadable or empty file.
    """
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None
    if not secret:
        raise UsageError(f"{flag} {path} is empty")
    return secret


# -- commands ----------------------------------------------------------------------------------


class _StopSignals:
    """SIGTERM and SIGINT set ``event`` while installed (main thread only)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self.event

    def _handle(self, signum: int, frame: object) -> None:
        self.event.set()

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_node(settings: Mapping[str, Any]) -> int:
    """Run one KV node until SIGTERM/SIGINT; 0 after a graceful stop, 1 when it failed."""
    config = build_config(settings)
    secret = read_secret(settings["secret_file"]) if "secret_file" in settings else None
    password = (read_secret(settings["client_password_file"], "--client-password-file")
                if "client_password_file" in settings else None)
    logging.basicConfig(level=settings["log_level"], stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node_id, peers = settings["id"], settings["peers"]
    data_dir = settings.get("data_dir")
    try:
        transport = None if secret is None else TcpTransport(node_id, peers, secret=secret)
        node = RaftNode(node_id, peers, KVMachine(), config=config, data_dir=data_dir,
                        transport=transport, join=bool(settings.get("join", False)))
        server = KVServer(node, settings["client"], client_addresses=settings.get("clients"),
                          password=password)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if data_dir is None:
        logger.warning("%s: no --data-dir: the log is kept in memory and lost at exit", node_id)
    tune_gc(settings.get("gc_threshold", DEFAULT_GC_THRESHOLD))
    with _StopSignals() as stop:
        try:
            node.start()
        except (RaftError, OSError) as exc:
            logger.error("%s: cannot start: %s", node_id, exc)
            node.stop()
            return 1
        try:
            server.start()
        except (RaftError, OSError) as exc:
            logger.error("%s: cannot serve clients on %s: %s", node_id, settings["client"], exc)
            node.stop()
            return 1
        metrics = None
        if settings.get("metrics"):
            try:
                import engine.metrics
                metrics = engine.metrics.serve(settings["metrics"], node)
            except (ImportError, ValueError, OSError) as exc:
                logger.error("%s: cannot serve metrics on %s: %s", node_id,
                             settings["metrics"], exc)
                server.stop()
                node.stop()
                return 1
            logger.info("%s: metrics on %s", node_id, metrics.url)
        logger.info("%s: running (raft %s, clients %s, data %s, fsync %s)", node_id,
                    peers[node_id], settings["client"], data_dir or "in memory", config.fsync)
        code = 0
        try:
            while not stop.wait(0.5):
                if not node.status().running:
                    logger.error("%s: the node stopped on its own (see above)", node_id)
                    code = 1
                    break
        finally:
            logger.info("%s: stopping", node_id)
            if metrics is not None:
                metrics.close()
            server.stop()
            node.stop()
    return code


fetch_status = admin_client.fetch_status
"""Ask the KV node serving clients at ``address`` for RAFT.STATUS (``password``: AUTH first)."""


def run_member(address: str, action: str, node_id: str, raft_address: str | None, *,
               timeout: float, password: bytes | None = None) -> int:
    """``raft-engine member``: ask the leader serving clients at ``address`` to add, promote or
    remove a node; prints the new configuration.  1 when it failed."""
    command = [b"RAFT.MEMBER", action.encode(), node_id.encode()]
    if action == "add":
        if raft_address is None:
            raise UsageError("member add needs the new node's raft address (HOST:PORT)")
        try:
            parse_address(node_id, raft_address)
        except ConfigError as exc:
            raise UsageError(f"RAFT_HOST:PORT: {exc}") from None
        command.append(raft_address.encode())
    elif raft_address is not None:
        raise UsageError(f"member {action} takes only the node id")
    try:
        result = admin_client.json_request(address, command, timeout, "a configuration",
                                           password=password)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, RaftError, orjson.JSONDecodeError) as exc:
        print(f"{PROG} member: {action} {node_id} failed: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(result).decode())
    return 0


def format_status(status: Mapping[str, Any]) -> str:
    """RAFT.STATUS as aligned lines for people."""
    leader = status.get("leader_id") or "unknown"
    if status.get("leader_address"):
        leader += f" (clients at {status['leader_address']})"
    rows = [("node", status.get("id")), ("role", status.get("role")),
            ("term", status.get("term")), ("leader", leader),
            ("commit index", status.get("commit_index")),
            ("applied index", status.get("last_applied")),
            ("last log index", status.get("last_log_index"))]
    for key in ("voters", "outgoing", "learners"):
        if status.get(key):
            rows.append((key, ", ".join(status[key])))
    if status.get("running") is False:
        rows.append(("running", "no"))
    if status.get("recovering"):
        rows.append(("recovering", f"lost entries up to {status['recovering']} it may have "
                                   "acknowledged: not voting until a leader restores them"))
    if status.get("disk_stalled"):
        rows.append(("disk", "stalled: a durable write is overdue (not leading)"))
    for peer, pr in sorted((status.get("peers") or {}).items()):
        flags = [pr.get("state", "?"), "active" if pr.get("active") else "not heard from"]
        if pr.get("recovering"):
            flags.append("recovering")
        rows.append((f"peer {peer}", f"match {pr.get('match')}  lag {pr.get('lag')}  "
                                     f"{', '.join(flags)}"))
    return "\n".join(f"{name:<15} {value}" for name, value in rows)


def run_status(address: str, *, as_json: bool = False, timeout: float = 2.0,
               password: bytes | None = None) -> int:
    """Print a node's status; 1 when it cannot be reached."""
    try:
        status = fetch_status(address, timeout, password=password)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, RaftError, orjson.JSONDecodeError) as exc:
        print(f"{PROG} status: cannot get the status of {address}: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(status).decode() if as_json else format_status(status))
    return 0


def run_cluster(args: argparse.Namespace) -> int:
    """Start ``args.nodes`` node subprocesses on loopback and wait for SIGTERM/SIGINT.

    Returns 1 when a node exits during start-up (the others are then stopped) or later.

    Raises:
        UsageError: bad flags, or a Raft or client port that is not free (checked before
            any node starts, so nothing is started or printed then).
    """
    if not 1 <= args.nodes <= 99:
        raise UsageError(f"--nodes {args.nodes} must be in 1..99")
    for flag, base in (("--base-port", args.base_port), ("--client-base-port",
                                                          args.client_base_port)):
        if not 1 <= base <= 65535 - args.nodes:
            raise UsageError(f"{flag} {base} leaves no room for {args.nodes} ports")
    ids = [f"n{k}" for k in range(1, args.nodes + 1)]
    peers = {i: f"127.0.0.1:{args.base_port + k}" for k, i in enumerate(ids)}
    clients = {i: f"127.0.0.1:{args.client_base_port + k}" for k, i in enumerate(ids)}
    raft_ports = range(args.base_port, args.base_port + args.nodes)
    client_ports = range(args.client_base_port, args.client_base_port + args.nodes)
    if set(raft_ports) & set(client_ports):
        raise UsageError(f"--base-port {args.base_port} and --client-base-port "
                         f"{args.client_base_port} overlap for {args.nodes} nodes")
    # Before anything is started or printed: a port held by another program (another cluster,
    # typically) would make that node exit, and its clients port might answer for it.
    check_ports_free(
        [(port, f"raft port of {i}", "--base-port")
         for i, port in zip(ids, raft_ports, strict=True)]
        + [(port, f"client port of {i}", "--client-base-port")
           for i, port in zip(ids, client_ports, strict=True)])
    temporary = args.data_dir is None
    data_dir = tempfile.mkdtemp(prefix="raft-engine-") if temporary else args.data_dir
    common = ["--peers", ",".join(f"{i}={a}" for i, a in peers.items()),
              "--clients", ",".join(f"{i}={a}" for i, a in clients.items()),
              "--log-level", args.log_level]
    if args.no_fsync:
        common.append("--no-fsync")
    if args.secret_file:
        common += ["--secret-file", args.secret_file]
    if args.config:
        common += ["--config", args.config]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    code = 0
    with _StopSignals() as stop:
        try:
            for i in ids:
                node_dir = os.path.join(data_dir, i)
                procs[i] = subprocess.Popen(
                    [sys.executable, "-m", "engine.cli", "node", "--id", i, "--client",
                     clients[i], "--data-dir", node_dir, *common])
                print(f"{i}: clients {clients[i]}  raft {peers[i]}  data {node_dir}", flush=True)
            leader = _wait_for_leader(clients, procs, stop, timeout=15.0)
            exited = {i: proc.returncode for i, proc in procs.items()
                      if proc.poll() is not None}
            if exited:
                for i, status in sorted(exited.items()):
                    print(f"{PROG} cluster: error: {i} exited with status {status} while "
                          "starting (see its log above); stopping the cluster",
                          file=sys.stderr, flush=True)
                return 1
            if leader:
                print(f"leader: {leader} (redis-cli -p {clients[leader].rsplit(':', 1)[1]})",
                      flush=True)
            print("Ctrl-C (or SIGTERM) stops the cluster", flush=True)
            while not stop.wait(0.5):
                for i, proc in list(procs.items()):
                    if proc.poll() is not None:
                        print(f"{i} exited with status {proc.returncode}", file=sys.stderr,
                              flush=True)
                        del procs[i]
                        code = 1
                if not procs:
                    break
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if temporary:
                shutil.rmtree(data_dir, ignore_errors=True)
    return code


def check_ports_free(ports: Sequence[tuple[int, str, str]], host: str = "127.0.0.1") -> None:
    """Check that each ``(port, what, flag)`` can be bound on ``host`` right now.

    The check binds with SO_REUSEADDR, as the nodes do, so a port left in TIME_WAIT by a cluster
    that just stopped is not reported, while one that another program listens on is.

    Raises:
        UsageError: the first port that cannot be bound, named with what it was for and the
            flag that moves it.
    """
    for port, what, flag in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise UsageError(
                    f"port {port} on {host} ({what}) is not free: {exc.strerror or exc}; "
                    f"stop what holds it (another cluster?) or choose another {flag}") from None


def _listening_inodes(port: int) -> set[str] | None:
    """Inodes of the IPv4 TCP sockets listening on ``port`` (Linux ``/proc/net/tcp``), or None
    when that table cannot be read."""
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return None
    inodes = set()
    for row in rows:
        fields = row.split()
        # sl local_address rem_address st ... inode: st 0A is LISTEN.
        if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(fields[9])
    return inodes


def owns_listener(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the socket listening on TCP ``port``; None when this
    cannot be told (no Linux ``/proc``, or the process's descriptors are not readable)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for fd in descriptors:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                return True
    return False


def _wait_for_leader(clients: Mapping[str, str], procs: Mapping[str, subprocess.Popen[bytes]],
                     stop: threading.Event, timeout: float) -> str | None:
    """The id of the leader once one of *our* nodes reports it leads (polling every 100 ms);
    None on timeout, on a stop signal, or as soon as one of ``procs`` exited.

    A reply counts only if it names the id we gave that client address, the node process for
    that id still runs, and (where ``/proc`` tells) that process holds the listening socket: a
    program that held the port before us (another cluster) is never reported as our leader.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if any(proc.poll() is not None for proc in procs.values()):
            return None
        for node_id, address in clients.items():
            with contextlib.suppress(OSError, RaftError, ValueError):
                status = fetch_status(address, timeout=0.5)
                proc = procs.get(node_id)
                if (status.get("role") == "leader" and status.get("id") == node_id
                        and proc is not None and proc.poll() is None
                        and owns_listener(proc.pid, parse_address("client", address)[1])
                        is not False):
                    return node_id
        stop.wait(0.1)
    return None


# -- argument parsing --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description=(
        "Replicated Redis-compatible key-value store on the raft-engine Raft library."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", help="run one KV node (Raft member + RESP server)",
                          description="Run one KV node until SIGTERM or SIGINT.")
    node.add_argument("--config", metavar="FILE", help="TOML file with the settings below")
    node.add_argument("--id", help="this node's id (one of --peers)")
    node.add_argument("--peers", metavar="ID=HOST:PORT,...",
                      help="every member's Raft address, this node included")
    node.add_argument("--data-dir", metavar="DIR",
                      help="directory of the durable log (default: in memory)")
    node.add_argument("--client", metavar="HOST:PORT", help="address serving RESP clients")
    node.add_argument("--clients", metavar="ID=HOST:PORT,...",
                      help="every member's client address, for -NOTLEADER redirects")
    node.add_argument("--secret-file", metavar="FILE",
                      help="file holding the shared secret that authenticates Raft peers")
    node.add_argument("--client-password-file", metavar="FILE",
                      help="file holding the password RESP clients must AUTH with")
    for name, kind, text in (
            ("heartbeat-interval", float, "seconds between leader heartbeats"),
            ("election-timeout-min", float, "lower bound of the election timeout (s)"),
            ("election-timeout-max", float, "upper bound of the election timeout (s)"),
            ("max-batch-entries", int, "most entries in one AppendEntries"),
            ("max-inflight", int, "AppendEntries in flight per follower"),
            ("disk-stall-timeout", float, "seconds a durable write may take before the node "
                                          "stops leading (0 = off)"),
            ("latency-sample-every", int, "follow one proposal batch in N through the commit "
                                          "stages for the metrics (0 = no sampling/timing)"),
            ("gc-threshold", int, "allocations between young-generation garbage collections "
                                  f"in this process (default {DEFAULT_GC_THRESHOLD:,}; "
                                  "0 keeps Python's default of 700)")):
        node.add_argument(f"--{name}", type=kind, metavar="N", help=text)
    node.add_argument("--join", action="store_const", const=True,
                      help="this node is being added to a running cluster: start with no "
                           "configuration (then RAFT.MEMBER ADD it on the leader)")
    node.add_argument("--no-fsync", dest="fsync", action="store_const", const=False,
                      help="do not fsync the log (benchmarks; a power cut may lose writes)")
    node.add_argument("--recover-corrupt-log", action="store_const", const=True,
                      help="at start-up, discard a damaged log suffix (even inside the "
                           "committed prefix) and fetch it back from the peers instead of "
                           "stopping with CorruptLogError")
    node.add_argument("--metrics", metavar="HOST:PORT",
                      help="serve Prometheus metrics on http://HOST:PORT/metrics "
                           "(needs prometheus-client)")
    node.add_argument("--log-level", type=str.upper, metavar="LEVEL",
                      help=f"one of {', '.join(_LOG_LEVELS)} (default INFO)")

    cluster = sub.add_parser("cluster", help="run a local cluster of node subprocesses",
                             description="Start N nodes on 127.0.0.1; Ctrl-C stops them all.")
    cluster.add_argument("--nodes", type=int, default=3, metavar="N")
    cluster.add_argument("--data-dir", metavar="DIR",
                         help="parent of the nodes' data directories (default: a temporary "
                              "directory removed at exit)")
    cluster.add_argument("--base-port", type=int, default=7001, metavar="PORT",
                         help="Raft port of n1; n2 gets the next one, and so on")
    cluster.add_argument("--client-base-port", type=int, default=6401, metavar="PORT",
                         help="client (RESP) port of n1; n2 gets the next one, and so on")
    cluster.add_argument("--no-fsync", action="store_true", help="pass --no-fsync to the nodes")
    cluster.add_argument("--secret-file", metavar="FILE", help="pass --secret-file to the nodes")
    cluster.add_argument("--config", metavar="FILE", help="pass --config to the nodes")
    cluster.add_argument("--log-level", type=str.upper, default="WARNING", metavar="LEVEL",
                         choices=_LOG_LEVELS, help="the nodes' log level (default WARNING)")

    status = sub.add_parser(
        "status", help="print the whole cluster's Raft status (or one node's)",
        description="Ask the member at HOST:PORT for RAFT.STATUS, then every member whose "
                    "client address it knows (--clients), all at once, and print one row per "
                    "member: role, term, commit and applied index, lag behind the leader, "
                    "last contact with the leader, reachable, recovering, disk.  --node "
                    "prints only that node's own status.")
    status.add_argument("address", metavar="HOST:PORT", help="any member's client address")
    status.add_argument("--node", action="store_true",
                        help="only this node's status (every RAFT.STATUS field), as before")
    status.add_argument("--json", action="store_true",
                        help="print the merged cluster view as JSON (with --node: the node's "
                             "RAFT.STATUS)")
    status.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                        help="redraw the cluster view every SECONDS (default 2) until Ctrl-C; "
                             "put it after HOST:PORT")
    status.add_argument("--timeout", type=float, default=2.0, metavar="SECONDS",
                        help="how long each member may take to answer (default 2)")

    transfer = sub.add_parser(
        "transfer", help="hand leadership to another voter",
        description="Send RAFT.TRANSFER to the leader's client address (a member that does "
                    "not lead answers -NOTLEADER with the leader's address, which is then "
                    "asked once); returns once TARGET_ID leads.")
    transfer.add_argument("address", metavar="HOST:PORT",
                          help="the leader's (or any member's) client address")
    transfer.add_argument("target", metavar="TARGET_ID", help="the voter to lead next")
    transfer.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")

    snapshot = sub.add_parser(
        "snapshot", help="take a snapshot on one node now",
        description="Send RAFT.SNAPSHOT to a node's client address; prints the snapshot's "
                    "index once it is durable and the log is compacted behind it.")
    snapshot.add_argument("address", metavar="HOST:PORT", help="the node's client address")
    snapshot.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")

    member = sub.add_parser("member", help="add, promote or remove a cluster member",
                            description="Send RAFT.MEMBER to the leader's client address; "
                                        "prints the new configuration once committed.")
    member.add_argument("address", metavar="HOST:PORT", help="the leader's client address")
    member.add_argument("action", choices=("add", "promote", "remove"))
    member.add_argument("node_id", metavar="ID")
    member.add_argument("raft_address", metavar="RAFT_HOST:PORT", nargs="?",
                        help="for add: the new node's raft (peer) address")
    member.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS")
    for client in (status, transfer, snapshot, member):
        client.add_argument("--password-file", metavar="FILE",
                            help="file holding the client password (the node's "
                                 "--client-password-file), sent with AUTH first")
    tune.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``raft-engine``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, message already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "node":
            return run_node(node_settings(args))
        if args.command == "cluster":
            return run_cluster(args)
        if args.command == "tune":
            return tune.run(args)
        password = (read_secret(args.password_file, "--password-file")
                    if args.password_file else None)
        if args.command == "member":
            return run_member(args.address, args.action, args.node_id, args.raft_address,
                              timeout=args.timeout, password=password)
        if args.command == "transfer":
            return admin_client.run_transfer(args.address, args.target, timeout=args.timeout,
                                             password=password)
        if args.command == "snapshot":
            return admin_client.run_snapshot(args.address, timeout=args.timeout,
                                             password=password)
        if args.node:
            if args.watch is not None:
                raise UsageError("--watch redraws the cluster view: leave out --node")
            return run_status(args.address, as_json=args.json, timeout=args.timeout,
                              password=password)
        return cluster_view.run_cluster_status(args.address, as_json=args.json,
                                               timeout=args.timeout, watch_interval=args.watch,
                                               password=password)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
