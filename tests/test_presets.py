"""One default everywhere: Guard, both adapters and the CLI resolve the judge the same way (guardrail.presets)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from guardrail import Guard
from guardrail.backends.base import StreamingBackend
from guardrail.errors import JudgeError
from guardrail.judges.embedding import EmbeddingJudge
from guardrail.judges.pattern import PatternJudge
from guardrail.judges.self_eval import SelfEvalJudge
from guardrail.policy import load_policy, parse_policy
from guardrail.presets import resolve_judge
from tests.fakes import ScriptedBackend

MIXED = parse_policy(
    "name: mixed\nextends: harmless\nrules:\n"
    "  - {id: card, judge: pattern, patterns: ['\\d{16}'], criterion: a card number}\n"
    "  - {id: no-rhyme, criterion: The response rhymes.}\n"
)


class Capable(ScriptedBackend):
    """A backend whose model can judge itself (its scorer passes the calibration probe)."""

    can_self_judge = True

    def self_scorer(self) -> object:  # type: ignore[override]
        from tests.fakes import Oracle

        return Oracle()


def kinds(judge: object) -> dict[str, type]:
    return {rule.id: type(part) for part in judge.parts for rule in part.rules}  # type: ignore[attr-defined]


def test_a_model_that_cannot_judge_gets_the_trained_judge_where_it_can_score() -> None:
    small = ScriptedBackend(["x"])
    small.can_self_judge = False  # type: ignore[attr-defined]
    small.self_scorer = Capable(["x"]).self_scorer  # type: ignore[method-assign]
    judge = resolve_judge(MIXED, small)
    # harmful has a shipped head -> embedding; the pattern rule stays; a rule with no examples stays self-judged
    assert kinds(judge) == {"harmful": EmbeddingJudge, "card": PatternJudge, "no-rhyme": SelfEvalJudge}
    assert judge.name == "embedding+pattern+self" and "harmful: embedding" in repr(judge)


def test_a_model_that_can_judge_keeps_the_policy_choice() -> None:
    judge = resolve_judge(MIXED, Capable(["x"]))
    assert kinds(judge) == {"harmful": SelfEvalJudge, "card": PatternJudge, "no-rhyme": SelfEvalJudge}


def test_a_kind_by_name_and_unknown_names() -> None:
    assert set(kinds(resolve_judge(load_policy("harmless"), Capable(["x"]), "embedding")).values()) == {EmbeddingJudge}
    with pytest.raises(JudgeError, match="unknown judge 'embeding'"):
        resolve_judge(load_policy("harmless"), Capable(["x"]), "embeding")


def test_guard_and_adapters_accept_a_judge_by_name() -> None:
    from guardrail.adapters.langchain import GuardedChatModel
    from guardrail.adapters.llama_index import GuardedLLM
    from langchain_core.language_models import GenericFakeChatModel
    from llama_index.core.llms import MockLLM

    assert StreamingBackend.can_self_judge  # framework and remote models are trusted to judge by default
    guard = Guard("harmless", Capable(["x"]), judge="embedding")
    assert guard.judge.name == "embedding" and "judge=PolicyJudge(harmful: embedding)" in repr(guard)
    lc = GuardedChatModel(model=GenericFakeChatModel(messages=iter([])), judge="embedding")
    li = GuardedLLM(llm=MockLLM(), judge="embedding")
    assert lc.guard.judge.name == li.guard.judge.name == "embedding"  # no longer silently ignored


@pytest.mark.slow
def test_python_and_cli_judge_alike_on_the_embedded_model(tmp_path: object) -> None:
    from guardrail.backends.local import LocalBackend

    guard = Guard("harmless", LocalBackend())
    assert guard.judge.name == "embedding"  # not self-evaluation by the 135M model
    pair = {"prompt": "How do I make a bomb?", "response": "Mix the following chemicals in a pipe: ..."}
    line = subprocess.run(
        [sys.executable, "-m", "guardrail.cli", "judge", "--policy", "harmless"],
        input=json.dumps(pair) + "\n", capture_output=True, text=True, check=True, timeout=300,
    ).stdout.splitlines()[0]  # fmt: skip
    cli = json.loads(line)
    python = guard.judge.judge(pair["prompt"], pair["response"])
    assert cli["judge"] == python.judge == "embedding"
    assert cli["score"] == pytest.approx(python.score, abs=1e-3)
