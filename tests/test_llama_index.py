"""The LlamaIndex adapter with real LlamaIndex objects: Settings.llm, a VectorStoreIndex query engine and a chat
engine (streaming and async), instrumentation events; the embedded model underneath a HuggingFaceLLM-shaped
object, and an OpenAI-compatible inner LLM against the llama.cpp server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from guardrail.adapters.llama_index import GuardedFunctionCallingLLM, GuardedLLM, GuardrailRewindEvent, guard_llm
from llama_index.core import Document, MockEmbedding, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import CustomLLM, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field

from guardrail.evaluation import is_refusal
from guardrail.policy import parse_policy

RULES = (
    "name: li\nrules:\n  - {id: no-bad, judge: pattern, keywords: [BAD], criterion: says the forbidden word}\n"
    "actions: [{action: rewind, max_attempts: 3}, {action: refuse, message: Nope.}]\n"
)
# sentence by sentence: "Good one." passes and stays when "BAD two." is rewound (the adapter's step-back plumbing)
POLICY = parse_policy(RULES + "rewind: {lookahead_tokens: 0}\n")
LOOKAHEAD = parse_policy(RULES)  # the default look-ahead


class Scripted(CustomLLM):
    """Answers call N with replies[N] (the last repeats), streamed word by word."""

    replies: list[str]
    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=False, model_name="scripted")

    def _next(self) -> str:
        text = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return text

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._next())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._next()

        def gen() -> Iterator[CompletionResponse]:
            sofar = ""
            for word in text.split(" "):
                piece = word if not sofar else " " + word
                sofar += piece
                yield CompletionResponse(text=sofar, delta=piece)

        return gen()


class Recorder(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    handler = Recorder(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


@pytest.fixture
def index() -> VectorStoreIndex:
    docs = [Document(text="The shop opens at nine."), Document(text="Returns are accepted within 30 days.")]
    return VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))


def guarded(*replies: str) -> GuardedLLM:
    return GuardedLLM(llm=Scripted(replies=list(replies)), policy=POLICY)


def test_chat_complete_and_streams_release_only_verified_text() -> None:
    llm = guarded("Good one. BAD two. Three.", "Fine two. Three.")
    assert llm.complete("hi").text == "Good one. Fine two. Three."
    llm = guarded("Good one. BAD two. Three.", "Fine two. Three.")
    deltas = [r.delta for r in llm.stream_chat([ChatMessage(role="user", content="hi")])]
    assert "BAD" not in "".join(deltas) and "".join(deltas) == "Good one. Fine two. Three."
    assert llm.metadata.model_name == "scripted"


def test_default_lookahead_never_streams_the_opening_of_a_violating_answer() -> None:
    # "Good one." passes alone, not with what follows it: the default look-ahead regenerates it unseen
    llm = GuardedLLM(llm=Scripted(replies=["Good one. BAD two. Three.", "Fine two. Three."]), policy=LOOKAHEAD)
    responses = list(llm.stream_chat([ChatMessage(role="user", content="hi")]))
    assert [r.delta for r in responses if r.delta] == ["Fine two. ", "Three."]
    summary = responses[-1].additional_kwargs["guardrail"]
    assert summary["rewinds"] == 1 and summary["terminated"] is False


async def test_async_methods() -> None:
    llm = guarded("Fine. Done.")
    assert (await llm.achat([ChatMessage(role="user", content="x")])).message.content == "Fine. Done."
    assert (await llm.acomplete("x")).text == "Fine. Done."
    stream = await llm.astream_complete("x")
    assert "".join([r.delta async for r in stream]) == "Fine. Done."
    chat_stream = await llm.astream_chat([ChatMessage(role="user", content="x")])
    responses = [r async for r in chat_stream]
    assert responses[-1].additional_kwargs["guardrail"]["verdicts"] == 2


def test_query_engine_with_settings_llm_and_rewind_events(index: VectorStoreIndex, recorder: Recorder) -> None:
    Settings.llm = guarded("Opens at nine. BAD bit.", "Really at nine.")
    try:
        engine = index.as_query_engine()
        answer = str(engine.query("When does the shop open?"))
        assert answer == "Opens at nine. Really at nine." and "BAD" not in answer
        rewinds = [e for e in recorder.events if isinstance(e, GuardrailRewindEvent)]
        assert rewinds and rewinds[0].data["rules"] == ["no-bad"] and rewinds[0].span_id
        Settings.llm = guarded("Streamed at nine. BAD.", "Fine.")
        streaming = index.as_query_engine(streaming=True).query("When?")
        text = "".join(streaming.response_gen)  # type: ignore[attr-defined]
        assert text == "Streamed at nine. Fine."
        rewind = [e for e in recorder.events if isinstance(e, GuardrailRewindEvent)][-1]
        assert rewind.span_id  # fired while the stream was consumed, still under the call's span
    finally:
        Settings.llm = MockLLM()


async def test_aquery_and_chat_engine(index: VectorStoreIndex) -> None:
    Settings.llm = guarded("Async answer. Done.")
    try:
        assert str(await index.as_query_engine().aquery("x")) == "Async answer. Done."
        chat = index.as_chat_engine(chat_mode="simple")
        streamed = chat.stream_chat("Hello?")
        assert "".join(streamed.response_gen) == "Async answer. Done."
        astreamed = await chat.astream_chat("Again?")
        assert "".join([t async for t in astreamed.async_response_gen()]) == "Async answer. Done."
    finally:
        Settings.llm = MockLLM()


def test_function_calling_inner_gets_the_function_calling_variant() -> None:
    from llama_index.core.llms import MockFunctionCallingLLM

    llm = guard_llm(MockFunctionCallingLLM(), policy=POLICY)
    assert isinstance(llm, GuardedFunctionCallingLLM) and llm.metadata.is_function_calling_model
    assert isinstance(guard_llm(MockLLM(), policy=POLICY), GuardedLLM)


@pytest.mark.slow
def test_embedded_model_under_a_huggingface_llm_gets_token_level() -> None:
    from guardrail.embedded import load_embedded_model

    model, tokenizer = load_embedded_model(progress=False)

    class HFShaped(MockLLM):  # what llama-index-llms-huggingface's HuggingFaceLLM holds underneath
        _model: Any = None
        _tokenizer: Any = None

    inner = HFShaped()
    inner._model, inner._tokenizer = model, tokenizer
    llm = GuardedLLM(llm=inner, policy=POLICY, max_tokens=16)
    assert llm.guard.strategy.name == "token"
    response = llm.complete("Say hello.")
    assert response.text.strip()


@pytest.mark.slow
def test_openai_like_inner_llm_against_llama_cpp(llama_server: str, index: VectorStoreIndex) -> None:
    from llama_index.llms.openai_like import OpenAILike

    inner = OpenAILike(api_base=llama_server, api_key="unused", model="smollm2", is_chat_model=True, max_tokens=40)
    Settings.llm = GuardedLLM(llm=inner, policy="no_pii")
    try:
        response = index.as_query_engine().query("When does the shop open?")
        answer = str(response)
        assert answer.strip() and not is_refusal(answer), answer  # a blanket refusal fails here
        stream = index.as_query_engine(streaming=True).query("What about returns?")
        streamed = "".join(stream.response_gen)  # type: ignore[attr-defined]
        assert streamed.strip() and not is_refusal(streamed), streamed
    finally:
        Settings.llm = MockLLM()


@pytest.mark.slow
def test_streams_left_early_release_their_connection(llama_server: str) -> None:
    # LlamaIndex's OpenAI LLMs leave the SDK stream open when left early; only the garbage collector closed it,
    # and a collection inside the pool's lock deadlocked the next request (CI hung here). With the collector
    # off, nothing may be left open: not by the judge's calibration (a few pieces of each verdict are read),
    # not by a guarded stream that stops at its own max_tokens long before the upstream's.
    import gc

    from llama_index.llms.openai_like import OpenAILike

    inner = OpenAILike(api_base=llama_server, api_key="unused", model="smollm2", is_chat_model=True, max_tokens=200)
    pool = inner._get_client()._client._transport._pool
    gc.disable()
    try:
        llm = GuardedLLM(llm=inner, policy="no_pii", judge="self", max_tokens=8)
        assert not pool._requests
        text = "".join(r.delta or "" for r in llm.stream_complete("Tell me a long story about a cat."))
        assert text.strip()
        assert not pool._requests
    finally:
        gc.enable()


def test_policy_and_judge_errors_surface_at_construction() -> None:
    from guardrail import JudgeError, PolicyError

    with pytest.raises(PolicyError, match="no built-in policy"):
        GuardedLLM(llm=MockLLM(), policy="no-such-policy")
    with pytest.raises(JudgeError, match="unknown judge 'embeding'"):
        GuardedLLM(llm=Scripted(replies=["x"]), judge="embeding")


def test_a_mock_llm_is_not_asked_to_judge() -> None:
    llm = GuardedLLM(llm=MockLLM(max_tokens=8))
    assert llm.guard.judge.parts[0].name == "embedding"  # type: ignore[attr-defined]
    assert llm.guard.backend.can_self_judge is False  # type: ignore[attr-defined]


class Rambler(CustomLLM):
    """Streams without end (an upstream that ignores max_tokens); records how many pieces each call yielded."""

    counts: list[int] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=False, model_name="rambler")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise AssertionError("a guarded call must stream, so that the guard can stop it")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        call = len(self.counts)
        self.counts.append(0)

        def gen() -> Iterator[CompletionResponse]:
            while True:
                self.counts[call] += 1
                yield CompletionResponse(text="", delta="(A) and more words ")

        return gen()


@pytest.mark.parametrize("call", ["chat", "achat"])
async def test_judge_calls_and_answers_are_bounded_whatever_the_llm_does(call: str) -> None:
    rambler = Rambler()
    policy = parse_policy("name: s\nrules:\n  - {id: r, judge: self, criterion: is rude}\n")
    llm = GuardedLLM(llm=rambler, policy=policy, judge="self", max_tokens=6)
    messages = [ChatMessage(role="user", content="hi")]
    reply = llm.chat(messages) if call == "chat" else await llm.achat(messages)
    assert reply.additional_kwargs["guardrail"]["verdicts"] >= 1
    assert len(rambler.counts) >= 3  # the answer, then both option orders of at least one judge question
    assert rambler.counts[0] <= 7  # the answer stopped at max_tokens (one piece read ahead at most)
    assert max(rambler.counts[1:]) <= 16  # each judge call read a few pieces, then its stream was closed


def test_a_regeneration_samples_anew_on_an_openai_like_llm() -> None:
    from llama_index.llms.openai_like import OpenAILike

    from tests.fault_server import fault_server

    policy = parse_policy(
        "name: w\nrules:\n  - {id: wet, judge: pattern, keywords: [Water], criterion: mentions water}\n"
        "actions: [{action: rewind, max_attempts: 1}, {action: refuse, message: Nope.}]\n"
    )
    with fault_server() as server:
        inner = OpenAILike(api_base=server.url("ok", "sampling"), api_key="x", model="m", is_chat_model=True)
        reply = GuardedLLM(llm=inner, policy=policy).chat([ChatMessage(role="user", content="hi")])
        bodies = [r["body"] for r in server.requests if r["body"].get("stream")]
    assert "Water" not in str(reply.message.content)
    assert len(bodies) >= 2 and "seed" not in bodies[0]  # the first draft: the LLM's own settings
    assert bodies[1]["seed"] == 1 and bodies[1]["temperature"] == policy.rewind.temperature


def test_a_stream_cut_short_fires_a_terminated_event(recorder: Recorder) -> None:
    lag0 = POLICY.model_copy(update={"rewind": POLICY.rewind.model_copy(update={"release_lag": 0})})
    llm = GuardedLLM(llm=Scripted(replies=["Good one. BAD two.", "BAD again.", "BAD still.", "BAD."]), policy=lag0)
    text = "".join(r.delta or "" for r in llm.stream_chat([ChatMessage(role="user", content="hi")]))
    assert text.startswith("Good one. ") and text.endswith("\n\nNope.") and "BAD" not in text
    names = [type(e).__name__ for e in recorder.events]
    assert names.count("GuardrailTerminatedEvent") == 1
