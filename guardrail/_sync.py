"""The sync face of the async core: one background event loop runs every sync call's coroutine.

One loop for the process (not ``asyncio.run`` per call) keeps pooled async connections usable across calls,
and works when the caller already runs a loop of its own (a notebook, a sync callback inside async code).
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import Any, TypeVar

__all__ = ["called_from_sync", "context_iterate", "iterate", "run", "thread_iterate"]

T = TypeVar("T")
_ITEM, _END, _ERROR = 0, 1, 2
_SYNC_CALLER: contextvars.ContextVar[bool] = contextvars.ContextVar("guardrail_sync_caller", default=False)


_END_OF_ITEMS: Any = object()


def _handed_over(kind: int, value: Any) -> Any:
    """What a producer thread or task handed over: the item, ``_END_OF_ITEMS``, or its error raised here."""
    if kind == _END:
        return _END_OF_ITEMS
    if kind == _ERROR:
        raise value
    return value


def called_from_sync() -> bool:
    """True inside work started by ``run`` / ``iterate``: a framework model should then be driven through its sync
    API (in a worker thread), since its async clients may be bound to another event loop."""
    return _SYNC_CALLER.get()


async def thread_iterate(
    make: Callable[[], Iterable[T]],
    lock: AbstractContextManager[Any] | None = None,
    *,
    context: contextvars.Context | None = None,
) -> AsyncIterator[T]:
    """A sync iterable, advanced in one worker thread of its own (holding ``lock`` for each step).

    The thread that calls ``next()`` is the only one that ever touches the iterator: leaving early (a rejection
    closes the upstream) asks the thread to stop, and the thread closes the iterator itself once the step in
    progress returns. Closing it from another thread while ``next()`` runs raised "generator already executing".
    ``context`` (default: a copy of the caller's) is the context the iteration runs in. The thread reads at most
    one item ahead of the consumer: a stream that is abandoned (max_tokens reached, a rejection) is not drained.
    """
    guard = lock if lock is not None else nullcontext()
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    stop = threading.Event()
    demand = threading.Semaphore(1)  # items the thread may read now: one ahead, then one per item taken

    def put(kind: int, value: Any) -> None:
        with suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            loop.call_soon_threadsafe(items.put_nowait, (kind, value))

    def work() -> None:
        iterator: Iterator[T] | None = None
        try:
            with guard:
                iterator = iter(make())
            while True:
                demand.acquire()
                if stop.is_set():
                    break
                with guard:
                    item = next(iterator)
                put(_ITEM, item)
        except StopIteration:
            pass
        except BaseException as error:  # handed to the consumer, raised there
            put(_ERROR, error)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                with suppress(Exception), guard:
                    close()
            put(_END, None)

    runner = context if context is not None else contextvars.copy_context()
    threading.Thread(target=runner.run, args=(work,), name="guardrail-iterate", daemon=True).start()
    try:
        while True:
            demand.release()
            if (item := _handed_over(*await items.get())) is _END_OF_ITEMS:
                break
            yield item
    finally:
        stop.set()
        demand.release()  # wakes the thread if it waits for demand: it sees stop and closes the iterator


async def context_iterate(make: Callable[[], AsyncIterator[T]], context: contextvars.Context) -> AsyncIterator[T]:
    """An async iterator created and advanced inside ``context`` (not the caller's): what it reads from context
    variables (callbacks, tracers, spans) is what ``context`` holds, and nothing it sets leaks to the caller."""
    iterator = context.run(make)
    try:
        while True:
            try:
                item = await asyncio.create_task(_anext(iterator), context=context)
            except StopAsyncIteration:
                return
            yield item
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            with suppress(Exception):
                await asyncio.shield(asyncio.create_task(close(), context=context))


async def _anext(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()


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

    async def as_sync_caller() -> T:
        _SYNC_CALLER.set(True)
        return await coro

    return asyncio.run_coroutine_threadsafe(as_sync_caller(), _background_loop()).result()


def iterate(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code; leaving early cancels it (its cleanup runs before we return).

    The whole iteration runs in one task on the background loop (so context variables and ``finally`` blocks
    behave as in async code) and hands items over a thread-safe queue.
    """
    results: queue.Queue[tuple[int, Any]] = queue.Queue()
    finished = threading.Event()

    async def pump() -> None:
        _SYNC_CALLER.set(True)
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
        while (item := _handed_over(*results.get())) is not _END_OF_ITEMS:
            yield item
    finally:
        if not future.done():
            future.cancel()
            finished.wait(30)
