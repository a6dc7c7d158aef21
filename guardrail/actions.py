"""The policy's action ladder, applied to a violation: rewind again, or the terminal step.

Shared by the sentence-level and token-level strategies, so both rewind, refuse, redact, flag and raise by
the same rules and the same budget (rewinds, extra tokens, added latency).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Literal

from guardrail.judges.verdict import Verdict
from guardrail.policy import Policy, Rule
from guardrail.policy.schema import DEFAULT_REFUSAL

__all__ = ["ACTS_ON_OWN_TEXT", "Budget", "Decision", "decide", "give_up", "lookahead_verdict", "redact"]

_SEVERITY = {"critical": 0, "high": 1, "medium": 2, "low": 3}
ActionName = Literal["rewind", "refuse", "redact", "flag", "raise"]
#: ladder steps that act on a unit's own text: a unit whose look-ahead violates goes by its verdict alone there
ACTS_ON_OWN_TEXT = frozenset({"redact", "flag"})


@dataclass(frozen=True)
class Decision:
    """What to do about one violation. ``message`` is the refusal / error text or the redaction placeholder."""

    action: ActionName
    rules: tuple[str, ...]
    message: str = ""
    reason: str = ""


@dataclass
class Budget:
    """One request's rewind budget (lives in the request, never on a shared object)."""

    policy: Policy
    rewinds: int = 0
    extra_tokens: int = 0
    episode_failures: int = 0
    #: seconds the guard added to the answer: time spent on drafts it threw away (generating and judging them)
    added_s: float = 0.0
    #: when the work now under way began (the request, the last accepted unit, or the last rejection)
    since: float = field(default_factory=time.monotonic, repr=False)

    def spend(self, tokens: int) -> None:
        """A draft was rejected: its tokens, and the time since the last accepted unit, were added by the guard."""
        now = time.monotonic()
        self.added_s += now - self.since
        self.since = now
        self.rewinds += 1
        self.episode_failures += 1
        self.extra_tokens += tokens

    def progress(self) -> None:
        """A new unit was accepted beyond the last failure: the next violation starts a fresh episode."""
        self.episode_failures = 0
        self.since = time.monotonic()

    def exhausted(self) -> str:
        """Why no further rewind is allowed ('' when one is)."""
        settings = self.policy.rewind
        if settings.mode == "off":
            return "rewinding is off (rewind.mode: off)"
        if self.rewinds >= settings.max_rewinds:
            return f"rewind budget spent ({settings.max_rewinds} rewinds)"
        if self.extra_tokens >= settings.max_extra_tokens:
            return f"extra-token budget spent ({self.extra_tokens} >= {settings.max_extra_tokens})"
        if self.added_s >= settings.max_added_latency_s:
            return f"latency budget spent ({self.added_s:.1f}s added >= {settings.max_added_latency_s:g}s)"
        return ""


def _governing_rule(policy: Policy, verdict: Verdict) -> Rule | None:
    rules = [rule for rule in policy.rules if rule.id in verdict.rules]
    return min(rules, key=lambda rule: _SEVERITY[rule.severity]) if rules else None


def decide(policy: Policy, verdict: Verdict, budget: Budget) -> Decision:
    """The next step of the ladder that governs ``verdict`` (the most severe fired rule's, else the policy's)."""
    rule = _governing_rule(policy, verdict)
    ladder = policy.ladder_for(rule)
    rules = verdict.rules or ((rule.id,) if rule else ())
    allowed = sum(step.max_attempts for step in ladder if step.action == "rewind")
    if verdict.undecided and policy.judge.on_undecided == "fallback":
        allowed = 0
    why_not = budget.exhausted()
    if budget.episode_failures < allowed and not why_not:
        return Decision("rewind", rules)
    return give_up(policy, verdict, why_not or f"{allowed} rewinds did not produce an acceptable answer")


def give_up(policy: Policy, verdict: Verdict, reason: str) -> Decision:
    """The last step of the ladder that governs ``verdict``, taken now (no further rewind), for ``reason``."""
    rule = _governing_rule(policy, verdict)
    ladder = policy.ladder_for(rule)
    rules = verdict.rules or ((rule.id,) if rule else ())
    terminal = ladder[-1]
    if terminal.action in {"refuse", "raise"}:
        return Decision(terminal.action, rules, terminal.message, reason)
    if terminal.action == "redact":
        return Decision("redact", rules, terminal.replacement, reason)
    if terminal.action == "flag":
        return Decision("flag", rules, "", reason)
    return Decision("refuse", rules, DEFAULT_REFUSAL, reason)  # a ladder of rewinds only ends in a refusal


def redact(text: str, verdict: Verdict, replacement: str, offset: int = 0) -> str:
    """``text`` with the verdict's spans (shifted by ``offset``) replaced, or all of it when there are none."""
    spans = [(start - offset, end - offset) for start, end, _ in verdict.spans if end - offset > 0]
    spans = [(max(0, start), min(len(text), end)) for start, end in spans if start - 0 < len(text)]
    if not spans:
        trailing = text[len(text.rstrip()) :]
        return replacement + trailing
    out, cursor = [], 0
    for start, end in sorted(spans):
        if start < cursor:
            start = cursor
        if start >= end:
            continue
        out.append(text[cursor:start])
        out.append(replacement)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def lookahead_verdict(
    policy: Policy, budget: Budget, alone: Verdict | None, trajectory: Verdict, tokens: int
) -> Verdict | None:
    """The verdict on a unit judged alone and with the ``tokens`` of continuation after it (the look-ahead):
    the trajectory's when it violates and the ladder's next step is not one that acts on the unit's own text
    (its rationale then says so), else the unit's own. None: ``alone`` is needed and was not given."""
    if trajectory.violated and decide(policy, trajectory, budget).action not in ACTS_ON_OWN_TEXT:
        return replace(trajectory, rationale=f"its continuation ({tokens} tokens) violates: {trajectory.rationale}")
    return alone
