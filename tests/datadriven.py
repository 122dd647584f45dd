"""A tiny datadriven test runner (after cockroachdb/datadriven, as etcd-io/raft uses it).

A script is a sequence of blocks::

    # comments (and blank lines) between blocks are kept as they are
    command arg1 key=value key=(a,b)
    ----
    expected output, one or more lines
    <blank line ends the block>

``run_file(path, handler)`` parses each command, calls ``handler(Command)`` and compares what it
returns with the expected text.  With ``RAFT_REWRITE=1`` in the environment the file is
rewritten with the actual output instead; commit a rewrite only if you understand its diff.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_ARG = re.compile(r"(\w[\w-]*)(?:=(\([^)]*\)|\S+))?")


@dataclass
class Command:
    """One parsed command line: ``name pos1 pos2 key=value key=(a,b)``."""

    name: str
    line: int
    positional: list[str] = field(default_factory=list)
    keyword: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str) -> str:
        return self.keyword.get(key, default)

    def get_list(self, key: str) -> list[str]:
        """``key=(a,b)`` as ``["a", "b"]``; a bare value as a one-item list."""
        raw = self.keyword.get(key, "")
        raw = raw[1:-1] if raw.startswith("(") else raw
        return [x.strip() for x in raw.split(",") if x.strip()]


def parse_command(text: str, line: int) -> Command:
    name, _, rest = text.strip().partition(" ")
    cmd = Command(name, line)
    for m in _ARG.finditer(rest):
        if m.group(2) is None:
            cmd.positional.append(m.group(1))
        else:
            cmd.keyword[m.group(1)] = m.group(2)
    return cmd


def run_file(path: Path, handler: Callable[[Command], str]) -> None:
    """Run every block of ``path`` through ``handler``; assert (or rewrite) the outputs."""
    lines = path.read_text().splitlines()
    out: list[str] = []
    failures: list[str] = []
    i = 0
    while i < len(lines):
        text = lines[i]
        if not text.strip() or text.lstrip().startswith("#"):
            out.append(text)
            i += 1
            continue
        cmd = parse_command(text, i + 1)
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"{path}:{i + 1}: expected '----' after the command")
        j = i + 2
        expected: list[str] = []
        while j < len(lines) and lines[j].strip():
            expected.append(lines[j])
            j += 1
        actual = handler(cmd).rstrip("\n")
        actual_lines = actual.splitlines() if actual else []
        if actual_lines != expected:
            failures.append(f"{path.name}:{i + 1}: {text}\n--- expected\n" + "\n".join(expected)
                            + "\n--- actual\n" + "\n".join(actual_lines))
        out += [text, "----", *actual_lines]
        i = j
    if os.environ.get("RAFT_REWRITE"):
        path.write_text("\n".join(out) + "\n")
        return
    if failures:
        raise AssertionError("\n\n".join(failures)
                             + "\n\n(regenerate with RAFT_REWRITE=1 if the change is intended)")
