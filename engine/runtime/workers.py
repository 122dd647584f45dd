"""Small helpers for the runtime's named worker threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


def start_thread(name: str, target: Callable[[], None]) -> threading.Thread:
    """Start a daemon thread with a name (``raft-<id>-<role>``) that logs any crash."""

    def run() -> None:
        try:
            target()
        except BaseException:
            logger.exception("thread %s died", name)
            raise

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def join_thread(thread: threading.Thread | None, timeout: float = 10.0) -> None:
    """Join ``thread`` unless it is the calling thread; log when it does not finish."""
    if thread is None or thread is threading.current_thread():
        return
    thread.join(timeout)
    if thread.is_alive():
        logger.error("thread %s did not stop within %.1fs", thread.name, timeout)
