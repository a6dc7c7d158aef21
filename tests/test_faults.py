"""The fault matrix: each misbehaviour of an upstream server has a defined outcome (retry, then the policy's
rewind or fallback, or a typed BackendError): no hang past the timeout, no unverified text released."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from guardrail import parse_policy
from guardrail.backends.remote import OpenAIBackend
from guardrail.errors import BackendError
from guardrail.events import TextEvent
from guardrail.guard import Guard
from guardrail.openai_client import OpenAIClient, RetryPolicy
from tests.fault_server import REPLY, FaultServer, fault_server

POLICY = parse_policy(
    "name: faults\nrules:\n  - {id: never, judge: pattern, keywords: [FORBIDDEN], criterion: never fires}\n"
    "rewind: {max_rewinds: 3}\n"
)
FAST = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with fault_server() as running:
        yield running


def client(server: FaultServer, fault: str, **options: Any) -> tuple[OpenAIClient, str]:
    key = uuid.uuid4().hex[:8]
    options.setdefault("retry", FAST)
    return OpenAIClient(server.url(fault, key), model="m", **options), f"{fault}/{key}"


def guard(server: FaultServer, fault: str, **options: Any) -> tuple[Guard, str]:
    api, counter = client(server, fault, **options)
    return Guard(POLICY, OpenAIBackend(api.base_url, client=api)), counter


def released(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextEvent))


def test_ok_stream_and_plain(server: FaultServer) -> None:
    api, _ = client(server, "ok")
    assert api.chat([{"role": "user", "content": "hi"}])["choices"][0]["message"]["content"] == REPLY
    assert "".join(d.text for d in api.stream_chat([{"role": "user", "content": "hi"}])) == REPLY


def test_429_with_retry_after_is_retried(server: FaultServer) -> None:
    api, counter = client(server, "429:2")
    assert api.chat([{"role": "user", "content": "hi"}])["choices"][0]["message"]["content"] == REPLY
    assert server.counts[counter] == 3


def test_500s_are_retried_then_a_typed_error(server: FaultServer) -> None:
    api, counter = client(server, "500")
    with pytest.raises(BackendError, match="HTTP 500"):
        api.chat([{"role": "user", "content": "hi"}])
    assert server.counts[counter] == 3  # 1 + 2 retries
    api, counter = client(server, "500:1")
    assert api.chat([{"role": "user", "content": "hi"}]) and server.counts[counter] == 2


def test_connection_reset(server: FaultServer) -> None:
    api, counter = client(server, "reset")
    with pytest.raises(BackendError, match="cannot reach"):
        api.chat([{"role": "user", "content": "hi"}])
    assert server.counts[counter] == 3
    api, _ = client(server, "reset:1")
    assert api.chat([{"role": "user", "content": "hi"}])


def test_malformed_json_body(server: FaultServer) -> None:
    api, _ = client(server, "badjson")
    with pytest.raises(BackendError, match="malformed JSON"):
        api.chat([{"role": "user", "content": "hi"}])


def test_no_retry_once_streamed_bytes_were_used(server: FaultServer) -> None:
    api, counter = client(server, "cut")
    pieces: list[str] = []
    with pytest.raises(BackendError, match="broke off"):
        for delta in api.stream_chat([{"role": "user", "content": "hi"}]):
            pieces.append(delta.text)
    assert "".join(pieces) == "The sky is blue. Water " and server.counts[counter] == 1


def test_stream_cut_mid_sentence_releases_only_verified_text(server: FaultServer) -> None:
    g, counter = guard(server, "cut")
    events: list[Any] = []
    with pytest.raises(BackendError):
        for event in g.stream("hi"):
            events.append(event)
    assert released(events) == "The sky is blue. "  # never the cut-off "Water "
    assert server.counts[counter] == 4  # the first attempt, then max_rewinds regenerations


def test_stream_cut_once_is_repaired_by_regeneration(server: FaultServer) -> None:
    g, _ = guard(server, "cut:1")
    result = g.invoke("hi")
    assert result.text == REPLY and [r.reason for r in result.rewinds] == ["backend_error"]


def test_malformed_sse_is_a_typed_error_and_releases_nothing(server: FaultServer) -> None:
    g, _ = guard(server, "malformed")
    events: list[Any] = []
    with pytest.raises(BackendError, match="malformed stream chunk"):
        for event in g.stream("hi"):
            events.append(event)
    assert released(events) == ""


def test_stalled_server_times_out_instead_of_hanging(server: FaultServer) -> None:
    g, _ = guard(server, "stall", read_timeout=0.3)
    started = time.monotonic()
    events: list[Any] = []
    with pytest.raises(BackendError, match=r"timed out|broke off"):
        for event in g.stream("hi"):
            events.append(event)
    assert time.monotonic() - started < 10 and released(events) == ""


def test_429_then_stream_succeeds_through_the_guard(server: FaultServer) -> None:
    g, counter = guard(server, "429:1")
    assert released(list(g.stream("hi"))) == REPLY and server.counts[counter] == 2


def test_api_key_stays_out_of_errors_and_reprs(server: FaultServer) -> None:
    secret = "sk-test-" + uuid.uuid4().hex
    api, _ = client(server, "500", api_key=secret)
    with pytest.raises(BackendError) as info:
        api.chat([{"role": "user", "content": "hi"}])
    assert secret not in str(info.value) and secret not in repr(api)
    assert secret not in repr(OpenAIBackend(api.base_url, client=api))


async def test_async_faults(server: FaultServer) -> None:
    g, _ = guard(server, "cut:1")
    result = await g.ainvoke("hi")
    assert result.text == REPLY
    api, _ = client(server, "500")
    with pytest.raises(BackendError):
        await api.achat([{"role": "user", "content": "hi"}])
    await api.aclose()


async def test_hundred_concurrent_streams_against_the_fault_server(server: FaultServer) -> None:
    api, counter = client(server, "ok", max_connections=100)
    g = Guard(POLICY, OpenAIBackend(api.base_url, client=api))

    async def one() -> str:
        return "".join([piece async for piece in g.astream_text("hi")])

    answers = await asyncio.gather(*(one() for _ in range(100)))
    assert answers == [REPLY] * 100 and server.counts[counter] == 100
    await api.aclose()
