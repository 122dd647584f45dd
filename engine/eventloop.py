"""The event loops the engine runs: built one way (uvloop when importable) and torn down one way
(cancel what is left, shut async generators down, close)."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is importable, else asyncio's default one."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def close_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """On the thread that ran ``loop``, once it stopped: cancel and await the tasks still
    pending, shut its async generators down, unset it as this thread's loop and close it."""
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
