"""The sync face of the async core: one background event loop runs every sync call's coroutine.

One loop for the process (not ``asyncio.run`` per call) keeps pooled async connections usable across calls,
and works when the caller already runs a loop of its own (a notebook, a sync callback inside async code).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["iterate", "run"]

T = TypeVar("T")
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
    """Iterate an async iterator from sync code; leaving early closes it (cancelling upstream work)."""
    loop = _background_loop()
    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(agen.__anext__(), loop).result()  # type: ignore[arg-type]
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            asyncio.run_coroutine_threadsafe(aclose(), loop).result()
