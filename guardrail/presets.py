"""The library's defaults, in one place: which backend a ``--model`` string names, and which judge a policy
gets over a backend. Python users (``Guard``), both adapters, ``chat``, ``serve``, ``eval`` and ``judge`` all
call these, so they all get the same defaults.

The judge rule: a rule is judged as the policy says, except that a rule the policy gives to self-evaluation
(``self`` or ``cascade``) goes to the trained embedding judge when the generating model cannot judge itself
(``backend.can_self_judge`` is False: the embedded 135M model, or any local model under 1B parameters, whose
self-evaluation is near chance) and the embedding judge can score the rule (a shipped head, or examples).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from guardrail.errors import JudgeError
from guardrail.judges.base import Judge
from guardrail.judges.calibration import Calibration, probe, probeable, warn_fallback
from guardrail.judges.embedding import embeddable
from guardrail.judges.factory import JUDGE_KINDS, PolicyJudge, build_judge, needs_scorer
from guardrail.judges.self_eval import OptionScorer
from guardrail.policy import Policy
from guardrail.policy.schema import Scope

if TYPE_CHECKING:
    from guardrail.backends.base import StreamingBackend

__all__ = ["AUTO", "make_backend", "resolve_judge"]

#: The default judge choice: the policy's judges, the trained judge where the model cannot judge itself.
AUTO = "auto"


def make_backend(model: str | None = None, model_name: str | None = None) -> StreamingBackend:
    """The backend ``model`` names: an OpenAI-compatible base URL, a local model path, or the embedded default."""
    from guardrail.backends.local import LocalBackend, is_remote

    if is_remote(model):
        from guardrail.backends.remote import OpenAIBackend

        assert model is not None
        return OpenAIBackend(model, model=model_name)
    return LocalBackend(path=model)


def resolve_judge(
    policy: Policy,
    backend: StreamingBackend | None = None,
    judge: Judge | str | None = None,
    *,
    scope: Scope = "output",
) -> PolicyJudge | Judge:
    """The judge for ``policy``'s rules in ``scope`` over ``backend`` (see the module's rule).

    ``judge`` is a ``Judge`` (used as it is), a judge kind for every rule (``self``, ``embedding``, ``pattern``,
    ``cascade``) or ``auto`` / None (the default). ``backend`` None means no generating model: rules that still
    need self-evaluation are judged by the embedded model.
    """
    if isinstance(judge, Judge):
        return judge
    if judge not in (None, AUTO, *JUDGE_KINDS):
        raise JudgeError(f"unknown judge {judge!r}; choose {AUTO}, one of {', '.join(JUDGE_KINDS)}, or a Judge object")
    override = None if judge in (None, AUTO) else judge
    effective = policy
    if override is None and not getattr(backend, "can_self_judge", False):
        moved = {
            rule.id
            for rule in policy.checked_rules(scope)
            if embeddable(rule) and policy.judge_for(rule) in {"self", "cascade"}
        }
        if moved:
            rules = [r.model_copy(update={"judge": "embedding"}) if r.id in moved else r for r in policy.rules]
            effective = policy.model_copy(update={"rules": rules})
    scorer = None
    if needs_scorer(effective, override, scope=scope):
        scorer = (backend if backend is not None else make_backend(None)).self_scorer()
        if override is None and backend is not None and scorer is not None:
            effective = _calibrated(effective, backend, scorer, scope)
    parts = build_judge(effective, scorer=scorer, override=override, scope=scope).parts
    return PolicyJudge(policy, parts)


#: probe results per backend and rule (a Guard resolves its input, output and tool-argument judges)
_PROBED: weakref.WeakKeyDictionary[object, dict[tuple[str, str], Calibration]] = weakref.WeakKeyDictionary()


def _calibrated(policy: Policy, backend: StreamingBackend, scorer: OptionScorer, scope: Scope) -> Policy:
    """``policy`` with each self-judged rule whose calibration probe fails moved to the embedding judge (see
    ``guardrail.judges.calibration``), or a ``JudgeError`` when the policy says so or no fallback exists."""
    setting = policy.judge.calibration
    if setting == "off":
        return policy
    moved: set[str] = set()
    for rule in policy.checked_rules(scope):
        if policy.judge_for(rule) not in {"self", "cascade"} or not probeable(rule):
            continue
        try:
            known = _PROBED.setdefault(backend, {})
        except TypeError:  # not weak-referenceable: probe every time
            known = {}
        key = (rule.id, rule.model_dump_json())
        result = known.get(key) or probe(policy, rule, scorer)
        known[key] = result
        if result.usable:
            continue
        if setting == "error" or not embeddable(rule):
            raise JudgeError(
                f"self-evaluation by {backend!r} cannot judge ({result.describe()}); use judge='embedding', "
                "declare a separate judge model under judges:, or guard a larger model"
            )
        warn_fallback(result, repr(backend))
        moved.add(rule.id)
    if not moved:
        return policy
    rules = [r.model_copy(update={"judge": "embedding"}) if r.id in moved else r for r in policy.rules]
    return policy.model_copy(update={"rules": rules})
