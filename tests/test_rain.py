"""The RAIN search's tree logic on a tiny random model: commits, values, added children, pruned commits."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from guardrail import parse_policy
from guardrail.actions import Budget
from guardrail.backends.base import GenerationParams
from guardrail.backends.local import LocalBackend
from guardrail.guard import Guard
from guardrail.judges import Judge
from guardrail.judges.base import Prompt
from guardrail.judges.verdict import Verdict
from guardrail.rewind import rain
from guardrail.rewind.request import Request, RunState
from guardrail.rewind.token import TokenRewind

POLICY = "name: t\nrules:\n  - {id: r, criterion: anything the test decides}\n"


class PassAll(Judge):
    name = "pass-all"

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        return Verdict(0.3, False, (), judge=self.name)  # passes, but not by much (a soft value of 0.4)


def search(tiny: tuple[Any, Any], settings: str) -> rain.RainSearch:
    policy = parse_policy(POLICY + f"rewind: {{strategy: rain, rain: {settings}}}\n")
    owner = TokenRewind(policy, LocalBackend(*tiny), PassAll(policy))
    request = Request([{"role": "user", "content": "Hi"}], GenerationParams(max_tokens=8), False, "r")
    decoder, prompt = owner._decoder(request)
    return rain.RainSearch(owner, decoder, prompt, request, RunState(Budget(policy)))


def test_commit_is_tested_after_every_simulation(tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # every value is a passing vote: the best child has more than T_min visits with Q > V after a few
    # simulations, and commits then, however many new simulations min_new_simulations asks for
    per_commit: list[int] = []
    choose = rain.RainSearch._choose

    def counting(self: rain.RainSearch, root: rain.Node) -> Any:
        before = self.simulations
        child = choose(self, root)
        per_commit.append(self.simulations - before)
        return child

    monkeypatch.setattr(rain.RainSearch, "_choose", counting)
    policy = parse_policy(
        POLICY + "rewind: {strategy: rain, rain: {q: 2, t_min: 1, t_max: 50, min_new_simulations: 15}}\n"
    )
    result = Guard(policy, LocalBackend(*tiny), judge=PassAll(policy)).invoke("Hi", max_tokens=8, temperature=0)
    assert result.text.strip() and len(per_commit) >= 2
    assert max(per_commit) <= 4, per_commit  # not 15 (nor 15 / q expansions)
    # soft values of 0.4 never reach V = 0.8: every commit waits for T_max visits
    per_commit.clear()
    soft = parse_policy(
        POLICY + "rewind: {strategy: rain, rain: {q: 2, t_min: 1, t_max: 12, min_new_simulations: 3, value: soft}}\n"
    )
    Guard(soft, LocalBackend(*tiny), judge=PassAll(soft)).invoke("Hi", max_tokens=4, temperature=0)
    assert per_commit and per_commit[0] >= 11


def test_values_are_votes_unless_soft(tiny: tuple[Any, Any]) -> None:
    vote = search(tiny, "{}")
    assert [vote._value(Verdict(s, s > 0.5, ())) for s in (0.3, 0.7)] == [1.0, -1.0]
    assert vote._value(Verdict(0.5, False, (), undecided=True)) == 0.0
    assert search(tiny, "{value: soft}")._value(Verdict(0.3, False, ())) == pytest.approx(0.4)


def test_an_expansion_judges_the_most_probable_children_and_an_added_child_gets_its_share(
    tiny: tuple[Any, Any],
) -> None:
    s = search(tiny, "{q: 5, evaluated_children: 2}")
    root = rain.Node([], level=0)
    assert s._expand(root, root) == 2 and s.simulations == 2  # the two judged children, not q
    assert len(root.children) == 5 and root.real_visits == 2
    judged = [c for c in root.children if c.visits]
    assert len(judged) == 2
    assert min(c.likelihood for c in judged) >= max(c.likelihood for c in root.children if not c.visits)
    assert sum(c.prior for c in root.children) == pytest.approx(1.0)
    # dynamic node addition: the added child's prior is its share of the siblings' probability, not 1.0
    s._expand(root, root)
    assert len(root.children) == 6
    added = root.children[-1]
    total = sum(c.likelihood for c in root.children)
    assert added.prior == pytest.approx(0.75 * added.likelihood / total + 0.25 / 6) and added.prior < 0.5


def test_a_rejected_commit_is_never_grown_again() -> None:
    node = rain.Node([], level=0)
    node.children.append(rain.Node([5], level=1, parent=node))
    node.rejected.add((7,))
    rows = SimpleNamespace(tokens=[[7], [5], [9], [9]])
    assert rain.RainSearch._unique_rows(None, rows, node) == [2]  # type: ignore[arg-type]


class ViolateAll(Judge):
    name = "violate-all"

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        return Verdict(0.9, True, ("r",), judge=self.name)


@pytest.mark.parametrize("give_up", [True, False])
def test_a_position_where_every_judged_continuation_violated_is_not_searched_again(
    tiny: tuple[Any, Any], give_up: bool
) -> None:
    # every rollout violates: the first commit is rejected at a hopeless position. Giving up takes the ladder's
    # last step there (one search); searching again spends the ladder's rewinds, one search each, first
    settings = f"{{q: 3, t_min: 1, t_max: 6, min_new_simulations: 3, give_up_when_hopeless: {str(give_up).lower()}}}"
    policy = parse_policy(POLICY + f"rewind: {{strategy: rain, max_rewinds: 8, rain: {settings}}}\n")
    searches: list[int] = []
    choose = rain.RainSearch._choose

    def counting(self: rain.RainSearch, root: rain.Node) -> Any:
        searches.append(1)
        return choose(self, root)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rain.RainSearch, "_choose", counting)
        result = Guard(policy, LocalBackend(*tiny), judge=ViolateAll(policy)).invoke("Hi", max_tokens=8)
    assert result.fallback is not None and result.fallback.action == "refuse"
    if give_up:
        assert len(searches) == 1 and not result.rewinds
    else:
        assert len(searches) >= 2 and result.rewinds
