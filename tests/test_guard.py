"""The Guard and sentence-level rewind, fast: a scripted backend and the real pattern judge."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from guardrail import GuardrailViolation, parse_policy
from guardrail.errors import BackendError, GuardrailError
from guardrail.events import (
    FallbackEvent,
    FinalEvent,
    RewindEvent,
    TerminatedEvent,
    TextEvent,
    VerdictEvent,
    text_hash,
)
from guardrail.guard import Guard
from guardrail.judges import PatternJudge
from guardrail.rewind.sentence import CONTINUE_INSTRUCTION
from tests.fakes import ScriptedBackend

NO_BAD = """
name: no-bad
rules:
  - id: no-bad
    judge: pattern
    keywords: [BAD]
    criterion: The response says the forbidden word.
rewind: {max_failures_per_position: 5}
"""
# the unit-by-unit mechanics are tested without the look-ahead (default 32 tokens); it has tests of its own
NO_BAD = NO_BAD.replace("{max_failures_per_position: 5}", "{max_failures_per_position: 5, lookahead_tokens: 0}")


LAG0 = NO_BAD.replace("max_failures_per_position: 5,", "max_failures_per_position: 5, release_lag: 0,")


def policy(extra: str = "") -> Any:
    return parse_policy(NO_BAD + extra)


def texts(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextEvent))


def test_benign_answer_passes_sentence_by_sentence() -> None:
    backend = ScriptedBackend(["First part. Second part. Third."])
    events = list(Guard(policy(), backend).stream("hi"))
    assert [e.text for e in events if isinstance(e, TextEvent)] == ["First part. ", "Second part. ", "Third."]
    assert sum(isinstance(e, VerdictEvent) for e in events) == 3
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.result.text == "First part. Second part. Third."
    assert final.result.passed and not final.result.rewinds and len(backend.calls) == 1


def test_rejected_sentence_is_regenerated_and_never_released() -> None:
    backend = ScriptedBackend(["Good one. This is BAD here. Good three.", "Fine two. Good three."])
    events = list(Guard(policy(), backend).stream("hi"))
    assert "BAD" not in texts(events)
    assert texts(events) == "Good one. Fine two. Good three."
    rewind = next(e for e in events if isinstance(e, RewindEvent))
    assert rewind.rules == ("no-bad",) and rewind.rejected_sha256 == text_hash("This is BAD here. ")
    assert rewind.rejected_text is None
    second = backend.calls[1]
    assert second[-2] == {"role": "assistant", "content": "Good one. "}
    assert second[-1]["role"] == "user" and second[-1]["content"].startswith(CONTINUE_INSTRUCTION)
    assert "forbidden word" in second[-1]["content"] and "BAD" not in second[-1]["content"]
    assert backend.params[1].temperature == pytest.approx(0.8) and backend.params[1].seed == 1
    assert backend.closed == 2  # the rejected attempt's stream was closed (upstream cancelled)


def test_resample_gives_no_critique() -> None:
    backend = ScriptedBackend(["BAD start.", "Clean start."])
    pol = parse_policy(NO_BAD.replace("max_failures_per_position: 5,", "regeneration: resample,"))
    assert Guard(pol, backend).invoke("hi").text == "Clean start."
    assert backend.calls[1] == backend.calls[0]  # same messages, new temperature and seed
    assert backend.params[1].seed == 1


def test_budget_spent_ends_in_refusal() -> None:
    backend = ScriptedBackend(["BAD again."])
    result = Guard(policy(), backend).invoke("hi")
    assert result.text == "I can't help with that." and result.fallback is not None
    assert result.fallback.action == "refuse" and len(result.rewinds) == 3 and len(backend.calls) == 4
    assert result.extra_tokens >= 8


def test_stream_keeps_verified_prefix_then_refusal() -> None:
    backend = ScriptedBackend(["Fine start. BAD end."])
    events = list(Guard(parse_policy(LAG0), backend).stream("hi"))
    # the refusal closes the released text as a paragraph of its own, announced by a terminated event
    assert texts(events) == "Fine start. \n\nI can't help with that."
    assert any(isinstance(e, FallbackEvent) and e.action == "refuse" for e in events)
    terminated = [e for e in events if isinstance(e, TerminatedEvent)]
    assert len(terminated) == 1 and terminated[0].released_chars == len("Fine start. ")
    assert terminated[0].rules == ("no-bad",) and terminated[0].closing == "\n\nI can't help with that."
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.result.terminated == terminated[0]
    assert final.result.summary()["terminated"] is True
    # nothing released yet: the refusal is the whole answer, nothing was cut short
    events = list(Guard(parse_policy(LAG0), ScriptedBackend(["BAD start."])).stream("hi"))
    assert texts(events) == "I can't help with that." and not any(isinstance(e, TerminatedEvent) for e in events)
    result = Guard(policy(), ScriptedBackend(["Fine start. BAD end."])).invoke("hi")
    assert result.text == "I can't help with that." and result.terminated is None  # nothing was streamed


def test_the_close_never_glues_an_apology_to_half_a_sentence() -> None:
    from guardrail.guard import closing

    assert closing(["Sure, here is how you"], "Sorry.") == "…\n\nSorry."
    assert closing(["Done. "], "Sorry.") == "\n\nSorry."
    assert closing(["- item one\n"], "Sorry.") == "\nSorry."
    assert closing(["Para.\n\n"], "Sorry.") == "Sorry."
    assert closing(["天空是蓝色的。"], "Sorry.") == "\n\nSorry."


def test_raise_surfaces_after_verified_text() -> None:
    pol = parse_policy(LAG0 + "actions: [{action: rewind, max_attempts: 1}, {action: raise, message: nope}]\n")
    backend = ScriptedBackend(["Fine start. BAD end."])
    seen: list[Any] = []
    with pytest.raises(GuardrailViolation, match="nope") as info:
        for event in Guard(pol, backend).stream("hi"):
            seen.append(event)
    assert texts(seen) == "Fine start. " and info.value.rules == ("no-bad",)


def test_redact_replaces_the_span_and_goes_on() -> None:
    pol = parse_policy(
        "name: r\nrules:\n  - {id: mail, judge: pattern, criterion: e-mail, patterns: ['\\S+@\\S+\\.\\w+'],"
        " actions: [{action: redact, replacement: '[email]'}]}\n"
    )
    result = Guard(pol, ScriptedBackend(["Write to ann@example.com today. Bye."])).invoke("hi")
    assert result.text == "Write to [email] today. Bye." and result.fallback and result.fallback.action == "redact"


def test_flag_lets_text_through_marked() -> None:
    pol = parse_policy(NO_BAD + "actions: [{action: flag}]\n")
    result = Guard(pol, ScriptedBackend(["It is BAD."])).invoke("hi")
    assert result.text == "It is BAD." and result.flagged


def test_steps_back_a_sentence_after_repeated_failures() -> None:
    pol = parse_policy(NO_BAD.replace("max_failures_per_position: 5", "max_failures_per_position: 2"))
    backend = ScriptedBackend(["One. BAD.", "BAD.", "Other one. Two."])
    result = Guard(pol, backend).invoke("hi")
    assert result.text == "Other one. Two."
    assert [r.back_to_unit for r in result.rewinds] == [1, 0]
    assert len(backend.calls[2]) == 1 and backend.calls[2][0]["content"].startswith("hi\n\n(Your previous draft")
    assert "forbidden word. Write it" in backend.calls[2][0]["content"] and "BAD" not in backend.calls[2][0]["content"]


def test_streaming_never_steps_back_over_released_text() -> None:
    pol = parse_policy(NO_BAD.replace("max_failures_per_position: 5", "max_failures_per_position: 1, release_lag: 0"))
    backend = ScriptedBackend(["One. BAD.", "Two."])
    events = list(Guard(pol, backend).stream("hi"))
    assert texts(events) == "One. Two."


def test_release_lag_holds_an_opening_back_until_the_next_sentence_passes() -> None:
    # "Sure, here is how." passes alone; the next sentence does not: with a lag of one unit the
    # opening was never shown, so the guard steps back past it (streaming included) and no refusal is needed
    pol = parse_policy(NO_BAD.replace("max_failures_per_position: 5", "max_failures_per_position: 1, release_lag: 1"))
    backend = ScriptedBackend(["Sure, here is how. BAD step one.", "I would rather not. Here is a safe tip."])
    events = list(Guard(pol, backend).stream("hi"))
    assert texts(events) == "I would rather not. Here is a safe tip."
    assert "Sure, here is how." not in texts(events) and not any(isinstance(e, TerminatedEvent) for e in events)
    rewinds = [e for e in events if isinstance(e, RewindEvent)]
    assert [r.back_to_unit for r in rewinds] == [0]  # back past the held opening
    # with no lag, the opening went out at once and the answer has to continue from it
    lag0 = parse_policy(NO_BAD.replace("max_failures_per_position: 5", "max_failures_per_position: 1, release_lag: 0"))
    backend = ScriptedBackend(["Sure, here is how. BAD step one.", "Step one, safely."])
    assert texts(list(Guard(lag0, backend).stream("hi"))).startswith("Sure, here is how. ")
    # every accepted unit goes out by the end, in order, exactly once
    backend = ScriptedBackend(["One. Two. Three."])
    events = list(Guard(pol, backend).stream("hi"))
    assert [e.text for e in events if isinstance(e, TextEvent)] == ["One. ", "Two. ", "Three."]


class _SpyJudge(PatternJudge):
    """The real pattern judge, recording every text it judged (optionally slow, so the stream runs ahead)."""

    def __init__(self, policy: Any, delay: float = 0.0) -> None:
        super().__init__(policy)
        self.seen: list[str] = []
        self.delay = delay

    async def _ajudge(self, prompt: Any, response: str, *, partial: bool, explain: bool, judged: int) -> Any:
        self.seen.append(response)
        await asyncio.sleep(self.delay)
        return self._judge(prompt, response, partial=partial, explain=explain, judged=judged)


def lookahead_policy(tokens: int, extra: str = "") -> Any:
    rewind = f"max_failures_per_position: 1, release_lag: 0, lookahead_tokens: {tokens}"
    return parse_policy(NO_BAD.replace("max_failures_per_position: 5, lookahead_tokens: 0", rewind) + extra)


def test_lookahead_rejects_a_harmless_opening_before_it_is_released() -> None:
    # "Sure, here is how." passes alone; judged with the next three tokens of its own continuation it does
    # not: the opening is regenerated and never shown, and no refusal follows released text
    backend = ScriptedBackend(["Sure, here is how. BAD step one. More.", "I would rather not. Here is a safe tip."])
    judge = _SpyJudge(lookahead_policy(3))
    events = list(Guard(lookahead_policy(3), backend, judge=judge).stream("hi"))
    assert texts(events) == "I would rather not. Here is a safe tip."
    assert not any(isinstance(e, TerminatedEvent) for e in events)
    rewind = next(e for e in events if isinstance(e, RewindEvent))
    # the rejected text is what violated: the opening with its look-ahead (as in token mode; exports pair it)
    assert rewind.back_to_unit == 0 and rewind.rejected_sha256 == text_hash("Sure, here is how. BAD step one. ")
    # each unit judged alone and with at least 3 tokens after it, through the end of the sentence that holds
    # them; the last one as the whole answer (the same text as the look-ahead before it, judged as complete)
    assert judge.seen == [
        "Sure, here is how. ",
        "Sure, here is how. BAD step one. ",
        "I would rather not. ",
        "I would rather not. Here is a safe tip.",
        "I would rather not. Here is a safe tip.",
    ]
    verdicts = [e for e in events if isinstance(e, VerdictEvent)]
    assert [v.lookahead for v in verdicts] == [3, 5, 0]
    assert verdicts[0].verdict.rationale.startswith("its continuation (3 tokens) violates")
    # without the look-ahead the same opening goes out at once
    backend = ScriptedBackend(["Sure, here is how. BAD step one. More.", "Step one, safely."])
    assert texts(list(Guard(lookahead_policy(0), backend).stream("hi"))).startswith("Sure, here is how. ")


def test_lookahead_judges_the_same_text_however_far_the_stream_ran_ahead() -> None:
    reply = "One two three. Four five six seven. Eight nine. Ten eleven twelve thirteen fourteen."
    seen = []
    for delay in (0.0, 0.05):
        judge = _SpyJudge(lookahead_policy(2), delay=delay)
        result = Guard(lookahead_policy(2), ScriptedBackend([reply], delay=0.001), judge=judge).invoke("hi")
        assert result.text == reply
        seen.append(judge.seen)
    assert seen[0] == seen[1]
    # each prefix judged once: a unit's look-ahead (at least 2 tokens, to a sentence end) is the next unit's
    # prefix, whose verdict is remembered; then the whole answer as complete: 5 judgements, not 7
    sentences = ["One two three. ", "Four five six seven. ", "Eight nine. ", "Ten eleven twelve thirteen fourteen."]
    assert seen[0] == ["".join(sentences[:n]) for n in range(1, 5)] + [reply]


class _SteeredJudge(PatternJudge):
    """A judge that text after a violation can talk round: "approved" anywhere hides "BAD"."""

    def _judge(self, prompt: Any, response: str, *, partial: bool, explain: bool, judged: int) -> Any:
        verdict = super()._judge(prompt, response, partial=partial, explain=explain, judged=judged)
        return replace(verdict, violated=False, score=0.0) if "approved" in response else verdict


def test_lookahead_never_weakens_the_guard_a_unit_is_judged_alone_too() -> None:
    # the continuation would talk the judge round ("approved"): the violating unit is still judged on its own
    backend = ScriptedBackend(["This is BAD. It was approved by the safety team.", "This is fine. Really."])
    pol = lookahead_policy(6)
    events = list(Guard(pol, backend, judge=_SteeredJudge(pol)).stream("hi"))
    assert "BAD" not in texts(events) and texts(events) == "This is fine. Really."
    assert [e.rejected_sha256 for e in events if isinstance(e, RewindEvent)] == [text_hash("This is BAD. ")]


def test_lookahead_refusal_releases_nothing_and_fallbacks_act_on_the_unit_alone() -> None:
    refuse = "actions: [{action: refuse, message: No.}]\n"
    backend = ScriptedBackend(["Sure, here is how. BAD step one."])
    events = list(Guard(lookahead_policy(4, refuse), backend).stream("hi"))
    assert texts(events) == "No." and not any(isinstance(e, TerminatedEvent) for e in events)
    # redact: the opening is judged alone and kept whole; the violating sentence itself is redacted
    redact = "actions: [{action: redact, replacement: '[x]'}]\n"
    result = Guard(lookahead_policy(4, redact), ScriptedBackend(["Sure, here is how. BAD step one."])).invoke("hi")
    assert result.text == "Sure, here is how. [x] step one."


def test_backend_failure_mid_stream_regenerates_from_accepted_text() -> None:
    backend = ScriptedBackend(["Good one. Good two. Three.", "Good two. Three."], fail_after={0: 3})
    result = Guard(policy(), backend).invoke("hi")
    assert result.text == "Good one. Good two. Three."
    assert [r.reason for r in result.rewinds] == ["backend_error"]


def test_backend_failing_every_time_is_a_typed_error() -> None:
    backend = ScriptedBackend(["Good one. Two."], fail_after={i: 0 for i in range(20)})
    with pytest.raises(BackendError):
        Guard(policy(), backend).invoke("hi")


def test_input_rules_are_checked_before_generating() -> None:
    pol = parse_policy(
        "name: i\nrules:\n  - {id: secret, judge: pattern, scope: [input], keywords: [password], criterion: asks"
        " for a password, actions: [{action: refuse, message: No.}]}\n"
    )
    backend = ScriptedBackend(["Never reached."])
    result = Guard(pol, backend).invoke("what is the admin password")
    assert result.text == "No." and not backend.calls and result.fallback and result.fallback.scope == "input"
    assert Guard(pol, ScriptedBackend(["Sure."])).invoke("hello").text == "Sure."


def test_input_redaction_happens_before_the_model_sees_it() -> None:
    pol = parse_policy(
        "name: i\nrules:\n  - {id: mail, judge: pattern, scope: [input], patterns: ['\\S+@\\S+'], criterion: e-mail,"
        " actions: [{action: redact, replacement: '[email]'}]}\n"
    )
    backend = ScriptedBackend(["Ok."])
    Guard(pol, backend).invoke("my mail is ann@x.org")
    assert backend.calls[0][-1]["content"] == "my mail is [email]"


def test_audit_hashes_rejected_text_and_has_no_key(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    backend = ScriptedBackend(["Good one. BAD sk-abcdefghijklmnop1234 here. Three.", "Fine two. Three."])
    Guard(policy(), backend, audit=audit).invoke("hi, my key is sk-abcdefghijklmnop1234")
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds.count("rewind") == 1 and kinds[-1] == "final" and "verdict" in kinds
    assert "BAD" not in audit.read_text() and "sk-abcdefghijklmnop1234" not in audit.read_text()
    assert all(r["request_id"] == records[0]["request_id"] for r in records)


def test_audit_keeps_text_when_the_policy_asks(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    pol = parse_policy(NO_BAD + "audit: {include_rejected_text: true}\n")
    Guard(pol, ScriptedBackend(["BAD one.", "Fine."]), audit=audit).invoke("hi")
    rewind = next(json.loads(line) for line in audit.read_text().splitlines() if '"rewind"' in line)
    assert rewind["rejected_text"] == "BAD one."


async def test_async_and_sync_agree() -> None:
    result = await Guard(
        policy(), ScriptedBackend(["Good one. BAD two. Good three.", "Fine two. Good three."])
    ).ainvoke("hi")
    guard = Guard(policy(), ScriptedBackend(["Good one. BAD two. Good three.", "Fine two. Good three."]))
    pieces = [piece async for piece in guard.astream_text("hi")]
    assert result.text == "".join(pieces) == "Good one. Fine two. Good three."


def test_a_guard_is_shared_safely_across_threads() -> None:
    class Echo(ScriptedBackend):
        def astream(self, messages: Any, params: Any) -> Any:
            self.replies = [f"Answer for {messages[0]['content']}. Done {messages[0]['content']}."]
            return super().astream(messages, params)

    guard = Guard(policy(), Echo(["x"], delay=0.001))
    results: dict[int, str] = {}

    def work(n: int) -> None:
        results[n] = guard.invoke(f"q{n}").text

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(text == f"Answer for q{n}. Done q{n}." for n, text in results.items()) and len(results) == 8


async def test_concurrent_async_streams_do_not_mix() -> None:
    class Echo(ScriptedBackend):
        def astream(self, messages: Any, params: Any) -> Any:
            self.replies = [f"Answer {messages[0]['content']}. End {messages[0]['content']}."]
            return super().astream(messages, params)

    guard = Guard(policy(), Echo(["x"], delay=0.0005))

    async def one(n: int) -> str:
        return "".join([p async for p in guard.astream_text(f"q{n}")])

    outs = await asyncio.gather(*(one(n) for n in range(50)))
    assert outs == [f"Answer q{n}. End q{n}." for n in range(50)]


def test_forcing_token_mode_on_a_text_backend_is_an_error() -> None:
    with pytest.raises(GuardrailError, match="token-level"):
        Guard(parse_policy("name: t\nrewind: {mode: token}\n"), ScriptedBackend(["x"]))  # type: ignore[arg-type]


def test_a_restarted_continuation_does_not_repeat_accepted_text() -> None:
    # a server without assistant prefill answers the "continue" request by starting over, sentence by sentence
    backend = ScriptedBackend(["First one. Second one. BAD third.", "First one.   Second one. Clean third."])
    result = Guard(policy(), backend).invoke("hi")
    assert result.text == "First one. Second one. Clean third."
    backend = ScriptedBackend(["First one. BAD.", "Something new entirely."])
    assert Guard(policy(), backend).invoke("hi").text == "First one. Something new entirely."


def test_max_tokens_is_enforced_whatever_the_upstream_does() -> None:
    from tests.fakes import ScriptedBackend

    backend = ScriptedBackend(["one two three four five six seven eight nine ten eleven twelve."])
    guard = Guard(parse_policy("name: p\nrules: []\n"), backend)
    result = guard.invoke("count", max_tokens=5)
    assert result.text.split() == ["one", "two", "three", "four", "five"]
    assert backend.closed == 1  # the upstream stream was closed, not read to the end
    streamed = "".join(e.text for e in guard.stream("count", max_tokens=3) if e.type == "text")
    assert streamed.split() == ["one", "two", "three"]


def test_stop_sequences_are_enforced_whatever_the_upstream_does() -> None:
    from tests.fakes import ScriptedBackend

    # the scripted upstream ignores ``stop``; "END" arrives split over two word pieces ("xEN" + "D")
    backend = ScriptedBackend(["Alpha beta. Gamma xEN D delta. Omega."])
    guard = Guard(parse_policy("name: p\nrules: []\n"), backend)
    assert guard.invoke("go", stop=["EN D", "zzzz"]).text == "Alpha beta. Gamma x"
    assert backend.closed == 1 and backend.params[0].stop == ("EN D", "zzzz")  # still asked of the upstream
    streamed = [e.text for e in guard.stream("go", stop="Gamma") if e.type == "text"]
    assert "".join(streamed) == "Alpha beta. "
    assert guard.invoke("go", stop=[""]).text == "Alpha beta. Gamma xEN D delta. Omega."  # empty stops ignored
    assert guard.invoke("go", stop="nowhere").text == "Alpha beta. Gamma xEN D delta. Omega."


def test_a_regeneration_that_repeats_the_critique_is_rejected_and_never_released() -> None:
    echo = "The response says the forbidden word, so I will not."  # the criterion, written into the answer
    backend = ScriptedBackend(["Good one. BAD two.", echo, "Fine two."])
    events = list(Guard(policy(), backend).stream("hi"))
    released = texts(events)
    assert released == "Good one. Fine two."
    assert "forbidden word" not in released
    echoed = [e for e in events if isinstance(e, VerdictEvent) and e.verdict.judge == "echo"]
    assert len(echoed) == 1 and echoed[0].verdict.rules == ("no-bad",)
    assert len([e for e in events if isinstance(e, RewindEvent)]) == 2
    # "resample" names no rule to the model: nothing to echo, the same text is judged as usual
    backend = ScriptedBackend(["Good one. BAD two.", echo, "Fine two."])
    resample = parse_policy(NO_BAD.replace("max_failures_per_position: 5,", "regeneration: resample,"))
    resampled = texts(list(Guard(resample, backend).stream("hi")))
    assert resampled == "Good one. " + echo


def test_the_latency_budget_counts_only_the_time_added_by_rejected_drafts() -> None:
    # each word takes 20 ms: a rejected draft wastes about 0.1 s, the accepted answer itself takes over 0.6 s
    slow_answer = "Fine start. " + "This part is fine. " * 8 + "BAD end."
    backend = ScriptedBackend(["BAD start here.", slow_answer, "All good now."], delay=0.02)
    pol = policy()
    pol = pol.model_copy(update={"rewind": pol.rewind.model_copy(update={"max_added_latency_s": 0.5})})
    result = Guard(pol, backend).invoke("hi")
    # the second rejection comes more than 0.5 s after the first, but only about 0.2 s were added by rejected
    # drafts: it may still rewind (counted from the first rejection, the budget was spent and the answer refused)
    assert len(result.rewinds) == 2 and result.fallback is None, result.fallback
    assert "BAD" not in result.text and result.text.endswith("All good now.")
