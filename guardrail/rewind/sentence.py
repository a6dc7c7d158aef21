"""Sentence-level rewind for any streaming text backend (remote APIs, LangChain, LlamaIndex).

The backend's stream is cut into sentences (``guardrail.sentence``). Each sentence is judged together with
the accepted text before it, while the next sentence is being generated (pipelining), and released only once
its verdict passes. On a violation the upstream request is cancelled and the answer is regenerated from the
last accepted sentence; after ``max_failures_per_position`` failures at one position it steps one sentence
further back (RAIN's return to the parent node), never past text already released to a streaming user. When
the policy's ladder or budget is spent, the terminal action applies (refuse, redact, flag, raise).

A regeneration continues the accepted prefix: with assistant prefill where the backend supports it, otherwise
with an instruction to continue. ``rewind.regeneration: critique`` tells the model which rule the rejected
sentence broke (never the rejected text itself); ``resample`` only changes temperature and seed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from guardrail.actions import Decision, decide, lookahead_verdict, redact
from guardrail.backends.base import Chunk, GenerationParams, Message, StreamingBackend
from guardrail.errors import BackendError
from guardrail.events import Event, FallbackEvent, TextEvent
from guardrail.judges.base import Judge
from guardrail.judges.verdict import Verdict
from guardrail.policy import Policy
from guardrail.rewind.memo import VerdictMemo
from guardrail.rewind.request import Request, RunState
from guardrail.sentence import SentenceBuffer
from guardrail.tool_calls import ToolArgumentCheck, merge_tool_calls, redact_argument

__all__ = ["CONTINUE_INSTRUCTION", "SentenceRewind"]

CONTINUE_INSTRUCTION = (
    "Continue your previous answer exactly where it stops. Do not repeat any of it and do not comment on it."
)
_END = object()


@dataclass
class _Fatal:
    """A backend failure before any output: not worth a regeneration."""

    error: BackendError


@dataclass
class _Unit:
    text: str
    tokens: int
    last: bool = False
    end: int = 0  # where the unit ends in the attempt's raw text (before the repeat filter)


@dataclass
class _Piece:
    """One streamed piece of text, sent ahead of the units it completes (the look-ahead reads these)."""

    text: str
    tokens: int


@dataclass
class _Outcome:
    """How an attempt ended: finished, a unit rejected, a terminal decision, or the backend failing."""

    kind: str  # "done" | "rejected" | "terminal" | "failed"
    unit: _Unit | None = None
    verdict: Verdict | None = None
    decision: Decision | None = None
    error: BackendError | None = None
    wasted_tokens: int = 0
    continuation: str = ""  # the look-ahead text the rejected unit was judged with, when that decided


class SentenceRewind:
    """Runs one guarded generation at sentence granularity; see the module docstring."""

    name = "sentence"

    def __init__(
        self, policy: Policy, backend: StreamingBackend, judge: Judge, tools: ToolArgumentCheck | None = None
    ) -> None:
        self.policy = policy
        self.backend = backend
        self.judge = judge
        self.tools = tools

    # ------------------------------------------------------------------------------------------ prompts

    def _critique(self, broken_rules: tuple[str, ...]) -> str:
        """The regeneration instruction naming the broken rules (``regeneration: critique``), else ''."""
        if not broken_rules or self.policy.rewind.regeneration != "critique":
            return ""
        criteria = [rule.criterion.strip().rstrip(".") for rule in self.policy.rules if rule.id in broken_rules]
        return (
            "Your previous draft of the next part broke this rule, so it was discarded: "
            + " / ".join(f"do not do this: {c}" for c in criteria)
            + ". Write it differently so that it follows the rule."
        )

    def _messages(self, request: Request, accepted: str, broken_rules: tuple[str, ...]) -> list[Message]:
        messages = list(request.messages)
        critique = self._critique(broken_rules)
        if critique and (not accepted or self.backend.supports_prefill):
            # appended to the user's last turn: a system turn mid-chat breaks strictly alternating templates
            for index in range(len(messages) - 1, -1, -1):
                if messages[index].get("role") == "user":
                    content = str(messages[index].get("content") or "")
                    messages[index] = {**messages[index], "content": f"{content}\n\n({critique})"}
                    break
        if not accepted:
            return messages
        messages.append({"role": "assistant", "content": accepted})
        if not self.backend.supports_prefill:
            messages.append({"role": "user", "content": f"{CONTINUE_INSTRUCTION} {critique}".strip()})
        return messages

    def _params(self, request: Request, attempt: int, accepted_tokens: int) -> GenerationParams:
        params = request.params
        if params.max_tokens is not None:
            params = replace(params, max_tokens=max(1, params.max_tokens - accepted_tokens))
        if attempt:
            seed = (params.seed or 0) + attempt
            temperature = params.temperature if params.temperature else self.policy.rewind.temperature
            params = replace(params, temperature=max(temperature, self.policy.rewind.temperature), seed=seed)
        return params

    @staticmethod
    def _release(request: Request, accepted: list[_Unit], released: list[int], lag: int) -> list[TextEvent]:
        """Streaming: the accepted units not yet released, except the last ``lag`` (held so that a violation in
        the next sentence can still rewind past them). ``released[0]`` is the floor for stepping back."""
        if not request.streaming:
            return []
        upto = max(released[0], len(accepted) - lag)
        events = [TextEvent(unit.text) for unit in accepted[released[0] : upto] if unit.text]
        released[0] = upto
        return events

    # ------------------------------------------------------------------------------------------ one attempt

    async def _produce(self, messages: list[Message], params: GenerationParams, queue: asyncio.Queue[object]) -> None:
        buffer = SentenceBuffer(self.policy.rewind.max_window_chars)
        tokens = produced = end = 0
        started = False
        stream = self.backend.astream(messages, params)
        try:
            async for chunk in stream:
                started = True
                piece_tokens = chunk.tokens or len(chunk.tool_calls)  # tool-call pieces count against the limit
                tokens += piece_tokens
                produced += piece_tokens
                if chunk.usage or chunk.tool_calls:
                    await queue.put(chunk)
                if chunk.text and self.policy.rewind.lookahead_tokens:
                    await queue.put(_Piece(chunk.text, chunk.tokens or 1))
                for text in buffer.feed(chunk.text):
                    end += len(text)
                    await queue.put(_Unit(text, tokens, end=end))
                    tokens = 0
                if params.max_tokens is not None and produced >= params.max_tokens:
                    break  # the guard enforces the limit, whatever the upstream honours
            rest = buffer.flush()
            if rest:
                await queue.put(_Unit(rest, tokens, last=True, end=end + len(rest)))
        except BackendError as err:
            # before any output the client has already retried: regenerating would only repeat the failure
            await queue.put(err if started else _Fatal(err))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            await queue.put(_END)

    async def _attempt(
        self, request: Request, state: RunState, accepted: list[_Unit], released: list[int], attempt: int
    ) -> AsyncIterator[Event | _Outcome]:
        prefix = "".join(unit.text for unit in accepted)
        broken = state.rewinds[-1].rules if state.rewinds and state.rewinds[-1].reason == "violation" else ()
        messages = self._messages(request, prefix, broken if attempt else ())
        echo = _Echo(self._critique(broken)) if attempt and broken else None
        params = self._params(request, attempt, sum(unit.tokens for unit in accepted))
        queue: asyncio.Queue[object] = asyncio.Queue()
        state.tool_pieces.clear()  # only the accepted attempt's tool calls go out
        state.tool_calls.clear()
        producer = asyncio.create_task(self._produce(messages, params, queue))
        repeat = _RepeatFilter(prefix) if accepted and not self.backend.supports_prefill else None
        ahead = _LookAhead(self.policy.rewind.lookahead_tokens)
        memo: VerdictMemo[tuple[str, bool]] = VerdictMemo()  # a unit's look-ahead is a later unit's prefix
        pending: list[_Unit] = []  # units received, not judged yet (waiting for their look-ahead)
        failure: BackendError | None = None  # the stream broke off: judge what arrived, then regenerate
        try:
            while True:
                if ahead.ended and not pending:
                    if failure is not None:
                        yield _Outcome("failed", error=failure, wasted_tokens=_drain_tokens(queue))
                        return
                    async for checked in self._tool_calls(request, state):
                        yield checked
                        if isinstance(checked, _Outcome):
                            return
                    yield _Outcome("done")
                    return
                if not pending or not ahead.ready(pending[0]):
                    item = await queue.get()
                    if item is _END:
                        ahead.ended = True
                        continue
                    if isinstance(item, _Fatal):
                        raise item.error
                    if isinstance(item, BackendError):  # the units before the break keep what arrived after them
                        failure = item
                        ahead.ended = True
                        continue
                    if isinstance(item, Chunk):
                        state.add_usage(item.usage)
                        state.tool_pieces.extend(item.tool_calls)
                    elif isinstance(item, _Piece):
                        ahead.add(item)
                    else:
                        assert isinstance(item, _Unit)
                        if repeat is not None:
                            item.text = repeat.filter(item.text)  # a restarted answer must not say the prefix twice
                        pending.append(item)
                        ahead.mark(item)
                    continue
                item = pending.pop(0)
                state.completion_tokens += item.tokens
                if not item.text.strip():
                    accepted.append(item)
                    continue
                response = "".join(unit.text for unit in accepted) + item.text
                looked, continuation = 0, ""
                if echo is not None and echo.found(item.text):  # the instruction itself, not an answer
                    verdict = echo.verdict(broken)
                else:
                    looked, after = (0, "") if item.last else ahead.after(item)
                    verdict, continuation = await self._judge_unit(
                        request, state, memo, response, after, looked, item.last, len(response) - len(item.text)
                    )
                yield state.verdict(verdict, partial=not item.last, lookahead=looked)
                if not verdict.violated:
                    accepted.append(item)
                    state.budget.progress()
                    for event in self._release(request, accepted, released, self.policy.rewind.release_lag):
                        yield event
                    continue
                decision = decide(self.policy, verdict, state.budget)
                if decision.action == "rewind":
                    wasted = _pending_tokens(pending, queue)
                    yield _Outcome("rejected", item, verdict, decision, wasted_tokens=wasted, continuation=continuation)
                    return
                if decision.action in {"redact", "flag"}:
                    if decision.action == "redact":
                        item.text = redact(item.text, verdict, decision.message, offset=len(response) - len(item.text))
                    accepted.append(item)
                    yield FallbackEvent(decision.action, decision.rules, decision.message)
                    for event in self._release(request, accepted, released, self.policy.rewind.release_lag):
                        yield event
                    continue
                yield _Outcome("terminal", item, verdict, decision, wasted_tokens=_pending_tokens(pending, queue))
                return
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, BackendError):
                await producer

    async def _judged(
        self, request: Request, memo: VerdictMemo[tuple[str, bool]], text: str, partial: bool, judged: int = 0
    ) -> Verdict:
        """The judge's verdict on ``text`` (its first ``judged`` characters accepted before: ``Judge.judge``), or
        the one it gave on the same text before (free)."""
        verdict = memo.get((text, partial))
        if verdict is None:
            verdict = await self.judge.ajudge(request.messages, text, partial=partial, explain=True, judged=judged)
            memo.put((text, partial), verdict)
        return verdict

    async def _judge_unit(
        self,
        request: Request,
        state: RunState,
        memo: VerdictMemo[tuple[str, bool]],
        response: str,
        after: str,
        looked: int,
        last: bool,
        judged: int,
    ) -> tuple[Verdict, str]:
        """The verdict on a unit (``response`` ends with it, ``after`` is its look-ahead of ``looked`` tokens),
        and the look-ahead text when the trajectory's verdict decided ('' when the unit's own did); the units
        before it (``judged`` characters) were accepted.

        With a look-ahead, the unit is judged alone and with the continuation that follows it (both at once;
        the unit alone is usually remembered: an earlier unit's look-ahead ended where this unit ends):
        a unit that violates alone is rejected as ever; one whose trajectory violates is rejected too (an
        opening that leads into a violation is regenerated, or refused, before it is released). Judging it
        alone as well keeps the guard as strict as without a look-ahead: text after a unit could lower its
        score. Ladder steps that act on the unit's own text (redact, flag) go by the verdict on it alone."""
        try:
            if not after:
                return await self._judged(request, memo, response, not last, judged), ""
            alone, trajectory = await asyncio.gather(
                self._judged(request, memo, response, True), self._judged(request, memo, response + after, True)
            )
        finally:
            memo.forget(lambda key: len(key[0]) <= len(response))  # later units are longer: never asked again
        verdict = alone if alone.violated else lookahead_verdict(self.policy, state.budget, alone, trajectory, looked)
        assert verdict is not None
        other = alone if verdict is not alone else trajectory
        state.judge_cost = state.judge_cost + other.cost  # the verdict's own cost is counted with its event
        return verdict, after if verdict is not alone else ""

    async def _tool_calls(self, request: Request, state: RunState) -> AsyncIterator[Event | _Outcome]:
        """Merge the attempt's tool-call pieces and judge their arguments; a violation takes the ladder's step:
        rewind the answer, redact inside the argument, flag, or end the answer (refuse / raise)."""
        state.tool_calls[:] = merge_tool_calls(state.tool_pieces)
        if not state.tool_calls or self.tools is None:
            return
        output_judge = self.judge if request.structured else None  # the calls are the answer: output rules too
        for judged in await self.tools.ajudge(request.messages, state.tool_calls, output_judge=output_judge):
            verdict = judged.verdict
            yield state.verdict(verdict, partial=False, scope="tool_arguments")
            if not verdict.violated:
                continue
            call = state.tool_calls[judged.call]
            decision = decide(self.policy, verdict, state.budget)
            if decision.action in {"redact", "flag"}:
                if decision.action == "redact":
                    state.tool_calls[judged.call] = redact_argument(call, judged, decision.message)
                yield FallbackEvent(decision.action, decision.rules, decision.message, scope="tool_arguments")
                continue
            kind = "rejected" if decision.action == "rewind" else "terminal"
            yield _Outcome(kind, _Unit(call.describe(), 0), verdict, decision)
            return

    # ------------------------------------------------------------------------------------------ the run

    async def run(self, request: Request, state: RunState) -> AsyncIterator[Event]:
        """Generate, judge, rewind; yield events. The Guard turns them into the final result."""
        accepted: list[_Unit] = []
        released = [0]  # units a streaming user has seen: the floor for stepping back
        failures_at: dict[int, int] = {}
        attempt = 0
        while True:
            outcome: _Outcome | None = None
            async for item in self._attempt(request, state, accepted, released, attempt):
                if isinstance(item, _Outcome):
                    outcome = item
                else:
                    yield item
            assert outcome is not None
            attempt += 1
            if outcome.kind == "done":
                if not request.streaming:
                    yield TextEvent("".join(unit.text for unit in accepted))
                for event in self._release(request, accepted, released, 0):  # the units held back
                    yield event
                return
            if outcome.kind == "terminal":
                assert outcome.decision is not None and outcome.unit is not None
                if outcome.decision.action in {"refuse", "raise"}:
                    state.tool_calls.clear()  # a refused answer calls no tool
                state.budget.extra_tokens += outcome.unit.tokens + outcome.wasted_tokens
                if not request.streaming and outcome.decision.action not in {"refuse", "raise"}:
                    yield TextEvent("".join(unit.text for unit in accepted))
                if outcome.decision.action not in {"refuse", "raise"}:  # held units go out; a refusal drops them
                    for event in self._release(request, accepted, released, 0):
                        yield event
                yield FallbackEvent(outcome.decision.action, outcome.decision.rules, outcome.decision.message)  # type: ignore[arg-type]
                return
            position = len(accepted)
            prefix = "".join(unit.text for unit in accepted)
            if outcome.kind == "failed":
                assert outcome.error is not None
                wasted = outcome.wasted_tokens
                if state.budget.exhausted():  # it covers max_rewinds too
                    raise outcome.error
                rejected_text, rules, score, reason = "", tuple[str, ...](), 0.0, "backend_error"
            else:
                assert outcome.unit is not None and outcome.verdict is not None
                wasted = outcome.unit.tokens + outcome.wasted_tokens
                # what was judged and violated: the unit, with its look-ahead when the trajectory decided
                rejected_text = outcome.unit.text + outcome.continuation
                rules, score = outcome.verdict.rules, outcome.verdict.score
                reason = "violation"
            state.budget.spend(wasted)
            failures_at[position] = failures_at.get(position, 0) + 1
            back_to = position
            if failures_at[position] >= self.policy.rewind.max_failures_per_position and position > released[0]:
                back_to = position - 1
                dropped = accepted.pop()
                state.budget.extra_tokens += dropped.tokens
                failures_at[position] = 0
            yield state.rewound(
                rules=tuple(rules), score=score, unit=state.units - 1 if reason == "violation" else state.units,
                back_to=back_to, attempt=attempt, rejected=rejected_text, tokens=wasted,
                reason=reason,  # type: ignore[arg-type]
                strategy=self.name, keep_text=self.policy.audit.include_rejected_text, prefix=prefix,
            )  # fmt: skip


class _Echo:
    """Finds the regeneration instruction repeated in a regenerated unit: a small model told "do not do this:
    <criterion>" often writes the criterion (or "this response promises ...") into its answer. Any run of
    ``_ECHO_WORDS`` words of the instruction, case and punctuation aside, counts; such a unit is rejected like
    a violation of the broken rules and never released."""

    def __init__(self, instruction: str) -> None:
        words = _words(instruction)
        self.shingles = {tuple(words[i : i + _ECHO_WORDS]) for i in range(len(words) - _ECHO_WORDS + 1)}

    def found(self, text: str) -> bool:
        words = _words(text)
        return any(tuple(words[i : i + _ECHO_WORDS]) in self.shingles for i in range(len(words) - _ECHO_WORDS + 1))

    @staticmethod
    def verdict(rules: tuple[str, ...]) -> Verdict:
        return Verdict(1.0, True, rules, dict.fromkeys(rules, 1.0), judge="echo",
                       rationale="the regenerated text repeats the regeneration instruction")  # fmt: skip


#: words in a row shared with the regeneration instruction that make a unit an echo of it
_ECHO_WORDS = 5


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


class _LookAhead:
    """The attempt's raw streamed text, so that a unit can be judged with the text that follows it: at least
    ``tokens`` of them, through the end of the unit that holds the last of those (so that the trajectory a
    unit is judged with is exactly a later unit's prefix, whose own judgement it then is: each prefix is
    judged once, not twice). What a unit is judged with depends only on the stream (never on how far the
    producer ran ahead while the judge worked): the pieces after the unit's end (a piece that straddles the
    end counts as one, from the end on), then on to the next unit end."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.text = ""
        self.ends: list[int] = []  # raw text length after each piece
        self.counts: list[int] = []  # tokens streamed after each piece, cumulative
        self.units: list[int] = []  # raw text length after each unit received
        self.ended = False

    def add(self, piece: _Piece) -> None:
        self.text += piece.text
        self.ends.append(len(self.text))
        self.counts.append((self.counts[-1] if self.counts else 0) + piece.tokens)

    def mark(self, unit: _Unit) -> None:
        self.units.append(unit.end)

    def _window(self, unit: _Unit) -> tuple[int, int | None]:
        """(index of the first piece after the unit's end, where its look-ahead ends in the raw text: the end
        of the unit that completes its ``tokens``; None while the stream has not got that far)."""
        first = bisect.bisect_right(self.ends, unit.end)
        before = self.counts[first - 1] if first else 0
        reach = bisect.bisect_left(self.counts, before + self.tokens, lo=first)
        if reach >= len(self.counts):
            return first, None
        at = bisect.bisect_left(self.units, self.ends[reach])
        return first, self.units[at] if at < len(self.units) else None

    def ready(self, unit: _Unit) -> bool:
        if self.tokens == 0 or unit.last or self.ended or not unit.text.strip():
            return True
        return self._window(unit)[1] is not None

    def after(self, unit: _Unit) -> tuple[int, str]:
        """The look-ahead of ``unit``: (its tokens, its text); (0, '') when look-ahead is off or nothing follows.
        A stream that ended first gives what it had."""
        if not self.tokens:
            return 0, ""
        first, stop = self._window(unit)
        stop = len(self.text) if stop is None else stop
        if stop <= unit.end or first >= len(self.ends):
            return 0, ""
        last = min(bisect.bisect_left(self.ends, stop), len(self.ends) - 1)
        return self.counts[last] - (self.counts[first - 1] if first else 0), self.text[unit.end : stop]


def _pending_tokens(pending: list[_Unit], queue: asyncio.Queue[object]) -> int:
    """Tokens of the units received but never judged, and of those still queued: wasted with the attempt."""
    return sum(unit.tokens for unit in pending) + _drain_tokens(queue)


def _drain_tokens(queue: asyncio.Queue[object]) -> int:
    tokens = 0
    while not queue.empty():
        item = queue.get_nowait()
        if isinstance(item, _Unit):
            tokens += item.tokens
    return tokens


class _RepeatFilter:
    """Drops the start of a continuation while it reproduces the accepted text (servers without assistant
    prefill often restart their answer), then joins what is new to the prefix with proper spacing."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.target = " ".join(prefix.split())
        self.seen = ""
        self.active = True
        self.first = True

    def filter(self, text: str) -> str:
        if self.active:
            candidate = " ".join((self.seen + text).split())
            if self.target.startswith(candidate):
                self.seen += text
                return ""  # still repeating the prefix
            self.active = False
            if candidate.startswith(self.target):
                text = _tail_after(self.seen + text, self.target)
        if self.first and text.strip():
            self.first = False
            text = _join(self.prefix, text)
        return text


def _tail_after(text: str, normalized_prefix: str) -> str:
    """``text`` without its leading part that equals ``normalized_prefix`` up to whitespace."""
    consumed = 0
    for index, char in enumerate(text):
        if not char.isspace():
            consumed += 1
        if consumed == len(normalized_prefix.replace(" ", "")):
            return text[index + 1 :]
    return ""


def _join(prefix: str, text: str) -> str:
    """A continuation's first piece, spaced to follow ``prefix`` (one space between sentences, no more)."""
    if prefix[-1:].isspace():
        return text.lstrip(" ")
    return text if not text or text[0].isspace() else " " + text
