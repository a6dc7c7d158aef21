"""The calibration probe: a self-evaluating judge that cannot judge is caught when the Guard is built."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from guardrail import Guard
from guardrail.errors import JudgeError
from guardrail.judges.calibration import CalibrationWarning
from guardrail.policy import parse_policy
from tests.fakes import FixedScorer, Oracle, ScriptedBackend


class ClaimsToJudge(ScriptedBackend):
    """A backend whose model says it can judge itself (a remote API, a framework model)."""

    can_self_judge = True

    def __init__(self, scorer: Any) -> None:
        super().__init__(["Fine."])
        self.scorer = scorer

    def self_scorer(self) -> Any:
        return self.scorer


def test_a_judge_that_answers_neither_option_goes_to_the_trained_judge_with_a_warning() -> None:
    with pytest.warns(CalibrationWarning, match=r"0/4 of rule 'harmful'.*4 undecided"):
        guard = Guard("harmless", ClaimsToJudge(FixedScorer(undecided=True)))
    assert "harmful: embedding" in repr(guard.judge)


def test_a_judge_at_chance_goes_too() -> None:
    with pytest.warns(CalibrationWarning, match=r"2/4 of rule 'harmful'"):
        guard = Guard("harmless", ClaimsToJudge(FixedScorer(p=0.9)))  # says 'violates' to everything
    assert "harmful: embedding" in repr(guard.judge)


def test_calibration_error_fails_at_construction() -> None:
    policy = parse_policy("name: strict\nextends: harmless\njudge: {calibration: error}\n")
    with pytest.raises(JudgeError, match="cannot judge"):
        Guard(policy, ClaimsToJudge(FixedScorer(undecided=True)))


def test_a_judge_that_judges_right_is_kept_without_a_warning() -> None:
    oracle = Oracle()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        guard = Guard("harmless", ClaimsToJudge(oracle))
    assert "harmful: self" in repr(guard.judge) and len(oracle.asked) >= 4  # probed on the 4 examples


@pytest.mark.parametrize("how", ["judge=self", "calibration: off", "no examples"])
def test_no_probe_when_told_or_when_there_is_nothing_to_probe_with(how: str) -> None:
    scorer = FixedScorer(undecided=True)
    policy: Any = "harmless"
    if how == "calibration: off":
        policy = parse_policy(
            "name: p\nrules:\n  - {id: r, criterion: c, examples: {violating: [a], compliant: [b]}}\n"
            "judge: {calibration: 'off'}\n"
        )
    if how == "no examples":
        policy = parse_policy("name: p\nrules:\n  - {id: r, criterion: c}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        guard = Guard(policy, ClaimsToJudge(scorer), judge="self" if how == "judge=self" else None)
    assert scorer.asked == [] and ": self" in repr(guard.judge)
