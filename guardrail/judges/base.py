"""The judge interface: every judge turns (prompt, response) into a ``Verdict`` over a set of rules."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from guardrail.judges.verdict import Cost, Verdict
from guardrail.policy import Policy, Rule

__all__ = ["Judge", "Prompt", "combine"]

#: What a response answers: the user's text, or the chat messages that led to it.
Prompt = str | Sequence[Mapping[str, Any]]


class Judge(ABC):
    """Judges responses against some of a policy's rules.

    Subclasses implement ``_judge``; ``judge`` times it, ``ajudge`` runs it without blocking the event loop,
    ``judge_many`` may be overridden to batch. A judge holds no per-request state: it is safe to share.

    Example::

        judge = PatternJudge(load_policy("no_pii"))
        verdict = judge.judge("How do I reach Ann?", "Mail her at ann@example.com")
        assert verdict.violated and verdict.rules == ("pii-email",)
    """

    name = "judge"

    def __init__(self, policy: Policy, rules: Sequence[Rule] | None = None) -> None:
        self.policy = policy
        self.rules: list[Rule] = list(rules) if rules is not None else policy.checked_rules("output")

    @abstractmethod
    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        """Judge one response; ``explain`` asks for per-rule attribution when a violation is found; ``judged``
        as in ``judge`` (a judge that reads every part of the response the same way ignores it)."""

    async def _ajudge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        """Async ``_judge``; by default the sync one in a worker thread (right for CPU-bound judges)."""
        return await asyncio.to_thread(self._judge, prompt, response, partial=partial, explain=explain, judged=judged)

    def judge(
        self, prompt: Prompt, response: str, *, partial: bool = False, explain: bool = False, judged: int = 0
    ) -> Verdict:
        """Judge ``response`` (an answer to ``prompt``; ``partial`` when it is unfinished). ``judged``: the
        response's first ``judged`` characters were judged before, as partial answers of the same request (a
        stream's earlier units) and accepted, so a judge that also scores a complete answer as it stood at
        earlier sentence ends (the embedding judge, against text appended to an answer) scores only those
        after it: what a guard accepted is not judged again (0: nothing was)."""
        if not self.rules:
            return Verdict(score=0.0, violated=False, judge=self.name)
        start = time.perf_counter()
        verdict = self._judge(prompt, response, partial=partial, explain=explain, judged=judged)
        return _timed(verdict, start)

    async def ajudge(
        self, prompt: Prompt, response: str, *, partial: bool = False, explain: bool = False, judged: int = 0
    ) -> Verdict:
        """``judge`` for asyncio; never blocks the event loop."""
        if not self.rules:
            return Verdict(score=0.0, violated=False, judge=self.name)
        start = time.perf_counter()
        verdict = await self._ajudge(prompt, response, partial=partial, explain=explain, judged=judged)
        return _timed(verdict, start)

    def judge_many(self, pairs: Sequence[tuple[str, str]], *, explain: bool = False) -> list[Verdict]:
        """Judge many complete (prompt, response) pairs; batching judges override this."""
        return [self.judge(prompt, response, explain=explain) for prompt, response in pairs]

    def threshold(self, rule: Rule) -> float:
        return self.policy.threshold_for(rule)

    def verdict_from_scores(self, scores: dict[str, float], **extra: object) -> Verdict:
        """A verdict from per-rule scores: rules at or above their threshold fire."""
        fired = tuple(rule.id for rule in self.rules if rule.id in scores and scores[rule.id] >= self.threshold(rule))
        score = max(scores.values(), default=0.0)
        return Verdict(score=score, violated=bool(fired), rules=fired, scores=scores, judge=self.name, **extra)  # type: ignore[arg-type]


def _timed(verdict: Verdict, start: float) -> Verdict:
    elapsed = (time.perf_counter() - start) * 1000
    return verdict.with_cost(verdict.cost + Cost(ms=elapsed - verdict.cost.ms))


def combine(verdicts: Sequence[Verdict], judge: str) -> Verdict:
    """Several judges' verdicts on the same response (over disjoint rules) as one."""
    if not verdicts:
        return Verdict(score=0.0, violated=False, judge=judge)
    cost = Cost()
    scores: dict[str, float] = {}
    for verdict in verdicts:
        cost = cost + verdict.cost
        scores.update(verdict.scores)
    rationale = "; ".join(v.rationale for v in verdicts if v.rationale)
    return Verdict(
        score=max(v.score for v in verdicts),
        violated=any(v.violated for v in verdicts),
        rules=tuple(rule for v in verdicts for rule in v.rules),
        scores=scores,
        judge=judge,
        undecided=any(v.undecided for v in verdicts),
        rationale=rationale,
        cost=cost,
        steering=any(v.steering for v in verdicts),
        spans=tuple(sorted(span for v in verdicts for span in v.spans)),
        covered=next((v.covered for v in verdicts if v.covered is not None), None),
    )
