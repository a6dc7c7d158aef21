"""The pattern judge: a rule's regular expressions and keywords, matched exactly. Cheap and certain.

Patterns are RE2 (``guardrail.regex``): matching is linear in the text, so no pattern and no input can stall
the guard. A call whose matching still runs past ``MATCH_TIME_LIMIT_S`` (a multi-megabyte answer against many
patterns) is a ``JudgeError``, which the guard treats like any failed judge, never a hang.
"""

from __future__ import annotations

from collections.abc import Sequence

from guardrail.errors import JudgeError
from guardrail.judges.base import Judge, Prompt
from guardrail.judges.verdict import Verdict
from guardrail.policy import Policy, Rule
from guardrail.regex import MATCH_TIME_LIMIT_S, Deadline, LinearPattern, compile_pattern, keyword_pattern

__all__ = ["PatternJudge"]


class PatternJudge(Judge):
    """Fires a rule when one of its ``patterns`` (RE2 regex) or ``keywords`` (whole words, any case) occurs.

    The verdict's ``spans`` locate the matches (for ``redact``); the matched text itself is never copied into
    the rationale, since it may be the very personal data the rule protects.
    """

    name = "pattern"

    def __init__(
        self, policy: Policy, rules: Sequence[Rule] | None = None, *, time_limit_s: float = MATCH_TIME_LIMIT_S
    ) -> None:
        super().__init__(policy, rules)
        self.rules = [rule for rule in self.rules if rule.patterns or rule.keywords]
        self.time_limit_s = time_limit_s
        self._compiled: list[tuple[Rule, list[LinearPattern]]] = []
        for rule in self.rules:
            compiled = [compile_pattern(pattern) for pattern in rule.patterns]
            compiled += [keyword_pattern(word) for word in rule.keywords]
            self._compiled.append((rule, compiled))

    def spans(self, response: str) -> list[tuple[int, int, str]]:
        """(start, end, rule id) of every match, in order."""
        deadline = Deadline(self.time_limit_s)
        found: list[tuple[int, int, str]] = []
        try:
            for rule, patterns in self._compiled:
                for pattern in patterns:
                    found.extend((start, end, rule.id) for start, end in pattern.spans(response))
                    deadline.check()
        except TimeoutError as err:
            raise JudgeError(
                f"the pattern judge gave up on a {len(response):,}-character text: {err}; "
                "split the text or use fewer patterns"
            ) from None
        return sorted(found)

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        spans = self.spans(response)
        scores = {rule.id: 0.0 for rule in self.rules}
        for _, _, rule_id in spans:
            scores[rule_id] = 1.0
        counts: dict[str, int] = {}
        for _, _, rule_id in spans:
            counts[rule_id] = counts.get(rule_id, 0) + 1
        rationale = ", ".join(f"{rule_id}: {n} match{'es' if n > 1 else ''}" for rule_id, n in counts.items())
        return self.verdict_from_scores(scores, rationale=rationale, spans=tuple(spans))
