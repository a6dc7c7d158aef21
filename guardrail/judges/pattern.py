"""The pattern judge: a rule's regular expressions and keywords, matched exactly. Cheap and certain."""

from __future__ import annotations

import re
from collections.abc import Sequence

from guardrail.judges.base import Judge, Prompt
from guardrail.judges.verdict import Verdict
from guardrail.policy import Policy, Rule

__all__ = ["PatternJudge"]


class PatternJudge(Judge):
    """Fires a rule when one of its ``patterns`` (regex) or ``keywords`` (whole words, any case) occurs.

    The verdict's ``spans`` locate the matches (for ``redact``); the matched text itself is never copied into
    the rationale, since it may be the very personal data the rule protects.
    """

    name = "pattern"

    def __init__(self, policy: Policy, rules: Sequence[Rule] | None = None) -> None:
        super().__init__(policy, rules)
        self.rules = [rule for rule in self.rules if rule.patterns or rule.keywords]
        self._compiled: list[tuple[Rule, list[re.Pattern[str]]]] = []
        for rule in self.rules:
            compiled = [re.compile(pattern) for pattern in rule.patterns]
            compiled += [re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE) for word in rule.keywords]
            self._compiled.append((rule, compiled))

    def spans(self, response: str) -> list[tuple[int, int, str]]:
        """(start, end, rule id) of every match, in order."""
        found = [
            (match.start(), match.end(), rule.id)
            for rule, patterns in self._compiled
            for pattern in patterns
            for match in pattern.finditer(response)
            if match.end() > match.start()
        ]
        return sorted(found)

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool) -> Verdict:
        spans = self.spans(response)
        scores = {rule.id: 0.0 for rule in self.rules}
        for _, _, rule_id in spans:
            scores[rule_id] = 1.0
        counts: dict[str, int] = {}
        for _, _, rule_id in spans:
            counts[rule_id] = counts.get(rule_id, 0) + 1
        rationale = ", ".join(f"{rule_id}: {n} match{'es' if n > 1 else ''}" for rule_id, n in counts.items())
        return self.verdict_from_scores(scores, rationale=rationale, spans=tuple(spans))
