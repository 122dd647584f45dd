"""File-descriptor accounting for the tests that check ``stop()`` closes everything it opened.

A bare count is not enough: objects left by earlier tests (an event loop's self-pipe, a socket
awaiting garbage collection) may be closed while the test runs, and a count would then hide a
leak or report one that is not there.  So the helpers collect garbage first and compare the
descriptors by number and target: what the test opened and left open is what it leaked.
"""

from __future__ import annotations

import contextlib
import gc
import os


def open_fds() -> set[str]:
    """The process's open file descriptors, as "fd -> target" strings, after a garbage
    collection (so descriptors held only by unreachable objects of earlier tests are closed)."""
    gc.collect()
    out = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the fd of the listdir itself
            out.add(f"{name} -> {os.readlink(f'/proc/self/fd/{name}')}")
    return out


def leaked_fds(before: set[str]) -> set[str]:
    """Descriptors open now that were not open in ``before`` (an earlier ``open_fds()``)."""
    return open_fds() - before
