"""`guardrail serve`: the official openai client and LangChain's ChatOpenAI as clients; a fault-injecting
server and llama.cpp as upstreams; auth, cross-talk under 50 concurrent streams, disconnects."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from guardrail import Policy, parse_policy
from guardrail.backends.remote import OpenAIBackend
from guardrail.evaluation import is_refusal
from guardrail.guard import Guard
from guardrail.server import create_app
from tests.fault_server import FaultServer, fault_server
from tests.llama_server import free_port, wait_ready
from tests.servers import serving

RULES = (
    "name: serve\nrules:\n  - {id: no-green, judge: pattern, keywords: [green], criterion: says green}\n"
    "actions: [{action: rewind, max_attempts: 1}, {action: refuse, message: Refused.}]\n"
)
POLICY = parse_policy(RULES + "rewind: {lookahead_tokens: 0}\n")  # sentence by sentence, as each passes
LOOKAHEAD = parse_policy(RULES)  # the default look-ahead


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    with fault_server() as server:
        yield server


def app_for(upstream: FaultServer, fault: str, policy: Policy = POLICY, **options: object) -> tuple[object, str]:
    key = uuid.uuid4().hex[:8]
    guard = Guard(policy, OpenAIBackend(upstream.url(fault, key), model="m"))
    return create_app(guard, model_name="guarded-m", **options), f"{fault}/{key}"  # type: ignore[arg-type]


def test_openai_client_plain_and_streaming(upstream: FaultServer) -> None:
    app, _ = app_for(upstream, "echo")
    with serving(app) as base:
        client = openai.OpenAI(base_url=base, api_key="unused")
        assert [m.id for m in client.models.list()] == ["guarded-m"]
        reply = client.chat.completions.create(model="guarded-m", messages=[{"role": "user", "content": "hello"}])
        assert reply.choices[0].message.content == "Echo: hello. Done."
        assert reply.choices[0].finish_reason == "stop"
        extension = (reply.model_extra or {})["guardrail"]
        assert extension["verdicts"] == 2 and extension["rewinds"] == 0
        stream = client.chat.completions.create(
            model="guarded-m", messages=[{"role": "user", "content": "there"}], stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Echo: there. Done."
        assert (chunks[-1].model_extra or {})["guardrail"]["strategy"] == "sentence"


def test_violation_is_refused_and_never_streamed(upstream: FaultServer) -> None:
    app, _ = app_for(upstream, "ok")  # REPLY contains "Grass is green."
    with serving(app) as base:
        client = openai.OpenAI(base_url=base, api_key="unused")
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "green" not in text and text.endswith("\n\nRefused.")  # a paragraph of its own, not glued on
        assert chunks[-1].choices[0].finish_reason == "content_filter"
        assert (chunks[-1].model_extra or {})["guardrail"]["rules"] == ["no-green"]
        assert (chunks[-1].model_extra or {})["guardrail"]["terminated"] is True  # released text was cut short


def test_default_lookahead_refuses_before_releasing_the_opening(upstream: FaultServer) -> None:
    # the default look-ahead judges "The sky is blue." with what follows it ("... Grass is green."): the answer is
    # refused before any of it is shown, so the stream is the refusal alone and nothing was cut short
    assert LOOKAHEAD.rewind.lookahead_tokens == 32
    app, _ = app_for(upstream, "ok", LOOKAHEAD)
    with serving(app) as base:
        client = openai.OpenAI(base_url=base, api_key="unused")
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Refused." and chunks[-1].choices[0].finish_reason == "content_filter"
        assert (chunks[-1].model_extra or {})["guardrail"]["terminated"] is False


def test_langchain_chat_openai_as_client(upstream: FaultServer) -> None:
    from langchain_openai import ChatOpenAI

    app, _ = app_for(upstream, "echo")
    with serving(app) as base:
        model = ChatOpenAI(base_url=base, api_key="unused", model="guarded-m")  # type: ignore[arg-type]
        assert model.invoke("lc").content == "Echo: lc. Done."
        assert "".join(str(c.content) for c in model.stream("lcs")) == "Echo: lcs. Done."


def test_api_keys(upstream: FaultServer) -> None:
    app, _ = app_for(upstream, "echo", api_keys=["k1", "k2"])
    with serving(app) as base:
        assert httpx.get(f"{base}/models").status_code == 401
        wrong = openai.OpenAI(base_url=base, api_key="nope")
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        right = openai.OpenAI(base_url=base, api_key="k2")
        assert right.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices


def test_bad_requests_get_typed_errors(upstream: FaultServer) -> None:
    app, _ = app_for(upstream, "500")
    with serving(app) as base:
        assert (
            httpx.post(f"{base}/chat/completions", content=b"{nope").json()["error"]["type"] == "invalid_request_error"
        )
        assert httpx.post(f"{base}/chat/completions", json={"messages": []}).status_code == 400
        failed = httpx.post(f"{base}/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert failed.status_code == 502 and failed.json()["error"]["type"] == "upstream_error"


async def test_fifty_concurrent_streaming_clients_without_cross_talk(upstream: FaultServer) -> None:
    app, counter = app_for(upstream, "echo")
    with serving(app) as base:
        client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0)

        async def one(n: int) -> str:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"client {n}"}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        answers = await asyncio.gather(*(one(n) for n in range(50)))
        assert answers == [f"Echo: client {n}. Done." for n in range(50)]
        assert upstream.counts[counter] == 50
        await client.close()


def test_disconnect_cancels_upstream_work(upstream: FaultServer) -> None:
    app, counter = app_for(upstream, "slow")
    with serving(app) as base:
        with httpx.stream(
            "POST", f"{base}/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "stream": True}
        ) as response:
            for line in response.iter_lines():
                if '"content": "The sky' in line:
                    break  # the first verified sentence arrived: hang up
        deadline = time.monotonic() + 5
        while not upstream.aborted[counter] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.aborted[counter] == 1 and upstream.completed[counter] == 0


def test_serve_command_binds_loopback_and_serves(upstream: FaultServer) -> None:
    port = free_port()
    key = uuid.uuid4().hex[:8]
    process = subprocess.Popen(
        [sys.executable, "-m", "guardrail", "serve", "--model", upstream.url("echo", key), "--model-name", "m",
         "--judge", "pattern", "--policy", "no_pii", "--port", str(port), "--api-key", "s3"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", process, timeout=60)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3")
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "mail a@b.io"}])
        assert reply.choices[0].message.content == "Echo: mail [email removed]. Done."
    finally:
        process.terminate()
        process.wait(10)
    banner = process.stderr.read().decode() if process.stderr else ""
    assert "http://127.0.0.1:" in banner and "s3" not in banner


@pytest.mark.slow
def test_llama_cpp_upstream_with_the_openai_client(llama_server: str) -> None:
    guard = Guard("harmless", OpenAIBackend(llama_server, model="smollm2"), judge=_embedding())
    with serving(create_app(guard, model_name="smollm2-guarded")) as base:
        client = openai.OpenAI(base_url=base, api_key="unused")
        reply = client.chat.completions.create(
            model="smollm2-guarded",
            messages=[{"role": "user", "content": "Name a color."}],
            max_tokens=24,
            temperature=0,  # greedy, so the check below is deterministic
        )
        answer = reply.choices[0].message.content or ""
        assert (reply.model_extra or {})["guardrail"]["verdicts"] >= 1
        assert answer.strip() and not is_refusal(answer) and reply.choices[0].finish_reason == "stop", answer
        stream = client.chat.completions.create(
            model="smollm2-guarded",
            messages=[{"role": "user", "content": "Name a fruit."}],
            max_tokens=24,
            stream=True,
            temperature=0,
        )
        chunks = [c for c in stream if c.choices]
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert streamed.strip() and not is_refusal(streamed) and chunks[-1].choices[0].finish_reason == "stop"


def _embedding() -> object:
    from guardrail.judges import EmbeddingJudge
    from guardrail.policy import load_policy

    return EmbeddingJudge(load_policy("harmless"))


def test_readiness_follows_the_upstream_and_health_does_not(upstream: FaultServer) -> None:
    app, _ = app_for(upstream, "ok")
    with serving(app) as base:
        root = base.removesuffix("/v1")
        ready = httpx.get(f"{root}/ready", timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
    dead = Guard(POLICY, OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", model="m"))  # nothing listens there
    with serving(create_app(dead)) as base:
        root = base.removesuffix("/v1")
        assert httpx.get(f"{root}/health", timeout=10).status_code == 200  # alive
        ready = httpx.get(f"{root}/ready", timeout=10)
        assert ready.status_code == 503 and "unreachable" in ready.json()["reason"]  # but not ready for traffic
        app = create_app(dead)
    app.state.draining.set()
    with serving(app) as base:
        ready = httpx.get(f"{base.removesuffix('/v1')}/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["reason"] == "shutting down"
