"""The LangChain adapter with real LangChain objects (fake inner models keep it fast; the standard suites and
the documentation examples drive the real llama.cpp server)."""

from __future__ import annotations

from typing import Any

import pytest
from guardrail.adapters.langchain import GuardedChatModel, guard
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableBinding, RunnableLambda
from pydantic import Field

from guardrail import GuardrailViolation
from guardrail.policy import parse_policy

RULES = (
    "name: g\nrules:\n  - {id: no-bad, judge: pattern, keywords: [BAD], criterion: says the forbidden word}\n"
    "actions: [{action: rewind, max_attempts: 2}, {action: refuse, message: Nope.}]\n"
)
# sentence by sentence: "Good one." passes and stays when "BAD two." is rewound (the adapter's step-back plumbing)
POLICY = parse_policy(RULES + "rewind: {lookahead_tokens: 0}\n")
LOOKAHEAD = parse_policy(RULES)  # the default look-ahead
RAISE = parse_policy(
    "name: r\nrules:\n  - {id: no-bad, judge: pattern, keywords: [BAD], criterion: says BAD}\n"
    "actions: [{action: raise}]\n"
)


def scripted(*replies: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(content=r) for r in replies]))


def test_invoke_rewinds_and_reports() -> None:
    reply = GuardedChatModel(model=scripted("Good one. BAD two. Three.", "Fine two. Three."), policy=POLICY).invoke(
        "hi"
    )
    assert reply.content == "Good one. Fine two. Three."
    summary = reply.response_metadata["guardrail"]
    assert summary["rewinds"] == 1 and summary["rules"] == ["no-bad"]


def test_stream_releases_only_verified_text() -> None:
    model = GuardedChatModel(model=scripted("Good one. BAD two. Three.", "Fine two. Three."), policy=POLICY)
    chunks = list(model.stream("hi"))
    assert "BAD" not in "".join(str(c.content) for c in chunks)
    assert [c.content for c in chunks if c.content] == ["Good one. ", "Fine two. ", "Three."]
    assert chunks[-1].response_metadata["guardrail"]["rewinds"] == 1


def test_default_lookahead_never_streams_the_opening_of_a_violating_answer() -> None:
    # "Good one." passes alone; judged with what follows it ("BAD two.") it does not: with the default
    # look-ahead it is regenerated before any of it is streamed, so nothing shown is ever taken back
    model = GuardedChatModel(model=scripted("Good one. BAD two. Three.", "Fine two. Three."), policy=LOOKAHEAD)
    chunks = list(model.stream("hi"))
    assert [c.content for c in chunks if c.content] == ["Fine two. ", "Three."]
    summary = chunks[-1].response_metadata["guardrail"]
    assert summary["rewinds"] == 1 and summary["violations"] == 1 and summary["terminated"] is False


async def test_async_and_batch() -> None:
    model = GuardedChatModel(model=scripted(*["Fine. All good."] * 6), policy=POLICY)
    assert (await model.ainvoke("a")).content == "Fine. All good."
    assert [r.content for r in model.batch(["a", "b"])] == ["Fine. All good."] * 2
    assert [r.content for r in await model.abatch(["a", "b"])] == ["Fine. All good."] * 2
    assert "".join([str(c.content) async for c in model.astream("a")]) == "Fine. All good."


def test_lcel_chain_with_config_and_retry() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    guarded = GuardedChatModel(model=scripted("Fine answer."), policy=POLICY)
    chain = prompt | guarded.with_config(tags=["x"]).with_retry(stop_after_attempt=2) | StrOutputParser()
    assert chain.invoke({"q": "hi"}) == "Fine answer."


def test_raise_is_a_typed_exception_and_fallbacks_catch_it() -> None:
    with pytest.raises(GuardrailViolation) as info:
        GuardedChatModel(model=scripted("It is BAD."), policy=RAISE).invoke("hi")
    assert info.value.rules == ("no-bad",)
    fallback = GuardedChatModel(model=scripted("It is BAD."), policy=RAISE).with_fallbacks(
        [RunnableLambda(lambda _: AIMessage(content="fallback"))]
    )
    assert fallback.invoke("hi").content == "fallback"


async def test_guarded_runnable_hides_drafts_and_emits_custom_events() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = prompt | guard(scripted("Good one. BAD two.", "Fine two."), policy=POLICY) | StrOutputParser()
    events = [e async for e in chain.astream_events({"q": "hi"}, version="v2")]
    assert any(e["event"] == "on_chain_start" and e["name"] == "GuardedRunnable" for e in events)
    assert not [e for e in events if e["event"].startswith("on_chat_model")]  # the drafts run out of sight
    assert "BAD" not in str(events)
    custom = [e for e in events if e["event"] == "on_custom_event"]
    names = [e["name"] for e in custom]
    assert "guardrail_rewind" in names and "guardrail_verdict" in names
    rewind = next(e for e in custom if e["name"] == "guardrail_rewind")
    assert rewind["data"]["rules"] == ["no-bad"] and "BAD" not in str(rewind["data"])
    assert events[-1]["data"]["output"] == "Good one. Fine two."


def test_chat_model_invoke_hides_inner_runs_and_sends_custom_events() -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            self.starts: list[tuple[str, Any, Any, list[str]]] = []
            self.custom: list[str] = []

        def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, parent_run_id: Any = None,
                                tags: Any = None, **kwargs: Any) -> None:  # fmt: skip
            self.starts.append((serialized.get("name", ""), run_id, parent_run_id, list(tags or [])))

        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            self.custom.append(name)

    recorder = Recorder()
    model = GuardedChatModel(model=scripted("Good one. BAD two.", "Fine two."), policy=POLICY)
    assert model.invoke("hi", config={"callbacks": [recorder]}).content == "Good one. Fine two."
    assert [start[0] for start in recorder.starts] == ["GuardedChatModel"]  # no draft run reaches callbacks
    assert "guardrail_rewind" in recorder.custom and "guardrail_verdict" in recorder.custom


class ToolModel(BaseChatModel):
    """A chat model that answers with scripted messages (tool calls included) and accepts tools."""

    replies: list[AIMessage]
    seen_tools: list[Any] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "tool-model"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        self.seen_tools.append(tools)
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.replies.pop(0))])


def test_bind_tools_returns_a_binding_and_tool_calls_pass_through() -> None:
    call = {"name": "lookup", "args": {"q": "x"}, "id": "call_1", "type": "tool_call"}
    inner = ToolModel(replies=[AIMessage(content="", tool_calls=[call])])
    guarded = GuardedChatModel(model=inner, policy=POLICY)

    def lookup(q: str) -> str:
        """Look something up."""
        return q

    bound = guarded.bind_tools([lookup])
    assert isinstance(bound, RunnableBinding)
    reply = bound.invoke("look up x")
    assert reply.tool_calls == [call] and inner.seen_tools[0][0]["function"]["name"] == "lookup"


def test_agent_runs_with_the_guarded_model() -> None:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def hours(day: str) -> str:
        """Opening hours on a day."""
        return "9-17"

    call = {"name": "hours", "args": {"day": "Monday"}, "id": "call_9", "type": "tool_call"}
    inner = ToolModel(replies=[AIMessage(content="", tool_calls=[call]), AIMessage(content="We open 9-17. BAD."),
                               AIMessage(content="We open 9-17.")])  # fmt: skip
    agent = create_agent(model=GuardedChatModel(model=inner, policy=POLICY), tools=[hours])
    state = agent.invoke({"messages": [{"role": "user", "content": "Monday hours?"}]})
    assert [m.type for m in state["messages"]] == ["human", "ai", "tool", "ai"]
    assert state["messages"][-1].content.strip() == "We open 9-17."  # the repeated sentence was not added twice


@pytest.mark.slow
def test_chat_huggingface_gets_token_level_rewind() -> None:
    from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline
    from transformers import pipeline

    from guardrail.embedded import load_embedded_model

    model, tokenizer = load_embedded_model(progress=False)
    chat = ChatHuggingFace(
        llm=HuggingFacePipeline(pipeline=pipeline("text-generation", model=model, tokenizer=tokenizer))
    )
    guarded = GuardedChatModel(model=chat, policy=POLICY, max_tokens=16)
    assert guarded.guard.strategy.name == "token"
    reply = guarded.invoke("Say hello.")
    assert reply.content and reply.response_metadata["guardrail"]["strategy"] == "token"


def test_without_langchain_huggingface_nothing_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "langchain_huggingface", None)  # as if the package were absent
    model = GuardedChatModel(model=scripted("Fine."), policy=POLICY)
    assert model.guard.strategy.name == "sentence" and model.invoke("hi").content == "Fine."


def test_policy_and_judge_errors_surface_at_construction() -> None:
    from guardrail import JudgeError, PolicyError

    with pytest.raises(PolicyError, match="no built-in policy"):
        GuardedChatModel(model=scripted("x"), policy="no-such-policy")
    with pytest.raises(PolicyError, match="no built-in policy"):
        guard(scripted("x"), policy="no-such-policy")
    with pytest.raises(JudgeError, match="unknown judge 'embeding'"):
        GuardedChatModel(model=scripted("x"), judge="embeding")


def test_a_fake_chat_model_is_not_asked_to_judge() -> None:
    # one scripted reply, the default policy: the guard must not spend it on self-evaluation or its probe
    model = GuardedChatModel(model=scripted("The shop opens at nine. Bread is baked daily."))
    assert model.guard.judge.parts[0].name == "embedding"  # type: ignore[attr-defined]
    reply = model.invoke("When does the shop open?")
    assert reply.content == "The shop opens at nine. Bread is baked daily."
    assert reply.response_metadata["guardrail"]["verdicts"] >= 2


async def test_chat_model_guardrail_events_reach_astream_events_in_every_call_style() -> None:
    # LangChain calls _astream without the run's manager: the custom events still belong to our run
    def model() -> GuardedChatModel:
        return GuardedChatModel(model=scripted("Good one. BAD two.", "Fine two."), policy=POLICY)

    direct = model()
    events = [e async for e in direct.astream_events("hi", version="v2")]
    start = next(e for e in events if e["event"] == "on_chat_model_start")
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom].count("guardrail_rewind") == 1
    assert {e["run_id"] for e in custom} == {start["run_id"]}  # dispatched on the guarded model's own run
    assert "BAD" not in str(events)

    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model() | StrOutputParser()
    events = [e async for e in chain.astream_events({"q": "hi"}, version="v2")]
    names = [e["name"] for e in events if e["event"] == "on_custom_event"]
    assert "guardrail_rewind" in names and "guardrail_verdict" in names and "BAD" not in str(events)

    invoked = RunnableLambda(lambda q: model().invoke(q))  # an invoke that LangChain streams for the listener
    events = [e async for e in invoked.astream_events("hi", version="v2")]
    names = [e["name"] for e in events if e["event"] == "on_custom_event"]
    assert "guardrail_rewind" in names and events[-1]["data"]["output"].content == "Good one. Fine two."

    collected: list[str] = []

    from langchain_core.callbacks import BaseCallbackHandler

    class Recorder(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            collected.append(name)

    chunks = list(model().stream("hi", config={"callbacks": [Recorder()]}))
    assert "".join(str(c.content) for c in chunks) == "Good one. Fine two."
    assert "guardrail_rewind" in collected


class Rambler(BaseChatModel):
    """Streams without end (an upstream that ignores max_tokens); records how many pieces each call yielded."""

    counts: list[int] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "rambler"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        raise AssertionError("a guarded call must stream, so that the guard can stop it")

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        call = len(self.counts)  # calls may run concurrently (both option orders): each counts its own pieces
        self.counts.append(0)
        while True:
            self.counts[call] += 1
            yield ChatGenerationChunk(message=AIMessageChunk(content="(A) and more words "))


@pytest.mark.parametrize("call", ["invoke", "ainvoke"])
async def test_judge_calls_and_answers_are_bounded_whatever_the_model_does(call: str) -> None:
    rambler = Rambler()
    policy = parse_policy("name: s\nrules:\n  - {id: r, judge: self, criterion: is rude}\n")
    model = GuardedChatModel(model=rambler, policy=policy, judge="self", max_tokens=6)
    reply = model.invoke("hi") if call == "invoke" else await model.ainvoke("hi")
    assert reply.response_metadata["guardrail"]["verdicts"] >= 1
    assert len(rambler.counts) >= 3  # the answer, then both option orders of at least one judge question
    assert rambler.counts[0] <= 7  # the answer stopped at max_tokens
    assert max(rambler.counts[1:]) <= 16  # each judge call read a few pieces, then its stream was closed


class SamplingModel(BaseChatModel):
    """Declares temperature and seed (as ChatOpenAI does) and records the per-call kwargs of each call."""

    temperature: float | None = 0.0
    seed: int | None = None
    replies: list[str] = Field(default_factory=list)
    seen: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "sampling"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        self.seen.append(dict(kw))
        text = self.replies[min(len(self.seen) - 1, len(self.replies) - 1)]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def test_a_regeneration_samples_anew_on_a_model_that_takes_temperature_and_seed() -> None:
    # at temperature 0 a regeneration that did not change temperature or seed would repeat the rejected draft
    inner = SamplingModel(replies=["Good one. BAD two.", "Fine two."])
    reply = GuardedChatModel(model=inner, policy=POLICY).invoke("hi")
    assert reply.content == "Good one. Fine two."
    assert "temperature" not in inner.seen[0] and "seed" not in inner.seen[0]  # the first draft: the model's own
    assert inner.seen[1]["temperature"] == POLICY.rewind.temperature > 0 and inner.seen[1]["seed"] == 1
    plain = GuardedChatModel(model=scripted("Good one. BAD two.", "Fine two."), policy=POLICY)
    assert plain.invoke("hi").content == "Good one. Fine two."  # a model without those fields gets none


async def test_a_stream_cut_short_says_so_in_events_and_the_final_chunk() -> None:
    lag0 = POLICY.model_copy(update={"rewind": POLICY.rewind.model_copy(update={"release_lag": 0})})
    model = GuardedChatModel(model=scripted("Good one. BAD two.", "BAD again.", "BAD still."), policy=lag0)
    events = [e async for e in model.astream_events("hi", version="v2")]
    chunks = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    text = "".join(str(c.content) for c in chunks)
    assert text == "Good one. \n\nNope." and "BAD" not in str(events)
    terminated = [e for e in events if e["event"] == "on_custom_event" and e["name"] == "guardrail_terminated"]
    assert len(terminated) == 1 and terminated[0]["data"]["released_chars"] == len("Good one. ")
    assert chunks[-1].response_metadata["guardrail"]["terminated"] is True
