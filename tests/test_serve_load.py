"""guardrail serve under load, with a real llama.cpp upstream: 200 concurrent streaming clients get their own
verified answers (no cross-talk), the server's memory stays bounded, /ready tracks the upstream and shutdown,
and SIGTERM lets open streams end cleanly."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.llama_server import free_port, wait_ready

pytestmark = pytest.mark.slow

PROMPTS = [f"Name a {thing}." for thing in ("color", "fruit", "planet", "river", "bird", "tree", "metal", "sport",
                                             "flower", "country")]  # fmt: skip


async def _stream(client: httpx.AsyncClient, base: str, prompt: str) -> dict[str, Any]:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": True, "max_tokens": 10,
            "temperature": 0}  # fmt: skip
    text, finish, done, error = "", None, False, None
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    error = data["error"]["type"]
                    continue
                choice = data["choices"][0]
                text += choice["delta"].get("content") or ""
                finish = choice["finish_reason"] or finish
    except httpx.HTTPError as err:  # only expected when the server is shut down under the stream
        error = type(err).__name__
    return {"prompt": prompt, "text": text, "finish": finish, "done": done, "error": error}


async def _many(base: str, prompts: list[str]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=len(prompts) + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        return await asyncio.gather(*(_stream(client, base, p) for p in prompts))


def _final_pairs(audit: Path) -> set[tuple[str, str]]:
    """(prompt HMAC, answer HMAC) of every final answer in the audit."""
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    return {(r["prompt_hmac"], r["text_hmac"]) for r in records if r.get("type") == "final"}


def _hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def test_two_hundred_streaming_clients_then_a_graceful_shutdown(llama_server: str, tmp_path: Path) -> None:
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "guardrail", "serve", "--model", llama_server, "--model-name", "smollm2",
         "--served-name", "m", "--judge", "embedding", "--port", str(port), "--audit", str(audit), "--grace", "30"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/ready", process, timeout=120)
        server = psutil.Process(process.pid)
        asyncio.run(_many(base, PROMPTS))  # warm up: one stream per prompt
        rss_before = server.memory_info().rss

        asked = [f"{PROMPTS[i % len(PROMPTS)]} (request {i})" for i in range(200)]
        results = asyncio.run(_many(base, asked))
        assert len(results) == 200
        assert all(r["done"] and r["error"] is None and r["finish"] for r in results), [
            r for r in results if not r["done"] or r["error"]
        ][:3]
        assert sum(1 for r in results if r["text"].strip()) >= 190
        # no cross-talk, only verified text: what each client received is exactly the text the guard verified
        # and audited as the final answer to that client's own prompt (200 distinct prompts)
        key = (audit.parent / f"{audit.name}.key").read_bytes().strip()
        verified = _final_pairs(audit)
        for r in results:
            pair = (_hmac(key, r["prompt"]), _hmac(key, r["text"]))
            assert pair in verified, r
        growth = server.memory_info().rss - rss_before
        assert growth < 300 << 20, f"RSS grew by {growth >> 20} MiB over 200 streams"

        # graceful shutdown: streams open when SIGTERM arrives end cleanly (finished, or closed by the server)
        async def shutdown_under_load() -> list[dict[str, Any]]:
            pending = asyncio.ensure_future(_many(base, PROMPTS * 2))
            await asyncio.sleep(1.0)
            async with httpx.AsyncClient() as probe:
                ready = await probe.get(f"{base}/ready")
            assert ready.status_code == 200, ready.text
            process.send_signal(signal.SIGTERM)
            return await pending

        late = asyncio.run(shutdown_under_load())
        process.wait(60)
        assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
        finished = [r for r in late if r["done"] and r["error"] is None]
        assert finished, late[:3]  # the streams under way when the signal came were finished within the grace
        for r in late:
            assert r["done"] or r["error"] is not None  # never a stream that just stops silently as if complete
            if r["done"] and r["error"] is None:
                assert (_hmac(key, r["prompt"]), _hmac(key, r["text"])) in _final_pairs(audit)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
