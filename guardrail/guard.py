"""The Guard: checks the input, picks the rewind strategy, runs it, applies the ladder's end, emits events.

One implementation, async at the core: ``astream`` is the engine; ``ainvoke`` collects it; ``stream`` and
``invoke`` run it on a background loop (``guardrail._sync``). A Guard holds only configuration (policy,
backend, judges, audit sink); each call's state lives in the call, so one Guard serves many threads and tasks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from guardrail import _sync
from guardrail.actions import Budget, Decision, decide
from guardrail.audit import AuditSink
from guardrail.backends.base import GenerationParams, Message, StreamingBackend
from guardrail.errors import GuardrailError, GuardrailViolation
from guardrail.events import Event, FallbackEvent, FinalEvent, GuardResult, TerminatedEvent, TextEvent
from guardrail.judges.base import Judge
from guardrail.policy import Policy, load_policy
from guardrail.policy.schema import DEFAULT_REFUSAL, suggest
from guardrail.presets import resolve_judge
from guardrail.rewind.request import Request, RunState
from guardrail.rewind.sentence import SentenceRewind
from guardrail.rewind.token import TokenRewind
from guardrail.sentence import ends_sentence
from guardrail.tool_calls import ToolArgumentCheck

__all__ = ["Guard"]

_INPUT_FRAME = "Repeat the user's message."
#: generation parameters the guard reads itself
_GUARD_PARAMS = frozenset({"temperature", "max_tokens", "seed", "stop", "structured_output"})
#: parameters handed to the backend as they are (tools, structured output, sampling, a framework's kwargs)
_FORWARDED_PARAMS = frozenset(
    {
        "tools", "tool_choice", "parallel_tool_calls", "response_format", "top_p", "presence_penalty",
        "frequency_penalty", "logit_bias", "user", "llama_index_kwargs",
    }
)  # fmt: skip


class Guard:
    """Guards a backend's answers with a policy: judge, rewind, regenerate, and fall back when it must.

    Example::

        guard = Guard("harmless", OpenAIBackend("http://127.0.0.1:8080/v1", model="smollm2"))
        for event in guard.stream("How do I bake bread?"):
            if event.type == "text":
                print(event.text, end="", flush=True)
        result = guard.invoke("How do I bake bread?")      # GuardResult: text, verdicts, rewinds, ...
    """

    def __init__(
        self,
        policy: Policy | str | Path = "harmless",
        backend: StreamingBackend | None = None,
        *,
        judge: Judge | str | None = None,
        input_judge: Judge | str | None = None,
        audit: AuditSink | str | Path | None = None,
        max_tokens: int | None = 512,
        deadline_s: float | None = None,
    ) -> None:
        if backend is None:
            raise GuardrailError("Guard needs a backend, e.g. OpenAIBackend(base_url) or a local model backend")
        self.policy = load_policy(policy)
        self.backend = backend
        # one default everywhere (guardrail.presets): the policy's judges, the trained judge where the model
        # cannot judge itself; a judge kind by name, or a Judge object, overrides
        self.judge = resolve_judge(self.policy, backend, judge)
        by_name = judge if isinstance(judge, str) else None  # a Judge object judges the output rules only
        self.input_judge = resolve_judge(self.policy, backend, input_judge or by_name, scope="input")
        #: judges the arguments of the model's tool calls (rules with scope ``tool_arguments``)
        self.tool_check = ToolArgumentCheck(
            self.policy, resolve_judge(self.policy, backend, by_name, scope="tool_arguments")
        )
        settings = self.policy.audit
        self.audit = (
            AuditSink(audit, on_error=settings.on_error, max_bytes=settings.max_bytes, backups=settings.backups)
            if isinstance(audit, (str, Path))
            else audit
        )  # opened now: an unwritable audit location is an AuditError here, not at the first request
        self.max_tokens = max_tokens
        #: seconds one request may take in all; default the policy's ``rewind.deadline_s``
        self.deadline_s = deadline_s if deadline_s is not None else self.policy.rewind.deadline_s
        self.strategy = self._strategy()

    def __repr__(self) -> str:
        return (
            f"Guard(policy={self.policy.name!r}, backend={self.backend!r}, judge={self.judge!r}, "
            f"strategy={self.strategy.name!r})"
        )

    def _strategy(self) -> SentenceRewind | TokenRewind:
        """Token-level where the backend exposes tokens and a KV cache (or the policy forces it), else sentence."""
        mode = self.policy.rewind.mode
        if mode == "token" and not self.backend.supports_tokens:
            raise GuardrailError(
                f"policy {self.policy.name!r} forces token-level rewind (rewind.mode: token), but {self.backend!r} "
                "exposes no token ids or KV cache; use rewind.mode: sentence or auto, or a local model backend"
            )
        if self.backend.supports_tokens and mode != "sentence":
            return TokenRewind(self.policy, self.backend, self.judge)
        return SentenceRewind(self.policy, self.backend, self.judge, self.tool_check)

    # ------------------------------------------------------------------------------------------ requests

    def _request(self, prompt: str | Sequence[Message], streaming: bool, params: Mapping[str, Any]) -> Request:
        messages: list[Message] = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if not messages:
            raise GuardrailError("nothing to answer: give a prompt or at least one message")
        unknown = sorted(set(params) - _GUARD_PARAMS - _FORWARDED_PARAMS)
        if unknown:
            choices = sorted(_GUARD_PARAMS | _FORWARDED_PARAMS)
            raise TypeError(
                f"unknown generation parameter {unknown[0]!r}{suggest(unknown[0], choices)}; "
                f"known: {', '.join(choices)}"
            )
        extra = {k: v for k, v in params.items() if k in _FORWARDED_PARAMS}
        stop = params.get("stop") or ()
        generation = GenerationParams(
            temperature=params.get("temperature"),
            max_tokens=params.get("max_tokens", self.max_tokens),
            seed=params.get("seed"),
            stop=tuple(s for s in ((stop,) if isinstance(stop, str) else stop) if s),
            extra=extra,
        )
        structured = bool(params.get("structured_output"))
        return Request(messages, generation, streaming, uuid.uuid4().hex, structured)

    async def _check_input(self, request: Request, state: RunState) -> Decision | None:
        if not self.input_judge.rules:
            return None
        users = [str(m.get("content") or "") for m in request.messages if m.get("role") == "user"]
        verdict = await self.input_judge.ajudge(_INPUT_FRAME, users[-1] if users else "", explain=True)
        self._record(state.verdict(verdict, partial=False, scope="input"), request)
        if not verdict.violated:
            return None
        decision = decide(self.policy, verdict, Budget(self.policy, rewinds=self.policy.rewind.max_rewinds))
        return decision

    def _record(self, event: Event, request: Request) -> None:
        if self.audit is not None:
            self.audit.record(
                event, request_id=request.request_id, policy=self.policy.name,
                prompt=str(request.messages[-1].get("content") or ""),
                raw_text=self.policy.audit.include_rejected_text,
            )  # fmt: skip

    def _expired(self) -> FallbackEvent:
        """The fallback when the deadline passes: the ladder's last step if it refuses or raises, else a refusal
        (there is no unverified rest to flag or redact: generation stopped)."""
        last = self.policy.actions[-1]
        action = last.action if last.action in {"refuse", "raise"} else "refuse"
        message = getattr(last, "message", None) or DEFAULT_REFUSAL
        if action == "raise":
            message = f"the request ran past its deadline ({self.deadline_s:g}s)"
        return FallbackEvent(action, (), message, reason="deadline")

    # ------------------------------------------------------------------------------------------ the engine

    async def _events(self, request: Request) -> AsyncIterator[Event]:
        started = time.perf_counter()
        state = RunState(Budget(self.policy))
        texts: list[str] = []
        fallback: FallbackEvent | None = None
        terminated: TerminatedEvent | None = None
        blocked = await self._check_input(request, state)
        source: AsyncIterator[Event]
        if blocked is not None and blocked.action in {"refuse", "raise"}:
            source = _replay([FallbackEvent(blocked.action, blocked.rules, blocked.message, "input")])
        else:
            if blocked is not None and blocked.action == "redact":
                request = _redacted_input(request, state, blocked.message)
            source = self.strategy.run(request, state)
            if request.params.stop:
                source = _stopping(source, request.params.stop)
        if self.deadline_s is not None:
            source = _until(source, started + self.deadline_s, self._expired)
        try:
            async for event in source:
                self._record(event, request)
                if isinstance(event, FallbackEvent):
                    if event.action in {"redact", "flag"}:
                        fallback = fallback or event
                        yield event
                        continue
                    fallback = event
                    yield event
                    if event.action == "raise":
                        raise GuardrailViolation(event.message, rules=event.rules, score=_last_score(state))
                    text = event.message
                    if request.streaming and "".join(texts).strip() and text:
                        # text went out already: close it coherently and say so, so a UI can collapse it
                        text = closing(texts, text)
                        terminated = TerminatedEvent(event.rules, sum(map(len, texts)), text, event.reason)
                        self._record(terminated, request)
                        yield terminated
                    if not request.streaming:
                        texts.clear()
                    texts.append(text)
                    yield TextEvent(text)
                    continue
                if isinstance(event, TextEvent):
                    texts.append(event.text)
                yield event
        finally:
            await source.aclose()  # type: ignore[attr-defined]  # an error or a consumer leaving stops the work
        if blocked is not None and blocked.action in {"flag", "redact"} and fallback is None:
            fallback = FallbackEvent(blocked.action, blocked.rules, blocked.message, "input")
        result = GuardResult(
            text="".join(texts),
            strategy=self.strategy.name,
            verdicts=tuple(state.verdicts),
            rewinds=tuple(state.rewinds),
            fallback=fallback,
            completion_tokens=state.completion_tokens,
            extra_tokens=state.budget.extra_tokens,
            judge_cost=state.judge_cost,
            generation_cost=state.generation_cost,
            latency_s=time.perf_counter() - started,
            request_id=request.request_id,
            usage=dict(state.usage),
            tool_calls=tuple(state.tool_calls),
            terminated=terminated,
        )
        final = FinalEvent(result)
        self._record(final, request)
        yield final

    async def astream(self, prompt: str | Sequence[Message], **params: Any) -> AsyncIterator[Event]:
        """Stream events; ``TextEvent`` carries verified text only. Ends with a ``FinalEvent``."""
        async for event in self._events(self._request(prompt, True, params)):
            yield event

    async def ainvoke(self, prompt: str | Sequence[Message], **params: Any) -> GuardResult:
        """The whole guarded answer and its trace."""
        async for event in self._events(self._request(prompt, False, params)):
            if isinstance(event, FinalEvent):
                return event.result
        raise GuardrailError("the guarded generation ended without a result")  # pragma: no cover

    def stream(self, prompt: str | Sequence[Message], **params: Any) -> Iterator[Event]:
        """``astream`` for sync code."""
        return _sync.iterate(self.astream(prompt, **params))

    def invoke(self, prompt: str | Sequence[Message], **params: Any) -> GuardResult:
        """``ainvoke`` for sync code."""
        return _sync.run(self.ainvoke(prompt, **params))

    async def astream_text(self, prompt: str | Sequence[Message], **params: Any) -> AsyncIterator[str]:
        """Only the verified text, piece by piece."""
        async for event in self.astream(prompt, **params):
            if isinstance(event, TextEvent):
                yield event.text

    def stream_text(self, prompt: str | Sequence[Message], **params: Any) -> Iterator[str]:
        """``astream_text`` for sync code."""
        return _sync.iterate(self.astream_text(prompt, **params))


async def _until(
    source: AsyncIterator[Event], deadline: float, expired: Callable[[], FallbackEvent]
) -> AsyncIterator[Event]:
    """``source``'s events until ``deadline`` (``time.perf_counter()``); then ``expired()``'s fallback, and the
    step in progress (an upstream read, a judge call, a regeneration) is cancelled. Closing stops ``source``."""
    try:
        while True:
            remaining = deadline - time.perf_counter()
            try:
                if remaining <= 0:
                    raise TimeoutError
                event = await asyncio.wait_for(anext(source), remaining)
            except StopAsyncIteration:
                return
            except TimeoutError:
                yield expired()
                return
            yield event
    finally:
        await source.aclose()  # type: ignore[attr-defined]


def closing(released: Sequence[str], message: str) -> str:
    """The text that ends a stream cut short after ``released``: a sentence cut in the middle gets an ellipsis,
    then the policy's message as a paragraph of its own (never an apology glued to half a sentence)."""
    said = "".join(released).rstrip(" \t")
    newlines = len(said) - len(said.rstrip("\n"))  # a line or paragraph already ended
    cut = "" if newlines or ends_sentence(said) else "…"
    return cut + "\n" * max(0, 2 - newlines) + message.strip()


async def _stopping(source: AsyncIterator[Event], stops: tuple[str, ...]) -> AsyncIterator[Event]:
    """``source``'s events, its text cut before the first stop sequence, whatever the upstream honours: the
    last ``len(longest stop) - 1`` characters are held back until the next text shows they start no stop
    sequence. At a stop the held text before it is released and ``source`` is closed (generation ends)."""
    hold = max(len(stop) for stop in stops) - 1
    pending = ""
    try:
        async for event in source:
            if not isinstance(event, TextEvent):
                if isinstance(event, FallbackEvent) and pending:
                    yield TextEvent(pending)  # verified text before the fallback's message, in order
                    pending = ""
                yield event
                continue
            pending += event.text
            cut = min((i for i in (pending.find(stop) for stop in stops if stop) if i >= 0), default=-1)
            if cut >= 0:
                if pending[:cut]:
                    yield TextEvent(pending[:cut])
                return
            ready = len(pending) - hold
            if ready > 0:
                yield TextEvent(pending[:ready])
                pending = pending[ready:]
        if pending:
            yield TextEvent(pending)
    finally:
        await source.aclose()  # type: ignore[attr-defined]


def _redacted_input(request: Request, state: RunState, replacement: str) -> Request:
    """The request with the spans that fired in the last user message replaced before the model sees it."""
    from guardrail.actions import redact

    verdict = state.verdicts[-1].verdict
    messages = list(request.messages)
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            content = str(messages[index].get("content") or "")
            messages[index] = {**messages[index], "content": redact(content, verdict, replacement)}
            break
    return replace(request, messages=messages)


async def _replay(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


def _last_score(state: RunState) -> float | None:
    return state.verdicts[-1].verdict.score if state.verdicts else None
