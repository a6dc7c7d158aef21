"""Guarded traffic at concurrency: 1, 10, 50 and 100 concurrent streams against llama.cpp's server, in one run.

    .venv/bin/python benchmarks/concurrency.py                 # levels 1,10,50,100, 64 tokens an answer
    .venv/bin/python benchmarks/concurrency.py --quick         # levels 1,10, 32 tokens
    .venv/bin/python benchmarks/concurrency.py --json out.json

At each level, N distinct benign prompts (../shared/data/train_extra/benign_instruct.jsonl; training data, not
an evaluation set) are streamed at once, greedy, in three modes one after the other:

- ``unguarded``: the server's own stream, read by the same async client;
- ``guarded``: ``Guard("harmless", OpenAIBackend(...), judge="embedding")``, as shipped: concurrent streams'
  judge calls are scored together by the judge's batcher (``guardrail.judges.batcher``);
- ``guarded, no batching``: the same with the batcher capped at one call per batch (each stream's call alone).

Reported per level and mode: throughput (answers/s and answer tokens/s over the wall time of the level),
p50/p95 time to first verified text (to the first text a client sees), p95 end to end, and the CPU time of
this process per answer (``getrusage``: the client, the guard's engine and the judge; the server is another
process). ``guard CPU/answer`` is that figure minus the unguarded mode's at the same level: what guarding
costs. The batcher's mean batch size shows how much batching happened.

Two upstreams, one after the other. ``llama.cpp``: llama-cpp-python's server (2 threads) on the same cores as
the guard; it answers one request at a time (requests queue), so streams barely overlap and time to first text
grows with the queue. ``parallel replay``: the answers llama.cpp gave, streamed again by a small server that
answers every request at once, one piece per (1 / llama.cpp's one-stream tokens/s) seconds, as a server with
parallel slots (vLLM, llama-server --parallel) on its own machine would: here N streams are in flight together
and the guard's own cost at concurrency shows. ``embedded (token-level)``: the embedded model in this process
(``LocalBackend``, token-level verify), at ``--embedded-levels`` (1 and 10: one model generates every stream in
turn, so this is slow).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.sentence_rewind import guarded  # noqa: E402  # one guarded stream, timed
from guardrail.backends.remote import OpenAIBackend  # noqa: E402
from guardrail.guard import Guard  # noqa: E402
from guardrail.judges import EmbeddingJudge  # noqa: E402
from guardrail.openai_client import OpenAIClient  # noqa: E402
from guardrail.policy import load_policy  # noqa: E402
from tests.fault_server import fault_server  # noqa: E402
from tests.llama_server import LlamaServer  # noqa: E402

PROMPTS = REPO.parent / "shared" / "data" / "train_extra" / "benign_instruct.jsonl"
MODES = ("unguarded", "guarded", "guarded, no batching")


def prompts(count: int) -> list[str]:
    """``count`` distinct short benign instructions."""
    found: list[str] = []
    for line in PROMPTS.read_text(encoding="utf-8").splitlines():
        text = str(json.loads(line)["prompt"]).strip()
        if 20 <= len(text) <= 200 and text not in found:
            found.append(text)
        if len(found) == count:
            return found
    raise SystemExit(f"{PROMPTS} has fewer than {count} short prompts")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def unguarded(client: OpenAIClient, prompt: str, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    first = None
    pieces: list[str] = []
    async for delta in client.astream_chat([{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0):
        if delta.text:
            pieces.append(delta.text)  # llama.cpp streams one token a delta
            if first is None:
                first = time.perf_counter() - started
    return {"latency": time.perf_counter() - started, "ttft": first or 0.0, "tokens": len(pieces), "pieces": pieces}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def level(
    n: int,
    mode: str,
    plain: Callable[[str, int], Awaitable[dict[str, Any]]],
    guard: Guard,
    judge: EmbeddingJudge,
    pool: list[str],
    max_tokens: int,
    record: dict[str, list[str]] | None,
) -> dict[str, Any]:
    judge.batcher.max_batch = 1 if mode == "guarded, no batching" else 64
    before = (judge.batcher.stats.batches, judge.batcher.stats.items)
    cpu = cpu_seconds()
    started = time.perf_counter()
    if mode == "unguarded":
        rows = await asyncio.gather(*(plain(p, max_tokens) for p in pool[:n]))
    else:
        rows = await asyncio.gather(*(guarded(guard, p, max_tokens) for p in pool[:n]))
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    if record is not None and mode == "unguarded":
        record.update({p: r["pieces"] for p, r in zip(pool, rows, strict=False)})
    batches = judge.batcher.stats.batches - before[0]
    items = judge.batcher.stats.items - before[1]
    return {
        "streams": n,
        "mode": mode,
        "wall_s": wall,
        "answers_per_s": n / wall,
        "tokens_per_s": sum(r["tokens"] for r in rows) / wall,
        "ttft_p50": percentile([r["ttft"] for r in rows], 0.5),
        "ttft_p95": percentile([r["ttft"] for r in rows], 0.95),
        "latency_p95": percentile([r["latency"] for r in rows], 0.95),
        "cpu_per_answer_s": cpu / n,
        "judge_calls": items,
        "mean_batch": items / batches if batches else 0.0,
        "rewinds": sum(r.get("rewinds", 0) for r in rows),
        "fallbacks": sum(1 for r in rows if r.get("fallback")),  # the fallback's action, or None
    }


async def levels(
    base_url: str, upstream: str, pool: list[str], args: argparse.Namespace, record: dict[str, list[str]] | None
) -> list[dict[str, Any]]:
    client = OpenAIClient(base_url, model="smollm2", read_timeout=600)
    policy = load_policy("harmless")
    judge = EmbeddingJudge(policy)
    guard = Guard(policy, OpenAIBackend(base_url, client=client), judge=judge)

    async def plain(prompt: str, max_tokens: int) -> dict[str, Any]:
        return await unguarded(client, prompt, max_tokens)

    await plain("Warm up.", 4)
    await guarded(guard, "Warm up.", 8)
    results = []
    for n in args.levels:
        for mode in MODES:
            row = {
                "upstream": upstream,
                **await level(n, mode, plain, guard, judge, pool, args.max_tokens, record),
            }
            print(json.dumps(row), file=sys.stderr, flush=True)
            results.append(row)
    await client.aclose()
    return results


async def embedded_levels(pool: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The embedded model in this process: token-level guard (verify) vs the backend's own stream."""
    from guardrail.backends.base import GenerationParams
    from guardrail.backends.local import LocalBackend

    backend = LocalBackend()
    policy = load_policy("harmless")
    judge = EmbeddingJudge(policy)
    guard = Guard(policy, backend, judge=judge)

    async def plain(prompt: str, max_tokens: int) -> dict[str, Any]:
        started, first, tokens = time.perf_counter(), None, 0
        params = GenerationParams(temperature=0.0, max_tokens=max_tokens)
        async for chunk in backend.astream([{"role": "user", "content": prompt}], params):
            tokens += chunk.tokens
            if chunk.text and first is None:
                first = time.perf_counter() - started
        return {"latency": time.perf_counter() - started, "ttft": first or 0.0, "tokens": tokens}

    await plain("Warm up.", 4)
    await guarded(guard, "Warm up.", 8)
    results = []
    for n in args.embedded_levels:
        for mode in MODES:
            row = {"upstream": "embedded (token-level)", **await level(n, mode, plain, guard, judge, pool,
                                                                      args.max_tokens, None)}  # fmt: skip
            print(json.dumps(row), file=sys.stderr, flush=True)
            results.append(row)
    return results


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    pool = prompts(max([*args.levels, *args.embedded_levels]))
    recorded: dict[str, list[str]] = {}
    with LlamaServer() as base_url:
        results = asyncio.run(levels(base_url, "llama.cpp", pool, args, recorded))
    # the same answers again from an upstream that streams every request at once, at llama.cpp's one-stream pace
    # (as a server with parallel slots would): here streams overlap and the judge's batches can form
    one = next(r for r in results if r["mode"] == "unguarded" and r["streams"] == min(args.levels))
    with fault_server() as server:
        server.replies = recorded
        server.piece_delay = 1.0 / one["tokens_per_s"]
        results += asyncio.run(levels(server.url("replay", "bench"), "parallel replay", pool, args, None))
    if args.embedded_levels:
        results += asyncio.run(embedded_levels(pool, args))
    return results


def table(results: list[dict[str, Any]]) -> str:
    base = {(r["upstream"], r["streams"]): r for r in results if r["mode"] == "unguarded"}
    lines = [
        "| upstream | streams | mode | answers/s | tokens/s | x unguarded throughput | TTFT p50 s | TTFT p95 s "
        "| end-to-end p95 s | CPU/answer s | guard CPU/answer s | judge calls | mean batch | fallbacks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        plain = base[(r["upstream"], r["streams"])]
        guard_cpu = "" if r["mode"] == "unguarded" else f"{r['cpu_per_answer_s'] - plain['cpu_per_answer_s']:.3f}"
        lines.append(
            f"| {r['upstream']} | {r['streams']} | {r['mode']} | {r['answers_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['answers_per_s'] / plain['answers_per_s']:.2f} | {r['ttft_p50']:.2f} | {r['ttft_p95']:.2f} | "
            f"{r['latency_p95']:.2f} | {r['cpu_per_answer_s']:.3f} | {guard_cpu} | {r['judge_calls']} | "
            f"{r['mean_batch']:.1f} | {r['fallbacks']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50, 100])
    parser.add_argument(
        "--embedded-levels",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[1, 10],
        help="levels for the embedded model (one model in this process generates every stream in turn)",
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--table", type=Path, help="print the table of results written by --json, and exit")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text(encoding="utf-8"))))
        return
    if args.quick:
        args.levels, args.embedded_levels, args.max_tokens = [1, 10], [1, 4], min(args.max_tokens, 32)
    results = run(args)
    print(f"Concurrent streams, max_tokens {args.max_tokens}, greedy:\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
