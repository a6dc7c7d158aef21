"""`guardrail serve` under hostile or unlucky clients and upstreams: every request validated and bounded, work
cancelled when its client leaves, upstream details kept from clients, empty upstream answers treated as errors,
a deadline that ends a silent upstream, and other clients served while one attacks."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail import parse_policy
from guardrail.backends.remote import OpenAIBackend
from guardrail.guard import Guard
from guardrail.server import ServerLimits, create_app
from tests.fault_server import FaultServer, fault_server
from tests.servers import serving

POLICY = parse_policy(
    "name: serve-security\nrules:\n"
    "  - {id: no-green, judge: pattern, keywords: [green], criterion: says green}\n"
    "  - {id: all-a, judge: pattern, scope: [input], patterns: ['^(a+)+$'], criterion: only the letter a}\n"
    "actions: [{action: rewind, max_attempts: 1}, {action: refuse, message: Refused.}]\n"
)
HELLO = {"messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    with fault_server() as server:
        yield server


def served(upstream: FaultServer, fault: str, *, deadline_s: float | None = None, **backend: Any) -> Any:
    key = uuid.uuid4().hex[:8]
    guard = Guard(POLICY, OpenAIBackend(upstream.url(fault, key), model="m", **backend), deadline_s=deadline_s)
    return serving(create_app(guard, limits=ServerLimits(max_prompt_tokens=100_000))), f"{fault}/{key}"


def post(base: str, body: Any = None, *, raw: bytes | None = None, timeout: float = 30) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(
        f"{base}/chat/completions", content=content, headers={"content-type": "application/json"}, timeout=timeout
    )


# ----------------------------------------------------------------------------------------------- validation

BAD_BODIES: list[tuple[str, bytes]] = [
    ("max_tokens string", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "abc"}'),
    ("max_tokens list", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": [1]}'),
    ("max_tokens 1e400", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}'),
    ("max_tokens 0", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}'),
    ("max_tokens -5", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}'),
    ("max_tokens 10^12", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000000000000}'),
    ("stop number", b'{"messages": [{"role": "user", "content": "hi"}], "stop": 5}'),
    ("temperature word", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}'),
    ("temperature inf", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}'),
    ("stream_options string", b'{"messages": [{"role": "user", "content": "hi"}], "stream_options": "x"}'),
    ("stream string", b'{"messages": [{"role": "user", "content": "hi"}], "stream": "false"}'),
    ("lone surrogate", b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}]}'),
    ("no messages", b'{"messages": []}'),
    ("bad role", b'{"messages": [{"role": "wizard", "content": "hi"}]}'),
    ("not an object", b"[1, 2, 3]"),
    ("not JSON", b"{nope"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
]


def test_every_bad_field_is_a_400_in_openai_shape(upstream: FaultServer) -> None:
    context, _ = served(upstream, "echo")
    with context as base:
        for name, raw in BAD_BODIES:
            response = post(base, raw=raw)
            assert response.status_code == 400, (name, response.status_code, response.text[:200])
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and set(error) >= {"message", "type", "param", "code"}
        many = {"messages": [{"role": "user", "content": "hi"}] * 10_000}
        response = post(base, many)
        assert response.status_code == 400 and "at most 256" in response.json()["error"]["message"]
        assert post(base, HELLO).json()["choices"][0]["message"]["content"] == "Echo: hello. Done."


def test_bodies_past_the_limit_are_413_before_they_are_read(upstream: FaultServer) -> None:
    context, _ = served(upstream, "echo")
    with context as base:
        huge = b'{"messages": [{"role": "user", "content": "' + b"x" * (20 << 20) + b'"}]}'
        assert post(base, raw=huge).status_code == 413

        def chunks() -> Iterator[bytes]:  # no content-length: counted while read
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(40):
                yield b"y" * (1 << 19)
            yield b'"}]}'

        response = httpx.post(f"{base}/chat/completions", content=chunks(), timeout=30)
        assert response.status_code == 413 and response.json()["error"]["type"] == "request_too_large"


FIELDS = ["messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "stream", "stream_options",
          "seed", "n", "model", "tools", "user"]  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "x"]), "content": JSON})


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6)
    | st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=3)}, optional={f: JSON for f in FIELDS[1:]})
)
def test_fuzzed_requests_never_crash_the_server(fuzz_base: str, body: dict[str, Any]) -> None:
    response = post(fuzz_base, raw=json.dumps(body, allow_nan=True).encode())
    assert response.status_code in {200, 400}, (body, response.status_code, response.text[:300])
    assert "Traceback" not in response.text and "Internal Server Error" not in response.text


@pytest.fixture(scope="module")
def fuzz_base(upstream: FaultServer) -> Iterator[str]:
    context, _ = served(upstream, "echo")
    with context as base:
        yield base
        # after the fuzzing, a normal request is still answered correctly
        assert post(base, HELLO).json()["choices"][0]["message"]["content"] == "Echo: hello. Done."


# ----------------------------------------------------------------------------------------------- isolation


def test_other_clients_are_answered_while_one_attacks(upstream: FaultServer) -> None:
    context, _ = served(upstream, "echo")
    with context as base:
        start = time.perf_counter()
        assert post(base, HELLO).status_code == 200
        usual = time.perf_counter() - start
        attacks = [
            lambda: post(base, raw=b'{"messages": [{"role": "user", "content": "' + b"x" * (20 << 20) + b'"}]}'),
            lambda: post(base, {"messages": [{"role": "user", "content": "hi"}] * 10_000}),
            lambda: post(base, {"messages": [{"role": "user", "content": "a" * 50_000 + "!"}]}),  # ReDoS-shaped
        ]
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda a=a: statuses.append(a().status_code)) for a in attacks]
        for thread in threads:
            thread.start()
        time.sleep(0.05)
        start = time.perf_counter()
        reply = post(base, {"messages": [{"role": "user", "content": "there"}]}, timeout=60)
        during = time.perf_counter() - start
        for thread in threads:
            thread.join(60)
        assert reply.json()["choices"][0]["message"]["content"] == "Echo: there. Done."
        assert during < max(5.0, 20 * usual), f"a normal request took {during:.1f}s during the attack"
        assert sorted(statuses) == [200, 400, 413]


def test_a_non_streaming_client_that_leaves_stops_the_upstream_work(upstream: FaultServer) -> None:
    context, counter = served(upstream, "slow")
    with context as base:
        with pytest.raises(httpx.ReadTimeout):
            post(base, HELLO, timeout=0.4)  # the slow upstream needs ~1.1 s for its answer
        deadline = time.monotonic() + 5
        while upstream.aborted[counter] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        assert upstream.aborted[counter] == 1 and upstream.completed[counter] == 0


# ----------------------------------------------------------------------------------------------- upstreams


def test_upstream_error_details_stay_in_the_servers_log(upstream: FaultServer, caplog: Any) -> None:
    secret = "sk-upstreamSECRET0123456789abcdef"
    context, _ = served(upstream, "leak", api_key=secret)
    with context as base:
        for stream in (False, True):
            response = post(base, {**HELLO, "stream": stream})
            text = response.text
            for leaked in (secret, "10.0.0.7", "/srv/upstream", "secret_app.py", str(upstream.port)):
                assert leaked not in text, (stream, leaked, text)
            assert "upstream returned HTTP 500" in text
        assert response.status_code == 200 and '"upstream_error"' in text and "[DONE]" in text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "secret_app.py" in logged  # the operator sees the details ...
    assert secret not in logged  # ... but never the key


@pytest.mark.parametrize("fault", ["nonsse", "empty"])
def test_an_empty_upstream_answer_is_an_upstream_error(upstream: FaultServer, fault: str) -> None:
    context, _ = served(upstream, fault)
    with context as base:
        response = post(base, HELLO)
        assert response.status_code == 502 and response.json()["error"]["message"] == "upstream sent no answer"
        streamed = post(base, {**HELLO, "stream": True}).text
        assert "upstream sent no answer" in streamed and '"finish_reason": "stop"' not in streamed


def test_the_deadline_ends_a_silent_upstream_with_the_policys_fallback(upstream: FaultServer) -> None:
    context, _ = served(upstream, "stall", deadline_s=1.5)  # the upstream sends one word, then nothing for 60 s
    with context as base:
        start = time.perf_counter()
        reply = post(base, HELLO).json()
        assert time.perf_counter() - start < 15
        assert reply["choices"][0]["message"]["content"] == "Refused."
        assert reply["choices"][0]["finish_reason"] == "content_filter" and reply["guardrail"]["fallback"] == "refuse"
        start = time.perf_counter()
        streamed = post(base, {**HELLO, "stream": True}).text
        assert time.perf_counter() - start < 15
        assert "Refused." in streamed and streamed.rstrip().endswith("data: [DONE]")
        assert "The" not in streamed.split("Refused.")[0]  # the unverified word never went out
