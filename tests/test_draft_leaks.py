"""No rejected draft anywhere: every stream mode, event API, callback and tracer of both frameworks sees only
verified text and the guard's own events. A pattern rule rejects a known draft (its marker word), the inner
model streams, and each surface is searched for the marker. (The real llama.cpp versions are in
tests/test_frameworks_real.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from guardrail.adapters.langchain import GuardedChatModel, guard
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tracers.context import collect_runs

from guardrail.policy import parse_policy

MARKER = "Zorblax"
POLICY = parse_policy(
    # the pattern is written so that the policy's own text (serialized in run metadata) does not contain the marker
    "name: leak\nrules:\n  - {id: no-marker, judge: pattern, patterns: ['Zorbl[a]x'], criterion: names it}\n"
    "actions: [{action: rewind, max_attempts: 3}, {action: refuse, message: Nope.}]\n"
)
DRAFT = f"Paris is nice. The capital of France is {MARKER} city."
GOOD = "Paris is nice. The capital of France is Paris."


def inner() -> GenericFakeChatModel:
    """Streams the rejected draft first, then (for the regeneration) a clean continuation."""
    return GenericFakeChatModel(messages=iter([AIMessage(content=DRAFT), AIMessage(content="It is Paris.")] * 4))


class Everything(BaseCallbackHandler):
    """Records every callback with all its arguments."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def _keep(self, callback: str, *args: Any, **kwargs: Any) -> None:
        self.seen.append(f"{callback} {args!r} {kwargs!r}")

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *a, **k: self._keep(name, *a, **k)
        return super().__getattribute__(name)


def leaks(text: Any) -> bool:
    return MARKER in (text if isinstance(text, str) else json.dumps(text, default=str))


def test_callbacks_by_config_see_no_draft_sync_and_async() -> None:
    handler = Everything()
    model = GuardedChatModel(model=inner(), policy=POLICY)
    reply = model.invoke("Capital of France?", config={"callbacks": [handler]})
    streamed = "".join(str(c.content) for c in model.stream("Capital of France?", config={"callbacks": [handler]}))
    assert MARKER not in str(reply.content) and MARKER not in streamed
    assert reply.response_metadata["guardrail"]["rewinds"] >= 1  # the draft was really rejected
    assert len(handler.seen) > 4 and any("on_llm_new_token" in s for s in handler.seen)
    assert not [s for s in handler.seen if leaks(s)]


def test_callbacks_given_to_the_guarded_model_see_no_draft() -> None:
    handler = Everything()
    model = GuardedChatModel(model=inner(), policy=POLICY, callbacks=[handler])
    assert MARKER not in "".join(str(c.content) for c in model.stream("Capital?"))
    assert handler.seen and not [s for s in handler.seen if leaks(s)]


def test_tracers_collect_no_draft() -> None:
    model = GuardedChatModel(model=inner(), policy=POLICY)
    with collect_runs() as collector:
        model.invoke("Capital of France?")
        list(model.stream("Capital of France?"))
    runs = collector.traced_runs
    assert len(runs) == 2 and all(run.name == "GuardedChatModel" for run in runs)
    assert not [run for run in runs if leaks(run.model_dump())]
    assert not [child for run in runs for child in run.child_runs]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_astream_events_show_no_draft(version: str) -> None:
    for runnable in (GuardedChatModel(model=inner(), policy=POLICY), guard(inner(), policy=POLICY)):
        events = [e async for e in runnable.astream_events("Capital of France?", version=version)]  # type: ignore[arg-type]
        names = {e["name"] for e in events if e["event"] == "on_custom_event"}
        if version == "v2" and not isinstance(runnable, GuardedChatModel):  # (a streamed chat model has no run
            assert "guardrail_rewind" in names  # manager to send custom events with: docs/langchain.md)
        streamed = "".join(str(e["data"]["chunk"].content) for e in events if e["event"].endswith("_stream"))
        assert "Paris." in streamed, runnable
        assert not [e for e in events if leaks(e)], runnable
        assert {e["name"] for e in events if e["event"].startswith("on_chat_model")} <= {"GuardedChatModel"}


def _agent(model: Any) -> Any:
    from langchain.agents import create_agent

    return create_agent(model=model, tools=[])


def test_langgraph_messages_stream_shows_no_draft_sync() -> None:
    agent = _agent(GuardedChatModel(model=inner(), policy=POLICY))
    parts = list(agent.stream({"messages": [{"role": "user", "content": "Capital?"}]}, stream_mode="messages"))
    text = "".join(str(chunk.content) for chunk, _ in parts)
    assert "Paris" in text and MARKER not in text
    assert not [p for p in parts if leaks(p[0].model_dump())]


async def test_langgraph_messages_stream_shows_no_draft_async() -> None:
    agent = _agent(GuardedChatModel(model=inner(), policy=POLICY))
    parts = [p async for p in agent.astream({"messages": [{"role": "user", "content": "Hi"}]}, stream_mode="messages")]
    assert parts and not [p for p in parts if leaks(p[0].model_dump())]


# ------------------------------------------------------------------------------------------ LlamaIndex


@pytest.fixture
def li_handlers() -> Iterator[tuple[list[str], Any]]:
    from llama_index.core import Settings
    from llama_index.core.callbacks import CallbackManager, LlamaDebugHandler
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

    seen: list[str] = []

    class All(BaseEventHandler):
        @classmethod
        def class_name(cls) -> str:
            return "All"

        def handle(self, event: Any, **kwargs: Any) -> None:
            seen.append(repr(event.model_dump()))

    root = get_dispatcher()
    handler, spans = All(), SimpleSpanHandler()
    debug = LlamaDebugHandler()
    root.add_event_handler(handler)
    root.add_span_handler(spans)
    previous = Settings.callback_manager
    Settings.callback_manager = CallbackManager([debug])
    try:
        yield seen, debug
    finally:
        root.event_handlers.remove(handler)
        root.span_handlers.remove(spans)
        Settings.callback_manager = previous


def _li_inner() -> Any:
    """Streams the draft on its first call, a clean continuation after (tests/test_llama_index.py's fake)."""
    from tests.test_llama_index import Scripted

    return Scripted(replies=[DRAFT, "It is Paris."])


@pytest.mark.parametrize("mode", ["chat", "stream_chat", "achat", "astream_chat"])
async def test_llama_index_events_and_callbacks_show_no_draft(mode: str, li_handlers: Any) -> None:
    from guardrail.adapters.llama_index import GuardedLLM
    from llama_index.core.base.llms.types import ChatMessage

    seen, debug = li_handlers
    llm = GuardedLLM(llm=_li_inner(), policy=POLICY)
    messages = [ChatMessage(role="user", content="Capital of France?")]
    if mode == "chat":
        text = str(llm.chat(messages).message.content)
    elif mode == "stream_chat":
        text = "".join(r.delta or "" for r in llm.stream_chat(messages))
    elif mode == "achat":
        text = str((await llm.achat(messages)).message.content)
    else:
        text = "".join([r.delta or "" async for r in await llm.astream_chat(messages)])
    assert "Paris" in text and MARKER not in text
    assert any("GuardrailRewindEvent" in s for s in seen)  # our events are there, the draft was rejected
    assert not [s for s in seen if leaks(s)]
    assert not [e for e in debug.get_events() if leaks(repr(e.payload))]


# ------------------------------------------------------------------------------------------ sync equals async


class SlowStreaming(GenericFakeChatModel):
    """Streams with a pause per chunk, so a rejection lands while the worker thread is inside next()."""

    def _stream(self, *args: Any, **kwargs: Any) -> Any:
        import time

        for chunk in super()._stream(*args, **kwargs):
            time.sleep(0.003)
            yield chunk


def test_sync_calls_with_a_rejecting_judge_never_crash() -> None:
    for _ in range(8):
        slow = SlowStreaming(messages=iter([AIMessage(content=DRAFT + " More text here. And more.")] +
                                           [AIMessage(content="It is Paris.")] * 3))  # fmt: skip
        model = GuardedChatModel(model=slow, policy=POLICY)
        reply = model.invoke("Capital?")
        assert reply.response_metadata["guardrail"]["rewinds"] >= 1 and MARKER not in str(reply.content)
    models = [GuardedChatModel(model=SlowStreaming(messages=iter([AIMessage(content=DRAFT)] * 4)), policy=POLICY)
              for _ in range(4)]  # fmt: skip
    for model in models:
        assert MARKER not in "".join(str(c.content) for c in model.stream("Capital?"))
    batch = GuardedChatModel(model=SlowStreaming(messages=iter([AIMessage(content=DRAFT)] * 40)), policy=POLICY)
    replies = batch.batch(["a", "b", "c", "d"])
    assert len(replies) == 4 and not [r for r in replies if MARKER in str(r.content)]
