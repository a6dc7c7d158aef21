"""LangChain adapter: a guarded chat model and a guarded Runnable.

    from guardrail.adapters.langchain import GuardedChatModel, guard

    guarded = GuardedChatModel(model=ChatOpenAI(...), policy="policies/app.yaml")   # a drop-in chat model
    chain = prompt | guard(ChatOpenAI(...), policy="harmless") | StrOutputParser()   # a Runnable with its own run

Both stream only verified text, put the guard's summary in the last chunk's ``response_metadata["guardrail"]``,
and raise ``GuardrailViolation`` (catchable, works with ``with_fallbacks``) when a policy ends in ``raise``.
Inner models that are local transformers models (``ChatHuggingFace`` over a ``HuggingFacePipeline``) are
reached underneath and get token-level rewind; nothing here needs langchain-huggingface to be installed.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from guardrail.adapters.langchain_structured import structured_output
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
    adispatch_custom_event,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_messages
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable, ensure_config
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from guardrail import _sync
from guardrail.backends.base import Chunk, GenerationParams, Message, StreamingBackend
from guardrail.events import Event, FinalEvent, GuardResult, TextEvent
from guardrail.guard import Guard
from guardrail.judges.factory import JUDGE_KINDS
from guardrail.judges.scorers import TextScorer, afirst_pieces, first_pieces
from guardrail.judges.self_eval import OptionScorer
from guardrail.policy import Policy
from guardrail.presets import AUTO

__all__ = ["GuardedChatModel", "GuardedRunnable", "LangChainBackend", "guard", "to_langchain", "to_messages"]

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
#: call options handed to the inner model (tools, structured output) or to the guard (``structured_output``)
_PASSED = {"tools", "tool_choice", "parallel_tool_calls", "response_format", "structured_output"}
_ORIGINAL = "_langchain_message"


def _draft_context() -> contextvars.Context:
    """An empty context for the inner model's calls (drafts and judge questions): no parent run config, so no
    callback handler, tracer, LangGraph stream handler or ``astream_events`` listener of the caller sees them,
    and LangSmith tracing switched off. Only verified text leaves the adapter, through the guarded run."""
    from langsmith.run_helpers import tracing_context

    context = contextvars.Context()
    context.run(tracing_context(enabled=False, parent=False).__enter__)
    return context


def to_messages(value: Any) -> list[Message]:
    """LangChain input (a string, messages, a PromptValue, tuples) as plain chat messages."""
    if isinstance(value, PromptValue):
        value = value.to_messages()
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    out: list[Message] = []
    for message in convert_to_messages(value):
        content = message.content if isinstance(message.content, str) else message.text
        # the original message rides along, so the inner model gets tool calls and ids back intact
        out.append({"role": _ROLES.get(message.type, "user"), "content": content, _ORIGINAL: message})
    return out


def to_langchain(messages: Sequence[Message]) -> list[BaseMessage]:
    """Plain chat messages as LangChain messages."""
    return [
        m[_ORIGINAL]
        if isinstance(m.get(_ORIGINAL), BaseMessage)
        else convert_to_messages([(str(m.get("role", "user")), str(m.get("content") or ""))])[0]
        for m in messages
    ]


def _text(chunk: Any) -> str:
    content = getattr(chunk, "content", chunk)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p if isinstance(p, str) else str(p.get("text", "")) for p in content if isinstance(p, (str, dict))
        )
    return str(content or "")


def _local_model(model: Any) -> tuple[Any, Any] | None:
    """(model, tokenizer) under a ChatHuggingFace / HuggingFacePipeline, found by shape, not by import."""
    pipeline = getattr(getattr(model, "llm", model), "pipeline", None)
    inner, tokenizer = getattr(pipeline, "model", None), getattr(pipeline, "tokenizer", None)
    if inner is not None and tokenizer is not None and hasattr(inner, "generate"):
        return inner, tokenizer
    return None


class LangChainBackend(StreamingBackend):
    """A LangChain chat model (or any Runnable taking messages) as the Guard's streaming backend."""

    name = "langchain"

    def __init__(self, model: Runnable[Any, Any]) -> None:
        self.model = model
        # LangChain's fake chat models replay scripted replies: they cannot judge, and asking them would
        # consume the replies a test scripted for its own calls (the trained judge takes their rules)
        inner = _innermost(model)
        self.can_self_judge = not type(inner).__module__.startswith("langchain_core.language_models.fake")

    def __repr__(self) -> str:
        return f"LangChainBackend({type(self.model).__name__})"

    def _bound(self, params: GenerationParams) -> Runnable[Any, Any]:
        model, tools = self.model, params.extra.get("tools")
        if tools:
            options = {k: v for k, v in params.extra.items() if k in {"tool_choice", "parallel_tool_calls"}}
            model = model.bind_tools(tools, **options)  # type: ignore[attr-defined]
        if params.extra.get("response_format") is not None:
            model = model.bind(response_format=params.extra["response_format"])
        # a regeneration samples anew (rewind temperature, a new seed) where the model takes them per call
        sampling = params.sampling(_fields(self.model))
        return model.bind(**sampling) if sampling else model

    async def astream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[Chunk]:
        kwargs: dict[str, Any] = {"stop": list(params.stop)} if params.stop else {}
        model, inputs, context = self._bound(params), to_langchain(messages), _draft_context()
        if _sync.called_from_sync():  # the caller is sync: the model's async clients may belong to another loop
            pieces: AsyncIterator[Any] = _sync.thread_iterate(lambda: model.stream(inputs, **kwargs), context=context)
        else:
            pieces = _sync.context_iterate(lambda: model.astream(inputs, **kwargs), context)
        async for piece in pieces:
            usage = getattr(piece, "usage_metadata", None)
            calls = tuple(getattr(piece, "tool_call_chunks", None) or _as_chunks(getattr(piece, "tool_calls", None)))
            text = _text(piece)
            if text or usage or calls:
                tokens = 1 if text or calls else 0
                yield Chunk(text, tokens=tokens, usage=dict(usage) if usage else None, tool_calls=calls)

    def self_scorer(self) -> OptionScorer:
        """Self-evaluation by parsing the model's answer (a LangChain model gives no logprobs)."""

        def pieces(messages: list[dict[str, str]]) -> Iterator[str]:
            for chunk in self.model.stream(to_langchain(messages)):
                yield _text(chunk)

        def generate(messages: list[dict[str, str]]) -> str:  # a few pieces read, then the stream is closed
            return _draft_context().run(lambda: first_pieces(pieces(messages)))

        async def apieces(messages: list[dict[str, str]]) -> AsyncIterator[str]:
            async for chunk in self.model.astream(to_langchain(messages)):
                yield _text(chunk)

        async def agenerate(messages: list[dict[str, str]]) -> str:
            if _sync.called_from_sync():
                return await asyncio.to_thread(generate, messages)
            return await asyncio.create_task(afirst_pieces(apieces(messages)), context=_draft_context())

        return TextScorer(generate, agenerate)


def _innermost(model: Any) -> Any:
    """The chat model under any bindings (``bind``, ``bind_tools``, ``with_config`` wrap it in ``bound``)."""
    while hasattr(model, "bound"):
        model = model.bound
    return model


def _fields(model: Any) -> frozenset[str]:
    """The settings a chat model (under any bindings) declares as fields."""
    return frozenset(getattr(type(_innermost(model)), "model_fields", {}))


def _backend(model: Any) -> StreamingBackend:
    local = _local_model(model)
    if local is not None:
        from guardrail.backends.local import LocalBackend

        return LocalBackend(*local)
    return LangChainBackend(model)


async def _dispatch(event: Event, config: RunnableConfig | None) -> None:
    if event.type in {"verdict", "rewind", "fallback", "terminated"}:
        await adispatch_custom_event(f"guardrail_{event.type}", event.to_dict(), config=config)


def _as_chunks(tool_calls: Any) -> tuple[dict[str, Any], ...]:
    """Whole tool calls (from a model that does not stream) as tool-call chunks."""
    return tuple(
        {
            "name": call["name"],
            "args": json.dumps(call.get("args", {})),
            "id": call.get("id"),
            "index": index,
            "type": "tool_call_chunk",
        }
        for index, call in enumerate(tool_calls or ())
    )


def _final_message(result: GuardResult, chunk: bool) -> AIMessage:
    usage = result.usage
    metadata: dict[str, Any] = {"guardrail": result.summary()}
    kwargs: dict[str, Any] = {"response_metadata": metadata}
    if usage:
        inputs, outputs = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        kwargs["usage_metadata"] = {"input_tokens": inputs, "output_tokens": outputs, "total_tokens": inputs + outputs}
    pieces = [
        {"name": call.name, "args": call.arguments, "id": call.id, "index": call.index, "type": "tool_call_chunk"}
        for call in result.tool_calls
    ]  # whole calls, merged and judged by the guard: each parses on its own
    if pieces and chunk:
        kwargs["tool_call_chunks"] = pieces
    elif pieces:
        parsed = AIMessageChunk(content="", tool_call_chunks=pieces)
        kwargs["tool_calls"], kwargs["invalid_tool_calls"] = parsed.tool_calls, parsed.invalid_tool_calls
    if chunk:
        return AIMessageChunk(content="", chunk_position="last", **kwargs)
    return AIMessage(content=result.text, **kwargs)


class GuardedChatModel(BaseChatModel):
    """A chat model that guards another: drop it in wherever a chat model goes.

    Example::

        guarded = GuardedChatModel(model=ChatOpenAI(model="gpt-4o-mini"), policy="harmless")
        guarded.invoke("Hi")               # AIMessage; response_metadata["guardrail"] holds the summary
        for chunk in guarded.stream("Hi"):  # verified text only
            print(chunk.content, end="")
    """

    model: Any = Field(description="The inner chat model (or Runnable taking messages).")
    policy: Any = Field(default="harmless", description="Policy object, built-in name or YAML path.")
    judge: Any = Field(
        default=None, description=f"A Judge, or a judge kind by name ({', '.join((AUTO, *JUDGE_KINDS))})."
    )
    audit: str | None = Field(default=None, description="Append audit records (JSON lines) to this file.")
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    stop: list[str] | None = None
    max_retries: int | None = None

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _guard: Guard | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "guarded-chat-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"inner": type(self.model).__name__, "policy": self.guard.policy.name}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        inner = getattr(self.model, "_get_ls_params", None)
        params: dict[str, Any] = dict(inner(stop=stop, **kwargs)) if callable(inner) else {}
        params.setdefault("ls_provider", "guardrail")
        params.setdefault("ls_model_name", type(self.model).__name__)
        params["ls_model_type"] = "chat"
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def model_post_init(self, context: Any, /) -> None:
        """The Guard is built with the model: a broken policy, an unknown judge or a judge that fails its
        calibration probe is an error here, not at the first call."""
        super().model_post_init(context)
        _ = self.guard

    @property
    def guard(self) -> Guard:
        """The Guard (built with the model; it holds no per-call state, so it is shared by every call)."""
        if self._guard is None:
            policy = self.policy if isinstance(self.policy, (Policy, str, Path)) else str(self.policy)
            backend = _backend(self.model)
            self._guard = Guard(policy, backend, judge=self.judge, audit=self.audit, max_tokens=self.max_tokens)
        return self._guard

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Tools are bound on the inner model at call time; the calls it makes are merged, their arguments
        judged by the policy's ``tool_arguments`` rules, and only then returned."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self, schema: Any, *, method: str = "function_calling", include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """The inner model's structured output, judged before it is parsed.

        ``function_calling`` (default) forces a call to the schema's tool: its arguments are judged by the
        policy's output rules and ``tool_arguments`` rules. ``json_schema`` / ``json_mode`` ask the inner
        model for a JSON answer (``response_format``): the text is judged like any answer. A pydantic schema
        parses into its class, any other into a dict; an answer that does not parse raises
        ``OutputParserException`` (``include_raw=True``: returned as ``parsing_error``), never a silent None.
        """
        return structured_output(self, schema, method=method, include_raw=include_raw, **kwargs)

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {k: v for k, v in kwargs.items() if k in _PASSED}
        if stop or self.stop:
            params["stop"] = stop or self.stop
        for key in ("temperature", "max_tokens"):
            value = kwargs.get(key, getattr(self, key))
            if value is not None:
                params[key] = value
        return params

    async def _events(
        self, messages: list[BaseMessage], stop: list[str] | None, callbacks: Any, kwargs: dict[str, Any]
    ) -> AsyncIterator[Event]:
        # custom events go to the guarded run's own callbacks; the inner model's drafts run in a context of their own
        config: RunnableConfig | None = {"callbacks": callbacks} if callbacks is not None else None
        async for event in self.guard.astream(to_messages(messages), **self._params(stop, kwargs)):
            if config is not None:
                await _dispatch(event, config)
            yield event

    async def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, callbacks: Any, tokens: Any, kwargs: dict[str, Any]
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for event in self._events(messages, stop, callbacks, kwargs):
            if isinstance(event, TextEvent) and event.text:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=event.text))
                if tokens:
                    await tokens.on_llm_new_token(event.text, chunk=chunk)
                yield chunk
            elif isinstance(event, FinalEvent):
                yield ChatGenerationChunk(message=_final_message(event.result, chunk=True))  # type: ignore[arg-type]

    # LangChain calls ``_astream`` / ``_stream`` without the run's manager (``stream``, ``astream``, and ``invoke``
    # streaming for a listener such as ``astream_events`` or LangGraph's "messages" mode). The run's callbacks
    # for our custom events are handed over in ``_RUN``: set by ``astream`` / ``stream`` (which choose the run id)
    # and by ``_should_stream`` (which LangChain asks, with the run's manager, right before streaming an invoke).

    def _should_stream(self, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
        streams = super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)
        if streams and run_manager is not None:
            _RUN.set(_child(run_manager))
        return streams

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:  # fmt: skip
        config = self._with_run(config)
        try:
            async for chunk in super().astream(input, config, stop=stop, **kwargs):
                yield chunk
        finally:
            _RUN.set(None)

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:  # fmt: skip
        config = self._with_run(config)
        try:
            yield from super().stream(input, config, stop=stop, **kwargs)
        finally:
            _RUN.set(None)

    def _with_run(self, config: RunnableConfig | None) -> RunnableConfig:
        """``config`` with a run id chosen here, and ``_RUN`` set to that run's child callbacks."""
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid.uuid4()
        manager = CallbackManager.configure(
            config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"), self.tags,
            config.get("metadata"), self.metadata,
        )  # fmt: skip
        _RUN.set(_child_of(run_id, manager))
        return {**config, "run_id": run_id}

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        callbacks = _child(run_manager) if run_manager else _take_run()
        async for chunk in self._chunks(messages, stop, callbacks, run_manager, kwargs):
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        callbacks = _child(run_manager) if run_manager else _take_run()
        yield from _sync.iterate(self._chunks(messages, stop, callbacks, _SyncToAsyncManager(run_manager), kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result: GuardResult | None = None
        callbacks = _child(run_manager) if run_manager else None
        async for event in self._events(messages, stop, callbacks, kwargs):
            if isinstance(event, FinalEvent):
                result = event.result
        assert result is not None
        return ChatResult(generations=[ChatGeneration(message=_final_message(result, chunk=False))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _sync.run(self._agenerate(messages, stop, _SyncToAsyncManager(run_manager), **kwargs))  # type: ignore[arg-type]


#: the guarded run's child callbacks, handed to the next ``_astream`` / ``_stream`` (see GuardedChatModel)
_RUN: contextvars.ContextVar[CallbackManager | None] = contextvars.ContextVar("guardrail_run", default=None)


def _take_run() -> CallbackManager | None:
    callbacks = _RUN.get()
    _RUN.set(None)
    return callbacks


def _child_of(run_id: Any, manager: Any) -> CallbackManager:
    """Callbacks for runs nested under run ``run_id`` whose inheritable callbacks ``manager`` holds."""
    child = CallbackManager(handlers=[], parent_run_id=run_id)
    child.set_handlers(manager.inheritable_handlers)
    child.add_tags(manager.inheritable_tags)
    child.add_metadata(manager.inheritable_metadata)
    return child


def _child(run_manager: Any) -> CallbackManager:
    """Callbacks for runs nested under an LLM run (what ``get_child`` gives a chain run)."""
    manager = getattr(run_manager, "run_manager", run_manager)
    return _child_of(manager.run_id, manager)


class _SyncToAsyncManager:
    """A sync LLM run manager seen through the async interface the shared engine uses."""

    def __init__(self, manager: CallbackManagerForLLMRun | None) -> None:
        self.manager = manager

    def __bool__(self) -> bool:
        return self.manager is not None

    @property
    def run_manager(self) -> CallbackManagerForLLMRun | None:
        return self.manager

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        if self.manager:
            self.manager.on_llm_new_token(token, **kwargs)


class GuardedRunnable(RunnableSerializable[Any, AIMessage]):
    """A guarded Runnable with a chain run of its own: the inner model's runs nest under it in tracing, and
    the guard's verdicts, rewinds and fallbacks are custom events (``guardrail_verdict``, ``guardrail_rewind``,
    ``guardrail_fallback``) in ``astream_events``. Input: a string, messages or a PromptValue; output: an
    AIMessage (streamed as AIMessageChunks of verified text)."""

    model: Any
    policy: Any = "harmless"
    judge: Any = None
    audit: str | None = None

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _guard: Guard | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        _ = self.guard  # policy and judge errors at construction

    @property
    def guard(self) -> Guard:
        if self._guard is None:
            self._guard = Guard(self.policy, _backend(self.model), judge=self.judge, audit=self.audit)
        return self._guard

    async def _run(self, value: Any, config: RunnableConfig) -> AsyncIterator[Event]:
        # the inner model's runs are drafts until verified: they run in a context of their own (see _draft_context)
        async for event in self.guard.astream(to_messages(value)):
            await _dispatch(event, config)  # custom events belong to the guard's own run
            yield event

    async def _ainvoke(self, value: Any, run_manager: Any, config: RunnableConfig) -> AIMessage:
        async for event in self._run(value, config):
            if isinstance(event, FinalEvent):
                return _final_message(event.result, chunk=False)
        raise RuntimeError("the guarded run ended without a result")  # pragma: no cover

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AIMessage:
        return await self._acall_with_config(self._ainvoke, input, config, run_type="chain", **kwargs)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AIMessage:
        return _sync.run(self.ainvoke(input, config, **kwargs))

    async def _atransform(
        self, inputs: AsyncIterator[Any], run_manager: Any, config: RunnableConfig
    ) -> AsyncIterator[AIMessageChunk]:
        value = None
        async for piece in inputs:
            value = piece if value is None or isinstance(piece, (str, PromptValue)) else value + piece
        async for event in self._run(value, config):
            if isinstance(event, TextEvent) and event.text:
                yield AIMessageChunk(content=event.text)
            elif isinstance(event, FinalEvent):
                yield _final_message(event.result, chunk=True)  # type: ignore[misc]

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        async for chunk in self._atransform_stream_with_config(
            input, self._atransform, config, run_type="chain", **kwargs
        ):
            yield chunk

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        async def single() -> AsyncIterator[Any]:
            yield input

        async for chunk in self.atransform(single(), config, **kwargs):
            yield chunk

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        yield from _sync.iterate(self.astream(input, config, **kwargs))


def guard(model: Any, *, policy: Any = "harmless", judge: Any = None, audit: str | None = None) -> GuardedRunnable:
    """Wrap a chat model or Runnable: ``chain = prompt | guard(model, policy="app.yaml") | StrOutputParser()``."""
    return GuardedRunnable(model=model, policy=policy, judge=judge, audit=audit)
