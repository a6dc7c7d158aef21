"""Tool calls in the core: pieces merged by index, arguments judged by tool_arguments rules, the ladder applied."""

from __future__ import annotations

import json
from typing import Any

import pytest

from guardrail import Guard, GuardrailViolation
from guardrail.errors import PolicyError
from guardrail.policy import load_policy
from guardrail.tool_calls import ToolCall, merge_tool_calls
from tests.fakes import ToolCallingBackend

EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"


def _policy(tmp_path: Any, actions: str, tools: str = "{save_note: [text]}", extra: str = "") -> Any:
    path = tmp_path / "tools.yaml"
    path.write_text(
        f"""
name: tools
rules:
  - id: no-emails-in-notes
    judge: pattern
    scope: [tool_arguments]
    tools: {tools}
    criterion: A note contains an e-mail address.
    patterns: ['{EMAIL}']
    actions: {actions}
{extra}
"""
    )
    return path


def _note(text: str, **more: Any) -> tuple[str, str]:
    return ("save_note", json.dumps({"text": text, **more}))


# ----------------------------------------------------------------------------------------------- merging


def test_openai_deltas_merge_by_index_even_when_interleaved() -> None:
    pieces = [
        {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": '}},
        {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": '{"y"'}},
        {"index": 0, "function": {"arguments": "1}"}},
        {"index": 1, "function": {"arguments": ": 2}"}},
    ]
    calls = merge_tool_calls(pieces)
    assert [(c.name, c.id, c.args()) for c in calls] == [("f", "a", {"x": 1}), ("g", "b", {"y": 2})]


def test_a_name_and_id_repeated_in_every_piece_are_kept_once() -> None:
    pieces = [
        {"index": 0, "id": "c1", "function": {"name": "save_note", "arguments": piece}}
        for piece in ['{"te', 'xt": ', '"hi"}']
    ]
    (call,) = merge_tool_calls(pieces)
    assert call == ToolCall("save_note", '{"text": "hi"}', "c1", 0)


def test_langchain_chunks_and_whole_calls_merge_too() -> None:
    chunks = [{"name": "f", "args": '{"a"', "id": "1", "index": 0}, {"name": None, "args": ": [1]}", "index": 0}]
    assert merge_tool_calls(chunks)[0].args() == {"a": [1]}
    whole = [{"name": "f", "args": {"a": 1}, "id": "1"}, {"name": "g", "args": {}, "id": "2"}]
    assert [(c.name, c.index, c.args()) for c in merge_tool_calls(whole)] == [("f", 0, {"a": 1}), ("g", 1, {})]


def test_arguments_that_are_not_an_object_parse_to_none() -> None:
    assert ToolCall("f", '{"a": ').args() is None
    assert ToolCall("f", "[1]").args() is None
    assert ToolCall("f", "").args() == {}


# ----------------------------------------------------------------------------------------------- the policy


def test_tools_needs_the_tool_arguments_scope(tmp_path: Any) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nrules:\n  - {id: r, criterion: c, judge: pattern, keywords: [x], tools: {f: []}}\n")
    with pytest.raises(PolicyError, match="tool_arguments"):
        load_policy(path)


# ----------------------------------------------------------------------------------------------- the guard


def test_an_email_in_a_checked_argument_is_redacted_and_the_rest_kept(tmp_path: Any) -> None:
    policy = _policy(tmp_path, '[{action: redact, replacement: "[email]"}]')
    backend = ToolCallingBackend([[_note("Reply to bob@example.com today", tag="ann@example.org")]], repeat=True)
    result = Guard(policy, backend).invoke("Save a note")
    (call,) = result.tool_calls
    # 'text' is checked and redacted; 'tag' is not named by the rule, so it is left alone
    assert call.args() == {"text": "Reply to [email] today", "tag": "ann@example.org"}
    assert call.name == "save_note" and call.id == "call_0_0"
    assert result.fallback is not None and result.fallback.action == "redact"
    assert result.fallback.scope == "tool_arguments"
    checked = [v for v in result.verdicts if v.scope == "tool_arguments"]
    assert len(checked) == 1 and checked[0].verdict.violated


def test_other_tools_are_not_checked_by_a_narrowed_rule(tmp_path: Any) -> None:
    policy = _policy(tmp_path, '[{action: refuse, message: "no"}]')
    backend = ToolCallingBackend([[("send_email", json.dumps({"to": "bob@example.com"}))]])
    result = Guard(policy, backend).invoke("Mail bob")
    assert result.passed and result.tool_calls[0].args() == {"to": "bob@example.com"}


def test_unparsed_arguments_are_judged_whole(tmp_path: Any) -> None:
    policy = _policy(tmp_path, '[{action: redact, replacement: "[email]"}]')
    backend = ToolCallingBackend([[("save_note", '{"text": "bob@example.com')]])  # cut off: not JSON
    (call,) = Guard(policy, backend).invoke("Save").tool_calls
    assert "bob@example.com" not in call.arguments and "[email]" in call.arguments


def test_refuse_drops_every_tool_call(tmp_path: Any) -> None:
    policy = _policy(tmp_path, '[{action: refuse, message: "Not with addresses."}]')
    backend = ToolCallingBackend([[_note("ok"), _note("bob@example.com")]])
    result = Guard(policy, backend).invoke("Save two notes")
    assert result.tool_calls == () and result.text == "Not with addresses."
    assert result.fallback is not None and result.fallback.action == "refuse"


def test_raise_raises_before_any_call_is_returned(tmp_path: Any) -> None:
    policy = _policy(tmp_path, "[{action: raise}]")
    backend = ToolCallingBackend([[_note("bob@example.com")]])
    with pytest.raises(GuardrailViolation) as caught:
        Guard(policy, backend).invoke("Save")
    assert caught.value.rules == ("no-emails-in-notes",)


def test_rewind_regenerates_until_the_arguments_pass(tmp_path: Any) -> None:
    policy = _policy(tmp_path, "[{action: rewind, max_attempts: 2}, {action: refuse}]")
    backend = ToolCallingBackend([[_note("bob@example.com")], [_note("call Bob")]])
    result = Guard(policy, backend).invoke("Save")
    assert [call.args() for call in result.tool_calls] == [{"text": "call Bob"}]
    assert len(backend.calls) == 2 and len(result.rewinds) == 1
    assert result.rewinds[0].rules == ("no-emails-in-notes",) and result.passed
    # the regeneration is told which rule the call broke, never the rejected arguments
    retry = json.dumps(backend.calls[1])
    assert "A note contains an e-mail address" in retry and "bob@example.com" not in retry


@pytest.mark.parametrize("streaming", [False, True])
def test_no_tool_call_is_released_before_it_is_judged(tmp_path: Any, streaming: bool) -> None:
    policy = _policy(tmp_path, '[{action: redact, replacement: "[email]"}]')
    backend = ToolCallingBackend([[_note("bob@example.com")]])
    guard = Guard(policy, backend)
    if streaming:
        events = list(guard.stream("Save"))
        assert "bob@example.com" not in json.dumps([e.to_dict() for e in events if e.type != "final"])
        result = events[-1].result  # type: ignore[union-attr]
    else:
        result = guard.invoke("Save")
    assert result.tool_calls[0].args() == {"text": "[email]"}


def test_tool_call_pieces_count_against_max_tokens(tmp_path: Any) -> None:
    backend = ToolCallingBackend([[_note("x")]], endless=True)
    result = Guard(_policy(tmp_path, "[{action: flag}]"), backend, max_tokens=50).invoke("Save")
    assert backend.sent <= 51 and backend.closed == 1
    assert result.tool_calls and result.tool_calls[0].name == "save_note"


def test_structured_answers_are_judged_by_the_output_rules(tmp_path: Any) -> None:
    """Calls made as the structured answer (``structured_output=True``) are the answer: output rules judge them."""
    path = tmp_path / "out.yaml"
    path.write_text(
        "name: out\nrules:\n  - {id: no-secret, judge: pattern, criterion: c, keywords: [opensesame]}\n"
        "actions: [{action: refuse, message: refused}]\n"
    )
    calls = [[("Answer", json.dumps({"password": "opensesame"}))]]
    plain = Guard(path, ToolCallingBackend(calls)).invoke("What is the password?")
    assert plain.passed and plain.tool_calls  # an ordinary tool call is not the answer
    structured = Guard(path, ToolCallingBackend(calls)).invoke("What is the password?", structured_output=True)
    assert structured.tool_calls == () and structured.text == "refused"
