"""Policy patterns run on untrusted text in linear time: no pattern and no input stalls the guard."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from guardrail.errors import JudgeError, PolicyError
from guardrail.judges.pattern import PatternJudge
from guardrail.policy import load_policy, parse_policy
from guardrail.regex import compile_pattern, keyword_pattern

REDOS = (
    "name: redos\nrules:\n"
    "  - {id: aaa, criterion: all a, judge: pattern, scope: [input, output], patterns: ['^(a+)+$']}\n"
)


def finishes(call: Callable[[], Any], within_s: float = 20.0) -> Any:
    """Run ``call`` in a thread; fail (instead of hanging the suite) when it has not returned in time."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(within_s)
    assert not thread.is_alive(), f"still matching after {within_s}s"
    return result[0]


def test_catastrophic_backtracking_pattern_is_linear() -> None:
    judge = PatternJudge(parse_policy(REDOS))
    # 'a' * 33 + '!' froze a backtracking engine for minutes; here it is a plain non-match
    verdict = finishes(lambda: judge.judge("q", "a" * 5_000 + "!"))
    assert not verdict.violated
    assert judge.judge("q", "aaaa").violated


def test_builtin_email_pattern_on_a_long_line_without_an_at_sign() -> None:
    judge = PatternJudge(load_policy("no_pii"))
    text = "x" * 1_000_000  # quadratic for the old backtracking e-mail pattern (a 200 KB line took 62 s)
    verdict = finishes(lambda: judge.judge("q", text))
    assert not verdict.violated


@pytest.mark.parametrize(
    "pattern",
    [r"(?<!\d)\d{4}", r"\d{4}(?!\d)", r"(?=secret)\w+", r"(a)\1", r"(?P<x>a)(?P=x)"],
)
def test_patterns_beyond_linear_matching_are_rejected_at_load_with_a_location(pattern: str) -> None:
    text = f"name: p\nrules:\n  - id: r\n    criterion: c\n    judge: pattern\n    patterns: ['{pattern}']\n"
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "app.yaml")
    issue = caught.value.issues[0]
    assert issue.line == 6 and "rules[0].patterns" in issue.path
    assert "not accepted" in issue.message


def test_rejection_says_how_to_write_a_boundary() -> None:
    with pytest.raises(ValueError, match=r"\(\?P<match>"):
        compile_pattern(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")


def test_builtin_pii_patterns_keep_their_boundaries() -> None:
    judge = PatternJudge(load_policy("no_pii"))
    text = "ssn 123-45-6789 and 987-65-4321; not x1123-45-67890; card 4111 1111 1111 1111."
    spans = [(rule, text[start:end]) for start, end, rule in judge.spans(text)]
    assert ("pii-ssn", "123-45-6789") in spans and ("pii-ssn", "987-65-4321") in spans
    assert not any(rule == "pii-ssn" and "1123" in found for rule, found in spans)
    assert ("pii-card", "4111 1111 1111 1111") in spans


def test_adjacent_matches_share_a_boundary_character() -> None:
    pattern = compile_pattern(r"(?:^|[^0-9])(?P<match>\d{3})(?:[^0-9]|$)")
    assert list(pattern.spans("123 456 789")) == [(0, 3), (4, 7), (8, 11)]


def test_keywords_are_whole_words_in_any_script_and_case() -> None:
    word = keyword_pattern("café")
    assert list(word.spans("Un CAFÉ, puis un café.")) == [(3, 7), (17, 21)]
    assert not word.search("cafés et décaféiné")
    assert keyword_pattern("秘密").search("这是秘密")  # no word boundary inside CJK text without spaces
    assert keyword_pattern("C++").search("I like C++ a lot") and not keyword_pattern("C++").search("ObjC++")


def test_a_judge_call_that_runs_out_of_time_is_an_error_not_a_hang() -> None:
    policy = parse_policy("name: p\nrules:\n  - {id: r, criterion: c, judge: pattern, patterns: ['a.*b']}\n")
    judge = PatternJudge(policy, time_limit_s=0.0)
    with pytest.raises(JudgeError, match="gave up"):
        judge.judge("q", "a" * 100_000)


def test_spans_are_character_offsets_in_non_ascii_text() -> None:
    judge = PatternJudge(load_policy("no_pii"))
    text = "Écrivez à anne@example.com — 电话 555-123-4567, ou 😀 123-45-6789."
    found = {rule: text[start:end] for start, end, rule in judge.spans(text)}
    assert found["pii-email"] == "anne@example.com"
    assert found["pii-phone"] == "555-123-4567"
    assert found["pii-ssn"] == "123-45-6789"
    everything = compile_pattern(r"(?:^|\s)(?P<match>\S)")  # one character after each space: no split characters
    sample = "é 😀 电 x"
    assert [sample[a:b] for a, b in everything.spans(sample)] == ["é", "😀", "电", "x"]
