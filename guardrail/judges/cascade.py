"""The cascade: cheap judges settle the clear cases, self-evaluation decides the rest.

Per rule: a pattern match settles a violation; an embedding score at or below ``judge.cascade_low`` settles
a pass and one at or above ``judge.cascade_high`` a violation; the rules still open go to self-evaluation in
one question. Thresholds come from the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from guardrail.judges.base import Judge, Prompt, combine
from guardrail.judges.embedding import EmbeddingJudge
from guardrail.judges.pattern import PatternJudge
from guardrail.judges.verdict import Cost, Verdict
from guardrail.policy import Policy, Rule

__all__ = ["CascadeJudge"]

FinalJudge = Callable[[Sequence[Rule]], Judge]


class CascadeJudge(Judge):
    """Pattern, then embedding, then a final judge (self-evaluation) for the rules still undecided."""

    name = "cascade"

    def __init__(
        self,
        policy: Policy,
        rules: Sequence[Rule] | None = None,
        *,
        final: FinalJudge,
        embedding: EmbeddingJudge | None = None,
    ) -> None:
        super().__init__(policy, rules)
        self.pattern = PatternJudge(policy, self.rules)
        self.embedding = embedding
        self.final = final

    def _settle(self, prompt: Prompt, response: str, judged: int) -> tuple[list[Verdict], dict[str, float], list[Rule]]:
        """The cheap stages: their verdicts, the settled per-rule scores, and the rules still open."""
        low, high = self.policy.judge.cascade_low, self.policy.judge.cascade_high
        stages: list[Verdict] = []
        settled: dict[str, float] = {}
        if self.pattern.rules:
            verdict = self.pattern.judge(prompt, response)
            stages.append(verdict)
            settled.update(dict.fromkeys(verdict.rules, 1.0))
        if self.embedding is not None:
            verdict = self.embedding.judge(prompt, response, judged=judged)
            stages.append(verdict)
            for rule_id, score in verdict.scores.items():
                if rule_id not in settled and (score <= low or score >= high):
                    settled[rule_id] = score
        open_rules = [rule for rule in self.rules if rule.id not in settled]
        return stages, settled, open_rules

    def _finish(self, stages: list[Verdict], settled: dict[str, float], decided: Verdict | None) -> Verdict:
        cheap = self.verdict_from_scores(settled, cost=sum((v.cost for v in stages), Cost()))
        cheap = Verdict(**{**cheap.__dict__, "spans": tuple(s for v in stages for s in v.spans)})
        parts = [cheap] if decided is None else [cheap, decided]
        return combine(parts, self.name)

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        stages, settled, open_rules = self._settle(prompt, response, judged)
        decided = (
            self.final(open_rules).judge(prompt, response, partial=partial, explain=explain) if open_rules else None
        )
        return self._finish(stages, settled, decided)

    async def _ajudge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        stages, settled, open_rules = self._settle(prompt, response, judged)
        decided = None
        if open_rules:
            decided = await self.final(open_rules).ajudge(prompt, response, partial=partial, explain=explain)
        return self._finish(stages, settled, decided)
