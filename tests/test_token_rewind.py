"""Token-level rewind: decoder invariants and the two strategies, on a tiny random model (fast) and on the
embedded SmolLM2 (acceptance: a judge rejecting a chosen continuation)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from guardrail import parse_policy
from guardrail.backends.local import LocalBackend
from guardrail.events import FinalEvent, RewindEvent, TextEvent, VerdictEvent
from guardrail.guard import Guard
from guardrail.judges import Judge, PatternJudge
from guardrail.judges.base import Prompt
from guardrail.judges.verdict import Cost, Verdict
from guardrail.rewind.decoder import Decoder, Sampling, TextEmitter
from guardrail.rewind.evaluator import MEMO_LIMIT, TokenEvaluator
from guardrail.rewind.memo import VerdictMemo

POLICY = "name: t\nrules:\n  - {id: chosen, criterion: contains the chosen continuation}\n"


class RejectText(Judge):
    """Rejects any response containing ``needle`` (a continuation chosen by the test)."""

    name = "reject-text"

    def __init__(self, needle: str, policy: Any) -> None:
        super().__init__(policy)
        self.needle = needle
        self.calls = 0
        self.hits = 0  # judged texts that contained the needle: the rejected continuation was really generated
        self._lock = threading.Lock()

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        hit = self.needle in response
        with self._lock:
            self.calls += 1
            self.hits += hit
        return Verdict(1.0 if hit else 0.0, hit, ("chosen",) if hit else (), judge=self.name)


class Seen(Judge):
    """Delegates to ``inner`` and counts the verdicts that fired."""

    name = "seen"

    def __init__(self, inner: Judge, policy: Any) -> None:
        super().__init__(policy)
        self.inner = inner
        self.hits = 0

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        verdict = self.inner.judge(prompt, response, partial=partial, explain=explain)
        self.hits += verdict.violated
        return verdict


class Recorder(Judge):
    """Passes everything; records (response, partial, judged) of every call."""

    name = "recorder"

    def __init__(self, policy: Any) -> None:
        super().__init__(policy)
        self.calls: list[tuple[str, bool, int]] = []

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        self.calls.append((response, partial, judged))
        return Verdict(0.0, False, judge=self.name)


def _recomputed_logits(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_decoder_cache_matches_a_full_recompute(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    decoder = Decoder(model, tokenizer, seed=1)
    decoder.start(tokenizer.encode("Hello there, how are you", add_special_tokens=False))
    decoder.generate(12, Sampling(0.9, 20))
    decoder.truncate(len(decoder.ids) - 5)  # rewind 5 tokens
    branches = decoder.fork(3)
    branches.grow(6, Sampling(1.0, 20), distinct_first=True)
    assert len({tuple(t) for t in branches.tokens}) == 3  # distinct first tokens
    decoder.adopt(branches, 2)
    assert decoder.cache.get_seq_length() == len(decoder.ids) - 1  # the invariant generate keeps
    cached = decoder.forward([[decoder.ids[-1]]], decoder.cache)[0]
    assert (cached - _recomputed_logits(model, decoder.ids)).abs().max() < 1e-3


def test_feed_and_paused_rows(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    decoder = Decoder(model, tokenizer)
    decoder.start(tokenizer.encode("One two three", add_special_tokens=False))
    decoder.feed(tokenizer.encode(" four five", add_special_tokens=False))
    assert decoder.cache.get_seq_length() == len(decoder.ids) - 1
    branches = decoder.fork(2)
    stop_everything = frozenset(range(len(tokenizer)))
    branches.grow(5, Sampling(None), pause_on=stop_everything)
    assert all(len(t) == 1 for t in branches.tokens)  # every row paused after one token
    assert [len(p) for p in branches.padded] == [1, 1]


def test_greedy_decoding_is_deterministic_and_seeded_sampling_repeats(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny

    def run(seed: int, sampling: Sampling) -> list[int]:
        decoder = Decoder(model, tokenizer, seed=seed)
        decoder.start(tokenizer.encode("Seed test", add_special_tokens=False))
        return decoder.generate(10, sampling)

    assert run(0, Sampling(None)) == run(5, Sampling(None))
    assert run(3, Sampling(1.0, 50)) == run(3, Sampling(1.0, 50))


def test_text_emitter_never_rewrites_released_text(tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    decoder = Decoder(tiny[0], tokenizer)
    emitter = TextEmitter(decoder)
    ids = tokenizer.encode("Café au lait — très bien!", add_special_tokens=False)
    pieces = [emitter.delta(ids[:n]) for n in range(1, len(ids) + 1)]
    assert "".join(pieces) + emitter.delta(ids, final=True) == "Café au lait — très bien!"


@pytest.mark.parametrize("strategy", ["verify", "rain"])
def test_tiny_model_rejected_continuation_is_never_streamed(tiny: tuple[Any, Any], strategy: str) -> None:
    model, tokenizer = tiny
    backend = LocalBackend(model, tokenizer)
    policy = parse_policy(
        POLICY + f"rewind: {{strategy: {strategy}, chunk_tokens: 4, rain: {{q: 3, t_min: 1, t_max: 6, "
        "min_new_simulations: 3, token_set_lengths: [1, 2, 4]}}\n"
    )
    plain = Guard(parse_policy("name: none\n"), backend).invoke("Hi", max_tokens=12, temperature=0).text
    needle = plain[:6]
    judge = RejectText(needle, policy)
    events = list(Guard(policy, backend, judge=judge).stream("Hi", max_tokens=12, temperature=0))
    streamed = "".join(e.text for e in events if isinstance(e, TextEvent))
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.result.strategy == ("rain" if strategy == "rain" else "token")
    assert judge.hits >= 1  # the model did produce the chosen continuation, and the judge saw it
    assert needle not in streamed and not judge.judge("Hi", final.result.text).violated
    assert final.result.generation_cost.forward_tokens > 0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["verify", "rain"])
def test_embedded_model_rejects_a_chosen_continuation(strategy: str) -> None:
    backend = LocalBackend()
    prompt = "Give me a tip for staying focused."
    plain = Guard(parse_policy("name: none\n"), backend).invoke(prompt, max_tokens=24, temperature=0).text
    needle = plain.split(",")[0].split(".")[0][:24]  # the model's own first words
    assert len(needle) > 6
    settings = "{strategy: verify, chunk_tokens: 8}" if strategy == "verify" else "{strategy: rain}"
    policy = parse_policy(POLICY + f"rewind: {settings}\n")
    judge = RejectText(needle, policy)
    events = list(Guard(policy, backend, judge=judge).stream(prompt, max_tokens=24, temperature=0, seed=7))
    streamed = "".join(e.text for e in events if isinstance(e, TextEvent))
    final = events[-1]
    assert isinstance(final, FinalEvent)
    assert judge.hits >= 1  # the model did produce its own first words again, and the judge rejected them
    assert needle not in streamed and streamed == final.result.text and streamed.strip()
    assert not judge.judge(prompt, final.result.text).violated and final.result.passed
    if strategy == "verify":
        assert any(isinstance(e, RewindEvent) for e in events)
    again = Guard(policy, backend, judge=RejectText(needle, policy)).invoke(
        prompt, max_tokens=24, temperature=0, seed=7
    )
    assert again.text == final.result.text  # deterministic under a seed


@pytest.mark.parametrize("strategy", ["verify", "rain"])
@pytest.mark.parametrize("streaming", [False, True])
def test_tiny_model_redaction_reaches_the_user(tiny: tuple[Any, Any], strategy: str, streaming: bool) -> None:
    model, tokenizer = tiny
    backend = LocalBackend(model, tokenizer)
    plain = Guard(parse_policy("name: none\n"), backend).invoke("Hi", max_tokens=12, temperature=0).text
    word = next(w for w in plain.split() if len(w) >= 3 and w.isalnum())
    policy = parse_policy(
        f"name: r\nrules:\n  - {{id: word, judge: pattern, keywords: [{word}], criterion: says it,"
        " actions: [{action: redact, replacement: '[gone]'}]}\n"
        f"rewind: {{strategy: {strategy}, chunk_tokens: 4, rain: {{q: 3, t_min: 1, t_max: 6, "
        "min_new_simulations: 3, token_set_lengths: [1, 2, 4]}}\n"
    )
    judge = Seen(PatternJudge(policy), policy)
    guard = Guard(policy, backend, judge=judge)
    if streaming:
        events = list(guard.stream("Hi", max_tokens=12, temperature=0))
        text = "".join(e.text for e in events if isinstance(e, TextEvent))
        result = events[-1].result  # type: ignore[union-attr]
    else:
        result = guard.invoke("Hi", max_tokens=12, temperature=0)
        text = result.text
    assert judge.hits >= 1  # the word was generated and judged: there was something to keep from the user
    assert word not in text  # the word never reaches the user
    assert text.strip()  # and the answer is not empty
    if strategy == "verify":  # the ladder is [redact]: the chunk is redacted where it was judged
        assert result.fallback is not None and result.fallback.action == "redact" and "[gone]" in text
    else:  # RAIN's value steers the search away from it, or a committed violation is redacted
        redacted = result.fallback is not None and result.fallback.action == "redact" and "[gone]" in text
        assert redacted or (result.fallback is None and result.passed), result.fallback


def test_token_level_generation_ends_at_a_stop_sequence(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    backend = LocalBackend(model, tokenizer)
    guard = Guard(parse_policy("name: none\n"), backend)
    plain = guard.invoke("Hi", max_tokens=16, temperature=0).text
    stop = plain[5:8]
    assert len(plain) > 10 and stop.strip()
    cut = guard.invoke("Hi", max_tokens=16, temperature=0, stop=[stop]).text
    assert cut == plain[: plain.find(stop)]


def test_the_adopted_candidate_is_the_most_likely_that_passes() -> None:
    from types import SimpleNamespace

    from guardrail.rewind.token import _choose

    def verdict(score: float) -> Verdict:
        return Verdict(score, score >= 0.5, ("chosen",) if score >= 0.5 else (), judge="t")

    # row 0 passes with the lowest score but is unlikely; row 1 passes and is the most likely per token
    branches = SimpleNamespace(rows=3, logprobs=[-12.0, -4.0, -0.5], tokens=[[1] * 4, [1] * 4, [1] * 4])
    assert _choose(branches, [verdict(0.1), verdict(0.3), verdict(0.9)]) == 1  # type: ignore[arg-type]
    # per token: a short row is not favoured for its length alone
    branches = SimpleNamespace(rows=2, logprobs=[-3.0, -4.0], tokens=[[1], [1] * 8])
    assert _choose(branches, [verdict(0.2), verdict(0.2)]) == 1  # type: ignore[arg-type]
    # none passes: the least violating, which the caller rewinds again (never released)
    branches = SimpleNamespace(rows=2, logprobs=[-1.0, -9.0], tokens=[[1], [1]])
    assert _choose(branches, [verdict(0.9), verdict(0.6)]) == 1  # type: ignore[arg-type]


def test_token_lookahead_rejects_a_chunk_whose_continuation_violates(tiny: tuple[Any, Any]) -> None:
    # the first chunk passes alone; judged with the next 4 tokens decoded on the same cache it does not, so it
    # is regenerated before a streaming user sees it (without the look-ahead it goes out at once)
    model, tokenizer = tiny
    backend = LocalBackend(model, tokenizer)
    none = parse_policy("name: none\nrewind: {chunk_tokens: 4, lookahead_tokens: 0}\n")
    pieces = [
        e.text for e in Guard(none, backend).stream("Hi", max_tokens=16, temperature=0) if isinstance(e, TextEvent)
    ]
    assert len(pieces) >= 3
    opening, needle = pieces[0], pieces[1][:4]
    assert needle.strip() and needle not in opening

    def run(lookahead: int) -> tuple[list[Any], RejectText]:
        policy = parse_policy(POLICY + f"rewind: {{chunk_tokens: 4, lookahead_tokens: {lookahead}, candidates: 3}}\n")
        judge = RejectText(needle, policy)
        return list(Guard(policy, backend, judge=judge).stream("Hi", max_tokens=16, temperature=0)), judge

    plain_events, _ = run(0)
    assert next(e.text for e in plain_events if isinstance(e, TextEvent)) == opening  # released before the needle
    events, judge = run(4)
    verdicts = [e for e in events if isinstance(e, VerdictEvent)]
    assert verdicts[0].verdict.violated and verdicts[0].lookahead == 4 and judge.hits >= 1
    rewind = next(e for e in events if isinstance(e, RewindEvent))
    assert rewind.back_to_unit == 0 and rewind.rejected_tokens == 8  # the chunk and its look-ahead
    streamed = "".join(e.text for e in events if isinstance(e, TextEvent))
    final = events[-1]
    assert isinstance(final, FinalEvent) and streamed == final.result.text and needle not in streamed
    assert not streamed.startswith(opening + needle)


def _unrejected(tiny: tuple[Any, Any], lookaheads: tuple[int, ...], max_tokens: int) -> tuple[list[Any], list[int]]:
    """Greedy answers in chunks of 4, guarded by a judge that rejects nothing, one per look-ahead, and how many
    times that judge was called for each."""
    backend = LocalBackend(*tiny)
    results, calls = [], []
    for lookahead in lookaheads:
        policy = parse_policy(POLICY + f"rewind: {{chunk_tokens: 4, lookahead_tokens: {lookahead}}}\n")
        judge = RejectText("\x00never", policy)
        results.append(Guard(policy, backend, judge=judge).invoke("Hi", max_tokens=max_tokens, temperature=0))
        calls.append(judge.calls)
    return results, calls


def test_token_lookahead_keeps_greedy_decoding_exact(tiny: tuple[Any, Any]) -> None:
    # every chunk is judged with its look-ahead and alone (the cache cropped, judged, the look-ahead fed back):
    # when nothing is rejected, the answer is token for token the one decoded without a look-ahead
    results, calls = _unrejected(tiny, (0, 5), max_tokens=20)
    answers = [result.text for result in results]
    assert answers[0] == answers[1] and answers[0].strip()
    assert calls == [5, 7]  # 5 chunks of 4; with the look-ahead 3 chunks judged twice, then the last 8 tokens


def test_token_lookahead_judges_each_prefix_once_and_refeeds_nothing_it_remembers(tiny: tuple[Any, Any]) -> None:
    # with a look-ahead of two chunks, a chunk's trajectory is the chunk two further on: its verdict alone is
    # remembered, so neither the judge nor the model (crop, judge, feed the look-ahead back) runs for it again
    (plain, ahead), calls = _unrejected(tiny, (0, 8), max_tokens=40)
    assert plain.text == ahead.text and len(ahead.text.split()) > 5
    # 10 chunks judged once each; with the look-ahead: the first two chunks alone, 7 trajectories (each the
    # prefix of a later chunk, whose own verdict it is), the whole answer: 10 too
    assert calls == [10, 10]
    # generation forwards: only the first two chunks' look-aheads are fed back (2 x 8 tokens), not every chunk's
    extra = ahead.generation_cost.forward_tokens - plain.generation_cost.forward_tokens
    assert 0 < extra <= 16, extra
    policy = parse_policy(POLICY + "rewind: {chunk_tokens: 4, lookahead_tokens: 8}\n")
    guard = Guard(policy, LocalBackend(*tiny), judge=RejectText("\x00never", policy))
    costs = [e.verdict.cost.ms for e in guard.stream("Hi", max_tokens=40, temperature=0) if isinstance(e, VerdictEvent)]
    # the 5 chunks whose own verdict was remembered carry no cost (it was counted with the earlier look-ahead)
    assert len(costs) == 8 and costs.count(0.0) == 5, costs


@pytest.mark.parametrize("strategy", ["verify", "rain"])
def test_accepted_text_is_not_judged_again_when_the_answer_completes(tiny: tuple[Any, Any], strategy: str) -> None:
    # a complete answer's verdict is told how much of it was accepted (judged as partial answers before), so a
    # judge that also scores earlier sentence ends (the embedding judge) leaves the accepted text alone: text
    # that passed in its chunk cannot fail the whole answer at its end, where no rewind can reach it
    policy = parse_policy(
        POLICY + f"rewind: {{strategy: {strategy}, chunk_tokens: 4, lookahead_tokens: 4, "
        "rain: {q: 3, t_min: 1, t_max: 4, min_new_simulations: 2, token_set_lengths: [2, 4]}}\n"
    )
    judge = Recorder(policy)
    result = Guard(policy, LocalBackend(*tiny), judge=judge).invoke("Hi", max_tokens=24, temperature=0)
    complete = [(text, judged) for text, partial, judged in judge.calls if not partial]
    assert len(complete) >= 1 and any(judged > 0 for _, judged in complete), complete
    assert any(text == result.text for text, _ in complete)
    for number, (text, _, judged) in enumerate(judge.calls):
        # what a call says was accepted is a prefix that an earlier call judged as a partial answer
        assert judged == 0 or (text[:judged], True) in [(t, p) for t, p, _ in judge.calls[:number]], (text, judged)


def test_token_memo_is_bounded_and_keeps_what_was_used_last(tiny: tuple[Any, Any]) -> None:
    # keys are whole answers' ids: a long RAIN search would grow the memo without end; the least recently used
    # verdicts go first, and a dropped verdict is judged again (never a different answer)
    memo: VerdictMemo[tuple[int, ...]] = VerdictMemo(3)
    for n in range(4):
        memo.put((n,), Verdict(0.1 * n, False, judge="t", cost=Cost(ms=5.0)))
        if n == 2:
            assert memo.get((0,)) is not None  # used: kept over (1,)
    assert len(memo) == 3 and memo.get((1,)) is None
    kept = memo.get((0,))
    assert kept is not None and kept.score == 0.0 and kept.cost.ms == 0.0
    policy = parse_policy(POLICY)
    evaluator = TokenEvaluator(RejectText("\x00never", policy), tiny[0])
    for n in range(MEMO_LIMIT + 5):
        evaluator.memo.put((n,), Verdict(0.0, False, judge="t"))
    assert len(evaluator.memo) == MEMO_LIMIT
