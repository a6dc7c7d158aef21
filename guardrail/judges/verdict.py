"""What a judge returns: a ``Verdict`` (score, fired rules, rationale) and its ``Cost``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Cost", "Verdict"]


@dataclass(frozen=True)
class Cost:
    """What a verdict cost: model forward passes and tokens (local), API calls and tokens (remote), time."""

    forward_passes: int = 0
    forward_tokens: int = 0
    api_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ms: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.forward_passes + other.forward_passes,
            self.forward_tokens + other.forward_tokens,
            self.api_calls + other.api_calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.ms + other.ms,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Verdict:
    """One judgment of one (possibly partial) response against a set of rules.

    ``score`` is the probability that the policy is violated (the highest over the rules judged);
    ``rules`` are the ids of the rules that fired; ``scores`` holds per-rule scores where they are known;
    ``covered`` is the characters ``[start, end)`` of the judged response (after steering removal) that the
    judge read, where it reads windows (None: the judge read all of it).
    """

    score: float
    violated: bool
    rules: tuple[str, ...] = ()
    scores: Mapping[str, float] = field(default_factory=dict)
    judge: str = ""
    undecided: bool = False
    rationale: str = ""
    cost: Cost = field(default_factory=Cost)
    steering: bool = False
    spans: tuple[tuple[int, int, str], ...] = ()
    covered: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0) or math.isnan(self.score):
            raise ValueError(f"a verdict's score must be in [0, 1], got {self.score}")

    def with_cost(self, cost: Cost) -> Verdict:
        return replace(self, cost=cost)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (used by the CLI, events and the audit)."""
        data: dict[str, Any] = {
            "score": round(self.score, 4),
            "violated": self.violated,
            "rules": list(self.rules),
            "judge": self.judge,
        }
        if self.scores:
            data["scores"] = {k: round(v, 4) for k, v in self.scores.items()}
        if self.undecided:
            data["undecided"] = True
        if self.steering:
            data["steering"] = True
        if self.rationale:
            data["rationale"] = self.rationale
        if self.spans:
            data["spans"] = [list(span) for span in self.spans]
        if self.covered is not None:
            data["covered"] = list(self.covered)
        data["cost"] = self.cost.to_dict()
        return data
