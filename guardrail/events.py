"""Typed events a guarded generation emits: verified text, verdicts, rewinds, fallbacks, the final result.

Every event has a ``type`` and ``to_dict()`` (JSON-ready; used by the CLI's ``--json``, the audit and the
adapters' tracing). Rejected text never appears in an event: only its SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from guardrail.judges.verdict import Cost, Verdict
from guardrail.tool_calls import ToolCall

__all__ = [
    "Event",
    "FallbackEvent",
    "FinalEvent",
    "GuardResult",
    "RewindEvent",
    "TerminatedEvent",
    "TextEvent",
    "VerdictEvent",
    "text_hash",
]


def text_hash(text: str) -> str:
    """SHA-256 of a text (how rejected drafts are recorded by default)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TextEvent:
    """Verified text released to the user."""

    text: str
    type: Literal["text"] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "text": self.text}


@dataclass(frozen=True)
class VerdictEvent:
    """A judge's verdict on the response so far (``unit`` counts sentences or token chunks from 0)."""

    verdict: Verdict
    unit: int
    scope: Literal["input", "output", "tool_arguments"] = "output"
    partial: bool = True
    lookahead: int = 0  # tokens of the answer's continuation judged with the unit (rewind.lookahead_tokens)
    type: Literal["verdict"] = "verdict"

    def to_dict(self) -> dict[str, Any]:
        extra = {"lookahead": self.lookahead} if self.lookahead else {}
        return {"type": self.type, "unit": self.unit, "scope": self.scope, "partial": self.partial, **extra,
                **self.verdict.to_dict()}  # fmt: skip


@dataclass(frozen=True)
class RewindEvent:
    """Rejected text was thrown away and generation went back to an accepted point."""

    rules: tuple[str, ...]
    score: float
    unit: int
    back_to_unit: int
    attempt: int
    rejected_sha256: str
    rejected_chars: int
    rejected_tokens: int
    reason: Literal["violation", "backend_error"] = "violation"
    strategy: str = "sentence"
    cost: Cost = field(default_factory=Cost)
    rejected_text: str | None = None
    prefix_text: str | None = None  # the accepted text the rejected part followed (only with rejected_text)
    type: Literal["rewind"] = "rewind"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in {"cost", "rejected_text", "prefix_text"}}
        data["rules"] = list(self.rules)
        data["cost"] = self.cost.to_dict()
        if self.rejected_text is not None:
            data["rejected_text"] = self.rejected_text
            data["prefix_text"] = self.prefix_text or ""
        return data


@dataclass(frozen=True)
class FallbackEvent:
    """The action ladder ended: refuse, redact, flag or raise."""

    action: Literal["refuse", "redact", "flag", "raise"]
    rules: tuple[str, ...]
    message: str = ""
    scope: Literal["input", "output", "tool_arguments"] = "output"
    reason: Literal["violation", "deadline"] = "violation"
    type: Literal["fallback"] = "fallback"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "action": self.action, "rules": list(self.rules), "message": self.message,
                "scope": self.scope, "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class TerminatedEvent:
    """A streamed answer was cut short after part of it was released: the ladder ended in a refusal (or the
    deadline passed). ``released_chars`` of verified text went out before it; a UI can collapse or replace
    that partial answer. The closing text (``closing``) follows as a ``TextEvent``."""

    rules: tuple[str, ...]
    released_chars: int
    closing: str
    reason: Literal["violation", "deadline"] = "violation"
    type: Literal["terminated"] = "terminated"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "rules": list(self.rules), "released_chars": self.released_chars,
                "closing": self.closing, "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class GuardResult:
    """The outcome of one guarded generation, with the full trace of verdicts and rewinds."""

    text: str
    strategy: str
    verdicts: tuple[VerdictEvent, ...] = ()
    rewinds: tuple[RewindEvent, ...] = ()
    fallback: FallbackEvent | None = None
    completion_tokens: int = 0
    extra_tokens: int = 0
    judge_cost: Cost = field(default_factory=Cost)
    generation_cost: Cost = field(default_factory=Cost)
    latency_s: float = 0.0
    request_id: str = ""
    usage: Mapping[str, int] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()  # whole calls, arguments judged (guardrail.tool_calls)
    terminated: TerminatedEvent | None = None  # a streamed answer cut short after released text

    @property
    def flagged(self) -> bool:
        return self.fallback is not None and self.fallback.action == "flag"

    @property
    def passed(self) -> bool:
        """True when the text went out without any fallback."""
        return self.fallback is None

    def trace(self) -> list[VerdictEvent | RewindEvent | FallbackEvent]:
        """Verdicts and rewinds in the order they happened, then the fallback if any."""
        ordered: list[VerdictEvent | RewindEvent] = sorted(
            [*self.verdicts, *self.rewinds], key=lambda event: (event.unit, event.type == "rewind")
        )
        return [*ordered, self.fallback] if self.fallback else list(ordered)

    def summary(self) -> dict[str, Any]:
        """A compact summary (for response metadata and API extension fields)."""
        return {
            "strategy": self.strategy,
            "verdicts": len(self.verdicts),
            "violations": sum(1 for v in self.verdicts if v.verdict.violated),
            "rewinds": len(self.rewinds),
            "rules": sorted({rule for r in self.rewinds for rule in r.rules}),
            "fallback": self.fallback.action if self.fallback else None,
            "tool_calls": len(self.tool_calls),
            "terminated": self.terminated is not None,
            "extra_tokens": self.extra_tokens,
            "latency_s": round(self.latency_s, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            **self.summary(),
            "request_id": self.request_id,
            "completion_tokens": self.completion_tokens,
            "judge_cost": self.judge_cost.to_dict(),
            "generation_cost": self.generation_cost.to_dict(),
            "trace": [e.to_dict() for e in self.trace()],
        }


@dataclass(frozen=True)
class FinalEvent:
    """The last event of a generation."""

    result: GuardResult
    type: Literal["final"] = "final"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.result.to_dict()}


Event = TextEvent | VerdictEvent | RewindEvent | FallbackEvent | TerminatedEvent | FinalEvent
