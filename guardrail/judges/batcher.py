"""``Batcher``: one worker thread that judges the pending calls of many concurrent requests together.

Every stream of a guard calls its judge at each unit boundary; with 50 streams that is 50 calls at about the
same time. A judge that can score many texts at once (``EmbeddingJudge``) hands its calls to a ``Batcher``:
calls queue up, the worker takes whatever is pending (waiting ``wait_s`` after the first for more, up to
``max_batch``) and scores them in one call of ``score``. While a batch runs, new calls queue, so batches grow
with load on their own and a lone request waits for nobody.

Exactness: each call gets the result of its own item (``score`` returns one result per item, in order); a
batch that raises is retried item by item, so one bad text fails only its own call. Cancellation: a call
cancelled while it waits (its asyncio task was cancelled, or its ``Future`` was) is dropped from the batch
and never scored; one cancelled while its batch runs gets nothing. The worker is started on the first call
and exits after ``idle_s`` without calls, so an idle judge holds no thread; ``on_start`` runs first on each
worker thread (the embedding judge sets its torch threads there, for that thread only).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["BatchStats", "Batcher"]

_log = logging.getLogger("guardrail.judges.batcher")

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class BatchStats:
    """What a batcher has done: batches run, items scored, items dropped because their caller cancelled, and the
    largest batch."""

    batches: int = 0
    items: int = 0
    cancelled: int = 0
    largest: int = 0


class Batcher(Generic[Item, Result]):
    """Scores items submitted from any thread or event loop in batches, on one worker thread.

    Example::

        batcher = Batcher(lambda texts: [len(t) for t in texts])
        assert batcher.run("four") == 4                  # from a thread
        assert await batcher.arun("three") == 5          # from asyncio
    """

    def __init__(
        self,
        score: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        wait_s: float = 0.0,
        max_batch: int = 64,
        idle_s: float = 30.0,
        name: str = "guardrail-judge-batcher",
        on_start: Callable[[], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._score = score
        self.wait_s = wait_s
        self.max_batch = max_batch
        self.idle_s = idle_s
        self.name = name
        self.on_start = on_start
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue[tuple[Item, Future[Result]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ callers

    def submit(self, item: Item) -> Future[Result]:
        """Queue ``item``; the future gets its result (or its exception). Cancel the future to withdraw it."""
        future: Future[Result] = Future()
        with self._lock:
            self._queue.put((item, future))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._worker.start()
        return future

    def run(self, item: Item, timeout: float | None = None) -> Result:
        """Score ``item`` and wait for it (``TimeoutError`` after ``timeout`` seconds, the item withdrawn)."""
        future = self.submit(item)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def arun(self, item: Item) -> Result:
        """``run`` for asyncio: cancelling the awaiting task withdraws the item."""
        return await asyncio.wrap_future(self.submit(item))

    # ------------------------------------------------------------------------------------------ worker

    def _take(self) -> list[tuple[Item, Future[Result]]] | None:
        """The next batch (None when idle for ``idle_s``: the worker then exits)."""
        try:
            first = self._queue.get(timeout=self.idle_s)
        except queue.Empty:
            with self._lock:
                if self._queue.empty():
                    self._worker = None
                    return None
            return []
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                remaining = deadline - time.monotonic()
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _work(self) -> None:
        if self.on_start is not None:
            try:
                self.on_start()
            except Exception as error:  # tuning only: the worker must serve its callers whatever happens
                _log.warning("%s: its start hook failed (%s); scoring without it", self.name, error)
        while (batch := self._take()) is not None:
            live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
            self.stats.cancelled += len(batch) - len(live)
            if live:
                self._run(live)

    def _run(self, live: list[tuple[Item, Future[Result]]]) -> None:
        self.stats.batches += 1
        self.stats.items += len(live)
        self.stats.largest = max(self.stats.largest, len(live))
        try:
            results = list(self._score([item for item, _ in live]))
            if len(results) != len(live):
                raise RuntimeError(f"a batch of {len(live)} items gave {len(results)} results")
        except Exception as error:
            if len(live) == 1:
                self._settle(live[0][1], None, error)
                return
            for item, future in live:  # one bad item fails only its own call
                try:
                    result = self._score([item])[0]
                except Exception as single:
                    self._settle(future, None, single)
                else:
                    self._settle(future, result, None)
            return
        for (_, future), result in zip(live, results, strict=True):
            self._settle(future, result, None)

    @staticmethod
    def _settle(future: Future[Result], result: Result | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
