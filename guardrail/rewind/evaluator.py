"""Judging partial responses during token-level decoding, as cheaply as the judge allows.

Self-evaluation by the generating model itself runs on the decoding KV cache: the evaluation suffix is
appended to each branch's cache and cropped off again, so a check costs its suffix tokens (and is batched
over candidates). The stream head (``judge: stream``) reads the model's state at each row's last token, one
pending token forwarded on the same cache. Any other judge (embedding, pattern, a separate model) gets the
decoded text. The policy's judge is split accordingly and the verdicts are combined, so token-level and
sentence-level rewind judge by the same rules.
"""

from __future__ import annotations

from typing import Any

from guardrail.judges.base import Judge, combine
from guardrail.judges.factory import PolicyJudge
from guardrail.judges.local_scorer import LocalScorer
from guardrail.judges.question import build_question
from guardrail.judges.self_eval import SelfEvalJudge
from guardrail.judges.stream_head import StreamHeadJudge
from guardrail.judges.untrusted import remove_judge_steering
from guardrail.judges.verdict import Verdict
from guardrail.rewind.decoder import Branches, Decoder
from guardrail.rewind.memo import VerdictMemo

__all__ = ["TokenEvaluator"]

#: verdicts a request remembers at most (keys are whole answers' ids: a bound keeps a long search's memory flat)
MEMO_LIMIT = 1024


class TokenEvaluator:
    """Verdicts for the trunk or for every row of a set of branches."""

    def __init__(self, judge: Judge, model: Any) -> None:
        parts = judge.parts if isinstance(judge, PolicyJudge) else [judge]
        self.cached: list[SelfEvalJudge] = [
            p
            for p in parts
            if isinstance(p, SelfEvalJudge) and isinstance(p.scorer, LocalScorer) and p.scorer.model is model
        ]
        self.streamed: list[StreamHeadJudge] = [
            p for p in parts if isinstance(p, StreamHeadJudge) and p.scorer.local.model is model
        ]
        self.text: list[Judge] = [p for p in parts if p not in self.cached and p not in self.streamed]
        self.memo: VerdictMemo[tuple[int, ...]] = VerdictMemo(MEMO_LIMIT)

    def _cached(self, part: SelfEvalJudge, cache: Any, pending: list[list[int]], partial: bool) -> list[Verdict]:
        scorer = part.scorer
        assert isinstance(scorer, LocalScorer)
        questions = [build_question(part.rules, order, partial=partial) for order in (0, 1)]
        results = scorer.score_batch(cache, pending, questions)
        return [
            part.verdict_from(questions, [results[0][row], results[1][row]], part.rules, steering=False)
            for row in range(len(pending))
        ]

    def _attribute(
        self, part: SelfEvalJudge, cache: Any, pending: list[list[int]], whole: list[Verdict]
    ) -> list[Verdict]:
        if len(part.rules) < 2 or not any(v.violated for v in whole):
            return whole
        per_rule: list[list[Verdict]] = []
        scorer = part.scorer
        assert isinstance(scorer, LocalScorer)
        for rule in part.rules:
            questions = [build_question([rule], order, partial=True) for order in (0, 1)]
            results = scorer.score_batch(cache, pending, questions)
            per_rule.append(
                [
                    part.verdict_from(questions, [results[0][r], results[1][r]], [rule], False)
                    for r in range(len(pending))
                ]
            )
        return [
            part.attributed(verdict, [rule_verdicts[row] for rule_verdicts in per_rule])
            if verdict.violated
            else verdict
            for row, verdict in enumerate(whole)
        ]

    @staticmethod
    def _key(response: list[int], partial: bool) -> tuple[int, ...]:
        return (*response, int(partial))

    def remembered(self, response: list[int], partial: bool) -> Verdict | None:
        """The verdict on these response ids if they were judged before (free), else None."""
        return self.memo.get(self._key(response, partial))

    def evaluate(
        self,
        decoder: Decoder,
        prompt: str,
        branches: Branches | None = None,
        *,
        partial: bool = True,
        explain: bool = True,
        judged: int = 0,
    ) -> list[Verdict]:
        """One verdict for the trunk (``branches`` None) or one per branch row (``judged``: characters of the
        answer accepted before, see ``Judge.judge``)."""
        if branches is None:
            cache, pending = decoder.cache, [[decoder.ids[-1]]]
            responses = [decoder.generated]
        else:
            cache, pending = branches.cache, [[p] for p in branches.pending]
            responses = [branches.response_ids(row) for row in range(branches.rows)]
        keys = [self._key(r, partial) for r in responses]
        known = [self.memo.get(key) for key in keys]
        if all(verdict is not None for verdict in known):
            return [verdict for verdict in known if verdict is not None]  # identical text, judged before: free
        per_part: list[list[Verdict]] = []
        for part in self.cached:
            whole = self._cached(part, cache, pending, partial)
            per_part.append(self._attribute(part, cache, pending, whole) if explain else whole)
        texts = [decoder.text(r) for r in responses] if self.text or self.streamed else []
        for stream in self.streamed:
            probabilities = stream.scorer.score_batch(cache, pending)
            per_part.append(
                [  # a row holding text addressed to the judge is judged on its text with that text removed
                    stream.judge(prompt, text, partial=partial)
                    if remove_judge_steering(text)[1]
                    else stream.verdict_from(probability, False, 1)
                    for text, probability in zip(texts, probabilities, strict=True)
                ]
            )
        for judge in self.text:
            per_part.append(
                [judge.judge(prompt, text, partial=partial, explain=explain, judged=judged) for text in texts]
            )
        verdicts = [combine([verdicts[row] for verdicts in per_part], "policy") for row in range(len(responses))]
        for key, verdict in zip(keys, verdicts, strict=True):
            self.memo.put(key, verdict)
        return verdicts
