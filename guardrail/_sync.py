"""The sync face of the async core: one background event loop runs every sync call's coroutine.

One loop for the process (not ``asyncio.run`` per call) keeps pooled async connections usable across calls,
and works when the caller already runs a loop of its own (a notebook, a sync callback inside async code).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["iterate", "run"]

T = TypeVar("T")
_ITEM, _END, _ERROR = 0, 1, 2
_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="guardrail-sync", daemon=True).start()
            _loop = loop
        return _loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the background loop and return its result (or raise its error)."""
    return asyncio.run_coroutine_threadsafe(coro, _background_loop()).result()


def iterate(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code; leaving early cancels it (its cleanup runs before we return).

    The whole iteration runs in one task on the background loop (so context variables and ``finally`` blocks
    behave as in async code) and hands items over a thread-safe queue.
    """
    results: queue.Queue[tuple[int, Any]] = queue.Queue()
    finished = threading.Event()

    async def pump() -> None:
        try:
            async for item in agen:
                results.put((_ITEM, item))
            results.put((_END, None))
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # handed to the consumer, raised there
            results.put((_ERROR, error))
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(pump(), _background_loop())
    try:
        while True:
            kind, value = results.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value
    finally:
        if not future.done():
            future.cancel()
            finished.wait(30)
