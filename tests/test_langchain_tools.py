"""Tool calls and structured output through the guarded LangChain model (a fake streaming inner model)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from guardrail.adapters.langchain import GuardedChatModel
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from pydantic import BaseModel

POLICY = """
name: tools
rules:
  - id: no-emails
    judge: pattern
    scope: [tool_arguments]
    criterion: A tool argument contains an e-mail address.
    patterns: ['[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}']
    actions: [{action: redact, replacement: "[email]"}]
  - id: no-secret
    judge: pattern
    criterion: The answer reveals the password.
    keywords: [opensesame]
    actions: [{action: refuse, message: refused}]
"""
REDACTED_CALL = {"name": "save_note", "args": {"text": "Reply to [email]"}, "id": "c1", "type": "tool_call"}


class ToolStreamer(BaseChatModel):
    """Streams one tool call per request, its arguments in 3-character tool_call_chunks (as ChatOpenAI does);
    or ``text`` when set. Records the kwargs of each call."""

    name_: str = "save_note"
    arguments: str = '{"text": "Reply to bob@example.com"}'
    text: str = ""
    seen: list[dict[str, Any]] = []  # noqa: RUF012  # a pydantic field (copied per instance)

    @property
    def _llm_type(self) -> str:
        return "tool-streamer"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=tools, **kwargs)

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        self.seen.append(kwargs)
        if self.text:
            for word in self.text.split(" "):
                yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
            return
        pieces = [self.arguments[i : i + 3] for i in range(0, len(self.arguments), 3)]
        for n, piece in enumerate(pieces):
            chunk = {"name": self.name_ if n == 0 else None, "args": piece, "id": "c1" if n == 0 else None, "index": 0}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        raise AssertionError("the guard streams the inner model")


@pytest.fixture
def policy(tmp_path: Any) -> Any:
    path = tmp_path / "tools.yaml"
    path.write_text(POLICY)
    return path


@tool
def save_note(text: str) -> str:
    """Save a note for later."""
    return "saved"


def test_bind_tools_invoke_returns_whole_judged_arguments(policy: Any) -> None:
    inner = ToolStreamer()
    message = GuardedChatModel(model=inner, policy=policy).bind_tools([save_note]).invoke("Save it")
    assert message.tool_calls == [
        {"name": "save_note", "args": {"text": "Reply to [email]"}, "id": "c1", "type": "tool_call"}
    ]
    assert message.invalid_tool_calls == []
    assert inner.seen[-1]["tools"][0]["function"]["name"] == "save_note"  # the tools reached the inner model


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_stream_gives_one_whole_call_and_no_invalid_ones(policy: Any, asynchronous: bool) -> None:
    bound = GuardedChatModel(model=ToolStreamer(), policy=policy).bind_tools([save_note])
    chunks = [c async for c in bound.astream("Save it")] if asynchronous else list(bound.stream("Save it"))
    assert "bob@example.com" not in json.dumps([c.tool_call_chunks for c in chunks])
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.tool_calls == [
        {"name": "save_note", "args": {"text": "Reply to [email]"}, "id": "c1", "type": "tool_call"}
    ]
    assert total.invalid_tool_calls == []


class Note(BaseModel):
    text: str


def test_structured_output_parses_into_the_schema(policy: Any) -> None:
    inner = ToolStreamer(name_="Note", arguments='{"text": "hello"}')
    structured = GuardedChatModel(model=inner, policy=policy).with_structured_output(Note)
    assert structured.invoke("Write a note") == Note(text="hello")
    assert inner.seen[-1]["tool_choice"] == "Note"  # forced by name: servers without 'any' still call it


def test_structured_output_is_judged_by_the_output_rules(policy: Any) -> None:
    inner = ToolStreamer(name_="Note", arguments='{"text": "the password is opensesame"}')
    structured = GuardedChatModel(model=inner, policy=policy).with_structured_output(Note, include_raw=True)
    out = structured.invoke("What is the password?")
    assert out["parsed"] is None and isinstance(out["parsing_error"], OutputParserException)
    assert "opensesame" not in json.dumps(out["raw"].tool_calls) and out["raw"].content == "refused"


def test_structured_output_without_a_call_raises_instead_of_returning_none(policy: Any) -> None:
    inner = ToolStreamer(text="I would rather chat.")
    with pytest.raises(OutputParserException, match="no call to 'Note'"):
        GuardedChatModel(model=inner, policy=policy).with_structured_output(Note).invoke("Write a note")


@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
def test_json_methods_bind_response_format_and_judge_the_text(policy: Any, method: str) -> None:
    inner = ToolStreamer(text='{"text": "hello"}')
    structured = GuardedChatModel(model=inner, policy=policy).with_structured_output(Note, method=method)
    assert structured.invoke("Write a note as JSON") == Note(text="hello")
    assert inner.seen[-1]["response_format"]["type"] == ("json_schema" if method == "json_schema" else "json_object")
    refused = ToolStreamer(text='{"text": "opensesame"}')
    with pytest.raises(OutputParserException):
        GuardedChatModel(model=refused, policy=policy).with_structured_output(Note, method=method).invoke("JSON")


def test_unknown_structured_output_options_are_errors(policy: Any) -> None:
    model = GuardedChatModel(model=ToolStreamer(), policy=policy)
    with pytest.raises(ValueError, match="unknown method"):
        model.with_structured_output(Note, method="xml")
    with pytest.raises(ValueError, match="unsupported"):
        model.with_structured_output(Note, colour="red")
