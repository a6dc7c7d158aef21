"""One guarded generation's input and its running state. A request's state never lives on a shared object."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from guardrail.actions import Budget
from guardrail.backends.base import GenerationParams, Message
from guardrail.events import RewindEvent, VerdictEvent, text_hash
from guardrail.judges.verdict import Cost, Verdict
from guardrail.tool_calls import ToolCall

__all__ = ["Request", "RunState"]


@dataclass(frozen=True)
class Request:
    """What to generate: the chat so far, decoding settings, and whether text is released as it is verified."""

    messages: Sequence[Message]
    params: GenerationParams
    streaming: bool
    request_id: str
    structured: bool = False  # the answer is the tool calls' arguments (structured output): output rules judge them


@dataclass
class RunState:
    """Counters a strategy keeps while it runs, read by the Guard for the final result."""

    budget: Budget
    completion_tokens: int = 0
    judge_cost: Cost = field(default_factory=Cost)
    generation_cost: Cost = field(default_factory=Cost)  # model forwards for generation (local backends)
    verdicts: list[VerdictEvent] = field(default_factory=list)
    rewinds: list[RewindEvent] = field(default_factory=list)
    units: int = 0
    usage: dict[str, int] = field(default_factory=dict)  # summed over every attempt, as the backend reported it
    tool_pieces: list[Mapping[str, Any]] = field(default_factory=list)  # streamed pieces of the current attempt
    tool_calls: list[ToolCall] = field(default_factory=list)  # the accepted attempt's calls, arguments judged

    def add_usage(self, usage: Any) -> None:
        for key, value in (usage or {}).items():
            self.usage[key] = self.usage.get(key, 0) + int(value)

    def next_unit(self) -> int:
        self.units += 1
        return self.units - 1

    def verdict(
        self,
        verdict: Verdict,
        *,
        partial: bool,
        scope: Literal["output", "input", "tool_arguments"] = "output",
        lookahead: int = 0,
    ) -> VerdictEvent:
        """Record a judge's verdict on the next unit (its cost counted); the event to yield."""
        self.judge_cost = self.judge_cost + verdict.cost
        event = VerdictEvent(verdict, self.next_unit(), scope=scope, partial=partial, lookahead=lookahead)
        self.verdicts.append(event)
        return event

    def rewound(
        self,
        *,
        rules: tuple[str, ...],
        score: float,
        unit: int,
        back_to: int,
        attempt: int,
        rejected: str,
        tokens: int,
        strategy: str,
        keep_text: bool,
        prefix: str = "",
        reason: Literal["violation", "backend_error"] = "violation",
        cost: Cost | None = None,
    ) -> RewindEvent:
        """Record a rewind (the rejected text as a SHA-256, as text only when the policy's audit keeps it)."""
        event = RewindEvent(
            rules=rules,
            score=score,
            unit=unit,
            back_to_unit=back_to,
            attempt=attempt,
            rejected_sha256=text_hash(rejected),
            rejected_chars=len(rejected),
            rejected_tokens=tokens,
            reason=reason,
            strategy=strategy,
            cost=cost if cost is not None else Cost(),
            rejected_text=rejected if keep_text else None,
            prefix_text=prefix if keep_text else None,
        )
        self.rewinds.append(event)
        return event
