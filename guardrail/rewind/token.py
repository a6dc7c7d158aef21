"""Token-level rewind for local transformers models: the verify-first fast path, and the shared loop that
the RAIN search plugs into.

Fast path (``rewind.strategy: verify``): decode normally, judge at every chunk boundary (``chunk_tokens``) on
the decoding KV cache; where a chunk is judged violating, crop the cache back to the last accepted point and
search there: ``candidates`` continuations are grown in one batch from a fork of the cache, judged in one
batched pass, and the best one that passes is adopted without recomputation. After
``max_failures_per_position`` failed searches at one point it steps one chunk further back (never past text a
streaming user has seen); the policy's ladder and budget end it. Only committed tokens are streamed.

With ``rewind.strategy: rain`` the whole answer comes from the RAIN tree search instead (``guardrail.rewind.rain``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from guardrail.actions import decide, lookahead_verdict, redact
from guardrail.events import Event, FallbackEvent, RewindEvent, TextEvent
from guardrail.judges.base import Judge
from guardrail.judges.local_scorer import LocalScorer
from guardrail.judges.verdict import Cost, Verdict
from guardrail.policy import Policy
from guardrail.rewind.decoder import Branches, Decoder, Sampling, TextEmitter
from guardrail.rewind.evaluator import TokenEvaluator
from guardrail.rewind.request import Request, RunState

__all__ = ["TokenRewind", "redact_tokens", "rewind_event"]


class TokenRewind:
    """Runs one guarded generation on a local model, token by token; see the module docstring."""

    name = "token"

    def __init__(self, policy: Policy, backend: Any, judge: Judge) -> None:
        self.policy = policy
        self.backend = backend
        self.judge = judge
        if policy.rewind.strategy == "rain":
            self.name = "rain"

    async def run(self, request: Request, state: RunState) -> AsyncIterator[Event]:
        """The sync engine below, run step by step in a worker thread under the backend's model lock."""
        async for event in self.backend.iterate(self._events(request, state)):
            yield event

    # ------------------------------------------------------------------------------------------ helpers

    def evaluator(self) -> TokenEvaluator:
        """A fresh evaluator (its memo of judged texts lives with one request)."""
        return TokenEvaluator(self.judge, self.backend.model)

    def _decoder(self, request: Request) -> tuple[Decoder, str]:
        scorer: LocalScorer = self.backend.scorer
        decoder = Decoder(self.backend.model, self.backend.tokenizer, seed=request.params.seed or 0)
        decoder.start(scorer.template_ids(list(request.messages)))  # type: ignore[arg-type]
        users = [str(m.get("content") or "") for m in request.messages if m.get("role") == "user"]
        return decoder, users[-1] if users else ""

    # ------------------------------------------------------------------------------------------ the engine

    def _events(self, request: Request, state: RunState) -> Iterator[Event]:
        decoder, prompt = self._decoder(request)
        try:
            if self.policy.rewind.strategy == "rain":
                from guardrail.rewind.rain import RainSearch

                yield from RainSearch(self, decoder, prompt, request, state).events()
            else:
                yield from self._verify(decoder, prompt, request, state)
        finally:
            state.generation_cost = Cost(forward_passes=decoder.stats.calls, forward_tokens=decoder.stats.tokens)

    def _verify(self, decoder: Decoder, prompt: str, request: Request, state: RunState) -> Iterator[Event]:
        settings = self.policy.rewind
        evaluator = self.evaluator()
        emitter = TextEmitter(decoder)
        sampling = Sampling(request.params.temperature)
        search = Sampling(max(settings.temperature, request.params.temperature or 0.0), settings.rain.top_k)
        max_new = request.params.max_tokens or 512
        ahead = settings.lookahead_tokens  # tokens decoded past a chunk and judged with it, not yet accepted
        marks = [decoder.prompt_len]  # accepted chunk boundaries
        released = decoder.prompt_len  # ids a streaming user has seen: the floor for stepping back
        failures_at: dict[int, int] = {}
        attempt = 0

        def ended() -> bool:
            return decoder.finished() or len(decoder.generated) >= max_new

        def unit_end(start: int) -> int:  # the chunk judged from ``start``: the rest is its look-ahead
            return len(decoder.ids) if ended() else min(len(decoder.ids), start + settings.chunk_tokens)

        while len(decoder.ids) > marks[-1] or not ended():
            start = marks[-1]
            wanted = start + settings.chunk_tokens + ahead - len(decoder.ids)
            new = decoder.generate(max(0, min(wanted, max_new - len(decoder.generated))), sampling)
            state.completion_tokens += len(new)
            partial = not ended()
            accepted = len(decoder.text(decoder.ids[decoder.prompt_len : start]))  # judged before: not again
            verdict = self._judge_chunk(decoder, evaluator, prompt, state, start, unit_end(start), partial, accepted)
            yield state.verdict(verdict, partial=partial, lookahead=len(decoder.ids) - unit_end(start))
            while verdict.violated:
                decision = decide(self.policy, verdict, state.budget)
                if decision.action in {"flag", "redact"} and len(decoder.ids) > unit_end(start):
                    # these act on the chunk's own text: its look-ahead is dropped and the chunk judged alone
                    state.budget.extra_tokens += len(decoder.ids) - unit_end(start)
                    decoder.truncate(unit_end(start))  # the verdict is the chunk's own (``_judge_chunk``)
                    continue
                if decision.action in {"refuse", "raise"}:  # the Guard gives the message (or the error)
                    yield FallbackEvent(decision.action, decision.rules, decision.message)
                    return
                if decision.action in {"flag", "redact"}:
                    yield FallbackEvent(decision.action, decision.rules, decision.message)
                    if decision.action == "redact":
                        redact_tokens(decoder, emitter, start, verdict, decision.message)
                    break
                rejected = decoder.ids[start:]
                failures_at[start] = failures_at.get(start, 0) + 1
                step_back = len(marks) > 1 and marks[-2] >= released
                if failures_at[start] >= settings.max_failures_per_position and step_back:
                    failures_at[start] = 0
                    marks.pop()  # RAIN's return to the parent: one accepted chunk further back
                back_to = marks[-1]
                state.budget.spend(len(decoder.ids) - back_to)
                rejected_text = decoder.text(rejected)
                prefix_text = decoder.text(decoder.ids[decoder.prompt_len : start])
                decoder.truncate(back_to)
                emitter.forget_after(back_to - decoder.prompt_len)
                attempt += 1
                yield rewind_event(
                    self, state, verdict, rejected_text, len(rejected), len(marks) - 1, attempt, prefix_text
                )
                start = back_to
                branches = decoder.fork(settings.candidates)
                steps = min(settings.chunk_tokens + ahead, max_new - len(decoder.generated))
                branches.grow(steps, search, distinct_first=True)
                grown = sum(len(t) for t in branches.tokens)
                state.completion_tokens += grown
                finished = [row for row in range(branches.rows) if branches.done[row]]
                accepted = len(decoder.text(decoder.generated))
                verdicts = evaluator.evaluate(decoder, prompt, branches, partial=not finished, judged=accepted)
                best = _choose(branches, verdicts)
                state.budget.extra_tokens += grown - len(branches.tokens[best])
                decoder.adopt(branches, best)  # its verdict with the look-ahead is remembered: judged again free
                verdict = self._judge_chunk(
                    decoder, evaluator, prompt, state, start, unit_end(start), not ended(), accepted
                )
                yield state.verdict(verdict, partial=not ended(), lookahead=len(decoder.ids) - unit_end(start))
            state.budget.progress()
            marks.append(unit_end(start))
            if request.streaming:
                released = marks[-1]
                text = emitter.delta(decoder.ids[decoder.prompt_len : marks[-1]])
                if text:
                    yield TextEvent(text)
        if request.streaming:
            rest = emitter.delta(decoder.generated, final=True)
            if rest:
                yield TextEvent(rest)
        else:
            yield TextEvent(emitter.delta(decoder.generated, final=True))

    def _judge_chunk(
        self,
        decoder: Decoder,
        evaluator: TokenEvaluator,
        prompt: str,
        state: RunState,
        start: int,
        end: int,
        partial: bool,
        judged: int,
    ) -> Verdict:
        """The verdict on the trunk's chunk from ``start`` (the chunks before it accepted) to ``end``. With
        look-ahead tokens after it, the chunk is judged with them (a trajectory that violates rejects the chunk)
        and alone (cropped to ``end``, judged, the look-ahead fed back on the cache): text after a chunk could
        lower its score, so the guard is never weaker than without a look-ahead. The verdict not returned is
        counted in the judge's cost. ``judged``: the characters before ``start``, accepted (not judged again)."""
        tokens = len(decoder.ids) - end
        trajectory = evaluator.evaluate(decoder, prompt, partial=partial, judged=judged)[0]
        if not tokens:
            return trajectory
        verdict = lookahead_verdict(self.policy, state.budget, None, trajectory, tokens)
        if verdict is not None:
            return verdict
        alone = evaluator.remembered(decoder.ids[decoder.prompt_len : end], True)  # an earlier look-ahead's
        if alone is None:
            ahead = decoder.ids[end:]
            decoder.truncate(end)
            alone = evaluator.evaluate(decoder, prompt, partial=True)[0]
            decoder.feed(ahead)
        state.judge_cost = state.judge_cost + trajectory.cost
        return alone


def _choose(branches: Branches, verdicts: list[Verdict]) -> int:
    """The candidate to adopt: among those that pass, the most likely (mean log-probability per token, so a
    short or stopped row is not favoured for its length); when none passes, the least violating, which the
    caller rewinds again (a violating candidate is never released)."""
    passing = [row for row in range(branches.rows) if not verdicts[row].violated]
    if passing:
        return max(passing, key=lambda row: (branches.logprobs[row] / max(1, len(branches.tokens[row])), -row))
    return min(range(branches.rows), key=lambda row: (verdicts[row].score, row))


def redact_tokens(decoder: Decoder, emitter: TextEmitter, start: int, verdict: Verdict, replacement: str) -> None:
    """Replace the spans that fired in the tokens from ``start`` on (verdict spans index the whole answer)."""
    offset = len(decoder.text(decoder.ids[decoder.prompt_len : start]))
    chunk = redact(decoder.text(decoder.ids[start:]), verdict, replacement, offset=offset)
    emitter.redact(start - decoder.prompt_len, len(decoder.generated), chunk)


def rewind_event(
    owner: TokenRewind,
    state: RunState,
    verdict: Verdict,
    rejected: str,
    tokens: int,
    back_to: int,
    attempt: int,
    prefix: str,
) -> RewindEvent:
    """The token strategies' rewind of the unit just judged (``back_to``: accepted units kept)."""
    return state.rewound(
        rules=verdict.rules, score=verdict.score, unit=state.units - 1, back_to=back_to, attempt=attempt,
        rejected=rejected, tokens=tokens, strategy=owner.name, keep_text=owner.policy.audit.include_rejected_text,
        prefix=prefix, cost=verdict.cost,
    )  # fmt: skip
