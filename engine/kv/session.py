"""Connection-level commands of the KV server: HELLO, AUTH, CLIENT, INFO and COMMAND.

Each connection has a :class:`Session` (its protocol version, whether it authenticated, its
name and library); :func:`session_command` runs the commands that read or change it, and
:func:`info_reply` and :func:`command_reply` the ones that describe the server.  All of it runs
on the server's loop (see :mod:`engine.kv.server`) and touches neither the node's state machine
nor a socket.

Protocol: a connection speaks RESP2 until ``HELLO 3`` (and again after ``HELLO 2``); the reply
to HELLO is already in the protocol it selects.  ``HELLO`` without a version answers in the
current one and changes nothing.

Authentication (``--client-password-file``): while a password is configured and the
connection has not authenticated, every command but AUTH, HELLO and QUIT is answered
``-NOAUTH Authentication required.``; ``AUTH <password>``, ``AUTH default <password>`` and
``HELLO <proto> AUTH default <password>`` authenticate (``-WRONGPASS ...`` otherwise, leaving the
connection as it was).  The comparison is of SHA-256 digests with :func:`hmac.compare_digest`,
so its time depends on neither the password's content nor its length.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from engine.kv.machine import COMMANDS
from engine.kv.resp import OK, Error, SimpleString, Verbatim

if TYPE_CHECKING:
    from engine.kv.server import KVServer

VERSION = "0.1.0"
REDIS_COMPAT = "7.0.0"
"""The Redis version INFO reports (``redis_version``): the command semantics followed."""

BEFORE_AUTH = frozenset({b"auth", b"hello", b"quit"})
"""Commands a connection may send before it authenticated."""

SESSION_COMMANDS = frozenset({b"hello", b"auth", b"client"})
"""The commands :func:`session_command` runs."""

NOAUTH = Error("NOAUTH Authentication required.")
WRONGPASS = Error("WRONGPASS invalid username-password pair or user is disabled.")
_HELLO_NOAUTH = Error("NOAUTH HELLO must be called with the client already authenticated, "
                      "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                      "authenticate the client and select the RESP protocol version at the "
                      "same time")
_NO_PASSWORD = Error("ERR AUTH <password> called without any password configured for the "
                     "default user. Are you sure your configuration is correct?")


def password_digest(password: bytes) -> bytes:
    """What the server keeps of the client password."""
    return hashlib.sha256(password).digest()


def password_ok(digest: bytes, given: bytes) -> bool:
    """Whether ``given`` is the password of ``digest``, in constant time."""
    return hmac.compare_digest(digest, hashlib.sha256(given).digest())


class Session:
    """What the server knows of one connection (owned by the server's loop)."""

    __slots__ = ("address", "authenticated", "created", "id", "lib_name", "lib_ver", "name",
                 "proto")

    def __init__(self, connection_id: int, address: str, authenticated: bool) -> None:
        self.id = connection_id
        self.address = address
        self.authenticated = authenticated
        self.proto = 2
        self.name = b""
        self.lib_name = b""
        self.lib_ver = b""
        self.created = time.monotonic()

    def info_line(self) -> str:
        """This connection as a line of CLIENT INFO / CLIENT LIST."""
        def text(value: bytes) -> str:
            return value.decode(errors="replace")
        return (f"id={self.id} addr={self.address} name={text(self.name)} "
                f"age={int(time.monotonic() - self.created)} db=0 resp={self.proto} "
                f"lib-name={text(self.lib_name)} lib-ver={text(self.lib_ver)}")


def _plain(value: bytes) -> bool:
    """Redis's rule for client names and library fields: printable ASCII without spaces."""
    return all(0x21 <= c <= 0x7E for c in value)


def session_command(server: KVServer, session: Session, name: bytes,
                    args: Sequence[bytes]) -> object:
    """HELLO, AUTH or CLIENT on ``session`` (arity already checked); returns the reply."""
    if name == b"auth":
        if len(args) > 2:
            return Error("ERR syntax error")
        return _auth(server, session, args[0] if len(args) == 2 else None, args[-1])
    if name == b"hello":
        return _hello(server, session, args)
    return _client(server, session, args)


def _auth(server: KVServer, session: Session, user: bytes | None, password: bytes) -> object:
    digest = server.password_digest
    if digest is None:
        if user is None:
            return _NO_PASSWORD
        return OK if user == b"default" else WRONGPASS
    if (user is None or user == b"default") and password_ok(digest, password):
        session.authenticated = True
        return OK
    return WRONGPASS


def _hello(server: KVServer, session: Session, args: Sequence[bytes]) -> object:
    proto = session.proto
    if args:
        if not args[0].isdigit() or len(args[0]) > 10:
            return Error("ERR Protocol version is not an integer or out of range")
        proto = int(args[0])
        if proto not in (2, 3):
            return Error("NOPROTO unsupported protocol version")
    auth: tuple[bytes, bytes] | None = None
    setname: bytes | None = None
    i = 1
    while i < len(args):
        option = args[i].lower()
        if option == b"auth" and i + 2 < len(args):
            auth = (args[i + 1], args[i + 2])
            i += 3
        elif option == b"setname" and i + 1 < len(args):
            setname = args[i + 1]
            i += 2
        else:
            return Error(f"ERR Syntax error in HELLO option '{option.decode(errors='replace')}'")
    if auth is not None:
        reply = _auth(server, session, *auth)
        if isinstance(reply, Error):
            return reply
    elif not session.authenticated:
        return _HELLO_NOAUTH
    if setname is not None:
        if not _plain(setname):
            return Error("ERR Client names cannot contain spaces, newlines or special "
                         "characters.")
        session.name = setname
    session.proto = proto
    return {"server": "raft-engine", "version": VERSION, "proto": proto, "id": session.id,
            "mode": "standalone", "role": "master" if server.is_leader() else "replica",
            "modules": []}


def _client(server: KVServer, session: Session, args: Sequence[bytes]) -> object:
    sub = args[0].lower()
    if sub == b"setname" and len(args) == 2:
        if not _plain(args[1]):
            return Error("ERR Client names cannot contain spaces, newlines or special "
                         "characters.")
        session.name = args[1]
        return OK
    if sub == b"getname" and len(args) == 1:
        return session.name or None
    if sub == b"id" and len(args) == 1:
        return session.id
    if sub == b"info" and len(args) == 1:
        return Verbatim(session.info_line() + "\n")
    if sub == b"list" and len(args) == 1:
        return Verbatim("".join(s.info_line() + "\n" for s in server.sessions()))
    if sub == b"setinfo" and len(args) == 3:
        attribute = args[1].lower()
        if attribute not in (b"lib-name", b"lib-ver"):
            return Error(f"ERR Unrecognized option '{args[1].decode(errors='replace')}'")
        if not _plain(args[2]):
            return Error(f"ERR {attribute.decode()} cannot contain spaces, newlines or "
                         "special characters.")
        if attribute == b"lib-name":
            session.lib_name = args[2]
        else:
            session.lib_ver = args[2]
        return OK
    if sub == b"help":
        return [SimpleString(line) for line in (
            "CLIENT <subcommand> [<arg> ...]. Subcommands are:",
            "GETNAME", "ID", "INFO", "LIST", "SETINFO <LIB-NAME|LIB-VER> <value>",
            "SETNAME <name>")]
    return Error(f"ERR unknown subcommand or wrong number of arguments for "
                 f"'{args[0].decode(errors='replace')[:64]}'. Try CLIENT HELP.")


# -- INFO --------------------------------------------------------------------------------------


class InfoFacts(NamedTuple):
    """What INFO reports, gathered by the server."""

    node_id: str
    port: int
    started: float  # time.monotonic() at start
    run_id: str
    connections: int
    role: str  # the Raft role
    term: int
    leader_id: str | None
    leader_address: str | None
    commit_index: int
    last_applied: int
    last_log_index: int
    snapshot_index: int
    recovering: int
    voters: int


SECTIONS = ("server", "clients", "replication", "raft")


def info_reply(facts: InfoFacts, args: Iterable[bytes]) -> Verbatim:
    """INFO [section ...]: the sections asked for (all for none, ``default``, ``all`` or
    ``everything``), Redis's ``# Section`` / ``field:value`` text with CRLF line ends."""
    wanted = {a.decode(errors="replace").lower() for a in args}
    if not wanted or wanted & {"default", "all", "everything"}:
        wanted = set(SECTIONS)
    uptime = int(time.monotonic() - facts.started)
    fields: dict[str, Mapping[str, object]] = {}
    fields["server"] = {
        "redis_version": REDIS_COMPAT, "raft_engine_version": VERSION,
        "redis_mode": "standalone", "os": f"{platform.system()} {platform.release()}",
        "arch_bits": 64, "process_id": os.getpid(), "run_id": facts.run_id,
        "tcp_port": facts.port, "uptime_in_seconds": uptime,
        "uptime_in_days": uptime // 86400}
    fields["clients"] = {"connected_clients": facts.connections}
    leader = facts.role == "leader"
    replication: dict[str, object] = {"role": "master" if leader else "slave"}
    if leader:
        replication["connected_slaves"] = max(0, facts.voters - 1)
    else:
        host, _, port = (facts.leader_address or "").rpartition(":")
        replication.update({"master_host": host, "master_port": port or 0,
                            "master_link_status": "up" if facts.leader_id else "down"})
    fields["replication"] = replication
    fields["raft"] = {
        "raft_node_id": facts.node_id, "raft_role": facts.role, "raft_term": facts.term,
        "raft_leader": facts.leader_id or "", "raft_commit_index": facts.commit_index,
        "raft_applied_index": facts.last_applied, "raft_last_log_index": facts.last_log_index,
        "raft_snapshot_index": facts.snapshot_index, "raft_recovering": facts.recovering}
    parts = []
    for section in SECTIONS:
        if section in wanted:
            lines = [f"# {section.capitalize()}"]
            lines += [f"{key}:{value}" for key, value in fields[section].items()]
            parts.append("\r\n".join(lines) + "\r\n")
    return Verbatim("\r\n".join(parts))


# -- COMMAND -----------------------------------------------------------------------------------


class Doc(NamedTuple):
    summary: str
    group: str
    since: str
    flags: tuple[str, ...]
    keys: tuple[int, int, int]  # first key, last key, step (0, 0, 0: no keys)


_DOCS: dict[bytes, Doc] = {
    b"get": Doc("Returns the string value of a key.", "string", "1.0.0",
                ("readonly", "fast"), (1, 1, 1)),
    b"set": Doc("Sets the string value of a key, ignoring its type. The key is created if it "
                "doesn't exist.", "string", "1.0.0", ("write",), (1, 1, 1)),
    b"del": Doc("Deletes one or more keys.", "generic", "1.0.0", ("write",), (1, -1, 1)),
    b"incr": Doc("Increments the integer value of a key by one.", "string", "1.0.0",
                 ("write", "fast"), (1, 1, 1)),
    b"incrby": Doc("Increments the integer value of a key by a number.", "string", "1.0.0",
                   ("write", "fast"), (1, 1, 1)),
    b"decr": Doc("Decrements the integer value of a key by one.", "string", "1.0.0",
                 ("write", "fast"), (1, 1, 1)),
    b"decrby": Doc("Decrements a number from the integer value of a key.", "string", "1.0.0",
                   ("write", "fast"), (1, 1, 1)),
    b"append": Doc("Appends a string to the value of a key.", "string", "2.0.0",
                   ("write", "fast"), (1, 1, 1)),
    b"mset": Doc("Atomically creates or modifies the string values of one or more keys.",
                 "string", "1.0.1", ("write",), (1, -1, 2)),
    b"mget": Doc("Atomically returns the string values of one or more keys.", "string",
                 "1.0.0", ("readonly", "fast"), (1, -1, 1)),
    b"exists": Doc("Determines whether one or more keys exist.", "generic", "1.0.0",
                   ("readonly", "fast"), (1, -1, 1)),
    b"expire": Doc("Sets the expiration time of a key in seconds.", "generic", "1.0.0",
                   ("write", "fast"), (1, 1, 1)),
    b"pexpire": Doc("Sets the expiration time of a key in milliseconds.", "generic", "2.6.0",
                    ("write", "fast"), (1, 1, 1)),
    b"persist": Doc("Removes the expiration time of a key.", "generic", "2.2.0",
                    ("write", "fast"), (1, 1, 1)),
    b"ttl": Doc("Returns the expiration time in seconds of a key.", "generic", "1.0.0",
                ("readonly", "fast"), (1, 1, 1)),
    b"pttl": Doc("Returns the expiration time in milliseconds of a key.", "generic", "2.6.0",
                 ("readonly", "fast"), (1, 1, 1)),
    b"type": Doc("Determines the type of value stored at a key.", "generic", "1.0.0",
                 ("readonly", "fast"), (1, 1, 1)),
    b"dbsize": Doc("Returns the number of keys in the database.", "server", "1.0.0",
                   ("readonly", "fast"), (0, 0, 0)),
    b"keys": Doc("Returns all key names that match a pattern.", "generic", "1.0.0",
                 ("readonly",), (0, 0, 0)),
    b"scan": Doc("Iterates over the key names in the database.", "generic", "2.8.0",
                 ("readonly",), (0, 0, 0)),
    b"ping": Doc("Returns the server's liveliness response.", "connection", "1.0.0",
                 ("fast",), (0, 0, 0)),
    b"echo": Doc("Returns the given string.", "connection", "1.0.0", ("fast",), (0, 0, 0)),
    b"quit": Doc("Closes the connection.", "connection", "1.0.0", ("fast",), (0, 0, 0)),
    b"select": Doc("Changes the selected database (only 0 exists).", "connection", "1.0.0",
                   ("fast",), (0, 0, 0)),
    b"hello": Doc("Handshakes with the server: RESP2 or RESP3, AUTH, SETNAME.", "connection",
                  "6.0.0", ("fast", "no_auth"), (0, 0, 0)),
    b"auth": Doc("Authenticates the connection.", "connection", "1.0.0",
                 ("fast", "no_auth"), (0, 0, 0)),
    b"client": Doc("A container for client connection commands (SETNAME, GETNAME, ID, INFO, "
                   "LIST, SETINFO).", "connection", "2.4.0", (), (0, 0, 0)),
    b"info": Doc("Returns information and statistics about the server (server, clients, "
                 "replication, raft).", "server", "1.0.0", ("loading",), (0, 0, 0)),
    b"command": Doc("Returns detailed information about all commands (COUNT, DOCS, INFO, "
                    "LIST).", "server", "2.8.13", ("loading",), (0, 0, 0)),
    b"config": Doc("CONFIG GET answers an empty list (no parameters are exposed).", "server",
                   "2.0.0", (), (0, 0, 0)),
    b"raft.status": Doc("Returns this node's Raft status as JSON.", "raft", "0.1.0", (),
                        (0, 0, 0)),
    b"raft.member": Doc("Changes the cluster's membership: ADD, PROMOTE, REMOVE.", "raft",
                        "0.1.0", ("write",), (0, 0, 0)),
}


def _arg(spec: str) -> dict[str, object]:
    """One COMMAND DOCS argument from a short spec: ``name:type``, with ``[...]`` optional,
    a trailing ``...`` multiple, ``TOKEN name:type`` a token before its value, and
    ``a|b`` one of (each a spec)."""
    optional = spec.startswith("[") and spec.endswith("]")
    if optional:
        spec = spec[1:-1]
    multiple = spec.endswith("...")
    if multiple:
        spec = spec[:-3].rstrip()
    flags = [SimpleString(f) for f, on in (("optional", optional), ("multiple", multiple)) if on]
    if "|" in spec:
        choices = [_arg(part) for part in spec.split("|")]
        return {"name": "condition", "type": "oneof", "flags": flags, "arguments": choices}
    token, _, rest = spec.rpartition(" ")
    name, _, kind = rest.partition(":")
    if not kind:  # a pure token such as NX
        return {"name": name.lower(), "type": "pure-token", "token": name, "flags": flags}
    arg: dict[str, object] = {"name": name, "type": kind, "display_text": name,
                              "flags": flags}
    if token:
        arg["token"] = token
    return arg


_ARGUMENTS: dict[bytes, tuple[str, ...]] = {
    b"get": ("key:key",), b"ttl": ("key:key",), b"pttl": ("key:key",), b"type": ("key:key",),
    b"incr": ("key:key",), b"decr": ("key:key",), b"persist": ("key:key",),
    b"set": ("key:key", "value:string", "[NX|XX]", "[GET]",
             "[EX seconds:integer|PX milliseconds:integer|EXAT unix-time-seconds:unix-time|"
             "PXAT unix-time-milliseconds:unix-time|KEEPTTL]"),
    b"incrby": ("key:key", "increment:integer"), b"decrby": ("key:key", "decrement:integer"),
    b"append": ("key:key", "value:string"),
    b"expire": ("key:key", "seconds:integer"), b"pexpire": ("key:key", "milliseconds:integer"),
    b"del": ("key:key ...",), b"exists": ("key:key ...",), b"mget": ("key:key ...",),
    b"mset": ("key:key", "value:string", "[key:key ...]"),
    b"keys": ("pattern:pattern",),
    b"scan": ("cursor:integer", "[MATCH pattern:pattern]", "[COUNT count:integer]",
              "[TYPE type:string]"),
    b"echo": ("message:string",), b"ping": ("[message:string]",), b"select": ("index:integer",),
    b"auth": ("[username:string]", "password:string"),
    b"hello": ("[protover:integer]", "[AUTH username:string]", "[password:string]",
               "[SETNAME clientname:string]"),
    b"info": ("[section:string ...]",),
}


def _arguments(name: bytes) -> list[dict[str, object]]:
    return [_arg(spec) for spec in _ARGUMENTS.get(name, ())]


def _doc(name: bytes) -> Doc:
    return _DOCS.get(name) or Doc(f"The {name.decode(errors='replace').upper()} command.",
                                  "raft" if name.startswith(b"raft.") else "server", "0.1.0",
                                  (), (0, 0, 0))


def command_reply(table: Mapping[bytes, int], args: Sequence[bytes]) -> object:
    """COMMAND [COUNT | DOCS [name ...] | INFO [name ...] | LIST] over ``table`` (every
    command's name and arity)."""
    def info(name: bytes) -> object:
        if name not in table:
            return None
        doc = _doc(name)
        return [name, table[name], [SimpleString(f) for f in doc.flags], *doc.keys, [], [], [],
                []]

    if not args:
        return [info(name) for name in table]
    sub = args[0].lower()
    if sub == b"count" and len(args) == 1:
        return len(table)
    if sub == b"list" and len(args) == 1:
        return list(table)
    if sub == b"info":
        return [info(name.lower()) for name in (args[1:] or list(table))]
    if sub == b"docs":
        names = [n.lower() for n in args[1:]] or list(table)
        return {name: {"summary": doc.summary, "since": doc.since, "group": doc.group,
                       "complexity": "O(1)", "arguments": _arguments(name)}
                for name in names if name in table for doc in (_doc(name),)}
    return Error(f"ERR unknown subcommand or wrong number of arguments for "
                 f"'{args[0].decode(errors='replace')[:64]}'. Try COMMAND HELP.")


def command_table(local_arity: Mapping[bytes, int]) -> dict[bytes, int]:
    """Every command the server answers, name -> arity (data commands first)."""
    return {**{name: spec.arity for name, spec in COMMANDS.items()}, **local_arity}
