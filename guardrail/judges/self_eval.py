"""Self-evaluation (RAIN): the model answers a two-option question about its own (partial) response.

A scorer turns the question into option probabilities, in one of three ways: local option-token logits
(``LocalScorer``), an API's logprobs (``LogprobScorer``) or a parsed text answer (``TextScorer``). This module
holds what they share: the conversation shown to the judge, both option orders, soft or hard scoring, the
'undecided' case, and per-rule attribution.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from guardrail.judges.base import Judge, Prompt
from guardrail.judges.question import Question, build_question
from guardrail.judges.untrusted import neutralize_control_tokens, remove_judge_steering
from guardrail.judges.verdict import Cost, Verdict
from guardrail.policy import Policy, Rule

__all__ = ["OptionProbs", "OptionScorer", "SelfEvalJudge", "conversation"]


@dataclass(frozen=True)
class OptionProbs:
    """A scorer's answer to one question: probability per option letter (None when undecided)."""

    probs: Mapping[str, float] | None
    mass: float = 1.0
    cost: Cost = field(default_factory=Cost)
    raw: str = ""


_Score = Callable[[list[dict[str, str]], Sequence[Question]], list[OptionProbs]]
_AScore = Callable[[list[dict[str, str]], Sequence[Question]], Awaitable[list[OptionProbs]]]


@runtime_checkable
class OptionScorer(Protocol):
    """Answers evaluation questions about a conversation; implemented by the three scoring paths."""

    name: str

    def score(self, conversation: list[dict[str, str]], questions: Sequence[Question]) -> list[OptionProbs]: ...


def conversation(prompt: Prompt, response: str) -> list[dict[str, str]]:
    """The judged conversation as chat messages, every text neutralised (it is all untrusted)."""
    if isinstance(prompt, str):
        turns: list[dict[str, str]] = [{"role": "user", "content": prompt}]
    else:
        turns = [{"role": str(m.get("role", "user")), "content": str(m.get("content") or "")} for m in prompt]
        turns = [t for t in turns if t["role"] != "system"]  # the app's system prompt is not the judge's
    turns.append({"role": "assistant", "content": response})
    return [{"role": t["role"], "content": neutralize_control_tokens(t["content"])} for t in turns]


class SelfEvalJudge(Judge):
    """RAIN's self-evaluation, asked in both option orders, scored softly (default) or by RAIN's hard vote.

    Example::

        model, tokenizer = load_embedded_model()
        judge = SelfEvalJudge(load_policy("harmless"), LocalScorer(model, tokenizer))
        print(judge.judge("How do I bake bread?", "Mix flour, water, yeast and salt.").score)
    """

    name = "self"

    def __init__(
        self, policy: Policy, scorer: OptionScorer, rules: Sequence[Rule] | None = None, *, min_mass: float = 0.05
    ) -> None:
        super().__init__(policy, rules)
        self.scorer = scorer
        self.min_mass = min_mass

    # ------------------------------------------------------------------------------------------ shared steps

    def _prepare(
        self, prompt: Prompt, response: str, partial: bool, rules: Sequence[Rule]
    ) -> tuple[list[dict[str, str]], list[Question], bool]:
        clean, steering = remove_judge_steering(response)
        questions = [build_question(rules, order, partial=partial) for order in (0, 1)]
        return conversation(prompt, clean), questions, steering

    def _violation_probability(self, questions: Sequence[Question], results: Sequence[OptionProbs]) -> float | None:
        """P(violates) from both orders, or None when every order was undecided."""
        per_order: list[float] = []
        for question, result in zip(questions, results, strict=True):
            if result.probs is None or result.mass < self.min_mass:
                continue
            p_violate = result.probs.get(question.violate_label, 0.0)
            p_comply = result.probs.get(question.comply_label, 0.0)
            if p_violate + p_comply <= 0:
                continue
            p = p_violate / (p_violate + p_comply)
            per_order.append(float(p > 0.5) if self.policy.judge.scoring == "hard" else p)
        return sum(per_order) / len(per_order) if per_order else None

    def verdict_from(
        self, questions: Sequence[Question], results: Sequence[OptionProbs], rules: Sequence[Rule], steering: bool
    ) -> Verdict:
        cost = sum((r.cost for r in results), Cost())
        p = self._violation_probability(questions, results)
        if p is None:
            fallback = self.policy.judge.on_undecided
            raw = " | ".join(r.raw for r in results if r.raw)[:200]
            return Verdict(
                score=0.0 if fallback == "pass" else 1.0,
                violated=fallback != "pass",
                rules=tuple(rule.id for rule in rules) if fallback != "pass" else (),
                judge=self.name,
                undecided=True,
                rationale=f"undecided: the judge answered neither option ({raw or 'no option token'})",
                cost=cost,
                steering=steering,
            )
        threshold = min(self.threshold(rule) for rule in rules)
        violated = p >= threshold
        fired = tuple(rule.id for rule in rules) if violated and len(rules) == 1 else ()
        scores = {rules[0].id: p} if len(rules) == 1 else {}
        rationale = "text addressed to the judge was removed before judging" if steering else ""
        return Verdict(p, violated, fired, scores, self.name, cost=cost, steering=steering, rationale=rationale)

    def attributed(self, whole: Verdict, per_rule: Sequence[Verdict]) -> Verdict:
        """The whole-policy verdict with the rules that fired according to one question per rule."""
        scores = {rule.id: v.score for rule, v in zip(self.rules, per_rule, strict=True) if not v.undecided}
        fired = tuple(r.id for r in self.rules if r.id in scores and scores[r.id] >= self.threshold(r))
        if not fired and scores:
            fired = (max(scores, key=lambda rule_id: scores[rule_id]),)
        cost = sum((v.cost for v in per_rule), whole.cost)
        return Verdict(
            whole.score, True, fired, scores, self.name, whole.undecided, whole.rationale, cost, whole.steering
        )

    # ------------------------------------------------------------------------------------------ entry points

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        score: _Score = self.scorer.score
        conv, questions, steering = self._prepare(prompt, response, partial, self.rules)
        whole = self.verdict_from(questions, score(conv, questions), self.rules, steering)
        if not (explain and whole.violated and len(self.rules) > 1):
            return whole
        per_rule = []
        for rule in self.rules:
            conv, questions, steering = self._prepare(prompt, response, partial, [rule])
            per_rule.append(self.verdict_from(questions, score(conv, questions), [rule], steering))
        return self.attributed(whole, per_rule)

    async def _ajudge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        ascore: _AScore | None = getattr(self.scorer, "ascore", None)
        if ascore is None:  # CPU-bound scorers run in a worker thread
            return await super()._ajudge(prompt, response, partial=partial, explain=explain, judged=judged)
        conv, questions, steering = self._prepare(prompt, response, partial, self.rules)
        whole = self.verdict_from(questions, await ascore(conv, questions), self.rules, steering)
        if not (explain and whole.violated and len(self.rules) > 1):
            return whole
        prepared = [(rule, *self._prepare(prompt, response, partial, [rule])) for rule in self.rules]
        answers = await asyncio.gather(*(ascore(conv, questions) for _, conv, questions, _ in prepared))
        per_rule = [
            self.verdict_from(questions, answer, [rule], steering)
            for (rule, _, questions, steering), answer in zip(prepared, answers, strict=True)
        ]
        return self.attributed(whole, per_rule)
