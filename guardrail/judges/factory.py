"""``build_judge``: the judge a policy asks for, rule by rule, as one ``PolicyJudge``.

Each checked rule goes to the judge it names (``rules[].judge``, else ``judge.default``): ``self``
(self-evaluation with the generating model's scorer), ``embedding``, ``pattern``, ``cascade``, ``stream`` (a
head on the local generating model's own hidden states), ``grader`` (the independent grader, for grading what
another judge guarded), or a judge declared under ``judges:`` (e.g. a separate model behind an
OpenAI-compatible endpoint).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from guardrail.errors import JudgeError
from guardrail.judges.base import Judge, Prompt, combine
from guardrail.judges.cascade import CascadeJudge
from guardrail.judges.embedding import EmbeddingJudge, embeddable
from guardrail.judges.grader import GraderJudge
from guardrail.judges.pattern import PatternJudge
from guardrail.judges.scorers import LogprobScorer
from guardrail.judges.self_eval import OptionScorer, SelfEvalJudge
from guardrail.judges.stream_head import StreamHeadJudge
from guardrail.judges.verdict import Verdict
from guardrail.openai_client import OpenAIClient
from guardrail.policy import Policy, Rule
from guardrail.policy.schema import Scope

__all__ = ["JUDGE_KINDS", "PolicyJudge", "build_judge", "needs_scorer"]

JUDGE_KINDS = ("self", "embedding", "pattern", "cascade", "stream", "grader")


class PolicyJudge(Judge):
    """All of a policy's checked rules, each by its own judge; verdicts combined into one."""

    name = "policy"

    def __init__(self, policy: Policy, parts: Sequence[Judge]) -> None:
        super().__init__(policy, [rule for part in parts for rule in part.rules])
        self.parts = list(parts)
        self.name = "+".join(dict.fromkeys(part.name for part in self.parts)) or "policy"

    def __repr__(self) -> str:
        rules = ", ".join(f"{rule.id}: {part.name}" for part in self.parts for rule in part.rules)
        return f"PolicyJudge({rules})"

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        verdicts = [p.judge(prompt, response, partial=partial, explain=explain, judged=judged) for p in self.parts]
        return combine(verdicts, self.name)

    async def _ajudge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        verdicts = await asyncio.gather(
            *(p.ajudge(prompt, response, partial=partial, explain=explain, judged=judged) for p in self.parts)
        )
        return combine(list(verdicts), self.name)

    def judge_many(self, pairs: Sequence[tuple[str, str]], *, explain: bool = False) -> list[Verdict]:
        per_part = [part.judge_many(pairs, explain=explain) for part in self.parts]
        return [combine([verdicts[i] for verdicts in per_part], self.name) for i in range(len(pairs))]


def build_judge(
    policy: Policy,
    *,
    scorer: OptionScorer | None = None,
    override: str | None = None,
    scope: Scope = "output",
) -> PolicyJudge:
    """The judge for ``policy``'s rules in ``scope``; ``override`` forces one judge kind for every rule.

    ``scorer`` is the generating model's self-evaluation scorer (``LocalScorer``, ``LogprobScorer`` or
    ``TextScorer``); rules judged by ``self`` (or by a cascade) need it.

    Example::

        judge = build_judge(load_policy("no_pii"), scorer=LocalScorer(model, tokenizer))
        verdict = judge.judge("Who is she?", "Her e-mail is ann@example.com", explain=True)
    """
    if override is not None and override not in JUDGE_KINDS:
        raise JudgeError(f"unknown judge {override!r}; choose one of {', '.join(JUDGE_KINDS)}")
    rules = policy.checked_rules(scope)
    groups: dict[str, list[Rule]] = {}
    for rule in rules:
        name = override or policy.judge_for(rule)
        if name == "pattern" and not (rule.patterns or rule.keywords):
            if override:
                continue  # `--judge pattern` checks only the rules that have patterns
            raise JudgeError(f"rule {rule.id!r} uses the pattern judge but has no 'patterns' or 'keywords'")
        groups.setdefault(name, []).append(rule)

    def self_judge(group: Sequence[Rule]) -> Judge:
        if scorer is None:
            raise JudgeError(
                "self-evaluation needs the generating model: pass a model (e.g. --model default for the "
                "embedded model, or an OpenAI-compatible base URL), or choose another judge"
            )
        return SelfEvalJudge(policy, scorer, group)

    parts: list[Judge] = []
    for name, group in groups.items():
        if name == "self":
            parts.append(self_judge(group))
        elif name == "pattern":
            parts.append(PatternJudge(policy, group))
        elif name == "embedding":
            parts.append(EmbeddingJudge.shared(policy, group))
        elif name == "stream":
            parts.append(StreamHeadJudge.over(policy, scorer, group))
        elif name == "grader":
            parts.append(GraderJudge.shared(policy, group))
        elif name == "cascade":
            usable = [rule for rule in group if embeddable(rule)]
            embedding = EmbeddingJudge.shared(policy, usable) if usable else None
            parts.append(CascadeJudge(policy, group, final=self_judge, embedding=embedding))
        else:
            parts.append(_named(policy, name, group))
    return PolicyJudge(policy, parts)


def needs_scorer(policy: Policy, override: str | None = None, scope: Scope = "output") -> bool:
    """Whether judging ``policy`` needs the generating model (self-evaluation, alone or in a cascade, or the
    stream head on its hidden states)."""
    rules = policy.checked_rules(scope)
    return any((override or policy.judge_for(rule)) in {"self", "cascade", "stream"} for rule in rules)


def _named(policy: Policy, name: str, group: Sequence[Rule]) -> Judge:
    spec = policy.judges[name]
    if spec.kind == "openai":
        assert spec.base_url is not None  # the schema requires it
        client = OpenAIClient(spec.base_url, model=spec.model, api_key_env=spec.api_key_env or "OPENAI_API_KEY")
        judge: Judge = SelfEvalJudge(policy, LogprobScorer(client), group)
    elif spec.kind == "embedding":
        judge = EmbeddingJudge(policy, group, head=Path(spec.head) if spec.head else None)
    elif spec.kind == "pattern":
        judge = PatternJudge(policy, group)
    else:
        raise JudgeError(
            f"judge {name!r} of kind {spec.kind!r} needs the generating model; name it 'self' or 'cascade' instead"
        )
    judge.name = name
    return judge
