"""Tool calls end to end: the embedded model behind llama.cpp's server, constrained to a tool-call format by
the server (a forced tool choice), through LangChain (bind_tools, an agent, structured output) and LlamaIndex.

At temperature 0 the model copies the address from the prompt into the note, so the policy's redaction is
exercised, not just allowed for; each test asserts that the redaction happened and the address never left.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes import NOTES_POLICY as POLICY

pytestmark = pytest.mark.slow

EMAIL = "bob@example.com"
PROMPT = f"Save a note with the text 'Reply to {EMAIL}'."


@pytest.fixture
def policy(tmp_path: Any) -> Any:
    path = tmp_path / "notes.yaml"
    path.write_text(POLICY)
    return path


def _chat_openai(url: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=url, api_key="unused", model="smollm2", temperature=0, max_retries=0)


def _tool(saved: list[str]) -> Any:
    from langchain_core.tools import tool

    @tool(return_direct=True)
    def save_note(text: str) -> str:
        """Save a note for later."""
        saved.append(text)
        return "Saved."

    return save_note


def test_bind_tools_gives_intact_judged_arguments(llama_server: str, policy: Any) -> None:
    from guardrail.adapters.langchain import GuardedChatModel

    guarded = GuardedChatModel(model=_chat_openai(llama_server), policy=policy, max_tokens=80)
    bound = guarded.bind_tools([_tool([])], tool_choice="save_note")
    message = bound.invoke(PROMPT)
    assert [call["name"] for call in message.tool_calls] == ["save_note"]  # one call, its name written once
    assert message.invalid_tool_calls == []
    assert message.tool_calls[0]["args"] == {"text": "Reply to [email removed]"}
    summary = message.response_metadata["guardrail"]
    assert summary["fallback"] == "redact" and summary["tool_calls"] == 1
    chunks = list(bound.stream(PROMPT))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.tool_calls[0]["args"] == {"text": "Reply to [email removed]"} and total.invalid_tool_calls == []


def _agent(url: str, policy: Any, saved: list[str]) -> Any:
    from guardrail.adapters.langchain import GuardedChatModel
    from langchain.agents import create_agent
    from langchain.agents.middleware import wrap_model_call

    @wrap_model_call  # type: ignore[arg-type]
    def call_the_tool_first(request: Any, handler: Any) -> Any:
        # llama.cpp's server constrains a call only when the choice names the tool
        if not any(message.type == "tool" for message in request.messages):
            request = request.override(tool_choice="save_note")
        return handler(request)

    guarded = GuardedChatModel(model=_chat_openai(url), policy=policy, max_tokens=80)
    return create_agent(model=guarded, tools=[_tool(saved)], middleware=[call_the_tool_first])


def test_an_agent_calls_its_tool_with_the_address_redacted(llama_server: str, policy: Any) -> None:
    saved: list[str] = []
    result = _agent(llama_server, policy, saved).invoke({"messages": [("user", PROMPT)]})
    assert saved == ["Reply to [email removed]"]
    ai = [m for m in result["messages"] if m.type == "ai"]
    assert len(ai) == 1 and ai[0].response_metadata["guardrail"]["fallback"] == "redact"
    assert EMAIL not in json.dumps([m.tool_calls for m in ai])


def test_the_agents_message_stream_never_shows_the_address(llama_server: str, policy: Any) -> None:
    saved: list[str] = []
    streamed = list(
        _agent(llama_server, policy, saved).stream({"messages": [("user", PROMPT)]}, stream_mode="messages")
    )
    produced = [message for message, _ in streamed if message.type in {"ai", "AIMessageChunk", "tool"}]
    assert len(produced) >= 2  # the model's call and the tool's answer
    assert EMAIL not in json.dumps([[m.content, getattr(m, "tool_call_chunks", None)] for m in produced], default=str)
    assert saved == ["Reply to [email removed]"]


def test_structured_output_from_a_real_model(llama_server: str, policy: Any) -> None:
    from guardrail.adapters.langchain import GuardedChatModel
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str

    guarded = GuardedChatModel(model=_chat_openai(llama_server), policy=policy, max_tokens=60)
    person = guarded.with_structured_output(Person).invoke("Ann lives in Paris. Extract the person's name.")
    assert isinstance(person, Person) and person.name.strip()


def test_llama_index_predict_and_call_gets_the_address_redacted(llama_server: str, policy: Any) -> None:
    from guardrail.adapters.llama_index import GuardedFunctionCallingLLM, guard_llm
    from llama_index.core.tools import FunctionTool
    from llama_index.llms.openai_like import OpenAILike

    saved: list[str] = []

    def save_note(text: str) -> str:
        """Save a note for later."""
        saved.append(text)
        return "Saved."

    inner = OpenAILike(
        api_base=llama_server, api_key="unused", model="smollm2", is_chat_model=True,
        is_function_calling_model=True, temperature=0, max_tokens=80,
    )  # fmt: skip
    guarded = guard_llm(inner, policy=policy)
    assert isinstance(guarded, GuardedFunctionCallingLLM)
    note = FunctionTool.from_defaults(save_note)
    response = guarded.chat_with_tools([note], user_msg=PROMPT, tool_choice="save_note")
    (selection,) = guarded.get_tool_calls_from_response(response)
    assert selection.tool_name == "save_note"  # llama.cpp repeats the name in every piece: written once here
    assert selection.tool_kwargs == {"text": "Reply to [email removed]"}
    assert response.additional_kwargs["guardrail"]["fallback"] == "redact"
    output = guarded.predict_and_call([note], user_msg=PROMPT, tool_choice="save_note")
    assert str(output) == "Saved." and saved == ["Reply to [email removed]"]


@pytest.mark.parametrize("stream", [False, True])
def test_serve_forwards_tools_and_returns_judged_calls(llama_server: str, policy: Any, stream: bool) -> None:
    import httpx

    from guardrail import Guard, OpenAIBackend
    from guardrail.server import create_app
    from tests.servers import serving

    guard = Guard(policy, OpenAIBackend(llama_server, model="smollm2"))
    tool = {
        "type": "function",
        "function": {
            "name": "save_note", "description": "Save a note for later.",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        },
    }  # fmt: skip
    body = {
        "messages": [{"role": "user", "content": PROMPT}], "tools": [tool], "temperature": 0, "max_tokens": 80,
        "tool_choice": {"type": "function", "function": {"name": "save_note"}}, "stream": stream,
    }  # fmt: skip
    with serving(create_app(guard, model_name="guarded")) as base:
        response = httpx.post(f"{base}/chat/completions", json=body, timeout=120)
    assert response.status_code == 200
    assert EMAIL not in response.text
    if stream:
        chunks = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data: {")]
        deltas = [c["choices"][0]["delta"] for c in chunks]
        calls = [call for delta in deltas for call in delta.get("tool_calls") or ()]
        finish = chunks[-1]["choices"][0]["finish_reason"]
    else:
        message = response.json()["choices"][0]["message"]
        calls, finish = message["tool_calls"], response.json()["choices"][0]["finish_reason"]
    assert len(calls) == 1 and calls[0]["function"]["name"] == "save_note" and finish == "tool_calls"
    assert json.loads(calls[0]["function"]["arguments"]) == {"text": "Reply to [email removed]"}
