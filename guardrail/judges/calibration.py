"""A short calibration probe: can this model's self-evaluation judge this rule at all?

A model too small (or too unlike the instruction format) to answer the judge's two-option question either
answers neither option (undecided) or answers at chance; with ``on_undecided: violation`` such a judge rejects
every sentence and every answer ends refused, slowly and silently. So before a self-evaluating judge is used
over a model whose ability is not known (a remote API, a framework model), it judges the rule's own
examples (``rules[].examples``: violating and compliant responses). It must get more than half of them
right, leave fewer than half undecided, and score the violating examples clearly higher than the compliant
ones (``MIN_SEPARATION``). Otherwise the policy's ``judge.calibration`` decides: ``fallback`` (the default)
gives the rule to the trained embedding judge with a warning, ``error`` raises ``JudgeError``, ``off`` skips
the probe. A rule without examples of both kinds cannot be probed and is used as written.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

from guardrail.judges.self_eval import OptionScorer, SelfEvalJudge
from guardrail.policy import Policy, Rule

__all__ = [
    "MIN_SEPARATION",
    "PROBE_EXAMPLES",
    "PROBE_PROMPT",
    "Calibration",
    "CalibrationWarning",
    "probe",
    "probeable",
    "warn_fallback",
]

logger = logging.getLogger("guardrail.calibration")

#: How much higher a usable judge must score the violating examples than the compliant ones, on average: a
#: judge at chance (scores near 0.5 on both sides) can still land on the right side of the threshold by luck.
MIN_SEPARATION = 0.2

#: Examples of each kind judged per rule (the probe's cost: twice this many judge calls per rule, once)
PROBE_EXAMPLES = 2

#: The request the examples are judged as answers to (the rules' examples come without one).
PROBE_PROMPT = "Respond to the user's message."


class CalibrationWarning(UserWarning):
    """A self-evaluating judge failed its calibration probe and a rule went to another judge."""


@dataclass(frozen=True)
class Calibration:
    """How a judge did on one rule's examples."""

    rule: str
    correct: int
    undecided: int
    total: int
    separation: float = 0.0  # mean score on the violating examples minus the mean on the compliant ones

    @property
    def usable(self) -> bool:
        """Better than chance, deciding most of the examples, and scoring violations clearly higher."""
        decided = 2 * self.undecided < self.total
        return self.total > 0 and 2 * self.correct > self.total and decided and self.separation >= MIN_SEPARATION

    def describe(self) -> str:
        return (
            f"{self.correct}/{self.total} of rule {self.rule!r}'s examples judged right, {self.undecided} "
            f"undecided, violating minus compliant score {self.separation:+.2f}"
        )


def probeable(rule: Rule) -> bool:
    """Whether the rule has examples of both kinds to probe with."""
    return bool(rule.examples.violating) and bool(rule.examples.compliant)


def probe(policy: Policy, rule: Rule, scorer: OptionScorer) -> Calibration:
    """Judge ``rule``'s examples with self-evaluation by ``scorer``'s model."""
    judge = SelfEvalJudge(policy, scorer, [rule])
    labelled = [(text, True) for text in rule.examples.violating[:PROBE_EXAMPLES]]
    labelled += [(text, False) for text in rule.examples.compliant[:PROBE_EXAMPLES]]
    correct = undecided = 0
    scores: dict[bool, list[float]] = {True: [], False: []}
    for text, violating in labelled:
        verdict = judge.judge(PROBE_PROMPT, text, partial=False)
        scores[violating].append(verdict.score)
        if verdict.undecided:
            undecided += 1
        elif verdict.violated == violating:
            correct += 1
    separation = sum(scores[True]) / len(scores[True]) - sum(scores[False]) / len(scores[False])
    result = Calibration(rule.id, correct, undecided, len(labelled), separation)
    logger.info("calibration probe: %s", result.describe())
    return result


def warn_fallback(result: Calibration, owner: str) -> None:
    message = (
        f"{owner} cannot judge its own answers ({result.describe()}): rule {result.rule!r} goes to the trained "
        "embedding judge. Set judge='self' to insist, judge.calibration: error to fail instead, or name a "
        "separate judge model under judges:."
    )
    warnings.warn(message, CalibrationWarning, stacklevel=4)  # once: a logged copy printed it twice
