"""One guarded generation's input and its running state. A request's state never lives on a shared object."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardrail.actions import Budget
from guardrail.backends.base import GenerationParams, Message
from guardrail.events import RewindEvent, VerdictEvent
from guardrail.judges.verdict import Cost
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
