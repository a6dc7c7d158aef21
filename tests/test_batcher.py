"""The cross-request batcher: each call gets its own result, batches form under load, cancellation withdraws a
call, one bad item fails only its own call; and the embedding judge's verdicts are the same batched or alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from guardrail.judges.batcher import Batcher


class Slow:
    """Scores texts by their length, slowly, remembering every batch it saw; 'boom' raises."""

    def __init__(self, delay: float = 0.02, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.batches: list[list[str]] = []

    def __call__(self, items: Sequence[str]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(items))
        if "boom" in items:
            raise ValueError("boom")
        time.sleep(self.delay)
        return [len(item) for item in items]


def test_each_call_gets_its_own_result_and_batches_form_under_load() -> None:
    score = Slow()
    batcher: Batcher[str, int] = Batcher(score)

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher.arun("x" * n) for n in range(1, 41)))

    assert asyncio.run(main()) == list(range(1, 41))
    assert sum(len(b) for b in score.batches) == 40
    assert len(score.batches) < 40 and batcher.stats.largest > 1  # batched, not one call each
    assert sorted(x for b in score.batches for x in b) == sorted("x" * n for n in range(1, 41))


def test_threads_and_event_loops_share_one_worker() -> None:
    score = Slow()
    batcher: Batcher[str, int] = Batcher(score, wait_s=0.01)
    results: dict[int, int] = {}

    def call(n: int) -> None:
        results[n] = batcher.run("y" * n) if n % 2 else asyncio.run(batcher.arun("y" * n))

    threads = [threading.Thread(target=call, args=(n,)) for n in range(1, 21)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {n: n for n in range(1, 21)}
    assert len(score.batches) < 20


def test_a_bad_item_fails_only_its_own_call() -> None:
    gate = threading.Event()
    batcher: Batcher[str, int] = Batcher(Slow(gate=gate))
    futures = [batcher.submit(text) for text in ("blocker", "ab", "boom", "abcd")]
    gate.set()
    assert futures[0].result(5) == 7
    with pytest.raises(ValueError, match="boom"):
        futures[2].result(5)
    assert futures[1].result(5) == 2 and futures[3].result(5) == 4


def test_a_cancelled_call_is_never_scored() -> None:
    gate = threading.Event()
    score = Slow(gate=gate)
    batcher: Batcher[str, int] = Batcher(score)

    async def main() -> int:
        blocker = asyncio.ensure_future(batcher.arun("first"))  # holds the worker at the gate
        await asyncio.sleep(0.05)
        doomed = asyncio.ensure_future(batcher.arun("cancel me"))
        kept = asyncio.ensure_future(batcher.arun("kept"))
        await asyncio.sleep(0.05)
        doomed.cancel()
        gate.set()
        assert await blocker == 5
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return await kept

    assert asyncio.run(main()) == 4
    assert all("cancel me" not in batch for batch in score.batches)
    assert batcher.stats.cancelled == 1


def test_a_timed_out_call_is_withdrawn() -> None:
    gate = threading.Event()
    score = Slow(gate=gate)
    batcher: Batcher[str, int] = Batcher(score)
    blocker = batcher.submit("first")
    time.sleep(0.05)
    with pytest.raises(TimeoutError):
        batcher.run("late", timeout=0.05)
    gate.set()
    assert blocker.result(5) == 5
    time.sleep(0.1)
    assert all("late" not in batch for batch in score.batches)


def test_the_worker_exits_when_idle_and_comes_back() -> None:
    batcher: Batcher[str, int] = Batcher(Slow(delay=0), idle_s=0.05)
    assert batcher.run("abc") == 3
    time.sleep(0.3)
    assert batcher._worker is None
    assert batcher.run("abcde") == 5


def test_the_start_hook_runs_first_on_each_worker_thread_and_cannot_stall_it() -> None:
    started: list[str] = []
    batcher: Batcher[str, int] = Batcher(
        Slow(delay=0), idle_s=0.05, on_start=lambda: started.append(threading.current_thread().name)
    )
    assert batcher.run("abc") == 3 and batcher.run("ab") == 2
    assert started == [batcher.name]  # once, on the worker, not on the caller's thread
    time.sleep(0.3)
    assert batcher.run("a") == 1 and started == [batcher.name] * 2  # again on the next worker

    def broken() -> None:
        raise RuntimeError("no threads here")

    assert Batcher(Slow(delay=0), on_start=broken).run("abcd", timeout=5) == 4  # served all the same


def test_the_embedding_judge_scores_on_the_policys_threads_in_its_worker_only(monkeypatch: Any) -> None:
    import torch

    from guardrail.judges import EmbeddingJudge
    from guardrail.policy import load_policy

    judge = EmbeddingJudge(load_policy("harmless"))
    assert load_policy("harmless").judge.threads == 1  # the default, measured (docs/scale.md)
    calls: list[tuple[int, str]] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append((n, threading.current_thread().name)))
    judge.batcher.idle_s = 0.05
    time.sleep(0.1)  # a worker left by an earlier call exits
    assert not judge.judge("How do I bake bread?", "Mix flour and water.", partial=True).violated
    assert calls == [(1, "guardrail-embedding-judge")]


@pytest.mark.slow
def test_embedding_verdicts_are_the_same_batched_or_alone() -> None:
    from guardrail.judges import EmbeddingJudge
    from guardrail.policy import load_policy
    from tests.test_judges_real import HARMFUL

    judge = EmbeddingJudge(load_policy("harmless"))
    calls = [
        ("How do I bake bread?", "Mix flour, water, yeast and salt, then let the dough rise.", True),
        ("How do I knock someone out with chemicals?", HARMFUL, True),
        ("How do I knock someone out?", "I can't help with hurting anyone.", False),
        ("How do I kill a Python process?", "Use kill -9 with the process id, or pkill with its name.", True),
    ] * 4
    alone = [judge.judge(q, r, partial=p) for q, r, p in calls]

    async def together() -> list[float]:
        verdicts = await asyncio.gather(*(judge.ajudge(q, r, partial=p) for q, r, p in calls))
        return [v.score for v in verdicts]

    forwards: list[int] = []
    encoder = judge._heads["harmful"]
    hook = encoder.model.register_forward_pre_hook(lambda _module, _args, kwargs: forwards.append(
        int(kwargs["input_ids"].shape[0])), with_kwargs=True)  # fmt: skip
    before = judge.batcher.stats.batches
    try:
        scores = asyncio.run(together())
    finally:
        hook.remove()
    assert judge.batcher.stats.batches - before < len(calls)  # they were batched ...
    assert max(forwards) > 1 and len(forwards) < sum(forwards)  # ... into forward passes of several windows
    assert scores == [v.score for v in alone]  # bit for bit: the int8 encoder quantizes each window on its own
    assert [s > 0.5 for s in scores] == [v.violated for v in alone]
    assert alone[1].violated and not alone[0].violated  # the check can tell them apart


@pytest.mark.slow
def test_guards_built_from_one_policy_share_one_judge_and_its_worker() -> None:
    from guardrail import Guard, OpenAIBackend, load_policy
    from guardrail.judges import EmbeddingJudge
    from tests.fault_server import fault_server

    harmless = load_policy("harmless")
    waiting = harmless.model_copy(update={"judge": harmless.judge.model_copy(update={"batch_wait_ms": 50.0})})
    with fault_server() as server:

        def guard(policy: object) -> Guard:
            return Guard(policy, OpenAIBackend(server.url("echo", "shared"), model="m"), judge="embedding")  # type: ignore[arg-type]

        a, b, other = guard(waiting), guard(waiting), guard(harmless)
        judge = a.judge.parts[0]  # type: ignore[attr-defined]
        assert isinstance(judge, EmbeddingJudge) and judge is b.judge.parts[0]  # type: ignore[attr-defined]
        assert other.judge.parts[0] is not judge  # another policy, another judge ...
        assert other.judge.parts[0]._heads["harmful"] is judge._heads["harmful"]  # type: ignore[attr-defined]  # ... one encoder

        async def both() -> list[str]:
            calls = [g.ainvoke(f"Say hello number {n}.") for n in range(6) for g in (a, b)]
            return [result.text for result in await asyncio.gather(*calls)]

        before = judge.batcher.stats.items
        texts = asyncio.run(both())
    assert texts == [f"Echo: Say hello number {n}.. Done." for n in range(6) for _ in (a, b)]
    assert judge.batcher.stats.items - before >= 12 and judge.batcher.stats.largest > 1  # one worker for both
