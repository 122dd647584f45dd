"""Crash safety: a child process appends and syncs in a loop and reports each synced index; it
is SIGKILLed at seeded random moments.  After every kill, everything it reported is present and
correct on reopen (and recovery never fails).

SIGKILL keeps the page cache, so this tests process crashes (torn sequences of system calls),
not power loss; torn bytes are covered by test_recovery.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.types import Entry

from .conftest import DISK_IMPLS, open_log

ROUNDS = 4
ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import random, sys
from engine.types import Entry
impl, directory, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
if impl == "native":
    from engine.storage.native import NativeLogStore as Store
else:
    from engine.storage.filestore import FileLogStore as Store

def payload(i):
    return (b"%d:" % i) * (i % 9)

store = Store(directory, fsync=True, segment_size=8192)
rng = random.Random(seed)
last = store.last_index()
print("ready", last, flush=True)
while True:
    n = rng.randint(1, 40)
    store.append([Entry(i, 1 + i // 100, 0, payload(i)) for i in range(last + 1, last + 1 + n)])
    store.sync()
    last += n
    sys.stdout.write("%d\n" % last)
    sys.stdout.flush()
"""


def payload(i: int) -> bytes:
    return (b"%d:" % i) * (i % 9)


@pytest.mark.parametrize("impl", DISK_IMPLS)
def test_sigkill_loses_nothing_synced(impl, tmp_path):
    rng = random.Random(f"crash-{impl}")
    directory = tmp_path / "log"
    synced = 0
    for round_no in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, impl, str(directory), str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        watchdog = threading.Timer(30.0, proc.kill)  # bounds the test if the child hangs
        watchdog.start()
        try:
            ready = proc.stdout.readline().split()
            assert ready and ready[0] == "ready", proc.stderr.read()
            assert int(ready[1]) >= synced, f"round {round_no}: reopened log lost synced entries"
            for _ in range(rng.randint(1, 25)):
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
                synced = max(synced, int(line))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        store = open_log(impl, directory, segment_size=8192)
        try:
            last = store.last_index()
            assert last >= synced
            got = store.entries(1, last + 1)
            assert got == [Entry(i, 1 + i // 100, 0, payload(i)) for i in range(1, last + 1)]
        finally:
            store.close()
    assert synced > 0
