"""Verdicts remembered within one request: a text judged once is not judged again.

Both rewind strategies judge a unit with its look-ahead and, later, the unit that the look-ahead reached on
its own: the same text (the same token ids) twice. The second time the remembered verdict is given back at
no cost (its cost was counted when it was made), so judge cost and judge calls count each judgement once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from guardrail.judges.verdict import Cost, Verdict

__all__ = ["VerdictMemo"]

K = TypeVar("K", bound=Hashable)


class VerdictMemo(Generic[K]):
    """Verdicts by key (a text or token ids, with whether it was judged as partial).

    ``limit``: at most this many verdicts are kept, the least recently used dropped first (RAIN's search judges
    ten branches an expansion, each keyed by its whole answer so far: without a bound the memo grows with the
    search). A dropped verdict only costs a judgement again, never a different answer."""

    def __init__(self, limit: int | None = None) -> None:
        self._verdicts: OrderedDict[K, Verdict] = OrderedDict()
        self._limit = limit

    def __len__(self) -> int:
        return len(self._verdicts)

    def get(self, key: K) -> Verdict | None:
        """The verdict judged before for ``key``, free this time; None if there is none."""
        verdict = self._verdicts.get(key)
        if verdict is None:
            return None
        self._verdicts.move_to_end(key)
        return verdict.with_cost(Cost())

    def put(self, key: K, verdict: Verdict) -> None:
        self._verdicts[key] = verdict
        self._verdicts.move_to_end(key)
        while self._limit is not None and len(self._verdicts) > self._limit:
            self._verdicts.popitem(last=False)

    def forget(self, stale: Callable[[K], bool]) -> None:
        """Drop the verdicts no later lookup can ask for (the memo stays a few entries long)."""
        for key in [key for key in self._verdicts if stale(key)]:
            del self._verdicts[key]
